//! The upstairs control API (HTTP), for operators and tests:
//!
//! - `GET /status`: `{"modes": ["active", "offline", "active"],
//!   "flushed": [N, N, N], "jobs": N, "fenced": false, "next_flush": N}`
//!   (200; `flushed` is per downstairs the job id of the newest flush it
//!   acknowledged), or 503 with the reason once the upstairs has stopped;
//! - `POST /replace?old=HOST:PORT&new=HOST:PORT`: puts the downstairs at
//!   `new` in the place of the failed one at `old`, live-repaired while IO
//!   goes on (202), or 409 with the reason (the one at `old` is active,
//!   `old` is unknown, `new` is already one of the three);
//! - `POST /snapshots` with `{"name": "NAME"}`: takes a snapshot holding
//!   every write acknowledged before the request, recorded by all three
//!   downstairs: 200 `{"name", "guid" (32 hex digits), "flush", "created"
//!   (unix seconds)}`; 400 for a bad name, 409 for a name already taken,
//!   503 when not every downstairs is active or one failed it (the error
//!   names which; the ones that took it keep it);
//! - `GET /snapshots`: 200 `[{"name", "guid", "flush", "created"}, ...]`
//!   by ascending flush, as an active downstairs holds them;
//! - `DELETE /snapshots/NAME`: deletes it on all three downstairs (200),
//!   404 if there is none of that name, 503 as for POST.
//!
//! Errors of the snapshot routes are `{"error": "..."}`. `client` calls
//! them. The daemon (`kelp upstairs --control ADDR`) serves
//! `router(volume)`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::catalog::Snapshot;
use crate::error::BlockError;
use crate::upstairs::Volume;

#[derive(serde::Deserialize)]
struct Replace {
    old: String,
    new: String,
}

/// A snapshot as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// 32 lowercase hex digits.
    pub guid: String,
    pub flush: u64,
    /// Unix seconds.
    pub created: u64,
}

impl From<&Snapshot> for SnapshotInfo {
    fn from(s: &Snapshot) -> Self {
        SnapshotInfo {
            name: s.name.clone(),
            guid: format!("{:032x}", s.guid),
            flush: s.flush,
            created: s.created,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CreateSnapshot {
    name: String,
}

/// The control API of `volume`'s upstairs.
pub fn router(volume: Volume) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/replace", post(replace))
        .route("/snapshots", post(create_snapshot).get(list_snapshots))
        .route("/snapshots/{name}", delete(delete_snapshot))
        .with_state(volume)
}

async fn status(State(v): State<Volume>) -> (StatusCode, String) {
    match v.status().await {
        Ok(s) => (
            StatusCode::OK,
            serde_json::json!({
                "modes": s.modes,
                "flushed": s.flushed,
                "jobs": s.jobs,
                "fenced": s.fenced,
                "next_flush": s.next_flush,
            })
            .to_string(),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn replace(State(v): State<Volume>, Query(q): Query<Replace>) -> (StatusCode, String) {
    match v.replace(&q.old, &q.new).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            format!("{} replaces {}; live repair started\n", q.new, q.old),
        ),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")),
    }
}

type JsonReply = (StatusCode, Json<serde_json::Value>);

/// The HTTP status of a snapshot operation's error.
fn error_reply(e: &BlockError) -> JsonReply {
    let code = match e {
        BlockError::BadOptions(_) | BlockError::Invalid(_) => StatusCode::BAD_REQUEST,
        BlockError::SnapshotExists(_) | BlockError::SnapshotConflict(_) => StatusCode::CONFLICT,
        BlockError::NoSuchSnapshot(_) => StatusCode::NOT_FOUND,
        BlockError::NoQuorum(_) | BlockError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        e if e.is_fenced() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(serde_json::json!({ "error": e.to_string() })))
}

async fn create_snapshot(
    State(v): State<Volume>,
    body: Result<Json<CreateSnapshot>, axum::extract::rejection::JsonRejection>,
) -> JsonReply {
    let Ok(Json(req)) = body else {
        let e = BlockError::Invalid("the body must be {\"name\": \"...\"}".into());
        return error_reply(&e);
    };
    match v.create_snapshot(&req.name).await {
        Ok(s) => (
            StatusCode::OK,
            Json(serde_json::json!(SnapshotInfo::from(&s))),
        ),
        Err(e) => error_reply(&e),
    }
}

async fn list_snapshots(State(v): State<Volume>) -> JsonReply {
    match v.snapshots().await {
        Ok(list) => {
            let list: Vec<SnapshotInfo> = list.iter().map(SnapshotInfo::from).collect();
            (StatusCode::OK, Json(serde_json::json!(list)))
        }
        Err(e) => error_reply(&e),
    }
}

async fn delete_snapshot(State(v): State<Volume>, Path(name): Path<String>) -> JsonReply {
    match v.delete_snapshot(&name).await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "deleted": name }))),
        Err(e) => error_reply(&e),
    }
}

/// Calls the snapshot routes of an upstairs' control API at `addr`
/// (`HOST:PORT`, or a URL starting with `http://`). Errors come back as
/// the `BlockError` the upstairs answered with: `Invalid` (400),
/// `SnapshotExists` (409), `NoSuchSnapshot` (404), `NoQuorum` (503, e.g.
/// a downstairs is not active; the message names it), else `Remote` with
/// the HTTP status as its code; a connection failure is `Io`.
pub mod client {
    use super::{CreateSnapshot, SnapshotInfo};
    use crate::error::{BlockError, Result};

    fn url(addr: &str, path: &str) -> String {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        format!("{base}{path}")
    }

    fn http() -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| BlockError::protocol(format!("HTTP client: {e}")))
    }

    fn transport(addr: &str, e: reqwest::Error) -> BlockError {
        BlockError::io(
            format!("control API at {addr}"),
            std::io::Error::other(e.to_string()),
        )
    }

    /// Turns an answer into `T`, or into the error it reports.
    async fn answer<T: serde::de::DeserializeOwned>(addr: &str, r: reqwest::Response) -> Result<T> {
        let status = r.status();
        let body = r.bytes().await.map_err(|e| transport(addr, e))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                BlockError::protocol(format!("control API at {addr} answered badly: {e}"))
            });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(match status.as_u16() {
            400 => BlockError::Invalid(message),
            404 => BlockError::NoSuchSnapshot(message),
            409 => BlockError::SnapshotExists(message),
            503 => BlockError::NoQuorum(message),
            code => BlockError::Remote { code, message },
        })
    }

    /// Takes snapshot `name` of the running volume.
    pub async fn create_snapshot(addr: &str, name: &str) -> Result<SnapshotInfo> {
        let r = http()?
            .post(url(addr, "/snapshots"))
            .json(&CreateSnapshot {
                name: name.to_string(),
            })
            .send()
            .await
            .map_err(|e| transport(addr, e))?;
        answer(addr, r).await
    }

    /// The volume's snapshots, by ascending flush.
    pub async fn list_snapshots(addr: &str) -> Result<Vec<SnapshotInfo>> {
        let r = http()?
            .get(url(addr, "/snapshots"))
            .send()
            .await
            .map_err(|e| transport(addr, e))?;
        answer(addr, r).await
    }

    /// Deletes snapshot `name` on every downstairs.
    pub async fn delete_snapshot(addr: &str, name: &str) -> Result<()> {
        let mut u = reqwest::Url::parse(&url(addr, "/snapshots/"))
            .map_err(|e| BlockError::BadOptions(format!("control address {addr}: {e}")))?;
        u.path_segments_mut()
            .map_err(|()| BlockError::BadOptions(format!("control address {addr}")))?
            .pop_if_empty()
            .push(name);
        let r = http()?
            .delete(u)
            .send()
            .await
            .map_err(|e| transport(addr, e))?;
        answer::<serde_json::Value>(addr, r).await.map(drop)
    }
}
