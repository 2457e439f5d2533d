//! Buckets: list, create, delete, head, location and ACL. A bucket is a
//! directory under `/buckets`; its owner and canned ACL are extended
//! attributes of it.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use kelp_filer::store::{Cond, Op, Txn};
use kelp_filer::{Entry, FilerError, FullPath};

use super::body::{self, Failure, Promises};
use super::identities::Action;
use super::{Ctx, Gateway, filer_error, paths, reply};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::{BodyLength, CannedAcl};
use crate::xml::{requests, responses};

/// Most bytes of a bucket configuration body read.
const MAX_CONFIG: usize = 64 << 10;

pub fn time_of(ns: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

pub fn owner_of(name: Option<&str>) -> responses::Owner {
    let n = name.unwrap_or("kelp");
    responses::Owner {
        id: n.to_string(),
        display_name: n.to_string(),
    }
}

/// A small request body (a configuration document), checked.
pub async fn small_body(cx: &Ctx, body: Body) -> S3Result<Vec<u8>> {
    let len = cx
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let promises = Promises {
        length: BodyLength {
            content_length: len,
            decoded_length: cx
                .headers
                .get("x-amz-decoded-content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        },
        content_md5: crate::request::headers::parse_content_md5(&cx.headers)?,
        checksum: None,
    };
    let b = body::decode(body, &cx.auth, &cx.headers, promises, Failure::default())?;
    body::collect(b, MAX_CONFIG).await
}

pub async fn list(gw: &Gateway, cx: &Ctx) -> S3Result<Response> {
    let root = FullPath::parse(paths::BUCKETS).expect("constant");
    let me = gw.caller(cx);
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = match gw.filer.list(&root, &after, "", 1000).await {
            Ok(p) => p,
            Err(FilerError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(filer_error(e)),
        };
        let n = page.len();
        for e in page {
            after = e.name.clone();
            if !e.is_dir() {
                continue;
            }
            let owner = e
                .xattrs
                .get(paths::OWNER)
                .and_then(|v| std::str::from_utf8(v).ok());
            let mine = gw.cfg.identities.is_open()
                || gw
                    .cfg
                    .identities
                    .user(&cx.auth.identity)
                    .is_some_and(|u| u.is_admin())
                || (me.is_some() && owner == me.as_deref());
            if mine {
                out.push(responses::BucketInfo {
                    name: e.name.clone(),
                    creation_date: time_of(e.crtime_ns),
                });
            }
        }
        if n < 1000 {
            break;
        }
    }
    if me.is_none() && !gw.cfg.identities.is_open() {
        return Err(S3Error::new(S3ErrorCode::AccessDenied));
    }
    Ok(reply::ok_xml(responses::list_all_my_buckets(
        &owner_of(me.as_deref()),
        &out,
    )))
}

pub async fn create(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    acl: Option<CannedAcl>,
    body: Body,
) -> S3Result<Response> {
    crate::names::validate_bucket_name(bucket)?;
    if !gw
        .cfg
        .identities
        .allows(&cx.auth.identity, Action::Write, Some(bucket), None, None)
    {
        return Err(S3Error::new(S3ErrorCode::AccessDenied));
    }
    requests::parse_create_bucket(&small_body(cx, body).await?)?;
    let dir = paths::bucket_dir(bucket);
    let me = gw.caller(cx);
    let mut e = Entry::directory(bucket, crate::gateway::objects::now_ns());
    if let Some(m) = &me {
        e.xattrs.insert(paths::OWNER.into(), m.as_bytes().to_vec());
    }
    if let Some(a) = acl {
        e.xattrs
            .insert(paths::ACL.into(), a.as_str().as_bytes().to_vec());
    }
    let put = Op::Put {
        path: dir.clone(),
        entry: e,
        cond: Cond::Absent,
    };
    match gw.filer.commit(Txn::one(put)).await {
        Ok(_) => {}
        Err(FilerError::Exists(_)) => {
            let existing = gw.filer.lookup(&dir).await.map_err(filer_error)?;
            let owner = existing
                .as_ref()
                .and_then(|e| e.xattrs.get(paths::OWNER).cloned())
                .and_then(|v| String::from_utf8(v).ok());
            return Err(S3Error::new(if owner == me {
                S3ErrorCode::BucketAlreadyOwnedByYou
            } else {
                S3ErrorCode::BucketAlreadyExists
            }));
        }
        Err(e) => return Err(filer_error(e)),
    }
    let mut r = reply::empty(200);
    reply::header(&mut r, "location", &format!("/{bucket}"));
    Ok(r)
}

pub async fn delete(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    if !gw
        .filer
        .list(&b.dir, "", "", 1)
        .await
        .map_err(filer_error)?
        .is_empty()
        || holds_a_file(gw, &paths::versions_dir_of_bucket(bucket)).await?
    {
        return Err(S3Error::new(S3ErrorCode::BucketNotEmpty));
    }
    let mut ops = vec![Op::Delete {
        path: b.dir.clone(),
        cond: Cond::Unchanged(Box::new(b.entry.clone())),
        recursive: false,
    }];
    // Unfinished uploads, old versions and staged writes go with the bucket.
    for extra in [
        paths::uploads_dir(bucket),
        paths::versions_dir_of_bucket(bucket),
        paths::staging_dir(bucket),
    ] {
        if gw
            .filer
            .lookup(&extra)
            .await
            .map_err(filer_error)?
            .is_some()
        {
            ops.push(Op::Delete {
                path: extra,
                cond: Cond::Any,
                recursive: true,
            });
        }
    }
    match gw.filer.commit(Txn { ops }).await {
        Ok(_) => Ok(reply::empty(204)),
        Err(FilerError::NotEmpty(_)) | Err(FilerError::Precondition(_)) => {
            Err(S3Error::new(S3ErrorCode::BucketNotEmpty))
        }
        Err(e) => Err(filer_error(e)),
    }
}

/// Whether any file lies under `dir` (an old version or a delete marker
/// under a bucket's versions directory); the empty directories removed
/// versions leave behind do not count.
async fn holds_a_file(gw: &Gateway, dir: &FullPath) -> S3Result<bool> {
    let mut dirs = vec![dir.clone()];
    while let Some(d) = dirs.pop() {
        for e in gw.children(&d).await? {
            if !e.is_dir() {
                return Ok(true);
            }
            dirs.push(d.child(&e.name));
        }
    }
    Ok(false)
}

pub async fn head(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::List).await?;
    let mut r = reply::empty(200);
    reply::header(&mut r, "x-amz-bucket-region", &gw.cfg.region);
    Ok(r)
}

pub async fn location(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::List).await?;
    Ok(reply::ok_xml(responses::location_constraint(
        &gw.cfg.region,
    )))
}

pub async fn get_acl(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    Ok(reply::ok_xml(responses::access_control_policy(
        &owner_of(b.owner()),
        b.acl(),
    )))
}

pub async fn put_acl(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    acl: Option<CannedAcl>,
    body: Body,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    let acl = super::acl::requested(cx, acl, body, "PutBucketAcl").await?;
    let mut e = b.entry.clone();
    e.xattrs
        .insert(paths::ACL.into(), acl.as_str().as_bytes().to_vec());
    let put = Op::Put {
        path: b.dir.clone(),
        entry: e,
        cond: Cond::Unchanged(Box::new(b.entry)),
    };
    gw.filer.commit(Txn::one(put)).await.map_err(filer_error)?;
    Ok(reply::empty(200))
}
