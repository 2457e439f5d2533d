//! Background scrub: re-reads every live needle of every volume at a
//! bounded rate and checks its CRC32-C, so bit rot is found before a
//! reader finds it. A needle that fails is repaired from another replica
//! when the volume has one: the replica's raw needle is CRC-checked and
//! appended here, and the index then points at the good copy (the bad
//! bytes become garbage for compaction). Counts are in `/status` (`Scrub`)
//! and `/metrics` (`kelp_volume_scrub_*`).
//!
//! A pass walks the volumes and their needles in key order; after a pass
//! the scrub waits `pause` before the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kelp_needle::{Volume, VolumeError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::anti_entropy::fetch_needle;
use crate::peers::Peers;
use crate::store::{Store, blocking};

pub const CHECKED_BYTES: &str = "kelp_volume_scrub_bytes_total";
pub const CORRUPT: &str = "kelp_volume_scrub_corrupt_total";
pub const REPAIRED: &str = "kelp_volume_scrub_repaired_total";

/// Needles listed at a time during a pass.
const SCRUB_PAGE: usize = 1024;

/// Totals since the server started.
#[derive(Debug, Default)]
pub struct Stats {
    pub passes: AtomicU64,
    pub needles: AtomicU64,
    pub bytes: AtomicU64,
    pub corrupt: AtomicU64,
    pub repaired: AtomicU64,
}

/// `Stats` as `/status` shows them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatsJson {
    pub passes: u64,
    pub needles_checked: u64,
    pub bytes_checked: u64,
    pub corrupt: u64,
    pub repaired: u64,
}

impl Stats {
    pub fn json(&self) -> StatsJson {
        StatsJson {
            passes: self.passes.load(Ordering::Relaxed),
            needles_checked: self.needles.load(Ordering::Relaxed),
            bytes_checked: self.bytes.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            repaired: self.repaired.load(Ordering::Relaxed),
        }
    }
}

pub struct Scrubber {
    pub store: Arc<Store>,
    pub peers: Arc<Peers>,
    pub stats: Arc<Stats>,
    /// Read budget in bytes per second; 0 turns the scrub off.
    pub bytes_per_second: u64,
    pub pause: Duration,
}

impl Scrubber {
    pub async fn run(self, stop: CancellationToken) {
        if self.bytes_per_second == 0 {
            return;
        }
        loop {
            for vol in self.store.all_volumes() {
                if stop.is_cancelled() {
                    return;
                }
                self.volume(&vol, &stop).await;
            }
            self.stats.passes.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.pause) => {}
            }
        }
    }

    async fn volume(&self, vol: &Arc<Volume>, stop: &CancellationToken) {
        let started = Instant::now();
        let mut budget_used = 0u64;
        // The needles are listed a page at a time, not all at once: a
        // listing of a big volume would cost 24 bytes a needle for the
        // whole (hours-long) pass.
        let mut next = 0u64;
        loop {
            let page = vol.entries_from(next, SCRUB_PAGE);
            let Some(&(last, _)) = page.last() else {
                return;
            };
            for (key, value) in page {
                if !self
                    .needle(vol, key, value, started, &mut budget_used, stop)
                    .await
                {
                    return;
                }
            }
            match last.checked_add(1) {
                Some(k) => next = k,
                None => return,
            }
        }
    }

    /// Checks one needle, then sleeps off any lead over the byte budget.
    /// Returns false when the scrub is to stop.
    async fn needle(
        &self,
        vol: &Arc<Volume>,
        key: u64,
        value: kelp_needle::NeedleValue,
        started: Instant,
        budget_used: &mut u64,
        stop: &CancellationToken,
    ) -> bool {
        if stop.is_cancelled() {
            return false;
        }
        let v = vol.clone();
        let checked = blocking(move || v.read(key)).await;
        let bytes = u64::from(value.size);
        self.stats.needles.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!(CHECKED_BYTES).increment(bytes);
        match checked {
            Ok(Err(e @ (VolumeError::Corrupt { .. } | VolumeError::Format(_)))) => {
                self.corrupt(vol, key, &e.to_string()).await;
            }
            // Deleted or compacted away since the listing: fine.
            Ok(Err(VolumeError::NotFound { .. })) => {}
            Ok(Err(e)) => {
                tracing::warn!(volume = vol.id(), key, error = %e, "scrub read failed")
            }
            Ok(Ok(_)) => {}
            Err(e) => tracing::warn!(volume = vol.id(), error = %e, "scrub task failed"),
        }
        // Keep to the byte budget (a needle costs at least a page, so
        // millions of tiny needles do not flood the blocking pool):
        // sleep off any lead over it.
        *budget_used += bytes.max(4096);
        let due = Duration::from_secs_f64(*budget_used as f64 / self.bytes_per_second as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(ahead) => {}
            }
        }
        true
    }

    async fn corrupt(&self, vol: &Arc<Volume>, key: u64, why: &str) {
        let vid = vol.id();
        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CORRUPT).increment(1);
        tracing::error!(
            volume = vid,
            key,
            error = why,
            "scrub found a corrupt needle"
        );
        if vol.superblock().replica_placement.copy_count() <= 1 {
            tracing::error!(volume = vid, key, "no other replica to repair it from");
            return;
        }
        match self.repair(vol, key).await {
            Ok(from) => {
                self.stats.repaired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(REPAIRED).increment(1);
                tracing::info!(
                    volume = vid,
                    key,
                    from,
                    "corrupt needle repaired from a replica"
                );
            }
            Err(e) => {
                tracing::error!(volume = vid, key, error = %e, "repairing a corrupt needle failed")
            }
        }
    }

    /// Copies `key` from the first replica that has a good copy; returns it.
    async fn repair(&self, vol: &Arc<Volume>, key: u64) -> Result<String, String> {
        let vid = vol.id();
        let others = self.peers.locate(vid).await.map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        for loc in others {
            match fetch_needle(&self.peers, &loc.url, vid, vol.version(), key).await {
                Ok(raw) => {
                    let v = vol.clone();
                    let done = blocking(move || v.import_needle(key, raw).and_then(|_| v.sync()))
                        .await
                        .map_err(|e| e.to_string())?;
                    match done {
                        Ok(()) => return Ok(loc.url),
                        Err(e) => errors.push(format!("{}: {e}", loc.url)),
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no replica had a good copy: {}", errors.join("; ")))
    }
}
