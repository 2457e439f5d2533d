//! Kelp master: topology, sequencer, volume growth, and the
//! SeaweedFS-compatible HTTP and gRPC APIs.
//!
//! One `Master` (shared state) serves two front ends: `http` (axum) and
//! `grpc` (`master_pb.Seaweed`, tonic). Topology lives in memory and is
//! rebuilt from heartbeats; only id ceilings persist (`meta`).

mod config;
mod error;
mod growth;
mod grpc;
mod http;
mod master;
mod meta;
mod metrics;
mod params;
mod placement;
mod rereplicate;
mod sequencer;
mod status;
mod topology;
mod vacuum;

use std::sync::Arc;

use kelp_net::serve::ServeError;
use kelp_proto::master_pb::seaweed_server::SeaweedServer;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::MasterConfig;
pub use error::{MasterError, ServerError};

/// The access class of every HTTP route (`{fid}` stands for a file id)
/// and of each gRPC method path, as the guards apply them.
pub mod access {
    pub use crate::grpc::access as grpc;
    pub use crate::http::route_table as http;
}

/// Serves the master's HTTP API on `http` and `master_pb.Seaweed` on `grpc`
/// until `shutdown` completes. Long-lived streams (heartbeats,
/// KeepConnected) are ended on shutdown so both servers can drain.
pub async fn run(
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    cfg: MasterConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Install the recorder before the first metric is touched.
    kelp_core::telemetry::prometheus();
    let (stop_tx, stop_rx) = watch::channel(false);
    let master = Arc::new(master::Master::new(cfg, stop_rx).await?);
    tracing::info!(
        http = %http.local_addr().map_err(ServeError::Listener)?,
        grpc = %grpc.local_addr().map_err(ServeError::Listener)?,
        advertised = %master.cfg.leader_address(),
        "master listening"
    );
    let vacuum_task = tokio::spawn(vacuum::run_loop(master.clone()));
    let rereplicate_task = tokio::spawn(rereplicate::run_loop(master.clone()));
    let stop_task = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("master shutting down");
        let _ = stop_tx.send(true);
    });

    let sec = master.security.clone();
    let https = sec
        .tls
        .https_master
        .as_ref()
        .map(kelp_net::serve::https_config)
        .transpose()?;
    let http_server =
        kelp_net::serve::http(http, http::router(master.clone()), https, master.stopped());
    let grpc_server = kelp_net::serve::grpc(sec.tls.grpc_master.as_ref())?
        .layer(kelp_net::guard::GrpcGuardLayer::new(
            sec.clone(),
            grpc::access,
        ))
        .add_service(SeaweedServer::new(grpc::SeaweedService {
            master: master.clone(),
        }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), master.stopped());
    let result = tokio::try_join!(
        async { http_server.await.map_err(ServeError::Http) },
        async { grpc_server.await.map_err(ServeError::Grpc) },
    );
    stop_task.abort();
    vacuum_task.abort();
    rereplicate_task.abort();
    result?;
    Ok(())
}
