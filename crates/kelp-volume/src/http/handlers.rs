//! Handlers for `/<fid>`: upload (`POST`/`PUT`), read (`GET`/`HEAD`) and
//! `DELETE`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kelp_needle::Needle;
use serde::Serialize;

use super::fid::{FidPath, parse_fid_path};
use super::read::{ReadContext, etag, needle_response};
use super::status::json_response;
use super::upload::{UploadParams, finish_upload, parse_upload};
use super::{HttpState, query_pairs};
use crate::error::ApiError;
use crate::store::{blocking, now_secs};

/// Inflating or hashing more than this runs on a blocking thread.
const INLINE_CPU_BYTES: usize = 256 * 1024;

pub async fn fid_request(
    State(st): State<HttpState>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let result = match method {
        Method::GET | Method::HEAD => read(&st, &method, &uri, &headers).await,
        Method::POST | Method::PUT => upload(&st, &method, &uri, &headers, body).await,
        Method::DELETE => delete(&st, &uri).await,
        _ => Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD, POST, PUT, DELETE")],
        )
            .into_response()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn read(
    st: &HttpState,
    method: &Method,
    uri: &Uri,
    headers: &axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let path = parse_fid_path(uri.path())?;
    let query = query_pairs(uri.query());
    let download = query
        .iter()
        .any(|(k, v)| k == "dl" && matches!(v.as_str(), "true" | "1"));
    let fid = path.fid;
    let n = st.store.read(fid.volume_id, fid.key, fid.cookie).await?;
    let big_gzip = n.compressed && n.data.len() > INLINE_CPU_BYTES;
    let resp = if big_gzip {
        let (method, headers) = (method.clone(), headers.clone());
        blocking(move || {
            needle_response(
                n,
                &ReadContext {
                    method: &method,
                    headers: &headers,
                    path: &path,
                    download,
                },
            )
        })
        .await??
    } else {
        needle_response(
            n,
            &ReadContext {
                method,
                headers,
                path: &path,
                download,
            },
        )?
    };
    if *method == Method::GET {
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        metrics::counter!(crate::metrics::BYTES_READ).increment(len);
    }
    Ok(resp)
}

#[derive(Serialize)]
struct UploadResult {
    name: String,
    size: u64,
    #[serde(rename = "eTag")]
    etag: String,
    mime: String,
}

async fn upload(
    st: &HttpState,
    method: &Method,
    uri: &Uri,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let FidPath { fid, .. } = parse_fid_path(uri.path())?;
    // Refuse before reading a body we cannot store.
    st.store.volume(fid.volume_id)?;
    let params = UploadParams::from_query(&query_pairs(uri.query()))?;
    let mut up = parse_upload(method, headers, uri.path(), body, st.file_size_limit).await?;
    if up.gzipped || (up.content_md5.is_some() && up.data.len() > INLINE_CPU_BYTES) {
        up = blocking(move || finish_upload(&mut up).map(|()| up)).await??;
    } else {
        finish_upload(&mut up)?;
    }
    let stored_len = up.data.len() as u64;
    let needle = Needle {
        cookie: fid.cookie,
        id: fid.key,
        data: up.data,
        name: up.name.clone().into_bytes(),
        mime: up.mime.clone().into_bytes(),
        last_modified: params.ts.unwrap_or_else(now_secs),
        ttl: params.ttl,
        pairs: up.pairs,
        compressed: up.gzipped,
        chunk_manifest: params.chunk_manifest,
        ..Needle::default()
    };
    let res = st.store.write(fid.volume_id, needle, params.fsync).await?;
    if res.unchanged {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    metrics::counter!(crate::metrics::BYTES_WRITTEN).increment(stored_len);
    let tag = format!("{:08x}", res.checksum);
    let mut resp = json_response(
        StatusCode::CREATED,
        &UploadResult {
            name: up.name,
            size: up.original_size,
            etag: tag.clone(),
            mime: up.mime,
        },
    );
    if let Ok(v) = HeaderValue::from_str(&etag(res.checksum)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Some(md5) = up.content_md5.and_then(|m| HeaderValue::from_str(&m).ok()) {
        resp.headers_mut().insert("content-md5", md5);
    }
    Ok(resp)
}

async fn delete(st: &HttpState, uri: &Uri) -> Result<Response, ApiError> {
    let FidPath { fid, .. } = parse_fid_path(uri.path())?;
    let params = UploadParams::from_query(&query_pairs(uri.query()))?;
    match st
        .store
        .delete(fid.volume_id, fid.key, fid.cookie, params.fsync)
        .await
    {
        Ok(size) => Ok(json_response(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "size": size }),
        )),
        Err(ApiError::NotFound) => Ok(json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "size": 0 }),
        )),
        Err(e) => Err(e),
    }
}
