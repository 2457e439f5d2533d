//! The filer's store over HTTP, for gateways that run their filer on it
//! ([`crate::store::remote::RemoteBackend`], `kelp s3 -filer`):
//!
//! - `POST /__kelp/store/get` and `/__kelp/store/range` read the store;
//! - `POST /__kelp/store/commit` commits a transaction through
//!   [`Filer::commit`], so this filer's clock stamps its events and its
//!   own subscribers are woken.
//!
//! Bodies are in the layout of [`crate::store::wire`]. A request this
//! filer can read is answered 200 with the store's answer, its errors
//! included; one it cannot read (another wire version, malformed) is
//! refused with 400 and a JSON error saying why.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::error::FilerError;
use crate::filer::Filer;
use crate::store::wire::{self, Payload, WIRE_VERSION, WireError};

/// Largest request body: a transaction of a few large entries (one entry
/// is at most 8 MiB).
const MAX_BODY: usize = 64 << 20;

pub(super) fn routes() -> Router<Filer> {
    Router::new()
        .route("/__kelp/store/get", post(get))
        .route("/__kelp/store/range", post(range))
        .route("/__kelp/store/commit", post(commit))
}

fn refuse(e: WireError) -> Response {
    let msg = match e {
        WireError::Version(v) => format!(
            "store wire version {v} is not known to this filer: it speaks version {WIRE_VERSION}"
        ),
        e => e.to_string(),
    };
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": msg })),
    )
        .into_response()
}

fn answer<P: Payload>(a: Result<P, FilerError>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        wire::encode_answer(&a),
    )
        .into_response()
}

async fn read(body: Body) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| refuse(WireError::Malformed(format!("reading the body: {e}"))))
}

async fn get(State(filer): State<Filer>, body: Body) -> Response {
    let b = match read(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match wire::decode_get(&b) {
        Ok((t, k)) => answer(filer.store().get(t, k).await),
        Err(e) => refuse(e),
    }
}

async fn range(State(filer): State<Filer>, body: Body) -> Response {
    let b = match read(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match wire::decode_range(&b) {
        Ok((t, start, end, limit)) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            answer(filer.store().range(t, start, end, limit).await)
        }
        Err(e) => refuse(e),
    }
}

async fn commit(State(filer): State<Filer>, body: Body) -> Response {
    let b = match read(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match wire::decode_txn(&b) {
        Ok(txn) => answer(filer.commit(txn).await),
        Err(e) => refuse(e),
    }
}
