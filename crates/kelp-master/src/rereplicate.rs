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
//! deletes the copies on servers outside the set it restored. A master that
//! restarted meanwhile does not know that set: it waits for anti-entropy to
//! have run, then removes the stalest copies (see `remove_stale_copies`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_core::VolumeId;

use crate::master::Master;
use crate::placement;
use crate::topology::CopyInfo;

const CHECK_EVERY: Duration = Duration::from_secs(2);
const CHECK_WHILE_REPAIRING: Duration = Duration::from_millis(200);
const FILL_TIMEOUT: Duration = Duration::from_secs(600);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an extra copy this master did not make is left for
/// anti-entropy before the stalest copy is removed.
const UNKNOWN_EXTRA_GRACE: Duration = Duration::from_secs(120);

pub async fn run_loop(m: Arc<Master>) {
    let grace = m.cfg.replication_grace;
    if grace.is_zero() {
        return;
    }
    let http = match kelp_net::client::http_builder(&m.security)
        .map_err(|e| e.to_string())
        .and_then(|b| b.timeout(CALL_TIMEOUT).build().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "re-replication is off: no HTTP client");
            return;
        }
    };
    let scheme = kelp_net::client::http_scheme(&m.security);
    let stopped = m.stopped();
    tokio::pin!(stopped);
    let mut under_since: HashMap<VolumeId, Instant> = HashMap::new();
    // The volume being filled, where, and since when.
    // (volume, new holder, asked at, the holders placement is restored to)
    let mut in_flight: Option<(VolumeId, String, Instant, Vec<String>)> = None;
    // Holders of each volume when its placement was restored here.
    let mut restored: HashMap<VolumeId, Vec<String>> = HashMap::new();
    let mut over_since: HashMap<VolumeId, Instant> = HashMap::new();
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
        remove_stale_copies(&m, &mut restored, &mut over_since).await;
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
            let url = format!("{scheme}://{target}/admin/replica/fill");
            let query = [
                ("volume", u.vid.to_string()),
                ("collection", u.layout.collection.clone()),
                ("replication", u.layout.replication.to_string()),
                ("ttl", u.layout.ttl.to_string()),
            ];
            let req = kelp_net::client::with_peer(http.post(&url), &m.security);
            match req.query(&query).send().await {
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

/// Deletes copies a volume has beyond its placement. After a
/// re-replication by this master, the copies outside the set it restored
/// (a returning server's, which missed the writes since). Otherwise (this
/// master restarted meanwhile) it waits `UNKNOWN_EXTRA_GRACE`, so
/// anti-entropy brings every copy up to date first, then deletes the
/// stalest copies (oldest last write, then smallest) whose removal leaves
/// copies that fit the placement.
async fn remove_stale_copies(
    m: &Master,
    restored: &mut HashMap<VolumeId, Vec<String>>,
    over_since: &mut HashMap<VolumeId, Instant>,
) {
    let over = m.topo.lock().over_replicated();
    over_since.retain(|vid, _| over.iter().any(|o| o.vid == *vid));
    for o in over {
        let want = o.replication.copy_count();
        let doomed: Vec<&CopyInfo> = match restored.get(&o.vid) {
            Some(keep) => o
                .copies
                .iter()
                .filter(|c| !keep.contains(&c.node))
                .collect(),
            None => {
                let since = *over_since.entry(o.vid).or_insert_with(|| {
                    tracing::warn!(volume = o.vid, copies = o.copies.len(), want,
                        "volume has more copies than its placement; removing the stalest once anti-entropy has run");
                    Instant::now()
                });
                if since.elapsed() < UNKNOWN_EXTRA_GRACE {
                    continue;
                }
                stalest(&o.copies, o.replication, o.copies.len() - want)
            }
        };
        for c in doomed {
            match m.clients.delete_volume(&c.grpc, o.vid, false).await {
                Ok(()) => {
                    tracing::info!(volume = o.vid, node = c.node, "removed a stale extra copy")
                }
                Err(e) => {
                    tracing::warn!(volume = o.vid, node = c.node, error = %e, "removing a stale copy failed")
                }
            }
        }
    }
    restored.retain(|vid, _| m.topo.lock().lookup(*vid).is_some());
}

/// `n` copies to delete such that the rest fit `rp`, as stale as possible
/// (copies ranked by last write, then size; the set with the smallest sum
/// of ranks wins). Empty when no such set exists.
fn stalest(copies: &[CopyInfo], rp: kelp_core::ReplicaPlacement, n: usize) -> Vec<&CopyInfo> {
    let mut order: Vec<&CopyInfo> = copies.iter().collect();
    order.sort_by_key(|c| (c.modified_at_second, c.size));
    let mut best: Option<(usize, Vec<usize>)> = None;
    // Few copies: try every way of removing `n` of them.
    for mask in 0u32..(1 << order.len()) {
        if mask.count_ones() as usize != n {
            continue;
        }
        let kept: Vec<placement::Spot> = (0..order.len())
            .filter(|i| mask & (1 << i) == 0)
            .map(|i| order[i].spot.clone())
            .collect();
        if !placement::fits(rp, &kept) {
            continue;
        }
        let removed: Vec<usize> = (0..order.len()).filter(|i| mask & (1 << i) != 0).collect();
        let score = removed.iter().sum();
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, removed));
        }
    }
    best.map(|(_, r)| r.into_iter().map(|i| order[i]).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(node: &str, rack: &str, modified: i64, size: u64) -> CopyInfo {
        CopyInfo {
            node: node.into(),
            grpc: String::new(),
            spot: placement::Spot {
                data_center: "d".into(),
                rack: rack.into(),
            },
            modified_at_second: modified,
            size,
        }
    }

    fn nodes(copies: Vec<&CopyInfo>) -> Vec<&str> {
        copies.iter().map(|c| c.node.as_str()).collect()
    }

    #[test]
    fn stalest_copies_go_first_keeping_the_placement() {
        let rp: kelp_core::ReplicaPlacement = "001".parse().unwrap();
        let copies = vec![
            copy("a", "r", 100, 10),
            copy("b", "r", 50, 10),
            copy("c", "r", 100, 9),
        ];
        let doomed = nodes(stalest(&copies, rp, 1));
        assert_eq!(doomed, ["b"]);
        // 010 needs two racks: the stalest copy is kept if it is the only
        // one on its rack.
        let rp: kelp_core::ReplicaPlacement = "010".parse().unwrap();
        let copies = vec![
            copy("a", "r1", 10, 1),
            copy("b", "r2", 100, 1),
            copy("c", "r2", 90, 1),
        ];
        let doomed = nodes(stalest(&copies, rp, 1));
        assert_eq!(doomed, ["c"]);
        // Two to go, and only keeping one per rack fits.
        let copies = vec![
            copy("a", "r1", 10, 1),
            copy("b", "r2", 20, 1),
            copy("c", "r2", 30, 1),
            copy("d", "r2", 40, 1),
        ];
        let doomed = nodes(stalest(&copies, rp, 2));
        assert_eq!(doomed, ["b", "c"]);
    }
}
