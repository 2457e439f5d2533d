//! Prometheus metrics: per-route request counts and latency (route label
//! from axum's `MatchedPath`, so ids in paths do not explode cardinality),
//! and cluster gauges refreshed on every scrape.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::master::Master;

pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics::counter!(
        "kelp_master_http_requests_total",
        "route" => route.clone(),
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("kelp_master_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

pub fn render(m: &Master) -> String {
    let (nodes, volumes) = {
        let t = m.topo.lock();
        (t.nodes().count(), t.volume_count())
    };
    metrics::gauge!("kelp_master_data_nodes").set(nodes as f64);
    metrics::gauge!("kelp_master_volumes").set(volumes as f64);
    metrics::gauge!("kelp_master_max_volume_id").set(f64::from(m.seq.max_volume_id()));
    kelp_core::telemetry::prometheus().render()
}
