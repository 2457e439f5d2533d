//! Volume growth: choose servers for new volumes, give each a fresh volume
//! id, call `AllocateVolume` on every chosen server, and register the
//! result at once so the next assign can use it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_core::VolumeId;
use kelp_net::client::PeerChannel;
use kelp_proto::volume_server_pb::volume_server_client::VolumeServerClient;
use kelp_proto::volume_server_pb::{
    AllocateVolumeRequest, DeleteCollectionRequest, VolumeDeleteRequest,
};
use parking_lot::Mutex;

use crate::error::MasterError;
use crate::master::Master;
use crate::placement::{self, Pins};
use crate::topology::LayoutKey;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Allocation failures tolerated in one growth before giving up.
const MAX_FAILURES: u32 = 3;

/// SeaweedFS's `[master.volume_growth]` defaults: logical volumes created
/// per growth, by copy count.
pub fn default_count(copy_count: usize) -> u32 {
    match copy_count {
        1 => 7,
        2 => 6,
        3 => 3,
        _ => 1,
    }
}

/// Grows `layout` by up to `count` logical volumes (default by copy count),
/// fewer if the cluster runs out of room. Returns the number of replicas
/// created, as `/vol/grow` reports it.
pub async fn grow(
    m: &Master,
    layout: &LayoutKey,
    count: Option<u32>,
    pins: &Pins,
) -> Result<u32, MasterError> {
    let target = count
        .or(m.cfg.volume_growth_count)
        .unwrap_or_else(|| default_count(layout.replication.copy_count()))
        .max(1);
    let mut excluded: BTreeSet<String> = BTreeSet::new();
    let (mut created, mut grown, mut failures) = (0u32, 0u32, 0u32);
    let mut last_error: Option<MasterError> = None;
    while grown < target {
        let picked = {
            let mut t = m.topo.lock();
            let candidates = t.candidates(&excluded);
            placement::pick(&candidates, layout.replication, pins, &mut rand::rng()).map(|ids| {
                t.reserve(&ids);
                ids.iter()
                    .filter_map(|id| t.node(id).map(|n| (id.clone(), n.grpc_address())))
                    .collect::<Vec<_>>()
            })
        };
        let servers = match picked {
            Ok(s) => s,
            Err(e) => {
                if created == 0 {
                    return Err(last_error
                        .unwrap_or_else(|| MasterError::NoFreeVolumes(format!("{layout}: {e}"))));
                }
                break;
            }
        };
        let ids: Vec<String> = servers.iter().map(|(id, _)| id.clone()).collect();
        let result = allocate(m, layout, &servers).await;
        m.topo.lock().release(&ids);
        match result {
            Ok(vid) => {
                let events = m
                    .topo
                    .lock()
                    .register_allocated(vid, layout, &ids, Instant::now());
                m.publish(events);
                tracing::info!(volume = vid, %layout, servers = ?ids, "volume grown");
                created += u32::try_from(ids.len()).unwrap_or(u32::MAX);
                grown += 1;
            }
            Err((failed, e)) => {
                tracing::warn!(%layout, servers = ?failed, error = %e, "volume allocation failed");
                let fatal = failed.is_empty();
                excluded.extend(failed);
                last_error = Some(e);
                failures += 1;
                if fatal || failures >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    if created == 0 {
        return Err(last_error.unwrap_or_else(|| MasterError::NoFreeVolumes(layout.to_string())));
    }
    Ok(created)
}

/// Allocates one new volume on every server in `servers` (id, gRPC
/// address). On failure returns the servers that failed (empty when the
/// failure was the master's own) and removes any partial copies.
async fn allocate(
    m: &Master,
    layout: &LayoutKey,
    servers: &[(String, String)],
) -> Result<VolumeId, (Vec<String>, MasterError)> {
    let vid = m.seq.next_volume_id().await.map_err(|e| (Vec::new(), e))?;
    let preallocate = if m.cfg.volume_preallocate {
        i64::try_from(m.cfg.volume_size_limit_bytes()).unwrap_or(i64::MAX)
    } else {
        0
    };
    let req = AllocateVolumeRequest {
        volume_id: vid,
        collection: layout.collection.clone(),
        preallocate,
        replication: layout.replication.to_string(),
        ttl: layout.ttl.to_string(),
        version: 3,
        ..Default::default()
    };
    let calls = servers.iter().map(|(id, addr)| {
        let req = req.clone();
        async move { (id, addr, m.clients.allocate(addr, req).await) }
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, _, r)| r.is_err())
        .map(|(id, _, _)| (*id).clone())
        .collect();
    if failed.is_empty() {
        return Ok(vid);
    }
    let mut messages = Vec::new();
    for (id, addr, r) in &results {
        match r {
            Err(e) => messages.push(format!("{id}: {e}")),
            // Best effort: an orphan replica would only waste a slot, and
            // the next full heartbeat reports it anyway.
            Ok(()) => {
                if let Err(e) = m.clients.delete_volume(addr, vid, true).await {
                    tracing::warn!(volume = vid, server = %id, error = %e, "could not remove partial replica");
                }
            }
        }
    }
    Err((
        failed,
        MasterError::GrowthFailed(format!("allocate volume {vid}: {}", messages.join("; "))),
    ))
}

/// gRPC channels to volume servers, one per address, connected lazily,
/// with this cluster's TLS settings and peer credential.
pub struct VolumeClients {
    security: Arc<kelp_core::SecurityConfig>,
    channels: Mutex<HashMap<String, PeerChannel>>,
}

impl VolumeClients {
    pub fn new(security: Arc<kelp_core::SecurityConfig>) -> Self {
        Self {
            security,
            channels: Mutex::default(),
        }
    }

    pub(crate) fn client(&self, addr: &str) -> Result<VolumeServerClient<PeerChannel>, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(VolumeServerClient::new(c.clone()));
        }
        let channel = kelp_net::client::grpc_channel(
            &self.security,
            kelp_core::GrpcRole::Master,
            addr,
            CONNECT_TIMEOUT,
        )
        .map_err(|e| format!("volume server {addr}: {e}"))?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(VolumeServerClient::new(channel))
    }

    pub async fn allocate(&self, addr: &str, req: AllocateVolumeRequest) -> Result<(), String> {
        let mut c = self.client(addr)?;
        call(c.allocate_volume(req)).await
    }

    /// Deletes a volume's copy on one server; `only_empty` refuses a copy
    /// that still holds live needles.
    pub async fn delete_volume(
        &self,
        addr: &str,
        volume_id: VolumeId,
        only_empty: bool,
    ) -> Result<(), String> {
        let mut c = self.client(addr)?;
        call(c.volume_delete(VolumeDeleteRequest {
            volume_id,
            only_empty,
        }))
        .await
    }

    pub async fn delete_collection(&self, addr: &str, collection: &str) -> Result<(), String> {
        let mut c = self.client(addr)?;
        call(c.delete_collection(DeleteCollectionRequest {
            collection: collection.to_string(),
        }))
        .await
    }
}

async fn call<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<(), String> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}
