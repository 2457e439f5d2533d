//! Replicated writes and deletes: the volume server that receives a write
//! or delete for a volume with more than one copy sends it to every other
//! replica (`type=replicate`) at the same time as it applies it locally.
//!
//! The acknowledgement rule: the client gets success only when **every**
//! replica the volume's placement asks for has the change durable (each
//! replica answers only after its own fdatasync). Consequences:
//!
//! - A volume with fewer live replicas than its placement takes no writes:
//!   the master stops assigning it (it counts locations), and a write sent
//!   anyway is refused here before anything is written.
//! - If a replica fails mid-write, the client gets an error (5xx), never a
//!   success that is not true. The replicas may now differ on that one
//!   needle, so this server marks the volume read-only (the next heartbeat
//!   tells the master, which stops assigning it and grows another) and logs
//!   why. An unacknowledged write may thus exist on some replicas only;
//!   a client that retries gets a fresh file id on a healthy volume.
//!
//! A replica request carries the needle as a raw body with its metadata in
//! headers and query parameters, so the copy is byte-identical (same data,
//! name, mime, pairs, last-modified, TTL, flags) and SeaweedFS volume
//! servers accept it too.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures::future::join_all;
use kelp_core::VolumeId;
use kelp_needle::Needle;
use kelp_proto::master_pb::Location;

use crate::error::ApiError;
use crate::http::HttpState;

/// Base bound on one replica request ...
const REPLICA_TIMEOUT: Duration = Duration::from_secs(10);
/// ... plus one second per this many bytes of body.
const REPLICA_MIN_RATE: u64 = 4 << 20;

/// What to send to the other replicas.
pub enum Change<'a> {
    Write(&'a Needle),
    Delete,
}

/// The other replicas of `vid`, or an error when fewer are live than the
/// placement needs. `None` when the volume has a single copy.
pub async fn other_replicas(
    st: &HttpState,
    vid: VolumeId,
) -> Result<Option<Vec<Location>>, ApiError> {
    let copies = st
        .store
        .volume(vid)?
        .superblock()
        .replica_placement
        .copy_count();
    if copies <= 1 {
        return Ok(None);
    }
    // Refuse before sending anything anywhere.
    if st.store.is_diverged(vid) {
        return Err(ApiError::ReadOnly(vid));
    }
    let want = copies - 1;
    let mut locations = st.peers.locate(vid).await.unwrap_or_default();
    if locations.len() != want {
        // The cached answer may predate a change: ask once more.
        st.peers.forget(vid);
        locations = st.peers.locate(vid).await.unwrap_or_default();
    }
    if locations.len() != want {
        return Err(ApiError::Unavailable(format!(
            "volume {vid} has {} of its {copies} replicas live; refusing the change",
            locations.len() + 1
        )));
    }
    Ok(Some(locations))
}

/// How a fan-out went.
pub struct Outcome {
    /// Replicas that answered success.
    pub succeeded: usize,
    /// One line per replica that did not.
    pub failures: Vec<String>,
}

/// Sends `change` to `path` (the client's request path, so a write token's
/// file id claim still matches) on every replica in `to` concurrently.
/// `token` is the client's write JWT, passed on so replicas check it too.
pub async fn send(
    st: &HttpState,
    vid: VolumeId,
    path: &str,
    change: Change<'_>,
    to: &[Location],
    token: Option<&str>,
) -> Outcome {
    let calls = to.iter().map(|loc| send_one(st, path, &change, loc, token));
    let results = join_all(calls).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !failures.is_empty() {
        st.peers.forget(vid);
    }
    Outcome {
        succeeded: to.len() - failures.len(),
        failures,
    }
}

async fn send_one(
    st: &HttpState,
    path: &str,
    change: &Change<'_>,
    loc: &Location,
    token: Option<&str>,
) -> Result<(), String> {
    let url = st.peers.url(&loc.url, path);
    let mut req = match change {
        Change::Write(n) => {
            let mut query: Vec<(&str, String)> = vec![
                ("type", "replicate".to_string()),
                ("ts", n.last_modified.to_string()),
            ];
            if !n.ttl.is_empty() {
                query.push(("ttl", n.ttl.to_string()));
            }
            if n.chunk_manifest {
                query.push(("cm", "true".to_string()));
            }
            st.peers
                .http()
                .put(&url)
                .query(&query)
                .headers(needle_headers(n))
                .body(n.data.clone())
        }
        Change::Delete => st.peers.http().delete(&url).query(&[("type", "replicate")]),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    // A replica cut off by the network must not hold the client for the
    // peer client's long read timeout: bound the whole request.
    let len = match change {
        Change::Write(n) => n.data.len() as u64,
        Change::Delete => 0,
    };
    req = req.timeout(REPLICA_TIMEOUT + Duration::from_secs(len / REPLICA_MIN_RATE));
    let resp = req.send().await.map_err(|e| format!("{}: {e}", loc.url))?;
    let status = resp.status();
    let ok = status.is_success()
        // Deleting what a replica no longer has leaves it as wanted.
        || (matches!(change, Change::Delete) && status == StatusCode::NOT_FOUND);
    if ok {
        Ok(())
    } else {
        let body = resp.text().await.unwrap_or_default();
        Err(format!("{} answered {status}: {}", loc.url, body.trim()))
    }
}

/// The needle's metadata as the headers a raw upload is parsed from.
fn needle_headers(n: &Needle) -> HeaderMap {
    let mut h = HeaderMap::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Ok(v) = HeaderValue::from_str(&text(&n.mime))
        && !n.mime.is_empty()
    {
        h.insert(header::CONTENT_TYPE, v);
    }
    if !n.name.is_empty() {
        let name = text(&n.name).replace(['"', '\\'], "_");
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    if n.compressed {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if let Ok(serde_json::Value::Object(pairs)) = serde_json::from_slice(&n.pairs) {
        for (k, v) in pairs {
            if let (Ok(name), Some(Ok(value))) = (
                axum::http::HeaderName::try_from(format!("seaweed-{k}")),
                v.as_str().map(HeaderValue::from_str),
            ) {
                h.insert(name, value);
            }
        }
    }
    h
}

/// After a failed replication: the replicas may differ, so the volume stops
/// taking writes (and is reported read-only to the master) until
/// anti-entropy finds every replica equal again.
pub fn mark_diverged(st: &HttpState, vid: VolumeId, why: &str) {
    if st.store.mark_diverged(vid) {
        tracing::error!(
            volume = vid,
            reason = why,
            "replication failed; volume is read-only until anti-entropy repairs its replicas"
        );
    }
}
