//! Bucket CORS: the configuration (the `CORSConfiguration` document as
//! sent, in the bucket directory's `s3.cors` xattr), OPTIONS preflights
//! (no authentication, answered from the bucket's rules) and the
//! `Access-Control-*` headers of actual requests that carry `Origin`.

use axum::body::Body;
use axum::response::Response;

use super::buckets::small_body;
use super::identities::Action;
use super::tagging::set_bucket_attr;
use super::{Ctx, Gateway, filer_error, paths, reply};
use crate::cors::CorsConfiguration;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::Preflight;

/// The bucket's rules, if it has a bucket and rules.
async fn rules(gw: &Gateway, bucket: &str) -> S3Result<Option<CorsConfiguration>> {
    let dir = paths::bucket_dir(bucket);
    let Some(e) = gw.filer.lookup(&dir).await.map_err(filer_error)? else {
        return Err(S3Error::new(S3ErrorCode::NoSuchBucket));
    };
    match e.xattrs.get(paths::CORS) {
        Some(doc) => Ok(Some(CorsConfiguration::parse(doc)?)),
        None => Ok(None),
    }
}

pub async fn get(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    match b.entry.xattrs.get(paths::CORS) {
        Some(doc) => Ok(reply::ok_xml(CorsConfiguration::parse(doc)?.to_xml())),
        None => Err(S3Error::new(S3ErrorCode::NoSuchCORSConfiguration)),
    }
}

pub async fn put(gw: &Gateway, cx: &Ctx, bucket: &str, body: Body) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::Admin).await?;
    let doc = small_body(cx, body).await?;
    CorsConfiguration::parse(&doc)?;
    set_bucket_attr(gw, cx, bucket, paths::CORS, Some(doc)).await?;
    Ok(reply::empty(200))
}

pub async fn delete(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    set_bucket_attr(gw, cx, bucket, paths::CORS, None).await?;
    Ok(reply::empty(204))
}

/// OPTIONS: 200 with the matching rule's headers, else 403 CORSResponse.
pub async fn preflight(gw: &Gateway, bucket: &str, p: &Preflight) -> S3Result<Response> {
    let Some(cfg) = rules(gw, bucket).await? else {
        return Err(S3Error::with_message(
            S3ErrorCode::CORSResponse,
            "CORSResponse: This CORS request is not allowed. The bucket has no CORS configuration.",
        ));
    };
    let mut r = reply::empty(200);
    for (n, v) in cfg.preflight(p)? {
        reply::header(&mut r, &n, &v);
    }
    Ok(r)
}

/// Adds the headers of the bucket's rule matching `origin` and `method`
/// to an actual request's answer (nothing when none matches).
pub async fn decorate(gw: &Gateway, bucket: &str, origin: &str, method: &str, r: &mut Response) {
    let Ok(Some(cfg)) = rules(gw, bucket).await else {
        return;
    };
    for (n, v) in cfg.actual(origin, method) {
        reply::header(r, &n, &v);
    }
}
