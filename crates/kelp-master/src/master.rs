//! The master's shared state and the operations both front ends (HTTP and
//! gRPC) call: assign, lookup, grow, heartbeat handling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_core::{FileId, NeedleId, ReplicaPlacement, Ttl, VolumeId};
use kelp_proto::master_pb::{Heartbeat, HeartbeatResponse, Location, VolumeLocation};
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::growth::{self, VolumeClients};
use crate::placement::Pins;
use crate::sequencer::Sequencer;
use crate::topology::{LayoutKey, NodeFilter, Topology, Writable};

/// How long an assign waits for another request's growth of the same
/// layout before answering 503.
const GROWTH_WAIT: Duration = Duration::from_secs(10);
/// Upper bound on `count` in one assign; keeps key space from being burnt
/// by a typo.
const MAX_ASSIGN_COUNT: u64 = 1 << 20;

pub struct Master {
    pub cfg: MasterConfig,
    pub default_replication: ReplicaPlacement,
    pub topo: Mutex<Topology>,
    pub seq: Sequencer,
    pub clients: VolumeClients,
    /// `cfg.security`, shared with the guards and clients.
    pub security: Arc<kelp_core::SecurityConfig>,
    events: broadcast::Sender<VolumeLocation>,
    growth_locks: Mutex<HashMap<LayoutKey, Arc<tokio::sync::Mutex<()>>>>,
    /// One vacuum run at a time (automatic or `/vol/vacuum`).
    pub vacuum_lock: tokio::sync::Mutex<()>,
    stop: watch::Receiver<bool>,
}

/// A validated assign request.
#[derive(Debug, Clone)]
pub struct AssignRequest {
    pub count: u64,
    pub layout: LayoutKey,
    pub filter: NodeFilter,
}

#[derive(Debug, Clone)]
pub struct Assignment {
    pub fid: FileId,
    pub count: u64,
    pub location: Location,
    pub replicas: Vec<Location>,
}

/// Raw assign parameters as both front ends receive them.
#[derive(Debug, Clone, Default)]
pub struct AssignParams<'a> {
    pub count: u64,
    pub replication: &'a str,
    pub collection: &'a str,
    pub ttl: &'a str,
    pub data_center: &'a str,
    pub rack: &'a str,
    pub data_node: &'a str,
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Master {
    pub async fn new(cfg: MasterConfig, stop: watch::Receiver<bool>) -> Result<Self, MasterError> {
        let default_replication = cfg
            .default_replication
            .parse()
            .map_err(|e| MasterError::BadRequest(format!("default replication: {e}")))?;
        let seq = Sequencer::open(cfg.meta_dir.clone()).await?;
        let pulse = Duration::from_secs(cfg.pulse_seconds.max(1));
        let (events, _) = broadcast::channel(1024);
        let security = Arc::new(cfg.security.clone());
        Ok(Self {
            topo: Mutex::new(Topology::new(cfg.volume_size_limit_bytes(), pulse * 3)),
            default_replication,
            seq,
            clients: VolumeClients::new(security.clone()),
            security,
            events,
            growth_locks: Mutex::new(HashMap::new()),
            vacuum_lock: tokio::sync::Mutex::new(()),
            stop,
            cfg,
        })
    }

    pub fn pulse(&self) -> Duration {
        Duration::from_secs(self.cfg.pulse_seconds.max(1))
    }

    /// Resolves when the master is shutting down.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<VolumeLocation> {
        self.events.subscribe()
    }

    pub fn publish(&self, events: impl IntoIterator<Item = VolumeLocation>) {
        for ev in events {
            // No subscribers is fine.
            let _ = self.events.send(ev);
        }
    }

    pub fn parse_assign(&self, p: &AssignParams<'_>) -> Result<AssignRequest, MasterError> {
        let replication = if p.replication.is_empty() {
            self.default_replication
        } else {
            p.replication
                .parse()
                .map_err(|e| MasterError::BadRequest(format!("{e}")))?
        };
        let ttl: Ttl = p
            .ttl
            .parse()
            .map_err(|e| MasterError::BadRequest(format!("{e}")))?;
        let count = p.count.max(1);
        if count > MAX_ASSIGN_COUNT {
            return Err(MasterError::BadRequest(format!(
                "count {count} exceeds {MAX_ASSIGN_COUNT}"
            )));
        }
        let filter = NodeFilter {
            data_center: opt(p.data_center),
            rack: opt(p.rack),
            data_node: opt(p.data_node),
        };
        {
            let t = self.topo.lock();
            let unknown = if let Some(dc) = filter
                .data_center
                .as_ref()
                .filter(|d| !t.has_data_center(d))
            {
                Some(format!("data center {dc}"))
            } else if let Some(rack) = filter.rack.as_ref().filter(|r| !t.has_rack(r)) {
                Some(format!("rack {rack}"))
            } else {
                filter
                    .data_node
                    .as_ref()
                    .filter(|n| t.node(n).is_none())
                    .map(|n| format!("data node {n}"))
            };
            if let Some(what) = unknown {
                return Err(MasterError::BadRequest(format!(
                    "{what} not found in topology"
                )));
            }
        }
        Ok(AssignRequest {
            count,
            layout: LayoutKey {
                collection: p.collection.to_string(),
                replication,
                ttl,
            },
            filter,
        })
    }

    pub async fn assign(&self, req: &AssignRequest) -> Result<Assignment, MasterError> {
        let w = match self.pick(req) {
            Some(w) => w,
            None => self.grow_for(req).await?,
        };
        let key: NeedleId = self.seq.next_keys(req.count).await?;
        let mut locations = w.locations.into_iter();
        let location = locations.next().ok_or_else(|| {
            MasterError::NoFreeVolumes(format!(
                "{}: volume {} has no location",
                req.layout, w.volume_id
            ))
        })?;
        Ok(Assignment {
            fid: FileId::new(w.volume_id, key, rand::random()),
            count: req.count,
            location,
            replicas: locations.collect(),
        })
    }

    fn pick(&self, req: &AssignRequest) -> Option<Writable> {
        self.topo
            .lock()
            .pick_writable(&req.layout, &req.filter, &mut rand::rng())
    }

    /// Only one growth per layout runs; others wait for it and then reuse
    /// what it created.
    async fn grow_for(&self, req: &AssignRequest) -> Result<Writable, MasterError> {
        let lock = self.growth_lock(&req.layout);
        let _guard = tokio::time::timeout(GROWTH_WAIT, lock.lock())
            .await
            .map_err(|_| MasterError::GrowthInProgress(req.layout.to_string()))?;
        if let Some(w) = self.pick(req) {
            return Ok(w);
        }
        let pins = Pins {
            data_center: req.filter.data_center.clone(),
            rack: req.filter.rack.clone(),
            data_node: req.filter.data_node.clone(),
        };
        growth::grow(self, &req.layout, None, &pins).await?;
        self.pick(req)
            .ok_or_else(|| MasterError::NoFreeVolumes(req.layout.to_string()))
    }

    /// `/vol/grow`: grows even if writable volumes exist, under the same
    /// per-layout lock as assign.
    pub async fn grow(
        &self,
        layout: &LayoutKey,
        count: Option<u32>,
        pins: &Pins,
    ) -> Result<u32, MasterError> {
        let lock = self.growth_lock(layout);
        let _guard = tokio::time::timeout(GROWTH_WAIT, lock.lock())
            .await
            .map_err(|_| MasterError::GrowthInProgress(layout.to_string()))?;
        growth::grow(self, layout, count, pins).await
    }

    fn growth_lock(&self, layout: &LayoutKey) -> Arc<tokio::sync::Mutex<()>> {
        self.growth_locks
            .lock()
            .entry(layout.clone())
            .or_default()
            .clone()
    }

    pub fn lookup(&self, vid: VolumeId, collection: &str) -> Result<Vec<Location>, MasterError> {
        let found = self.topo.lock().lookup(vid);
        match found {
            Some(l) if collection.is_empty() || l.collection == collection => Ok(l.locations),
            _ => Err(MasterError::VolumeNotFound(vid)),
        }
    }

    /// Handles one heartbeat. `session` is the stream's registration, set
    /// by its first usable beat.
    pub async fn heartbeat(
        &self,
        session: &mut Option<(String, u64)>,
        beat: &Heartbeat,
    ) -> HeartbeatResponse {
        let now = Instant::now();
        let events = {
            let mut t = self.topo.lock();
            match session {
                Some((id, s)) => t.apply_beat(id, *s, beat, false, now),
                None => match t.register(beat, now) {
                    Some((id, s, events)) => {
                        *session = Some((id, s));
                        events
                    }
                    None => Vec::new(),
                },
            }
        };
        self.publish(events);
        if session.is_some() {
            self.seq.observe_key(beat.max_file_key).await;
            let max_vid = beat
                .volumes
                .iter()
                .map(|v| v.id)
                .chain(beat.new_volumes.iter().map(|v| v.id))
                .chain(beat.changed_volumes.iter().map(|v| v.id))
                .max();
            if let Some(vid) = max_vid
                && let Err(e) = self.seq.observe_volume_id(vid).await
            {
                tracing::error!(error = %e, "could not persist max volume id");
            }
        }
        HeartbeatResponse {
            volume_size_limit: self.cfg.volume_size_limit_bytes(),
            preallocate: self.cfg.volume_preallocate,
            ..Default::default()
        }
    }

    pub fn node_gone(&self, id: &str, session: u64, why: &str) {
        let ev = self.topo.lock().unregister(id, session, why);
        self.publish(ev);
    }

    /// `/col/delete`: forget the collection's volumes and ask their servers
    /// to delete them.
    pub async fn delete_collection(&self, collection: &str) -> Result<(), MasterError> {
        let (servers, events) = self.topo.lock().remove_collection(collection);
        self.publish(events);
        let mut errors = Vec::new();
        for addr in servers {
            if let Err(e) = self.clients.delete_collection(&addr, collection).await {
                errors.push(format!("{addr}: {e}"));
            }
        }
        tracing::info!(collection, "collection deleted");
        if errors.is_empty() {
            Ok(())
        } else {
            Err(MasterError::VolumeServer(format!(
                "delete collection {collection}: {}",
                errors.join("; ")
            )))
        }
    }
}
