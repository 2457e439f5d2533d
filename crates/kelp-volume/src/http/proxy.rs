//! Reads for volumes held by another server (SeaweedFS `-readMode`):
//! relay the holder's answer (`proxy`), send the client there (`redirect`),
//! or answer 404 (`local`). A request already marked `proxied=true` is never
//! forwarded again, so two servers with stale views cannot loop.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kelp_core::VolumeId;

use super::HttpState;
use crate::config::ReadMode;
use crate::error::ApiError;

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Answers a `GET`/`HEAD` for volume `vid`, which this server does not hold.
pub async fn remote_read(
    st: &HttpState,
    vid: VolumeId,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let proxied = query
        .iter()
        .any(|(k, v)| k == "proxied" && matches!(v.as_str(), "true" | "1"));
    if st.read_mode == ReadMode::Local || proxied {
        return Err(ApiError::VolumeNotFound(vid));
    }
    // Like SeaweedFS, a volume no master can place is simply not found.
    let locations = st.peers.locate(vid).await.map_err(|e| {
        tracing::debug!(volume = vid, error = %e, "no location for a remote read");
        ApiError::VolumeNotFound(vid)
    })?;
    if st.read_mode == ReadMode::Redirect {
        let loc = &locations[0];
        let host = if loc.public_url.is_empty() {
            &loc.url
        } else {
            &loc.public_url
        };
        let location = HeaderValue::from_str(&proxied_url(&st.peers, host, uri))
            .map_err(|_| ApiError::BadRequest("unusable redirect target".to_string()))?;
        return Ok((
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, location)],
        )
            .into_response());
    }
    relay_first(st, vid, &locations, method, uri, headers).await
}

/// Serves a read this server cannot answer from its own copy (the needle
/// failed its checksum) from another replica, whatever the read mode.
/// `None` when there is no other replica or none answered well.
pub async fn replica_read(
    st: &HttpState,
    vid: VolumeId,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Option<Response> {
    let proxied = query
        .iter()
        .any(|(k, v)| k == "proxied" && matches!(v.as_str(), "true" | "1"));
    if proxied {
        return None;
    }
    let locations = st.peers.locate(vid).await.ok()?;
    let resp = relay_first(st, vid, &locations, method, uri, headers)
        .await
        .ok()?;
    resp.status().is_success().then_some(resp)
}

/// Relays the first answer from `locations` that is not a connection
/// failure or a server error (each is tried with `proxied=true`).
async fn relay_first(
    st: &HttpState,
    vid: VolumeId,
    locations: &[kelp_proto::master_pb::Location],
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let mut last = None;
    for loc in locations {
        let mut req = st
            .peers
            .http()
            .request(method.clone(), proxied_url(&st.peers, &loc.url, uri));
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
                req = req.header(name, value);
            }
        }
        match req.send().await {
            Ok(resp) if resp.status().is_server_error() => {
                errors.push(format!("{}: {}", loc.url, resp.status()));
                last = Some(resp);
            }
            Ok(resp) => return Ok(relay(resp, method)),
            Err(e) => errors.push(format!("{}: {e}", loc.url)),
        }
    }
    st.peers.forget(vid);
    match last {
        Some(resp) => Ok(relay(resp, method)),
        None => Err(ApiError::Upstream(format!(
            "proxying a read of volume {vid}: {}",
            errors.join("; ")
        ))),
    }
}

/// `uri` on `host`, marked `proxied=true` so it is never forwarded again.
fn proxied_url(peers: &crate::peers::Peers, host: &str, uri: &Uri) -> String {
    let mut url = peers.url(host, &format!("{}?", uri.path()));
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        url.push_str(q);
        url.push('&');
    }
    url.push_str("proxied=true");
    url
}

/// The upstream response as ours: status, end-to-end headers, body
/// streamed through.
fn relay(resp: reqwest::Response, method: &Method) -> Response {
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(resp.bytes_stream())
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
