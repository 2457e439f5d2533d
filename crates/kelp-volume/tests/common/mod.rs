//! An in-process volume server on ephemeral ports.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use kelp_proto::volume_server_pb::AllocateVolumeRequest;
use kelp_proto::volume_server_pb::volume_server_client::VolumeServerClient;
use kelp_volume::VolumeServerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub http: String,
    pub grpc: String,
    pub dir: PathBuf,
    /// The server's security settings; the test's gRPC client uses them as a peer would.
    pub security: std::sync::Arc<kelp_core::SecurityConfig>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), kelp_volume::ServerError>>>,
}

impl Server {
    pub async fn start(dir: PathBuf, tweak: impl FnOnce(&mut VolumeServerConfig)) -> Server {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = VolumeServerConfig {
            dirs: vec![dir.clone()],
            ip: "127.0.0.1".into(),
            port: http.local_addr().unwrap().port(),
            grpc_port: grpc.local_addr().unwrap().port(),
            ..VolumeServerConfig::default()
        };
        tweak(&mut cfg);
        let security = std::sync::Arc::new(cfg.security.clone());
        let (tx, rx) = oneshot::channel();
        let http_addr = http.local_addr().unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let task = tokio::spawn(kelp_volume::run(http, grpc, cfg, async move {
            let _ = rx.await;
        }));
        Server {
            http: format!("http://{http_addr}"),
            grpc: format!("http://{grpc_addr}"),
            dir,
            security,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A client that proves itself a peer (as a master does).
    pub async fn grpc_client(&self) -> VolumeServerClient<kelp_net::client::PeerChannel> {
        let addr = self.grpc.trim_start_matches("http://");
        VolumeServerClient::new(
            kelp_net::client::grpc_channel(
                &self.security,
                kelp_core::GrpcRole::Client,
                addr,
                Duration::from_secs(5),
            )
            .unwrap(),
        )
    }

    pub async fn allocate(&self, vid: u32, collection: &str) {
        self.grpc_client()
            .await
            .allocate_volume(AllocateVolumeRequest {
                volume_id: vid,
                collection: collection.into(),
                replication: "000".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// Graceful shutdown; waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server did not stop")
                .unwrap()
                .unwrap();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_proxy()
        .build()
        .unwrap()
}
