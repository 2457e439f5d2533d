//! Endpoints other replicas use for anti-entropy (`anti_entropy.rs`):
//!
//! - `GET /admin/replica/digest?volume=V`: the volume's digest (format in
//!   kelp-needle `digest.rs`), `application/octet-stream`;
//! - `GET /admin/replica/needle?volume=V&key=K` (K decimal): one live
//!   needle's bytes exactly as stored, with its needle version in
//!   `X-Kelp-Needle-Version`;
//! - `POST /admin/replica/fill?volume=V&collection=C&replication=R&ttl=T`:
//!   become a new replica of V, filled from the existing ones before it is
//!   served (the master calls this to restore placement after losing a
//!   server). Answers 202 at once; the copy runs in the background.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::HttpState;
use crate::anti_entropy::NEEDLE_VERSION_HEADER;
use crate::error::ApiError;
use crate::store::blocking;

#[derive(Deserialize)]
pub struct DigestQuery {
    volume: u32,
}

#[derive(Deserialize)]
pub struct NeedleQuery {
    volume: u32,
    key: u64,
}

pub async fn digest(
    State(st): State<HttpState>,
    Query(q): Query<DigestQuery>,
) -> Result<Response, ApiError> {
    let vol = st.store.volume(q.volume)?;
    let entries = blocking(move || vol.digest())
        .await?
        .map_err(|e| ApiError::from_volume(q.volume, e))?;
    Ok(octets(kelp_needle::digest::encode(&entries), None))
}

pub async fn needle(
    State(st): State<HttpState>,
    Query(q): Query<NeedleQuery>,
) -> Result<Response, ApiError> {
    let vol = st.store.volume(q.volume)?;
    let version = vol.version();
    let raw = blocking(move || vol.raw_needle(q.key))
        .await?
        .map_err(|e| ApiError::from_volume(q.volume, e))?;
    Ok(octets(raw, Some(version)))
}

fn octets(body: Vec<u8>, version: Option<u8>) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        body,
    )
        .into_response();
    if let Some(v) = version {
        resp.headers_mut()
            .insert(NEEDLE_VERSION_HEADER, HeaderValue::from(u16::from(v)));
    }
    resp
}

#[derive(Deserialize)]
pub struct FillQuery {
    volume: u32,
    #[serde(default)]
    collection: String,
    #[serde(default)]
    replication: String,
    #[serde(default)]
    ttl: String,
}

pub async fn fill(
    State(st): State<HttpState>,
    Query(q): Query<FillQuery>,
) -> Result<Response, ApiError> {
    if st.store.volume(q.volume).is_ok() {
        return Err(ApiError::VolumeExists(q.volume));
    }
    let req = crate::store::AllocateRequest {
        id: q.volume,
        collection: q.collection,
        replication: q.replication,
        ttl: q.ttl,
        version: 0,
    };
    let (store, peers, bps) = (st.store.clone(), st.peers.clone(), st.fill_bytes_per_second);
    tokio::spawn(async move {
        let vid = req.id;
        if let Err(e) = crate::anti_entropy::fill_new_replica(store, peers, req, bps).await {
            tracing::error!(volume = vid, error = %e, "filling a new replica failed");
        }
    });
    Ok(StatusCode::ACCEPTED.into_response())
}
