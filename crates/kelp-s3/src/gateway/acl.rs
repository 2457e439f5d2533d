//! Object ACLs: a canned ACL kept in the object's `s3.acl` xattr (as
//! PutObject's `x-amz-acl` writes it), reported as its grants. A
//! public-read or authenticated-read object can be read where its bucket
//! is private ([`Gateway::readable_object`]). Grants other than canned
//! ones are not kept: an `AccessControlPolicy` document leaves the object
//! private.

use axum::body::Body;
use axum::response::Response;
use kelp_filer::FilerError;
use kelp_filer::store::{Cond, Op, Txn};

use super::buckets::{owner_of, small_body};
use super::identities::Action;
use super::versions::locate_object;
use super::{Ctx, Gateway, acl_of, filer_error, paths, reply};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::CannedAcl;
use crate::xml::{requests, responses};

/// The ACL a Put*Acl request asks for: `x-amz-acl`, or a policy document,
/// whose grants are not kept (it leaves the object or bucket private).
pub async fn requested(
    cx: &Ctx,
    acl: Option<CannedAcl>,
    body: Body,
    op: &str,
) -> S3Result<CannedAcl> {
    let doc = small_body(cx, body).await?;
    match acl {
        Some(a) => Ok(a),
        None if !doc.is_empty() => {
            requests::parse_access_control_policy(&doc)?;
            Ok(CannedAcl::Private)
        }
        None => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            format!("{op} needs x-amz-acl or an AccessControlPolicy document"),
        )),
    }
}

pub async fn get(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    vid: Option<String>,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Read).await?;
    let (_, e) = locate_object(gw, bucket, key, vid.as_deref()).await?;
    Ok(reply::ok_xml(responses::access_control_policy(
        &owner_of(b.owner()),
        acl_of(&e),
    )))
}

pub async fn put(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    vid: Option<String>,
    acl: Option<CannedAcl>,
    body: Body,
) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::Write).await?;
    let acl = requested(cx, acl, body, "PutObjectAcl").await?;
    for _ in 0..5 {
        let (path, old) = locate_object(gw, bucket, key, vid.as_deref()).await?;
        let mut e = old.clone();
        e.xattrs
            .insert(paths::ACL.into(), acl.as_str().as_bytes().to_vec());
        let put = Op::Put {
            path,
            entry: e,
            cond: Cond::Unchanged(Box::new(old)),
        };
        match gw.filer.commit(Txn::one(put)).await {
            Ok(_) => return Ok(reply::empty(200)),
            Err(FilerError::Precondition(_)) => continue,
            Err(err) => return Err(filer_error(err)),
        }
    }
    Err(S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        "The object kept changing; try again",
    ))
}
