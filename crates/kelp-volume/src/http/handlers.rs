//! Handlers for `/<fid>`: upload (`POST`/`PUT`), read (`GET`/`HEAD`) and
//! `DELETE`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kelp_needle::Needle;
use serde::Serialize;

use super::fid::{FidPath, parse_fid_path};
use super::manifest::Manifest;
use super::read::{self, ReadContext, etag, needle_response};
use super::status::json_response;
use super::upload::{UploadParams, finish_upload, parse_upload};
use super::{HttpState, query_pairs};
use super::{chunked, guard, proxy};
use crate::error::ApiError;
use crate::replicate::{Origin, Targets};
use crate::store::{NeedleRead, blocking, now_secs};

/// Inflating or hashing more than this runs on a blocking thread.
const INLINE_CPU_BYTES: usize = 256 * 1024;

pub async fn fid_request(
    State(st): State<HttpState>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let key = match method {
        Method::GET | Method::HEAD => &st.security.read,
        Method::POST | Method::PUT | Method::DELETE => &st.security.signing,
        _ => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD, POST, PUT, DELETE")],
            )
                .into_response();
        }
    };
    let path = match parse_fid_path(uri.path()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let query = query_pairs(uri.query());
    if let Err(e) = guard::check(key, &query, &headers, &path) {
        return e.into_response();
    }
    let result = match method {
        Method::GET | Method::HEAD => read(&st, &method, &uri, &headers, path, &query).await,
        Method::DELETE => delete(&st, uri.path(), &headers, &path, &query).await,
        _ => upload(&st, &method, &uri, &headers, &path, &query, body).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn read(
    st: &HttpState,
    method: &Method,
    uri: &Uri,
    headers: &axum::http::HeaderMap,
    path: FidPath,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let download = query
        .iter()
        .any(|(k, v)| k == "dl" && matches!(v.as_str(), "true" | "1"));
    let fid = path.fid;
    if st.store.volume(fid.volume_id).is_err() {
        return proxy::remote_read(st, fid.volume_id, method, uri, headers, query).await;
    }
    let ctx = ReadContext {
        method,
        headers,
        path: &path,
        download,
    };
    // A large needle whose stored data is the answer is sent as it is
    // read, a few pieces in memory at a time.
    let read = match st
        .store
        .read_or_stream(fid.volume_id, fid.key, fid.cookie)
        .await
    {
        Ok(NeedleRead::Streamed(n, data)) if read::streamable(&n, &ctx) => {
            if *method == Method::GET {
                metrics::counter!(crate::metrics::BYTES_READ).increment(data.len());
            }
            return Ok(read::streamed_response(n, data, &ctx));
        }
        // A range, a gzip needle or a manifest: the answer needs the data
        // in memory.
        Ok(NeedleRead::Streamed(..)) => st.store.read(fid.volume_id, fid.key, fid.cookie).await,
        Ok(NeedleRead::Whole(n)) => Ok(n),
        Err(e) => Err(e),
    };
    let n = match read {
        Err(e) if e.is_corrupt() => {
            tracing::error!(fid = %fid, error = %e, "needle failed its checksum; reading another replica");
            metrics::counter!(crate::metrics::CORRUPT_READS).increment(1);
            return match proxy::replica_read(st, fid.volume_id, method, uri, headers, query).await {
                Some(resp) => Ok(resp),
                None => Err(e.into()),
            };
        }
        other => other?,
    };
    let resp = if chunked::expand_manifest(&n, query)
        && let Some(m) = Manifest::parse(&n.data, n.compressed)
    {
        chunked::chunked_response(st, n, m, &ctx).await?
    } else if n.compressed && n.data.len() > INLINE_CPU_BYTES {
        let (method, headers, path) = (method.clone(), headers.clone(), path.clone());
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
        needle_response(n, &ctx)?
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
    path: &FidPath,
    query: &[(String, String)],
    body: Body,
) -> Result<Response, ApiError> {
    let fid = path.fid;
    // Refuse before reading a body we cannot store.
    st.store.volume(fid.volume_id)?;
    let params = UploadParams::from_query(query)?;
    let targets = if params.replicate {
        Targets::default()
    } else {
        st.replicator.targets(fid.volume_id).await?
    };
    // Replica writes reserve nothing (see `upload_budget.rs`).
    let budget = st.upload_budget.as_deref().filter(|_| !params.replicate);
    let mut up = parse_upload(
        method,
        headers,
        uri.path(),
        body,
        st.file_size_limit,
        budget,
    )
    .await?;
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
    let token = guard::token(query, headers);
    let origin = Origin {
        path: uri.path(),
        token: token.as_deref(),
    };
    let res = st
        .replicator
        .write(fid.volume_id, needle, params.fsync, &targets, &origin)
        .await?;
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

async fn delete(
    st: &HttpState,
    uri_path: &str,
    headers: &axum::http::HeaderMap,
    path: &FidPath,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let fid = path.fid;
    let params = UploadParams::from_query(query)?;
    let targets = if params.replicate {
        Targets::default()
    } else {
        st.replicator.targets(fid.volume_id).await?
    };
    // A chunk manifest takes its chunks with it; they go first, so a
    // failure leaves the manifest to retry the delete with.
    if !params.replicate
        && let Ok(n) = st.store.read(fid.volume_id, fid.key, fid.cookie).await
        && n.chunk_manifest
    {
        match Manifest::parse(&n.data, n.compressed) {
            Some(m) => chunked::delete_chunks(st, &m).await?,
            None => {
                tracing::warn!(fid = %fid, "chunk manifest does not parse; deleting it alone")
            }
        }
    }
    let token = guard::token(query, headers);
    let origin = Origin {
        path: uri_path,
        token: token.as_deref(),
    };
    let result = st
        .replicator
        .delete(
            fid.volume_id,
            fid.key,
            fid.cookie,
            params.fsync,
            &targets,
            &origin,
        )
        .await
        .map_err(ApiError::from);
    match result {
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
