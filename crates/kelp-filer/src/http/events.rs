//! `GET /__kelp/events`: the change log as JSON lines, one event per line
//! (`{"seq","ts_ns","old","new"}`), for everything at or below `prefix`.
//! Start after sequence `after`, or at time `since_ns`; with
//! `follow=true` the answer stays open and streams new events as they
//! are committed (a subscriber that falls behind reads them from the
//! store, so none is missed).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use super::{Params, error, json};
use crate::error::FilerError;
use crate::filer::Filer;
use crate::path::FullPath;

const PAGE: usize = 1000;

pub async fn stream(State(filer): State<Filer>, Query(p): Query<Params>) -> Response {
    match start(&filer, &p).await {
        Ok(r) => r,
        Err(e) => error(e),
    }
}

async fn start(filer: &Filer, p: &Params) -> Result<Response, FilerError> {
    let prefix = FullPath::parse(p.get("prefix").map(String::as_str).unwrap_or("/"))?;
    let num = |k: &str| -> Result<Option<i64>, FilerError> {
        p.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| FilerError::BadRequest(format!("{k} {v:?} is not a number")))
            })
            .transpose()
    };
    let after = match (num("after")?, num("since_ns")?) {
        (Some(a), _) => a.max(0) as u64,
        (None, Some(ts)) => filer.seq_at(ts).await?,
        (None, None) => 0,
    };
    let follow = p.get("follow").is_some_and(|v| v == "true");
    let filer = filer.clone();
    let watch = filer.watch();
    let s = futures::stream::unfold(
        (filer, watch, after, false),
        move |(filer, mut watch, after, done)| {
            let prefix = prefix.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    // Seen before reading, so a commit in between wakes us.
                    watch.borrow_and_update();
                    let page = match filer.events(after, PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            let line =
                                serde_json::json!({ "error": e.to_string() }).to_string() + "\n";
                            return Some((
                                Ok::<_, std::io::Error>(Bytes::from(line)),
                                (filer, watch, after, true),
                            ));
                        }
                    };
                    if let Some(last) = page.last().map(|e| e.seq) {
                        let mut text = String::new();
                        for ev in page.iter().filter(|e| e.is_under(&prefix)) {
                            text.push_str(&json::event(ev).to_string());
                            text.push('\n');
                        }
                        let end = !follow && page.len() < PAGE;
                        if !text.is_empty() || end {
                            return Some((Ok(Bytes::from(text)), (filer, watch, last, end)));
                        }
                        return Some((Ok(Bytes::new()), (filer, watch, last, false)));
                    }
                    if !follow {
                        return None;
                    }
                    // Woken by a commit here, or every second for other filers
                    // sharing the store.
                    let _ = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
                }
            }
        },
    )
    .filter(|r| std::future::ready(!matches!(r, Ok(b) if b.is_empty())));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(s),
    )
        .into_response())
}
