//! gRPC VolumeServer calls and heartbeats against a fake master that
//! speaks the real protocol.

mod common;

use std::pin::Pin;
use std::time::Duration;

use common::{Server, client};
use futures::Stream;
use kelp_proto::master_pb::seaweed_server::{Seaweed, SeaweedServer};
use kelp_proto::master_pb::*;
use kelp_proto::volume_server_pb::{
    AllocateVolumeRequest, BatchDeleteRequest, VacuumVolumeCheckRequest, VolumeDeleteRequest,
    VolumeMarkReadonlyRequest, VolumeMarkWritableRequest,
};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// Records every heartbeat; answers each with a size limit.
struct FakeMaster {
    beats: mpsc::UnboundedSender<Heartbeat>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Seaweed for FakeMaster {
    type SendHeartbeatStream = Out<HeartbeatResponse>;

    async fn send_heartbeat(
        &self,
        request: Request<Streaming<Heartbeat>>,
    ) -> Result<Response<Self::SendHeartbeatStream>, Status> {
        let mut inbound = request.into_inner();
        let beats = self.beats.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(hb)) = inbound.message().await {
                let _ = beats.send(hb);
                let resp = HeartbeatResponse {
                    volume_size_limit: 30 * 1024 * 1024 * 1024,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type KeepConnectedStream = Out<KeepConnectedResponse>;

    async fn keep_connected(
        &self,
        _: Request<Streaming<KeepConnectedRequest>>,
    ) -> Result<Response<Self::KeepConnectedStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn lookup_volume(
        &self,
        _: Request<LookupVolumeRequest>,
    ) -> Result<Response<LookupVolumeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn assign(&self, _: Request<AssignRequest>) -> Result<Response<AssignResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_master_configuration(
        &self,
        _: Request<GetMasterConfigurationRequest>,
    ) -> Result<Response<GetMasterConfigurationResponse>, Status> {
        Ok(Response::new(GetMasterConfigurationResponse::default()))
    }
}

async fn next_beat(rx: &mut mpsc::UnboundedReceiver<Heartbeat>) -> Heartbeat {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no heartbeat within 20s")
        .expect("fake master gone")
}

#[tokio::test]
async fn heartbeat_full_then_delta() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master_grpc = listener.local_addr().unwrap().port();
    let (beats_tx, mut beats) = mpsc::unbounded_channel();
    let master = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SeaweedServer::new(FakeMaster { beats: beats_tx }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |c| {
        // host:httpPort.grpcPort form; the HTTP port is irrelevant here.
        c.masters = vec![format!("127.0.0.1:1.{master_grpc}")];
        c.pulse = Duration::from_secs(60);
        c.data_center = "dc1".into();
        c.max_volumes = 5;
    })
    .await;

    let full = next_beat(&mut beats).await;
    assert_eq!(full.ip, "127.0.0.1");
    assert_eq!(
        full.port as u16,
        srv.http.rsplit(':').next().unwrap().parse::<u16>().unwrap()
    );
    assert_eq!(full.data_center, "dc1");
    assert!(full.has_no_volumes);
    assert_eq!(full.max_volume_counts.get(""), Some(&5));
    assert!(full.grpc_port > 0);

    // Healthy once the stream is up.
    let c = client();
    let healthz = srv.url("/healthz");
    kelp_testkit::until_async("/healthz to answer 200", kelp_testkit::DEADLINE, || {
        let req = c.get(&healthz).send();
        async move { req.await.ok().filter(|r| r.status() == StatusCode::OK) }
    })
    .await;

    srv.grpc_client()
        .await
        .allocate_volume(AllocateVolumeRequest {
            volume_id: 7,
            collection: "c".into(),
            replication: "001".into(),
            ttl: "3d".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let delta = next_beat(&mut beats).await;
    assert_eq!(delta.new_volumes.len(), 1, "{delta:?}");
    let v = &delta.new_volumes[0];
    assert_eq!(v.id, 7);
    assert_eq!(v.collection, "c");
    assert_eq!(v.replica_placement, 1);
    assert_eq!(v.ttl, 3 << 8 | 3);
    assert_eq!(v.version, 3);
    assert!(delta.volumes.is_empty());

    // A write (as a peer's replica write: this fake cluster has no second
    // copy to fan out to), then deleting the volume: a delta with
    // deleted_volumes.
    let resp = c
        .put(srv.url("/7,0100000001?type=replicate"))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    srv.grpc_client()
        .await
        .volume_delete(VolumeDeleteRequest {
            volume_id: 7,
            only_empty: false,
        })
        .await
        .unwrap();
    let delta = next_beat(&mut beats).await;
    assert_eq!(delta.deleted_volumes.len(), 1, "{delta:?}");
    assert_eq!(delta.deleted_volumes[0].id, 7);

    srv.stop().await;
    master.abort();
}

#[tokio::test]
async fn full_beats_carry_volume_stats_every_pulse() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (beats_tx, mut beats) = mpsc::unbounded_channel();
    let master = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SeaweedServer::new(FakeMaster { beats: beats_tx }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |c| {
        c.masters = vec![format!("127.0.0.1:9.{port}")];
        c.pulse = Duration::from_millis(200);
    })
    .await;
    srv.allocate(9, "").await;
    let c = client();
    let resp = c
        .put(srv.url("/9,0500000001"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let mut found = None;
    for _ in 0..50 {
        let b = next_beat(&mut beats).await;
        if let Some(v) = b.volumes.iter().find(|v| v.id == 9 && v.file_count == 1) {
            found = Some((b.max_file_key, v.clone()));
            break;
        }
    }
    let (max_key, v) = found.expect("a full beat with volume 9");
    assert_eq!(max_key, 5);
    assert!(v.size > 8);
    assert!(!v.read_only);
    assert_eq!(v.version, 3);
    srv.stop().await;
    master.abort();
}

#[tokio::test]
async fn health_is_503_without_master_and_grpc_admin_calls_work() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |c| {
        // Nothing listens here.
        c.masters = vec!["127.0.0.1:1.1".into()];
        c.max_volumes = 2;
    })
    .await;
    let c = client();
    let resp = c.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let mut g = srv.grpc_client().await;
    srv.allocate(1, "").await;
    // Duplicate id.
    let err = g
        .allocate_volume(AllocateVolumeRequest {
            volume_id: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    srv.allocate(2, "").await;
    // Out of slots.
    let err = g
        .allocate_volume(AllocateVolumeRequest {
            volume_id: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    // BatchDelete: 202 / 404 / 400 per fid.
    let resp = c
        .put(srv.url("/1,0100000001"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let res = g
        .batch_delete(BatchDeleteRequest {
            file_ids: vec![
                "1,0100000001".into(),
                "1,0200000001".into(),
                "bogus".into(),
                "1,0100000002".into(),
            ],
            skip_cookie_check: false,
        })
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<i32> = res.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![202, 404, 400, 404]);

    // Read-only blocks writes; writable again allows them.
    g.volume_mark_readonly(VolumeMarkReadonlyRequest {
        volume_id: 2,
        persist: false,
    })
    .await
    .unwrap();
    let resp = c
        .put(srv.url("/2,0100000001"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    g.volume_mark_writable(VolumeMarkWritableRequest { volume_id: 2 })
        .await
        .unwrap();
    let resp = c
        .put(srv.url("/2,0100000001"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Vacuum is covered by vacuum_grpc.rs; here only that it answers.
    let ratio = g
        .vacuum_volume_check(VacuumVolumeCheckRequest { volume_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .garbage_ratio;
    assert!((0.0..=1.0).contains(&ratio), "garbage ratio {ratio}");
    let err = g
        .vacuum_volume_check(VacuumVolumeCheckRequest { volume_id: 7 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Deleting a non-empty volume with only_empty fails; without, succeeds.
    let err = g
        .volume_delete(VolumeDeleteRequest {
            volume_id: 2,
            only_empty: true,
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    g.volume_delete(VolumeDeleteRequest {
        volume_id: 2,
        only_empty: false,
    })
    .await
    .unwrap();
    assert!(!dir.path().join("2.dat").exists());
    let resp = c.get(srv.url("/2,0100000001")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn volumes_spread_over_dirs_and_reload_from_all() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let dirs = vec![a.clone(), b.clone()];
    let srv = Server::start(a.clone(), {
        let dirs = dirs.clone();
        move |c| {
            c.dirs = dirs;
            c.max_volumes = 3;
        }
    })
    .await;
    for vid in 1..=3 {
        srv.allocate(vid, "x").await;
    }
    let err = srv
        .grpc_client()
        .await
        .allocate_volume(AllocateVolumeRequest {
            volume_id: 4,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let count = |d: &std::path::Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".dat")
            })
            .count()
    };
    assert_eq!((count(&a), count(&b)), (2, 1));
    let c = client();
    for vid in 1..=3 {
        let resp = c
            .put(srv.url(&format!("/{vid},0100000001")))
            .body(format!("v{vid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    srv.stop().await;

    let srv = Server::start(a.clone(), move |c| c.dirs = dirs).await;
    for vid in 1..=3 {
        let resp = c
            .get(srv.url(&format!("/{vid},0100000001")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), format!("v{vid}"));
    }
    srv.stop().await;
}
