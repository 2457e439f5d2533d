//! Tags: an object's (`?tagging` on a key, at most 10, any version) and a
//! bucket's (at most 50). Both are kept in the entry's `s3.tagging`
//! xattr in URL query form (`k1=v1&k2=v2`, as `x-amz-tagging` sends
//! them); an object's are changed by a read-modify-write on the condition
//! that the entry is unchanged, so a concurrent overwrite is not lost.

use axum::body::Body;
use axum::response::Response;
use kelp_filer::store::{Cond, Op, Txn};
use kelp_filer::{Entry, FilerError};

use super::buckets::small_body;
use super::identities::Action;
use super::objects::{decode_tags, encode_tags};
use super::versions;
use super::{Ctx, Gateway, filer_error, paths, reply};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::xml::requests::{self, MAX_BUCKET_TAGS, MAX_OBJECT_TAGS, Tag};
use crate::xml::responses;

/// Attempts of a tag change raced by writers of the object.
const ATTEMPTS: usize = 5;

fn with_version(mut r: Response, e: &Entry) -> Response {
    let v = versions::version_of(e);
    if v != versions::NULL {
        reply::header(&mut r, "x-amz-version-id", &v);
    }
    r
}

pub async fn get_object(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    vid: Option<String>,
) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::Read).await?;
    let (_, e) = versions::locate_object(gw, bucket, key, vid.as_deref()).await?;
    Ok(with_version(
        reply::ok_xml(responses::tagging(&decode_tags(&e))),
        &e,
    ))
}

/// Sets (or with `None` removes) an object's tags.
async fn set_object(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    vid: Option<&str>,
    tags: Option<Vec<Tag>>,
) -> S3Result<Entry> {
    gw.bucket(cx, bucket, Action::Tagging).await?;
    for _ in 0..ATTEMPTS {
        let (path, old) = versions::locate_object(gw, bucket, key, vid).await?;
        let mut e = old.clone();
        match &tags {
            Some(t) if !t.is_empty() => {
                e.xattrs.insert(paths::TAGGING.into(), encode_tags(t));
            }
            _ => {
                e.xattrs.remove(paths::TAGGING);
            }
        }
        let put = Op::Put {
            path,
            entry: e.clone(),
            cond: Cond::Unchanged(Box::new(old)),
        };
        match gw.filer.commit(Txn::one(put)).await {
            Ok(_) => return Ok(e),
            Err(FilerError::Precondition(_)) => continue,
            Err(err) => return Err(filer_error(err)),
        }
    }
    Err(S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        "The object kept changing; try again",
    ))
}

pub async fn put_object(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    vid: Option<String>,
    body: Body,
) -> S3Result<Response> {
    let tags = requests::parse_tagging(&small_body(cx, body).await?, MAX_OBJECT_TAGS)?;
    let e = set_object(gw, cx, bucket, key, vid.as_deref(), Some(tags)).await?;
    Ok(with_version(reply::empty(200), &e))
}

pub async fn delete_object(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    vid: Option<String>,
) -> S3Result<Response> {
    let e = set_object(gw, cx, bucket, key, vid.as_deref(), None).await?;
    Ok(with_version(reply::empty(204), &e))
}

pub async fn get_bucket(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    let tags = decode_tags(&b.entry);
    if tags.is_empty() {
        return Err(S3Error::new(S3ErrorCode::NoSuchTagSet));
    }
    Ok(reply::ok_xml(responses::tagging(&tags)))
}

/// Sets (or with `None` removes) one xattr of the bucket directory.
pub async fn set_bucket_attr(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    name: &str,
    value: Option<Vec<u8>>,
) -> S3Result<()> {
    for _ in 0..ATTEMPTS {
        let b = gw.bucket(cx, bucket, Action::Admin).await?;
        let mut e = b.entry.clone();
        match &value {
            Some(v) => e.xattrs.insert(name.to_string(), v.clone()),
            None => e.xattrs.remove(name),
        };
        let put = Op::Put {
            path: b.dir.clone(),
            entry: e,
            cond: Cond::Unchanged(Box::new(b.entry)),
        };
        match gw.filer.commit(Txn::one(put)).await {
            Ok(_) => return Ok(()),
            Err(FilerError::Precondition(_)) => continue,
            Err(err) => return Err(filer_error(err)),
        }
    }
    Err(S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        "The bucket kept changing; try again",
    ))
}

pub async fn put_bucket(gw: &Gateway, cx: &Ctx, bucket: &str, body: Body) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::Admin).await?;
    let tags = requests::parse_tagging(&small_body(cx, body).await?, MAX_BUCKET_TAGS)?;
    let value = (!tags.is_empty()).then(|| encode_tags(&tags));
    set_bucket_attr(gw, cx, bucket, paths::TAGGING, value).await?;
    Ok(reply::empty(204))
}

pub async fn delete_bucket(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    set_bucket_attr(gw, cx, bucket, paths::TAGGING, None).await?;
    Ok(reply::empty(204))
}
