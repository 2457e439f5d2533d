//! Vacuum: find volumes whose garbage ratio is above a threshold and
//! compact them on every replica (reference 1.7), automatically every
//! `vacuum_interval` and on demand through `/vol/vacuum`.
//!
//! For each volume, in id order, one at a time:
//!
//! 1. `VacuumVolumeCheck` on every replica. A replica that cannot answer
//!    skips the volume this round. If no replica's ratio exceeds the
//!    threshold, nothing more happens.
//! 2. The volume stops being offered to assigns (writes to file ids
//!    already handed out still work: Kelp's compaction never blocks them,
//!    but fewer writes keep the commit's catch-up short).
//! 3. `VacuumVolumeCompact` on every replica at once, following each
//!    progress stream to its end (a stream silent for two minutes counts
//!    as failed).
//! 4. If every replica compacted, `VacuumVolumeCommit` on every replica;
//!    otherwise `VacuumVolumeCleanup` on every replica. A replica whose
//!    commit fails is cleaned up too (a no-op or refused if it is past its
//!    point of no return; the volume server then finishes the switch when
//!    the volume is reopened).
//! 5. The volume is offered to assigns again.
//!
//! Each replica's compaction is crash-safe on its own (kelp-needle
//! `compaction.rs`), so a master that dies mid-way leaves at worst an
//! uncommitted `.cpd`/`.cpx` pair, which the next compaction or restart
//! removes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use kelp_core::VolumeId;
use kelp_proto::volume_server_pb::{
    VacuumVolumeCheckRequest, VacuumVolumeCleanupRequest, VacuumVolumeCommitRequest,
    VacuumVolumeCommitResponse, VacuumVolumeCompactRequest,
};
use rand::Rng;
use serde_json::{Value, json};

use crate::error::MasterError;
use crate::master::Master;
use crate::params::Params;
use crate::status;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Volume servers report compaction progress every second.
const COMPACT_SILENCE: Duration = Duration::from_secs(120);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(600);

/// What one vacuum run did.
#[derive(Debug, Default)]
pub struct VacuumSummary {
    pub checked: usize,
    pub compacted: Vec<VolumeId>,
    pub failed: Vec<(VolumeId, String)>,
}

/// The automatic vacuum: every `vacuum_interval` (plus up to a seventh of
/// it at random) until the master stops.
pub async fn run_loop(m: Arc<Master>) {
    let period = m.cfg.vacuum_interval;
    if period.is_zero() {
        return;
    }
    let stopped = m.stopped();
    tokio::pin!(stopped);
    loop {
        let jitter_ms = u64::try_from(period.as_millis() / 7).unwrap_or(u64::MAX);
        let wait = period + Duration::from_millis(rand::rng().random_range(0..=jitter_ms));
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let s = vacuum(&m, m.cfg.garbage_threshold, None, None).await;
        if !s.compacted.is_empty() || !s.failed.is_empty() {
            tracing::info!(checked = s.checked, compacted = ?s.compacted, failed = ?s.failed, "vacuum finished");
        }
    }
}

/// One vacuum run over every volume (or one collection, or one volume).
pub async fn vacuum(
    m: &Master,
    threshold: f64,
    collection: Option<&str>,
    only: Option<VolumeId>,
) -> VacuumSummary {
    let _guard = m.vacuum_lock.lock().await;
    let targets = m.topo.lock().vacuum_targets(collection, only);
    let mut summary = VacuumSummary::default();
    for (vid, replicas) in targets {
        if replicas.is_empty() {
            continue;
        }
        summary.checked += 1;
        match vacuum_volume(m, vid, &replicas, threshold).await {
            Ok(true) => summary.compacted.push(vid),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(volume = vid, error = %e, "vacuum failed");
                summary.failed.push((vid, e));
            }
        }
    }
    summary
}

/// Returns whether the volume was compacted.
async fn vacuum_volume(
    m: &Master,
    vid: VolumeId,
    replicas: &[(String, String)],
    threshold: f64,
) -> Result<bool, String> {
    let checks =
        futures::future::join_all(replicas.iter().map(|(_, addr)| check(m, addr, vid))).await;
    let mut worst = 0.0f64;
    for ((id, _), r) in replicas.iter().zip(checks) {
        worst = worst.max(r.map_err(|e| format!("check on {id}: {e}"))?);
    }
    if worst <= threshold {
        return Ok(false);
    }
    tracing::info!(
        volume = vid,
        garbage_ratio = worst,
        threshold,
        "vacuuming volume"
    );
    m.topo.lock().set_vacuuming(vid, true);
    let res = compact_and_commit(m, vid, replicas).await;
    m.topo.lock().set_vacuuming(vid, false);
    res.map(|()| true)
}

async fn compact_and_commit(
    m: &Master,
    vid: VolumeId,
    replicas: &[(String, String)],
) -> Result<(), String> {
    let compacted =
        futures::future::join_all(replicas.iter().map(|(_, addr)| compact(m, addr, vid))).await;
    let errors: Vec<String> = replicas
        .iter()
        .zip(&compacted)
        .filter_map(|((id, _), r)| r.as_ref().err().map(|e| format!("compact on {id}: {e}")))
        .collect();
    if !errors.is_empty() {
        cleanup_all(m, vid, replicas.iter()).await;
        return Err(errors.join("; "));
    }
    let committed =
        futures::future::join_all(replicas.iter().map(|(_, addr)| commit(m, addr, vid))).await;
    let mut errors = Vec::new();
    let mut failed = Vec::new();
    for (r, res) in replicas.iter().zip(committed) {
        match res {
            Ok(resp) => m.topo.lock().note_compacted(vid, &r.0, resp.volume_size),
            Err(e) => {
                errors.push(format!("commit on {}: {e}", r.0));
                failed.push(r);
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    cleanup_all(m, vid, failed.into_iter()).await;
    Err(errors.join("; "))
}

async fn cleanup_all<'a>(
    m: &Master,
    vid: VolumeId,
    replicas: impl Iterator<Item = &'a (String, String)>,
) {
    let calls = replicas.map(|(id, addr)| async move { (id, cleanup(m, addr, vid).await) });
    for (id, r) in futures::future::join_all(calls).await {
        if let Err(e) = r {
            tracing::warn!(volume = vid, server = %id, error = %e, "vacuum cleanup failed");
        }
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn check(m: &Master, addr: &str, volume_id: VolumeId) -> Result<f64, String> {
    let mut c = m.clients.client(addr)?;
    match tokio::time::timeout(
        CALL_TIMEOUT,
        c.vacuum_volume_check(VacuumVolumeCheckRequest { volume_id }),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r.into_inner().garbage_ratio),
        Ok(Err(s)) => Err(status_text(&s)),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// Follows the progress stream to its end; returns the bytes processed.
async fn compact(m: &Master, addr: &str, volume_id: VolumeId) -> Result<i64, String> {
    let mut c = m.clients.client(addr)?;
    let req = VacuumVolumeCompactRequest {
        volume_id,
        preallocate: 0,
    };
    let mut stream = match tokio::time::timeout(CALL_TIMEOUT, c.vacuum_volume_compact(req)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Err(status_text(&s)),
        Err(_) => return Err(format!("no answer within {CALL_TIMEOUT:?}")),
    };
    let mut processed = 0;
    loop {
        match tokio::time::timeout(COMPACT_SILENCE, stream.message()).await {
            Ok(Ok(Some(p))) => processed = p.processed_bytes,
            Ok(Ok(None)) => return Ok(processed),
            Ok(Err(s)) => return Err(status_text(&s)),
            Err(_) => return Err(format!("no progress for {COMPACT_SILENCE:?}")),
        }
    }
}

async fn commit(
    m: &Master,
    addr: &str,
    volume_id: VolumeId,
) -> Result<VacuumVolumeCommitResponse, String> {
    let mut c = m.clients.client(addr)?;
    match tokio::time::timeout(
        COMMIT_TIMEOUT,
        c.vacuum_volume_commit(VacuumVolumeCommitRequest { volume_id }),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(status_text(&s)),
        Err(_) => Err(format!("no answer within {COMMIT_TIMEOUT:?}")),
    }
}

async fn cleanup(m: &Master, addr: &str, volume_id: VolumeId) -> Result<(), String> {
    let mut c = m.clients.client(addr)?;
    match tokio::time::timeout(
        CALL_TIMEOUT,
        c.vacuum_volume_cleanup(VacuumVolumeCleanupRequest { volume_id }),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(status_text(&s)),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// `/vol/vacuum?garbageThreshold=&collection=&volumeId=`: runs a vacuum
/// now and answers, like SeaweedFS, with the `/dir/status` body (plus a
/// `Vacuum` object saying what was compacted or failed).
pub async fn http(State(m): State<Arc<Master>>, p: Params) -> Result<Json<Value>, MasterError> {
    let threshold = p
        .number::<f64>("garbageThreshold")?
        .unwrap_or(m.cfg.garbage_threshold);
    if !(0.0..=1.0e9).contains(&threshold) {
        return Err(MasterError::BadRequest(format!(
            "garbageThreshold={threshold} is not a ratio"
        )));
    }
    let collection = Some(p.get("collection")).filter(|c| !c.is_empty());
    let only = p.number::<VolumeId>("volumeId")?;
    let s = vacuum(&m, threshold, collection, only).await;
    tracing::info!(threshold, checked = s.checked, compacted = ?s.compacted, failed = ?s.failed, "vacuum requested over HTTP finished");
    let mut body = status::dir_status(&m.topo.lock());
    if let Value::Object(o) = &mut body {
        let failed: Vec<Value> = s
            .failed
            .iter()
            .map(|(vid, e)| json!({"VolumeId": vid, "Error": e}))
            .collect();
        o.insert(
            "Vacuum".to_string(),
            json!({"Threshold": threshold, "Checked": s.checked, "Compacted": s.compacted, "Failed": failed}),
        );
    }
    Ok(Json(body))
}
