//! `master_pb.Seaweed`: heartbeats from volume servers, `KeepConnected`
//! location pushes for clients, and the unary assign/lookup/config RPCs.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kelp_core::{FileId, VolumeId};
use kelp_proto::master_pb::lookup_volume_response::VolumeIdLocation;
use kelp_proto::master_pb::seaweed_server::Seaweed;
use kelp_proto::master_pb::{
    AssignRequest, AssignResponse, GetMasterConfigurationRequest, GetMasterConfigurationResponse,
    Heartbeat, HeartbeatResponse, KeepConnectedRequest, KeepConnectedResponse, LookupVolumeRequest,
    LookupVolumeResponse, VolumeLocation,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::MasterError;
use crate::master::{AssignParams, Master};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct SeaweedService {
    pub master: Arc<Master>,
}

/// Access class of each `master_pb.Seaweed` method: the calls clients
/// make (`weed upload`, `weed download`, `weed benchmark`, filers) are
/// client calls; heartbeats, and any method added later, are peer calls.
pub fn access(method_path: &str) -> kelp_net::Access {
    match method_path {
        "/master_pb.Seaweed/Assign"
        | "/master_pb.Seaweed/LookupVolume"
        | "/master_pb.Seaweed/KeepConnected"
        | "/master_pb.Seaweed/GetMasterConfiguration" => kelp_net::Access::Client,
        _ => kelp_net::Access::Peer,
    }
}

#[tonic::async_trait]
impl Seaweed for SeaweedService {
    type SendHeartbeatStream = BoxStream<HeartbeatResponse>;
    type KeepConnectedStream = BoxStream<KeepConnectedResponse>;

    async fn send_heartbeat(
        &self,
        request: Request<Streaming<Heartbeat>>,
    ) -> Result<Response<Self::SendHeartbeatStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(heartbeat_session(self.master.clone(), inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn keep_connected(
        &self,
        request: Request<Streaming<KeepConnectedRequest>>,
    ) -> Result<Response<Self::KeepConnectedStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(keep_connected_session(
            self.master.clone(),
            inbound,
            tx,
            peer,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lookup_volume(
        &self,
        request: Request<LookupVolumeRequest>,
    ) -> Result<Response<LookupVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id_locations = req
            .volume_or_file_ids
            .iter()
            .map(|id| {
                let mut out = VolumeIdLocation {
                    volume_or_file_id: id.clone(),
                    ..Default::default()
                };
                match parse_volume_or_file_id(id)
                    .and_then(|vid| self.master.lookup(vid, &req.collection))
                {
                    Ok(locations) => {
                        out.locations = locations;
                        // A file id gets a write token for that file (what
                        // `weed benchmark` deletes with).
                        if id.contains(',') {
                            out.auth = self
                                .master
                                .cfg
                                .security
                                .signing
                                .mint(id.trim())
                                .unwrap_or_default();
                        }
                    }
                    Err(e) => out.error = e.to_string(),
                }
                out
            })
            .collect();
        Ok(Response::new(LookupVolumeResponse {
            volume_id_locations,
        }))
    }

    /// Errors go in the `error` field, as `weed` expects, except a pending
    /// growth, which is `Unavailable` so the client retries.
    async fn assign(
        &self,
        request: Request<AssignRequest>,
    ) -> Result<Response<AssignResponse>, Status> {
        let r = request.into_inner();
        let params = AssignParams {
            count: r.count,
            replication: &r.replication,
            collection: &r.collection,
            ttl: &r.ttl,
            data_center: &r.data_center,
            rack: &r.rack,
            data_node: &r.data_node,
        };
        let result = match self.master.parse_assign(&params) {
            Ok(req) => self.master.assign(&req).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(a) => Ok(Response::new(AssignResponse {
                auth: self
                    .master
                    .cfg
                    .security
                    .signing
                    .mint(&a.fid.to_string())
                    .unwrap_or_default(),
                fid: a.fid.to_string(),
                count: a.count,
                location: Some(a.location),
                replicas: a.replicas,
                ..Default::default()
            })),
            Err(e @ MasterError::GrowthInProgress(_)) => Err(e.grpc_status()),
            Err(e) => Ok(Response::new(AssignResponse {
                error: e.to_string(),
                // Clients dereference `location` unconditionally.
                location: Some(Default::default()),
                ..Default::default()
            })),
        }
    }

    async fn get_master_configuration(
        &self,
        _request: Request<GetMasterConfigurationRequest>,
    ) -> Result<Response<GetMasterConfigurationResponse>, Status> {
        let cfg = &self.master.cfg;
        Ok(Response::new(GetMasterConfigurationResponse {
            default_replication: self.master.default_replication.to_string(),
            leader: cfg.leader_address(),
            volume_size_limit_m_b: u32::try_from(cfg.volume_size_limit_mb).unwrap_or(u32::MAX),
            volume_preallocate: cfg.volume_preallocate,
            ..Default::default()
        }))
    }
}

/// `"3"` or `"3,01637037d6"`.
pub fn parse_volume_or_file_id(s: &str) -> Result<VolumeId, MasterError> {
    if s.contains(',') {
        s.parse::<FileId>()
            .map(|f| f.volume_id)
            .map_err(|e| MasterError::BadRequest(e.to_string()))
    } else {
        s.parse()
            .map_err(|_| MasterError::BadRequest(format!("unknown volume id {s:?}")))
    }
}

/// One volume server's stream. It ends when the client closes it, sends
/// nothing for three pulses, or the master stops; then the node is
/// unregistered (unless a newer stream took it over).
async fn heartbeat_session(
    master: Arc<Master>,
    mut inbound: Streaming<Heartbeat>,
    tx: mpsc::Sender<Result<HeartbeatResponse, Status>>,
) {
    let silence = master.pulse() * 3;
    let stopped = master.stopped();
    tokio::pin!(stopped);
    let mut session: Option<(String, u64)> = None;
    let why = loop {
        let next = tokio::select! {
            _ = &mut stopped => break "master stopping",
            r = tokio::time::timeout(silence, inbound.message()) => r,
        };
        let beat = match next {
            Err(_) => break "no heartbeat within three pulses",
            Ok(Ok(Some(beat))) => beat,
            Ok(Ok(None)) => break "heartbeat stream closed",
            Ok(Err(status)) => {
                tracing::debug!(error = %status, "heartbeat stream error");
                break "heartbeat stream failed";
            }
        };
        let resp = master.heartbeat(&mut session, &beat).await;
        // Keep it cheap: a client that does not read replies loses them.
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(resp)) {
            break "heartbeat stream closed";
        }
    };
    if let Some((id, s)) = session {
        master.node_gone(&id, s, why);
    }
}

/// One client's location feed: a first message right after its request,
/// every node's volumes, then changes as they happen.
async fn keep_connected_session(
    master: Arc<Master>,
    mut inbound: Streaming<KeepConnectedRequest>,
    tx: mpsc::Sender<Result<KeepConnectedResponse, Status>>,
    peer: String,
) {
    let first = match inbound.message().await {
        Ok(Some(req)) => req,
        _ => return,
    };
    tracing::debug!(client_type = %first.client_type, address = %first.client_address, %peer,
        "client connected for volume locations");
    let mut events = master.subscribe();
    let send = |loc: VolumeLocation| {
        let tx = tx.clone();
        async move {
            tx.send(Ok(KeepConnectedResponse {
                volume_location: Some(loc),
                ..Default::default()
            }))
            .await
            .is_ok()
        }
    };
    // Empty leader: "this master is the one you dialled".
    if !send(VolumeLocation::default()).await {
        return;
    }
    let snapshot = master.topo.lock().snapshot();
    for loc in snapshot {
        if !send(loc).await {
            return;
        }
    }
    let stopped = master.stopped();
    tokio::pin!(stopped);
    // A client may half-close its side after the first request and keep
    // reading; only an error on its side ends the feed.
    let mut inbound_open = true;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tx.closed() => return,
            msg = inbound.message(), if inbound_open => match msg {
                Ok(Some(_)) => {}
                Ok(None) => inbound_open = false,
                Err(_) => return,
            },
            ev = events.recv() => match ev {
                Ok(loc) => {
                    if !send(loc).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, %peer, "location client lagged, resending all");
                    let snapshot = master.topo.lock().snapshot();
                    for loc in snapshot {
                        if !send(loc).await {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
