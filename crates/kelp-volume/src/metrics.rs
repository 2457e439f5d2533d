//! Metric names and the periodic sampler for store-wide gauges. Recorded
//! through the `metrics` facade into `kelp_core::telemetry::prometheus()`.

use std::collections::HashMap;
use std::sync::Arc;

use kelp_core::VolumeId;

use crate::store::Store;

pub const HTTP_REQUESTS: &str = "kelp_volume_http_requests_total";
pub const HTTP_DURATION: &str = "kelp_volume_http_request_duration_seconds";
pub const BYTES_READ: &str = "kelp_volume_bytes_read_total";
pub const BYTES_WRITTEN: &str = "kelp_volume_bytes_written_total";
/// Time a write waited for its group commit.
pub const SYNC_WAIT_SECONDS: &str = "kelp_volume_sync_wait_seconds";
/// fdatasyncs performed by group commit, all volumes.
pub const FSYNCS: &str = "kelp_volume_fsyncs_total";
/// Operations made durable by group commit, all volumes; divided by
/// `kelp_volume_fsyncs_total` it gives the mean batch size.
pub const SYNCED_OPS: &str = "kelp_volume_group_commit_ops_total";
/// Mean operations per fdatasync over each sampling interval.
pub const BATCH_SIZE: &str = "kelp_volume_group_commit_batch_size";
pub const VOLUMES: &str = "kelp_volume_volumes";
pub const NEEDLES: &str = "kelp_volume_needles";
/// Reads whose local needle failed its checksum (served from a replica
/// when one answered).
pub const CORRUPT_READS: &str = "kelp_volume_corrupt_reads_total";
/// Replicated writes and deletes that failed on some replica.
pub const REPLICATION_FAILURES: &str = "kelp_volume_replication_failures_total";
pub const HEARTBEAT_CONNECTED: &str = "kelp_volume_heartbeat_connected";

/// Samples per-volume counters into store-wide metrics. Keeps the previous
/// sample so group-commit batches are recorded once each.
#[derive(Default)]
pub struct Sampler {
    /// (fsyncs, synced seq) per volume at the previous sample.
    last: HashMap<VolumeId, (u64, u64)>,
}

impl Sampler {
    pub fn sample(&mut self, store: &Arc<Store>) {
        let vols = store.all_volumes();
        let mut needles = 0u64;
        let mut seen = HashMap::with_capacity(vols.len());
        for v in &vols {
            needles += v.info().live_count;
            let s = v.sync_stats();
            let (prev_syncs, prev_seq) = self.last.get(&v.id()).copied().unwrap_or((0, 0));
            if s.syncs > prev_syncs {
                let syncs = s.syncs - prev_syncs;
                let ops = s.synced_seq.saturating_sub(prev_seq);
                // Increments, not absolute values: several servers may
                // share the process-wide registry (`kelp server`, tests).
                metrics::counter!(FSYNCS).increment(syncs);
                metrics::counter!(SYNCED_OPS).increment(ops);
                metrics::histogram!(BATCH_SIZE).record(ops as f64 / syncs as f64);
            }
            seen.insert(v.id(), (s.syncs, s.synced_seq));
        }
        self.last = seen;
        metrics::gauge!(VOLUMES).set(vols.len() as f64);
        metrics::gauge!(NEEDLES).set(needles as f64);
    }
}
