//! `/status`, `/healthz` and `/metrics`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::HttpState;
use crate::error::ApiError;
use crate::store::blocking;

#[derive(Serialize)]
struct DiskStatus {
    dir: String,
    all: u64,
    used: u64,
    free: u64,
    percent_free: f64,
    percent_used: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeStatus {
    id: u32,
    size: u64,
    collection: String,
    file_count: u64,
    delete_count: u64,
    deleted_byte_count: u64,
    read_only: bool,
    replica_placement: ReplicaPlacementJson,
    ttl: TtlJson,
    version: u8,
    compact_revision: u16,
    modified_at_second: u64,
}

#[derive(Serialize)]
struct ReplicaPlacementJson {
    node: u8,
    rack: u8,
    dc: u8,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TtlJson {
    count: u8,
    unit: u8,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusBody {
    version: String,
    disk_statuses: Vec<DiskStatus>,
    volumes: Vec<VolumeStatus>,
    scrub: crate::scrub::StatsJson,
}

pub async fn status(State(st): State<HttpState>) -> Response {
    let store = st.store.clone();
    let scrub = st.scrub.json();
    let body = blocking(move || {
        let disk_statuses = store.dirs().iter().filter_map(|d| disk_status(d)).collect();
        let volumes = store
            .stats()
            .into_iter()
            .map(|s| VolumeStatus {
                id: s.id,
                // SeaweedFS reports the content size from the index here.
                size: s.content_bytes,
                collection: s.collection,
                file_count: s.file_count,
                delete_count: s.delete_count,
                deleted_byte_count: s.deleted_byte_count,
                read_only: s.read_only,
                replica_placement: ReplicaPlacementJson {
                    node: s.replica_placement.same_rack,
                    rack: s.replica_placement.diff_rack,
                    dc: s.replica_placement.diff_data_center,
                },
                ttl: TtlJson {
                    count: s.ttl.count,
                    unit: s.ttl.unit as u8,
                },
                version: s.version,
                compact_revision: s.compaction_revision,
                modified_at_second: s.modified_at_second,
            })
            .collect();
        StatusBody {
            version: crate::version(),
            disk_statuses,
            volumes,
            scrub,
        }
    })
    .await;
    match body {
        Ok(b) => json_response(StatusCode::OK, &b),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn healthz(State(st): State<HttpState>) -> Response {
    if st.health.healthy() {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no heartbeat to a master").into_response()
    }
}

pub async fn metrics() -> Response {
    let text = kelp_core::telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(b) => (status, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Disk usage of the filesystem holding `dir`, from statvfs.
fn disk_status(dir: &Path) -> Option<DiskStatus> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    let all = s.f_blocks as u64 * frsize;
    let free = s.f_bavail as u64 * frsize;
    let used = all.saturating_sub(s.f_bfree as u64 * frsize);
    let pct = |x: u64| {
        if all == 0 {
            0.0
        } else {
            x as f64 * 100.0 / all as f64
        }
    };
    Some(DiskStatus {
        dir: dir.display().to_string(),
        all,
        used,
        free,
        percent_free: pct(free),
        percent_used: pct(used),
    })
}
