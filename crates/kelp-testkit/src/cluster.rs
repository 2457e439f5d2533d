//! An in-process blob cluster for tests (feature `cluster`): one master
//! and some volume servers, all on port 0 and reached over loopback, as
//! clients reach them.

use std::time::Duration;

use kelp_core::SecurityConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::wait::{DEADLINE, until_async};

pub struct Node {
    /// HTTP `host:port`.
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    /// Stops the server and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: Node,
    pub volumes: Vec<Node>,
    pub security: SecurityConfig,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl Cluster {
    /// A master and `volumes` volume servers, all with `security`.
    pub async fn start(volumes: usize, security: SecurityConfig) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (mh, mg) = (listener().await, listener().await);
        let (mport, mgrpc) = (
            mh.local_addr().unwrap().port(),
            mg.local_addr().unwrap().port(),
        );
        let mcfg = kelp_master::MasterConfig {
            port: mport,
            grpc_port: mgrpc,
            meta_dir: dir.path().join("master"),
            pulse_seconds: 1,
            volume_growth_count: Some(2),
            replication_grace: Duration::ZERO,
            security: security.clone(),
            ..Default::default()
        };
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            kelp_master::run(mh, mg, mcfg, async move {
                let _ = rx.await;
            })
            .await
            .unwrap()
        });
        let master = Node {
            addr: format!("127.0.0.1:{mport}"),
            stop: Some(stop),
            task: Some(task),
        };
        let mut nodes = Vec::new();
        for i in 0..volumes {
            let (vh, vg) = (listener().await, listener().await);
            let port = vh.local_addr().unwrap().port();
            let vcfg = kelp_volume::VolumeServerConfig {
                dirs: vec![dir.path().join(format!("volume{i}"))],
                port,
                grpc_port: vg.local_addr().unwrap().port(),
                masters: vec![format!("127.0.0.1:{mport}.{mgrpc}")],
                pulse: Duration::from_secs(1),
                security: security.clone(),
                ..Default::default()
            };
            let (stop, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                kelp_volume::run(vh, vg, vcfg, async move {
                    let _ = rx.await;
                })
                .await
                .unwrap()
            });
            nodes.push(Node {
                addr: format!("127.0.0.1:{port}"),
                stop: Some(stop),
                task: Some(task),
            });
        }
        let cluster = Cluster {
            dir,
            master,
            volumes: nodes,
            security,
        };
        cluster.wait_for_volume_servers(volumes).await;
        cluster
    }

    /// Waits until `n` volume servers have joined the master.
    async fn wait_for_volume_servers(&self, n: usize) {
        let http = reqwest::Client::new();
        let url = format!("http://{}/dir/status", self.master.addr);
        let what = format!("{n} volume servers to join the master");
        until_async(&what, DEADLINE, || {
            let req = http.get(&url).send();
            async move {
                let v: serde_json::Value = req.await.ok()?.json().await.ok()?;
                (v.to_string().matches("\"Url\"").count() >= n).then_some(())
            }
        })
        .await
    }

    pub async fn stop(mut self) {
        for v in &mut self.volumes {
            v.stop().await;
        }
        self.master.stop().await;
    }
}
