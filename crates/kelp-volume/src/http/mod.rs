//! The SeaweedFS-compatible volume HTTP API: `/<fid>` for needles, plus
//! `/status`, `/healthz` and `/metrics`.

mod chunked;
mod fid;
mod guard;
mod handlers;
mod manifest;
mod proxy;
mod range;
mod read;
mod replica;
mod status;
mod upload;
mod upload_budget;

pub use upload_budget::UploadBudget;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, any, get, post};
use kelp_net::Access;

use kelp_core::SecurityConfig;

use crate::config::ReadMode;
use crate::peers::Peers;
use crate::store::Store;

/// Whether the server can report itself healthy.
#[derive(Debug, Default)]
pub struct Health {
    /// Masters are configured, so a heartbeat stream is expected.
    pub masters_configured: bool,
    pub heartbeat_up: AtomicBool,
}

impl Health {
    pub fn healthy(&self) -> bool {
        !self.masters_configured || self.heartbeat_up.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<Store>,
    /// The replicated write and delete (local copy plus the others).
    pub replicator: crate::replicate::Replicator,
    pub health: Arc<Health>,
    pub file_size_limit: u64,
    /// Memory for upload bodies being received; `None`: no limit.
    pub upload_budget: Option<Arc<UploadBudget>>,
    /// Where other volumes live, and the client to reach them.
    pub peers: Arc<Peers>,
    pub read_mode: ReadMode,
    /// JWT keys checked on `/<fid>` requests.
    pub security: Arc<SecurityConfig>,
    /// Copy budget for filling a new replica, bytes per second.
    pub fill_bytes_per_second: u64,
    /// Scrub totals, shown in `/status`.
    pub scrub: Arc<crate::scrub::Stats>,
}

type Routes = Vec<(&'static str, Access, MethodRouter<HttpState>)>;

/// Every route with its access class (kelp-net `guard.rs`). `/{fid}`
/// stands for the fallback that serves file ids. The router is built from
/// this list and the security tests walk it, so no route misses its guard.
fn routes() -> Routes {
    vec![
        ("/status", Access::Client, get(status::status)),
        ("/healthz", Access::Open, get(status::healthz)),
        ("/metrics", Access::Client, get(status::metrics)),
        ("/admin/replica/digest", Access::Peer, get(replica::digest)),
        ("/admin/replica/needle", Access::Peer, get(replica::needle)),
        ("/admin/replica/fill", Access::Peer, post(replica::fill)),
        (FID_ROUTE, Access::PublicReads, any(handlers::fid_request)),
    ]
}

/// The name [`route_table`] gives the file-id fallback.
pub const FID_ROUTE: &str = "/{fid}";

/// Paths and access classes of every route.
pub fn route_table() -> Vec<(&'static str, Access)> {
    routes().into_iter().map(|(p, a, _)| (p, a)).collect()
}

pub fn router(state: HttpState) -> Router {
    let mut router = Router::new();
    for (path, access, methods) in routes() {
        let guard = kelp_net::guard::HttpGuard {
            security: state.security.clone(),
            access,
        };
        let methods = methods.layer(middleware::from_fn_with_state(guard, kelp_net::guard::http));
        router = if path == FID_ROUTE {
            router.fallback(methods)
        } else {
            router.route(path, methods)
        };
    }
    router
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// Counts every request by route, method and status, times it, and sets
/// the `Server` header.
async fn track(req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        "/status" => "status",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        _ => "fid",
    };
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&format!("Kelp Volume {}", env!("CARGO_PKG_VERSION")))
    {
        resp.headers_mut().insert(axum::http::header::SERVER, v);
    }
    let status = resp.status().as_u16().to_string();
    metrics::histogram!(crate::metrics::HTTP_DURATION, "route" => route, "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    resp
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded. Never fails.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                fid::percent_decode(&k.replace('+', " ")),
                fid::percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(
            query_pairs(Some("ttl=3m&cm=true&name=a+b%21&flag")),
            vec![
                ("ttl".into(), "3m".into()),
                ("cm".into(), "true".into()),
                ("name".into(), "a b!".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert!(query_pairs(None).is_empty());
    }
}
