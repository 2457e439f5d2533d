//! Restoring placement after a server is lost: a volume with fewer live
//! copies than its placement asks for (its server's heartbeat stream
//! ended, or it timed out) for longer than `replication_grace` gets a new
//! copy on another server that keeps the placement, chosen at random among
//! those with a free slot.
//!
//! The new server is asked to fill the copy from the surviving ones before
//! serving it (`POST /admin/replica/fill` on the volume server; the copy
//! runs at the volume server's background copy budget). Only then does its
//! heartbeat announce the volume, so the master never counts or routes
//! reads to an empty copy. An under-replicated volume takes no writes
//! meanwhile (assigns need every copy), so the copy is consistent.
//!
//! One volume is re-replicated at a time, which bounds the extra load on
//! the survivors; a request not answered by an announcement within
//! `FILL_TIMEOUT` is retried, possibly elsewhere.
//!
//! When the lost server comes back, its copies of re-replicated volumes are
//! stale (writes resumed on the restored set) and one too many: the master
//! deletes the copies on servers outside the set it restored. (It only
//! knows that set while it runs; after a master restart an over-replicated
//! volume is left as it is and logged.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_core::VolumeId;

use crate::master::Master;
use crate::placement;

const CHECK_EVERY: Duration = Duration::from_secs(2);
const CHECK_WHILE_REPAIRING: Duration = Duration::from_millis(200);
const FILL_TIMEOUT: Duration = Duration::from_secs(600);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run_loop(m: Arc<Master>) {
    let grace = m.cfg.replication_grace;
    if grace.is_zero() {
        return;
    }
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let stopped = m.stopped();
    tokio::pin!(stopped);
    let mut under_since: HashMap<VolumeId, Instant> = HashMap::new();
    // The volume being filled, where, and since when.
    // (volume, new holder, asked at, the holders placement is restored to)
    let mut in_flight: Option<(VolumeId, String, Instant, Vec<String>)> = None;
    // Holders of each volume when its placement was restored here.
    let mut restored: HashMap<VolumeId, Vec<String>> = HashMap::new();
    let mut warned = std::collections::HashSet::new();
    loop {
        // Poll fast while repairing, so each volume's fill is noticed (by
        // its heartbeat delta) and the next one starts without a full tick.
        let wait = if in_flight.is_some() || !under_since.is_empty() {
            CHECK_WHILE_REPAIRING
        } else {
            CHECK_EVERY
        };
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(wait) => {}
        }
        remove_stale_copies(&m, &mut restored, &mut warned).await;
        let under = m.topo.lock().under_replicated();
        let now = Instant::now();
        under_since.retain(|vid, _| under.iter().any(|u| u.vid == *vid));
        if let Some((vid, node, at, keep)) = &in_flight {
            let done = !under.iter().any(|u| u.vid == *vid);
            if done {
                restored.insert(*vid, keep.clone());
                tracing::info!(
                    volume = vid,
                    node,
                    elapsed_ms = at.elapsed().as_millis() as u64,
                    "placement restored"
                );
                in_flight = None;
            } else if at.elapsed() < FILL_TIMEOUT {
                continue;
            } else {
                tracing::warn!(
                    volume = vid,
                    node,
                    "new copy not announced in time; retrying"
                );
                in_flight = None;
            }
        }
        for u in &under {
            let since = *under_since.entry(u.vid).or_insert(now);
            if now.duration_since(since) < grace {
                continue;
            }
            let target = {
                let topo = m.topo.lock();
                let candidates = topo.candidates(&Default::default());
                placement::pick_additional(
                    &candidates,
                    u.layout.replication,
                    &u.spots,
                    &u.holders,
                    &mut rand::rng(),
                )
            };
            let Some(target) = target else {
                tracing::warn!(volume = u.vid, replication = %u.layout.replication,
                    "volume is under-replicated and no server can take a copy");
                continue;
            };
            let url = format!("http://{target}/admin/replica/fill");
            let query = [
                ("volume", u.vid.to_string()),
                ("collection", u.layout.collection.clone()),
                ("replication", u.layout.replication.to_string()),
                ("ttl", u.layout.ttl.to_string()),
            ];
            match http.post(&url).query(&query).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(volume = u.vid, node = target, from = ?u.holders,
                        "re-replicating an under-replicated volume");
                    let mut keep = u.holders.clone();
                    keep.push(target.clone());
                    in_flight = Some((u.vid, target, Instant::now(), keep));
                    break;
                }
                Ok(r) => tracing::warn!(volume = u.vid, node = target, status = %r.status(),
                    "server refused to take a copy"),
                Err(e) => tracing::warn!(volume = u.vid, node = target, error = %e,
                    "asking a server to take a copy failed"),
            }
        }
    }
}

/// Deletes copies of re-replicated volumes held outside the restored set.
async fn remove_stale_copies(
    m: &Master,
    restored: &mut HashMap<VolumeId, Vec<String>>,
    warned: &mut std::collections::HashSet<VolumeId>,
) {
    let over = m.topo.lock().over_replicated();
    for (vid, holders) in over {
        let Some(keep) = restored.get(&vid) else {
            if !warned.insert(vid) {
                continue;
            }
            tracing::warn!(volume = vid, holders = ?holders.iter().map(|h| &h.0).collect::<Vec<_>>(),
                "volume has more copies than its placement; not knowing which is stale, leaving it");
            continue;
        };
        for (node, grpc) in holders.iter().filter(|(node, _)| !keep.contains(node)) {
            match m.clients.delete_volume(grpc, vid, false).await {
                Ok(()) => tracing::info!(
                    volume = vid,
                    node,
                    "removed a stale copy left by a returning server"
                ),
                Err(e) => {
                    tracing::warn!(volume = vid, node, error = %e, "removing a stale copy failed")
                }
            }
        }
    }
    restored.retain(|vid, _| m.topo.lock().lookup(*vid).is_some());
}
