//! The filer's HTTP API, compatible with the SeaweedFS filer's common
//! cases:
//!
//! - `GET`/`HEAD /path`: a file (Range, If-Match, If-None-Match,
//!   If-Modified-Since, If-Unmodified-Since) or a directory listing
//!   (`Accept: application/json` or `?json`; `?limit=&lastFileName=&prefix=`);
//!   `?metadata=true` answers the entry as JSON;
//! - `POST`/`PUT /path`: a raw body or a `multipart/form-data` file (to
//!   `/dir/` it takes the part's file name); `Seaweed-*` headers are kept
//!   as extended attributes; an empty body to `/dir/` makes a directory;
//!   `?mv.from=/old` moves; `?quota.bytes=&quota.entries=` sets a
//!   directory's quota (Kelp);
//! - `DELETE /path` (`?recursive=true` for a non-empty directory);
//! - `GET /__kelp/events?prefix=&after=&since_ns=&follow=true`: the change
//!   log as JSON lines (Kelp); `GET /__kelp/status`;
//! - `POST /__kelp/store/{get,range,commit}`: the store itself, for
//!   gateways running over this filer (`store_rpc.rs`; Kelp).

mod events;
pub mod json;
mod read;
mod store_rpc;
mod write;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::FilerError;
use crate::filer::Filer;
use crate::path::FullPath;

/// The filer's routes.
pub fn router(filer: Filer) -> Router {
    Router::new()
        .route("/__kelp/status", axum::routing::get(status))
        .route("/__kelp/events", axum::routing::get(events::stream))
        .merge(store_rpc::routes())
        .fallback(handle)
        .with_state(filer)
}

/// Serves the API on `listener` and runs the collector until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    filer: Filer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let collector = tokio::spawn(filer.clone().run_collector({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let res = kelp_net::serve::http(listener, router(filer), None, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    let _ = collector.await;
    res
}

pub(crate) type Params = HashMap<String, String>;

pub(crate) fn error(e: FilerError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(error = %e, "filer request failed");
    }
    (
        status,
        axum::Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn handle(
    State(filer): State<Filer>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let raw = uri.path();
    let decoded = match percent_decode(raw) {
        Some(p) => p,
        None => return error(FilerError::BadPath(format!("{raw:?} is not valid UTF-8"))),
    };
    let path = match FullPath::parse(&decoded) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let dir_form = decoded.ends_with('/');
    let res = match method {
        Method::GET | Method::HEAD => {
            read::get(&filer, &path, &params, &headers, method == Method::HEAD).await
        }
        Method::POST | Method::PUT => {
            write::put(&filer, &path, dir_form, &params, &headers, body).await
        }
        Method::DELETE => {
            let recursive = params.get("recursive").is_some_and(|v| v == "true");
            filer
                .delete(&path, recursive)
                .await
                .map(|_| StatusCode::NO_CONTENT.into_response())
        }
        _ => Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, HEAD, POST, PUT and DELETE only\n",
        )
            .into_response()),
    };
    res.unwrap_or_else(error)
}

async fn status(State(filer): State<Filer>) -> Response {
    let (logical, stored) = filer.compression();
    let (garbage, leases) = match filer.pending(10_000).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    axum::Json(serde_json::json!({
        "garbage_pending": garbage,
        "leases_open": leases,
        "version": format!("kelp {}", env!("CARGO_PKG_VERSION")),
        "store": filer.store().describe(),
        "store_wire": crate::store::wire::WIRE_VERSION,
        "masters": filer.client().masters(),
        "chunk_size": filer.options().chunk_size,
        "bytes_written": logical,
        "bytes_stored": stored,
        "compressratio": if stored == 0 { 1.0 } else { logical as f64 / stored as f64 },
    }))
    .into_response()
}

/// `%XX` decoding of a URL path (a `+` stays a `+`); `None` when the
/// result is not UTF-8 or an escape is malformed.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
