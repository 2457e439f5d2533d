//! Process-wide Prometheus registry. Master and volume server may share one
//! process (`kelp server`), so the recorder is installed once and both
//! render `/metrics` from the same handle.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, shared by every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for histograms of counts (`*_batch_size`: operations per fsync).
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The handle that renders every metric recorded in this process. The first
/// call installs the global recorder; if something else already installed
/// one, the handle still renders (empty) text rather than failing.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), COUNT_BUCKETS)
            })
            .expect("static non-empty bucket lists");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        spawn_upkeep(handle.clone());
        handle
    })
}

/// How often queued histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder queues every histogram sample until a render or an upkeep
/// pass drains it into the buckets. Without a Prometheus scraper nothing
/// renders, so the queue grew by a few bytes per request forever (about
/// 34 bytes per upload on a volume server): drain it on a timer.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // kelp-core logs nothing itself; this happens at most once, at start.
        eprintln!("kelp: no metrics upkeep thread ({e}); metrics drain only when scraped");
    }
}
