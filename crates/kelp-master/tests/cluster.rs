//! The master in-process on port 0, with fake volume servers that speak the
//! real protocol: a tonic `VolumeServer` that records AllocateVolume, and a
//! heartbeat client that sends full beats every pulse.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use kelp_master::MasterConfig;
use kelp_proto::master_pb::seaweed_client::SeaweedClient;
use kelp_proto::master_pb::{
    AssignRequest, GetMasterConfigurationRequest, Heartbeat, KeepConnectedRequest,
    LookupVolumeRequest, VolumeInformationMessage, VolumeLocation,
};
use kelp_proto::volume_server_pb::volume_server_server::{VolumeServer, VolumeServerServer};
use kelp_proto::volume_server_pb::*;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

const DEADLINE: Duration = Duration::from_secs(15);

struct TestMaster {
    http: String,
    grpc: String,
    /// The master's security settings; test clients use them as peers would.
    security: Arc<kelp_core::SecurityConfig>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kelp_master::ServerError>>,
}

impl TestMaster {
    async fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, |_| {}).await
    }

    async fn start_with(dir: &std::path::Path, tweak: impl FnOnce(&mut MasterConfig)) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = MasterConfig {
            port: http.local_addr().unwrap().port(),
            grpc_port: grpc.local_addr().unwrap().port(),
            meta_dir: dir.to_path_buf(),
            pulse_seconds: 1,
            ..MasterConfig::default()
        };
        tweak(&mut cfg);
        let security = Arc::new(cfg.security.clone());
        let http_url = format!("http://127.0.0.1:{}", cfg.port);
        let grpc_url = format!("http://127.0.0.1:{}", cfg.grpc_port);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(kelp_master::run(http, grpc, cfg, async {
            let _ = rx.await;
        }));
        Self {
            http: http_url,
            grpc: grpc_url,
            security,
            stop: Some(tx),
            task,
        }
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{}", self.http, path_and_query))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// A client that proves itself a peer (as a volume server does).
    async fn client(&self) -> SeaweedClient<kelp_net::client::PeerChannel> {
        let addr = self.grpc.trim_start_matches("http://");
        SeaweedClient::new(
            kelp_net::client::grpc_channel(
                &self.security,
                kelp_core::GrpcRole::Client,
                addr,
                Duration::from_secs(5),
            )
            .unwrap(),
        )
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("master stops in time")
            .unwrap()
            .unwrap();
    }
}

/// A volume server: gRPC endpoint for the master's calls, plus the
/// heartbeat stream it keeps open to the master.
#[derive(Default)]
struct FakeState {
    allocated: Vec<AllocateVolumeRequest>,
    volumes: BTreeMap<u32, VolumeInformationMessage>,
    fail_allocate: bool,
    deleted_collections: Vec<String>,
}

#[derive(Clone)]
struct FakeVolumeServer {
    state: Arc<Mutex<FakeState>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl VolumeServer for FakeVolumeServer {
    type VacuumVolumeCompactStream = BoxStream<VacuumVolumeCompactResponse>;

    async fn allocate_volume(
        &self,
        r: Request<AllocateVolumeRequest>,
    ) -> Result<Response<AllocateVolumeResponse>, Status> {
        let r = r.into_inner();
        let mut st = self.state.lock();
        if st.fail_allocate {
            return Err(Status::internal("disk on fire"));
        }
        let rp: kelp_core::ReplicaPlacement = r.replication.parse().unwrap();
        let ttl: kelp_core::Ttl = r.ttl.parse().unwrap();
        st.volumes.insert(
            r.volume_id,
            VolumeInformationMessage {
                id: r.volume_id,
                collection: r.collection.clone(),
                replica_placement: u32::from(rp.to_byte()),
                ttl: ttl.to_u32(),
                version: r.version,
                ..Default::default()
            },
        );
        st.allocated.push(r);
        Ok(Response::new(AllocateVolumeResponse {}))
    }
    async fn delete_collection(
        &self,
        r: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        let c = r.into_inner().collection;
        let mut st = self.state.lock();
        st.volumes.retain(|_, v| v.collection != c);
        st.deleted_collections.push(c);
        Ok(Response::new(DeleteCollectionResponse {}))
    }
    async fn volume_delete(
        &self,
        r: Request<VolumeDeleteRequest>,
    ) -> Result<Response<VolumeDeleteResponse>, Status> {
        self.state.lock().volumes.remove(&r.into_inner().volume_id);
        Ok(Response::new(VolumeDeleteResponse {}))
    }
    async fn batch_delete(
        &self,
        _: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn vacuum_volume_check(
        &self,
        _: Request<VacuumVolumeCheckRequest>,
    ) -> Result<Response<VacuumVolumeCheckResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn vacuum_volume_compact(
        &self,
        _: Request<VacuumVolumeCompactRequest>,
    ) -> Result<Response<Self::VacuumVolumeCompactStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn vacuum_volume_commit(
        &self,
        _: Request<VacuumVolumeCommitRequest>,
    ) -> Result<Response<VacuumVolumeCommitResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn vacuum_volume_cleanup(
        &self,
        _: Request<VacuumVolumeCleanupRequest>,
    ) -> Result<Response<VacuumVolumeCleanupResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn volume_mark_readonly(
        &self,
        _: Request<VolumeMarkReadonlyRequest>,
    ) -> Result<Response<VolumeMarkReadonlyResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn volume_mark_writable(
        &self,
        _: Request<VolumeMarkWritableRequest>,
    ) -> Result<Response<VolumeMarkWritableResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct FakeNode {
    port: u16,
    grpc_port: u16,
    rack: String,
    state: Arc<Mutex<FakeState>>,
    /// Held so the advertised HTTP port stays unique.
    _http: TcpListener,
    heartbeat: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    limit_seen: Arc<Mutex<Option<u64>>>,
}

impl FakeNode {
    async fn start(rack: &str) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let svc = FakeVolumeServer {
            state: state.clone(),
        };
        let grpc_port = grpc.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(VolumeServerServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(grpc)),
        );
        Self {
            port: http.local_addr().unwrap().port(),
            grpc_port,
            rack: rack.to_string(),
            state,
            _http: http,
            heartbeat: None,
            limit_seen: Arc::default(),
        }
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn full_beat(&self) -> Heartbeat {
        let st = self.state.lock();
        Heartbeat {
            ip: "127.0.0.1".into(),
            port: u32::from(self.port),
            grpc_port: u32::from(self.grpc_port),
            public_url: self.url(),
            rack: self.rack.clone(),
            max_volume_counts: [(String::new(), 8)].into_iter().collect(),
            volumes: st.volumes.values().cloned().collect(),
            has_no_volumes: st.volumes.is_empty(),
            ..Default::default()
        }
    }

    /// Opens SendHeartbeat and sends a full beat every 300 ms.
    async fn join(&mut self, master: &TestMaster) {
        let mut client = master.client().await;
        let (tx, rx) = mpsc::channel(8);
        tx.send(self.full_beat()).await.unwrap();
        let mut replies = client
            .send_heartbeat(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = replies.message().await.unwrap().unwrap();
        *self.limit_seen.lock() = Some(first.volume_size_limit);
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let me = Self {
            port: self.port,
            grpc_port: self.grpc_port,
            rack: self.rack.clone(),
            state: self.state.clone(),
            _http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            heartbeat: None,
            limit_seen: self.limit_seen.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {
                        if tx.send(me.full_beat()).await.is_err() { break; }
                    }
                    r = replies.message() => if !matches!(r, Ok(Some(_))) { break },
                }
            }
            // Dropping tx and replies ends the stream.
        });
        self.heartbeat = Some((stop_tx, task));
    }

    async fn leave(&mut self) {
        if let Some((stop, task)) = self.heartbeat.take() {
            let _ = stop.send(());
            task.await.unwrap();
        }
    }

    fn allocations(&self) -> Vec<AllocateVolumeRequest> {
        self.state.lock().allocated.clone()
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    kelp_testkit::until_async(what, DEADLINE, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}

fn fid_parts(fid: &str) -> kelp_core::FileId {
    fid.parse().unwrap()
}

#[tokio::test]
async fn assign_grows_then_lookup_finds_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    assert_eq!(*node.limit_seen.lock(), Some(30 * 1024 * 1024 * 1024));

    let (status, body) = master.get("/dir/assign").await;
    assert_eq!(status, 200, "{body}");
    let obj = body.as_object().unwrap();
    assert_eq!(
        obj.keys().cloned().collect::<Vec<_>>(),
        vec!["count", "fid", "publicUrl", "url"]
    );
    assert_eq!(body["url"], node.url());
    assert_eq!(body["publicUrl"], node.url());
    assert_eq!(body["count"], 1);
    let fid = fid_parts(body["fid"].as_str().unwrap());
    let allocs = node.allocations();
    assert_eq!(allocs.len(), 7, "default growth for copy count 1");
    assert!(allocs.iter().any(|a| a.volume_id == fid.volume_id));
    assert!(
        allocs
            .iter()
            .all(|a| a.version == 3 && a.replication == "000")
    );

    // count=5 reserves five consecutive keys.
    let (_, a) = master.get("/dir/assign?count=5").await;
    let (_, b) = master.get("/dir/assign?count=5").await;
    assert_eq!(a["count"], 5);
    let ka = fid_parts(a["fid"].as_str().unwrap()).key;
    let kb = fid_parts(b["fid"].as_str().unwrap()).key;
    assert_eq!(kb, ka + 5);
    assert_eq!(node.allocations().len(), 7, "no second growth");

    // POST form works too.
    let resp = reqwest::Client::new()
        .post(format!("{}/dir/assign", master.http))
        .form(&[("count", "2")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let j: Value = resp.json().await.unwrap();
    assert_eq!(j["count"], 2);

    let (status, body) = master
        .get(&format!("/dir/lookup?volumeId={}", fid.volume_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["volumeOrFileId"], fid.volume_id.to_string());
    let loc = &body["locations"][0];
    assert_eq!(loc["url"], node.url());
    assert_eq!(loc["publicUrl"], node.url());
    assert_eq!(loc["dataCenter"], "DefaultDataCenter");
    assert_eq!(loc["grpcPort"], node.grpc_port);
    let (status, body) = master.get(&format!("/dir/lookup?fileId={fid}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["volumeOrFileId"], fid.to_string());

    let (status, body) = master.get("/dir/lookup?volumeId=9999").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        serde_json::json!({"volumeOrFileId":"9999","error":"volume id 9999 not found"})
    );

    let (status, body) = master.get("/cluster/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["IsLeader"], true);
    assert_eq!(body["MaxVolumeId"], 7);
    let (_, body) = master.get("/dir/status").await;
    let dn = &body["Topology"]["DataCenters"][0]["Racks"][0]["DataNodes"][0];
    assert_eq!(dn["Url"], node.url());
    assert_eq!(dn["Volumes"], 7);
    assert_eq!(dn["VolumeIds"], " 1-7");
    assert_eq!(
        body["Topology"]["Layouts"][0]["writables"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let (status, body) = master.get("/vol/status").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["Volumes"]["DataCenters"]["DefaultDataCenter"]["DefaultRack"][node.url()]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    for path in ["/healthz", "/readyz", "/cluster/healthz"] {
        assert_eq!(master.get(path).await.0, 200, "{path}");
    }

    // GET /<fid> on the master redirects to a replica.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect
        .get(format!("{}/{fid}", master.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("http://{}/{fid}", node.url()).as_str()
    );

    let metrics = reqwest::get(format!("{}/metrics", master.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kelp_master_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/dir/assign\""), "{metrics}");
    assert!(metrics.contains("kelp_master_max_volume_id"), "{metrics}");

    // /vol/grow adds one volume; /col/delete forgets a collection.
    let (status, body) = master.get("/vol/grow?count=1&collection=pics").await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");
    let pics = node.allocations().last().unwrap().clone();
    assert_eq!(pics.collection, "pics");
    let resp = reqwest::get(format!("{}/col/delete?collection=pics", master.http))
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        node.state.lock().deleted_collections,
        vec!["pics".to_string()]
    );
    let (status, _) = master
        .get(&format!("/dir/lookup?volumeId={}", pics.volume_id))
        .await;
    assert_eq!(status, 404);

    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn replication_001_needs_two_servers_in_a_rack() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut a = FakeNode::start("r1").await;
    a.join(&master).await;

    let (status, body) = master.get("/dir/assign?replication=001").await;
    assert_eq!(status, 406, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("No free volumes left"),
        "{body}"
    );
    assert!(a.allocations().is_empty());

    let mut b = FakeNode::start("r1").await;
    b.join(&master).await;
    let (status, body) = master.get("/dir/assign?replication=001").await;
    assert_eq!(status, 200, "{body}");
    let fid = fid_parts(body["fid"].as_str().unwrap());
    assert_eq!(a.allocations().len(), 6, "copy count 2 grows 6");
    assert_eq!(b.allocations().len(), 6);
    let (_, body) = master
        .get(&format!("/dir/lookup?volumeId={}", fid.volume_id))
        .await;
    let mut urls: Vec<String> = body["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    let mut want = vec![a.url(), b.url()];
    want.sort();
    assert_eq!(urls, want);

    // The gRPC assign reports the other copy as a replica.
    let mut client = master.client().await;
    let r = client
        .assign(AssignRequest {
            count: 1,
            replication: "001".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_empty(), "{}", r.error);
    assert!(r.location.is_some());
    assert_eq!(r.replicas.len(), 1);

    // One copy gone: the volumes are no longer writable.
    b.leave().await;
    eventually("001 volumes to lose writability", || async {
        master.get("/dir/assign?replication=001").await.0 == 406
    })
    .await;
    a.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn silent_or_closed_heartbeat_unregisters_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let (_, body) = master.get("/dir/assign").await;
    let vid = fid_parts(body["fid"].as_str().unwrap()).volume_id;

    let mut kc = master.client().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(KeepConnectedRequest {
        client_type: "client".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut feed = kc
        .keep_connected(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // First message, then the node's volumes.
    let first = feed.message().await.unwrap().unwrap();
    assert!(first.volume_location.unwrap().leader.is_empty());
    let snap = feed
        .message()
        .await
        .unwrap()
        .unwrap()
        .volume_location
        .unwrap();
    assert_eq!(snap.url, node.url());
    assert!(snap.new_vids.contains(&vid));

    node.leave().await;
    eventually("lookup to forget the volume", || async {
        master.get(&format!("/dir/lookup?volumeId={vid}")).await.0 == 404
    })
    .await;
    let (_, body) = master.get("/dir/status").await;
    assert_eq!(body["Topology"]["DataCenters"].as_array().unwrap().len(), 0);
    let gone = next_location(&mut feed).await;
    assert_eq!(gone.url, node.url());
    assert!(gone.deleted_vids.contains(&vid));

    // A node that goes silent without closing is dropped after ~3 pulses.
    let mut client = master.client().await;
    let (btx, brx) = mpsc::channel(1);
    let mute = FakeNode::start("").await;
    mute.state.lock().volumes.insert(
        42,
        VolumeInformationMessage {
            id: 42,
            version: 3,
            ..Default::default()
        },
    );
    btx.send(mute.full_beat()).await.unwrap();
    let _replies = client
        .send_heartbeat(ReceiverStream::new(brx))
        .await
        .unwrap();
    let joined = next_location(&mut feed).await;
    assert_eq!(joined.new_vids, vec![42]);
    let (status, _) = master.get("/dir/lookup?volumeId=42").await;
    assert_eq!(status, 200);
    let left = next_location(&mut feed).await;
    assert_eq!(left.deleted_vids, vec![42]);
    assert_eq!(master.get("/dir/lookup?volumeId=42").await.0, 404);
    drop(btx);
    master.shutdown().await;
}

async fn next_location(
    feed: &mut tonic::Streaming<kelp_proto::master_pb::KeepConnectedResponse>,
) -> VolumeLocation {
    tokio::time::timeout(DEADLINE, feed.message())
        .await
        .expect("a location update in time")
        .unwrap()
        .unwrap()
        .volume_location
        .unwrap()
}

#[tokio::test]
async fn keep_connected_pushes_new_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut kc = master.client().await;
    // The client half-closes after its one request and keeps reading.
    let mut feed = kc
        .keep_connected(tokio_stream::iter(vec![KeepConnectedRequest {
            client_type: "client".into(),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    let first = next_location(&mut feed).await;
    assert!(first.url.is_empty() && first.new_vids.is_empty());

    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let (_, body) = master.get("/dir/assign").await;
    let vid = fid_parts(body["fid"].as_str().unwrap()).volume_id;
    let mut seen = Vec::new();
    while !seen.contains(&vid) {
        let loc = next_location(&mut feed).await;
        assert_eq!(loc.url, node.url());
        assert_eq!(loc.grpc_port, u32::from(node.grpc_port));
        seen.extend(loc.new_vids);
    }
    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn malformed_params_are_4xx_json() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    for path in [
        "/dir/assign?count=abc",
        "/dir/assign?count=-1",
        "/dir/assign?replication=9x9",
        "/dir/assign?replication=0001",
        "/dir/assign?ttl=5q",
        "/dir/assign?dataCenter=nowhere",
        "/dir/assign?rack=nowhere",
        "/dir/assign?dataNode=1.2.3.4:5",
        "/dir/lookup",
        "/dir/lookup?volumeId=abc",
        "/dir/lookup?volumeId=-3",
        "/dir/lookup?fileId=3,zz",
        "/dir/lookup?fileId=3",
        "/vol/grow?count=x",
        "/vol/grow?count=0",
        "/vol/grow?replication=abc",
        "/col/delete",
        "/3,zz",
    ] {
        let (status, body) = master.get(path).await;
        assert!((400..500).contains(&status), "{path}: {status} {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    assert!(node.allocations().is_empty());
    // The gRPC assign reports errors in the error field, location set.
    let mut client = master.client().await;
    let r = client
        .assign(AssignRequest {
            replication: "9x9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.error.is_empty());
    assert!(r.location.is_some());
    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn grpc_config_assign_and_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let mut client = master.client().await;
    let cfg = client
        .get_master_configuration(GetMasterConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cfg.default_replication, "000");
    assert_eq!(cfg.volume_size_limit_m_b, 30 * 1024);

    let r = client
        .assign(AssignRequest {
            count: 3,
            collection: "c".into(),
            ttl: "3d".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_empty(), "{}", r.error);
    assert_eq!(r.count, 3);
    let loc = r.location.unwrap();
    assert_eq!(loc.url, node.url());
    assert_eq!(loc.grpc_port, u32::from(node.grpc_port));
    let a = node.allocations();
    assert!(a.iter().all(|a| a.collection == "c" && a.ttl == "3d"));

    let res = client
        .lookup_volume(LookupVolumeRequest {
            volume_or_file_ids: vec![r.fid.clone(), "999".into(), "junk".into()],
            collection: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .volume_id_locations;
    assert_eq!(res[0].volume_or_file_id, r.fid);
    assert_eq!(res[0].locations[0].url, node.url());
    assert!(res[0].error.is_empty());
    assert!(res[1].error.contains("not found"));
    assert!(!res[2].error.is_empty());
    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn failing_volume_server_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut bad = FakeNode::start("").await;
    bad.state.lock().fail_allocate = true;
    bad.join(&master).await;
    let (status, body) = master.get("/dir/assign").await;
    assert_eq!(status, 406, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("disk on fire"),
        "{body}"
    );

    let mut good = FakeNode::start("").await;
    good.join(&master).await;
    let (status, body) = master.get("/dir/assign").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], good.url());
    assert_eq!(good.allocations().len(), 7);
    bad.leave().await;
    good.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn restart_never_reuses_keys_or_volume_ids() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let (_, body) = master.get("/dir/assign").await;
    let before = fid_parts(body["fid"].as_str().unwrap());
    node.leave().await;
    master.shutdown().await;

    // Same meta dir, and the node is back with its volumes.
    let master = TestMaster::start(dir.path()).await;
    assert_eq!(master.get("/cluster/status").await.1["MaxVolumeId"], 7);
    node.join(&master).await;
    let (status, body) = master.get("/dir/assign").await;
    assert_eq!(status, 200, "{body}");
    let after = fid_parts(body["fid"].as_str().unwrap());
    assert!(after.key > before.key, "{after} after {before}");
    assert_eq!(node.allocations().len(), 7, "existing volumes reused");
    let (_, body) = master.get("/vol/grow?count=1").await;
    assert_eq!(body["count"], 1);
    assert_eq!(node.allocations().last().unwrap().volume_id, 8);
    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn concurrent_assigns_share_one_growth() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let url = format!("{}/dir/assign", master.http);
    let calls = (0..10).map(|_| {
        let url = url.clone();
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut keys = std::collections::BTreeSet::new();
    for (status, body) in results {
        assert_eq!(status, 200, "{body}");
        assert!(keys.insert(fid_parts(body["fid"].as_str().unwrap()).key));
    }
    assert_eq!(node.allocations().len(), 7, "one growth for all ten");
    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn jwt_tokens_with_assign_and_file_id_lookup() {
    use kelp_core::JwtKey;
    let dir = tempfile::tempdir().unwrap();
    let write = JwtKey::new("w-secret", 10);
    let read = JwtKey::new("r-secret", 60);
    let master = TestMaster::start_with(dir.path(), |c| {
        c.security.signing = write.clone();
        c.security.read = read.clone();
    })
    .await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let http = reqwest::Client::new();
    let bearer = |r: &reqwest::Response| {
        r.headers().get("authorization").map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("Bearer ")
                .unwrap()
                .to_string()
        })
    };

    // HTTP assign: a write token for the assigned fid.
    let r = http
        .get(format!("{}/dir/assign", master.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = bearer(&r).expect("assign carries a token");
    let fid = r.json::<Value>().await.unwrap()["fid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(write.verify(Some(&token), &fid), Ok(()));
    assert!(read.verify(Some(&token), &fid).is_err());

    // HTTP lookup by file id: write token, or read token with read=yes;
    // none for a bare volume id.
    let r = http
        .get(format!("{}/dir/lookup?fileId={fid}", master.http))
        .send()
        .await
        .unwrap();
    assert_eq!(write.verify(bearer(&r).as_deref(), &fid), Ok(()));
    let r = http
        .get(format!("{}/dir/lookup?fileId={fid}&read=yes", master.http))
        .send()
        .await
        .unwrap();
    assert_eq!(read.verify(bearer(&r).as_deref(), &fid), Ok(()));
    let vid = fid.split(',').next().unwrap();
    let r = http
        .get(format!("{}/dir/lookup?volumeId={vid}", master.http))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer(&r), None);

    // gRPC: Assign.auth, and LookupVolume.auth for file ids only.
    let mut client = master.client().await;
    let a = client
        .assign(AssignRequest {
            count: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(write.verify(Some(&a.auth), &a.fid), Ok(()));
    assert_eq!(write.verify(Some(&a.auth), &format!("{}_1", a.fid)), Ok(()));
    let res = client
        .lookup_volume(LookupVolumeRequest {
            volume_or_file_ids: vec![a.fid.clone(), vid.to_string()],
            collection: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .volume_id_locations;
    assert_eq!(write.verify(Some(&res[0].auth), &a.fid), Ok(()));
    assert!(res[1].auth.is_empty());
    node.leave().await;
    master.shutdown().await;
}

#[tokio::test]
async fn no_tokens_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut node = FakeNode::start("").await;
    node.join(&master).await;
    let r = reqwest::get(format!("{}/dir/assign", master.http))
        .await
        .unwrap();
    assert!(r.headers().get("authorization").is_none());
    let a = master
        .client()
        .await
        .assign(AssignRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(a.auth.is_empty());
    node.leave().await;
    master.shutdown().await;
}
