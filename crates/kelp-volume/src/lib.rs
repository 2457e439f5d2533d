//! Kelp volume server: a SeaweedFS-compatible volume HTTP API and the
//! `volume_server_pb.VolumeServer` gRPC service over kelp-needle volumes,
//! plus the heartbeat client that keeps a master informed.
//!
//! [`run`] is the whole server: it loads the volumes in the configured
//! directories, serves HTTP and gRPC on the given listeners, heartbeats to
//! the masters, and on shutdown stops accepting, lets in-flight requests
//! finish and closes every volume with a checkpoint.

mod anti_entropy;
mod config;
mod error;
mod grpc;
mod heartbeat;
mod http;
mod metrics;
mod peers;
mod replicate;
mod scrub;
mod store;

use std::sync::Arc;
use std::time::Duration;

use kelp_needle::OffsetWidth;
use kelp_net::serve::ServeError;
use tokio_util::sync::CancellationToken;

pub use config::{
    DEFAULT_COMPACTION_BYTES_PER_SECOND, ReadMode, VolumeServerConfig, master_grpc_address,
};
pub use error::{ApiError, ServerError};
pub use store::StoreError;

/// The access class of every HTTP route (`/{fid}` stands for file ids)
/// and of each gRPC method path, as the guards apply them.
pub mod access {
    pub use crate::grpc::access as grpc;
    pub use crate::http::route_table as http;
}

/// How often volumes are offered a checkpoint (written only once their
/// `.idx` grew enough, see kelp-needle `maybe_checkpoint`).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// How often store-wide metrics are sampled.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// `Version` reported by `/status`.
pub fn version() -> String {
    format!("kelp {}", env!("CARGO_PKG_VERSION"))
}

/// Serves HTTP on `http` and gRPC on `grpc` until `shutdown` resolves, then
/// stops accepting, finishes in-flight requests and closes volumes.
pub async fn run(
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    cfg: VolumeServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Install the recorder before the first metric is touched.
    let _ = kelp_core::telemetry::prometheus();
    let cfg = Arc::new(cfg);
    let width = if cfg.offset_width_5 {
        OffsetWidth::Five
    } else {
        OffsetWidth::Four
    };
    let (store, events) =
        store::Store::open(cfg.dirs.clone(), cfg.max_volumes, cfg.durable, width).await?;
    let health = Arc::new(http::Health {
        masters_configured: !cfg.masters.is_empty(),
        ..http::Health::default()
    });

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });

    let http_addr = http.local_addr().map_err(ServeError::Listener)?;
    let grpc_addr = grpc.local_addr().map_err(ServeError::Listener)?;
    let own = vec![
        format!("{}:{}", cfg.ip, cfg.port),
        cfg.effective_public_url(),
    ];
    let security = Arc::new(cfg.security.clone());
    let peers =
        Arc::new(peers::Peers::new(&cfg.masters, own, security.clone()).map_err(ServeError::from)?);
    let scrub_stats = Arc::new(scrub::Stats::default());
    let router = http::router(http::HttpState {
        store: store.clone(),
        replicator: replicate::Replicator::new(store.clone(), peers.clone()),
        health: health.clone(),
        file_size_limit: cfg.file_size_limit,
        upload_budget: http::UploadBudget::new(cfg.concurrent_upload_limit),
        peers: peers.clone(),
        read_mode: cfg.read_mode,
        security: security.clone(),
        scrub: scrub_stats.clone(),
        fill_bytes_per_second: cfg.compaction_bytes_per_second,
    });
    let https = security
        .tls
        .https_volume
        .as_ref()
        .map(kelp_net::serve::https_config)
        .transpose()?;
    let grpc_server = kelp_net::serve::grpc(security.tls.grpc_volume.as_ref())?.layer(
        kelp_net::guard::GrpcGuardLayer::new(security.clone(), grpc::access),
    );
    // Either server ending, with an error or not, takes the whole server
    // down: each cancels `stop` as it returns, which ends the other.
    let http_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let res =
                kelp_net::serve::http(http, router, https, stop.clone().cancelled_owned()).await;
            stop.cancel();
            res
        }
    });
    let grpc_task = tokio::spawn({
        let stop = stop.clone();
        let svc = kelp_proto::volume_server_pb::volume_server_server::VolumeServerServer::new(
            grpc::VolumeGrpc::new(store.clone(), cfg.compaction_bytes_per_second),
        );
        let mut grpc_server = grpc_server;
        async move {
            let res = grpc_server
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc),
                    stop.clone().cancelled_owned(),
                )
                .await;
            stop.cancel();
            res
        }
    });
    let heartbeat_task = tokio::spawn(
        heartbeat::HeartbeatClient::new(
            cfg.clone(),
            store.clone(),
            events,
            health.clone(),
            stop.clone(),
            security.clone(),
        )
        .run(),
    );
    let housekeeping_task = tokio::spawn(housekeeping(store.clone(), stop.clone()));
    let anti_entropy_task = tokio::spawn(anti_entropy::run(
        store.clone(),
        peers.clone(),
        cfg.anti_entropy_interval,
        stop.clone(),
    ));
    let scrub_task = tokio::spawn(
        scrub::Scrubber {
            store: store.clone(),
            peers,
            stats: scrub_stats,
            bytes_per_second: cfg.scrub_bytes_per_second,
            pause: cfg.scrub_pause,
        }
        .run(stop.clone()),
    );
    tracing::info!(http = %http_addr, grpc = %grpc_addr, masters = ?cfg.masters, durable = cfg.durable,
        read_mode = ?cfg.read_mode, security = %cfg.security.describe(), "volume server started");

    let http_res = http_task.await;
    let grpc_res = grpc_task.await;
    stop.cancel();
    let _ = heartbeat_task.await;
    let _ = housekeeping_task.await;
    let _ = anti_entropy_task.await;
    let _ = scrub_task.await;
    store.close().await;
    tracing::info!("volume server stopped");
    http_res
        .map_err(ServerError::Task)?
        .map_err(ServeError::Http)?;
    grpc_res
        .map_err(ServerError::Task)?
        .map_err(ServeError::Grpc)?;
    Ok(())
}

async fn housekeeping(store: Arc<store::Store>, stop: CancellationToken) {
    let mut sampler = metrics::Sampler::default();
    let mut metrics_tick = tokio::time::interval(METRICS_EVERY);
    let mut checkpoint_tick = tokio::time::interval(CHECKPOINT_EVERY);
    checkpoint_tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = metrics_tick.tick() => sampler.sample(&store),
            _ = checkpoint_tick.tick() => {
                store.checkpoint_some().await;
                store.expire_ttl_volumes(store::now_secs()).await;
            }
        }
    }
}
