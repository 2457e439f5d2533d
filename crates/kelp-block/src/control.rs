//! The upstairs control API (HTTP), for operators and tests:
//!
//! - `GET /status`: `{"modes": ["active", "offline", "active"],
//!   "flushed": [N, N, N], "jobs": N, "fenced": false, "next_flush": N}`
//!   (200; `flushed` is per downstairs the job id of the newest flush it
//!   acknowledged), or 503 with the reason once the upstairs has stopped;
//! - `POST /replace?old=HOST:PORT&new=HOST:PORT`: puts the downstairs at
//!   `new` in the place of the failed one at `old`, live-repaired while IO
//!   goes on (202), or 409 with the reason (the one at `old` is active,
//!   `old` is unknown, `new` is already one of the three).
//!
//! The daemon (`kelp upstairs --control ADDR`) serves `router(volume)`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::upstairs::Volume;

#[derive(serde::Deserialize)]
struct Replace {
    old: String,
    new: String,
}

/// The control API of `volume`'s upstairs.
pub fn router(volume: Volume) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/replace", post(replace))
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
