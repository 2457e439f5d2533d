//! What the master knows about the cluster: data centers → racks → data
//! nodes → volumes, and for each layout (collection, replication, ttl) which
//! volumes exist. Rebuilt from heartbeats after a restart; nothing here is
//! persisted.
//!
//! Every mutation is a synchronous method that returns the
//! `VolumeLocation` deltas it caused, which the caller broadcasts to
//! `KeepConnected` clients after releasing the lock.
//!
//! Invariants: `volumes[vid].locations` lists exactly the nodes whose
//! `volumes` map holds `vid`, and `layouts[k]` holds exactly the vids whose
//! entry has layout `k`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kelp_core::{ReplicaPlacement, Ttl, VolumeId};
use kelp_proto::master_pb::{
    Heartbeat, Location, VolumeInformationMessage, VolumeLocation, VolumeShortInformationMessage,
};

use crate::placement::Candidate;

pub const DEFAULT_DATA_CENTER: &str = "DefaultDataCenter";
pub const DEFAULT_RACK: &str = "DefaultRack";

/// Volumes of one layout are interchangeable for writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayoutKey {
    pub collection: String,
    pub replication: ReplicaPlacement,
    pub ttl: Ttl,
}

impl std::fmt::Display for LayoutKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "collection:{:?} replication:{} ttl:{:?}",
            self.collection,
            self.replication,
            self.ttl.to_string()
        )
    }
}

/// One replica of a volume as its server last reported it.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub id: VolumeId,
    pub size: u64,
    pub collection: String,
    pub file_count: u64,
    pub delete_count: u64,
    pub deleted_byte_count: u64,
    pub read_only: bool,
    pub replication: ReplicaPlacement,
    pub version: u32,
    pub ttl: Ttl,
    pub compact_revision: u32,
    pub modified_at_second: i64,
    pub disk_type: String,
    /// Set when the master registered this replica itself after
    /// AllocateVolume; a full heartbeat sent before the allocation may not
    /// list it yet, so it survives omission for a short grace period.
    pub allocated_at: Option<Instant>,
}

fn placement_of(byte: u32) -> ReplicaPlacement {
    u8::try_from(byte)
        .ok()
        .and_then(|b| ReplicaPlacement::from_byte(b).ok())
        .unwrap_or_default()
}

impl VolumeInfo {
    pub fn layout(&self) -> LayoutKey {
        LayoutKey {
            collection: self.collection.clone(),
            replication: self.replication,
            ttl: self.ttl,
        }
    }

    pub fn new_empty(id: VolumeId, layout: &LayoutKey, now: Instant) -> Self {
        Self {
            id,
            size: 0,
            collection: layout.collection.clone(),
            file_count: 0,
            delete_count: 0,
            deleted_byte_count: 0,
            read_only: false,
            replication: layout.replication,
            version: 3,
            ttl: layout.ttl,
            compact_revision: 0,
            modified_at_second: 0,
            disk_type: String::new(),
            allocated_at: Some(now),
        }
    }
}

impl From<&VolumeInformationMessage> for VolumeInfo {
    fn from(m: &VolumeInformationMessage) -> Self {
        Self {
            id: m.id,
            size: m.size,
            collection: m.collection.clone(),
            file_count: m.file_count,
            delete_count: m.delete_count,
            deleted_byte_count: m.deleted_byte_count,
            read_only: m.read_only,
            replication: placement_of(m.replica_placement),
            version: m.version,
            ttl: Ttl::from_u32(m.ttl),
            compact_revision: m.compact_revision,
            modified_at_second: m.modified_at_second,
            disk_type: m.disk_type.clone(),
            allocated_at: None,
        }
    }
}

impl From<&VolumeShortInformationMessage> for VolumeInfo {
    fn from(m: &VolumeShortInformationMessage) -> Self {
        Self {
            id: m.id,
            size: 0,
            collection: m.collection.clone(),
            file_count: 0,
            delete_count: 0,
            deleted_byte_count: 0,
            read_only: false,
            replication: placement_of(m.replica_placement),
            version: m.version,
            ttl: Ttl::from_u32(m.ttl),
            compact_revision: 0,
            modified_at_second: 0,
            disk_type: m.disk_type.clone(),
            allocated_at: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DataNode {
    pub ip: String,
    pub port: u16,
    pub grpc_port: u16,
    pub public_url: String,
    pub data_center: String,
    pub rack: String,
    pub max_volumes: u32,
    /// Slots promised to growths in flight.
    pub reserved: u32,
    pub volumes: BTreeMap<VolumeId, VolumeInfo>,
    /// Which heartbeat stream owns this registration.
    pub session: u64,
}

impl DataNode {
    pub fn url(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn grpc_address(&self) -> String {
        format!("{}:{}", self.ip, self.grpc_port)
    }

    pub fn free_slots(&self) -> u32 {
        let used = u32::try_from(self.volumes.len()).unwrap_or(u32::MAX);
        self.max_volumes
            .saturating_sub(used)
            .saturating_sub(self.reserved)
    }

    pub fn location(&self) -> Location {
        Location {
            url: self.url(),
            public_url: self.public_url.clone(),
            grpc_port: u32::from(self.grpc_port),
            data_center: self.data_center.clone(),
        }
    }

    fn volume_location(&self) -> VolumeLocation {
        VolumeLocation {
            url: self.url(),
            public_url: self.public_url.clone(),
            grpc_port: u32::from(self.grpc_port),
            data_center: self.data_center.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
struct VolumeEntry {
    layout: LayoutKey,
    locations: Vec<String>,
}

/// A volume with copies to spare (see `Topology::over_replicated`).
#[derive(Debug, Clone)]
pub struct OverReplicated {
    pub vid: VolumeId,
    pub replication: ReplicaPlacement,
    pub copies: Vec<CopyInfo>,
}

/// One copy of a volume, as its server last reported it.
#[derive(Debug, Clone)]
pub struct CopyInfo {
    pub node: String,
    pub grpc: String,
    pub spot: crate::placement::Spot,
    pub modified_at_second: i64,
    pub size: u64,
}

/// A volume missing copies (see `Topology::under_replicated`).
#[derive(Debug, Clone)]
pub struct UnderReplicated {
    pub vid: VolumeId,
    pub layout: LayoutKey,
    pub holders: Vec<String>,
    pub spots: Vec<crate::placement::Spot>,
}

/// Restricts which replicas an assign may use.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub data_center: Option<String>,
    pub rack: Option<String>,
    pub data_node: Option<String>,
}

impl NodeFilter {
    fn matches(&self, n: &DataNode) -> bool {
        self.data_center
            .as_deref()
            .is_none_or(|d| d == n.data_center)
            && self.rack.as_deref().is_none_or(|r| r == n.rack)
            && self.data_node.as_deref().is_none_or(|u| u == n.url())
    }
}

/// A volume chosen for writing: main location first.
#[derive(Debug, Clone)]
pub struct Writable {
    pub volume_id: VolumeId,
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub collection: String,
    pub locations: Vec<Location>,
}

pub struct Topology {
    nodes: BTreeMap<String, DataNode>,
    volumes: HashMap<VolumeId, VolumeEntry>,
    layouts: HashMap<LayoutKey, BTreeSet<VolumeId>>,
    size_limit: u64,
    /// How long a master-registered replica may be missing from full beats.
    allocation_grace: Duration,
    next_session: u64,
    /// Volumes being vacuumed: not offered to assigns meanwhile.
    vacuuming: BTreeSet<VolumeId>,
}

/// Per-node new/deleted vids collected during one mutation.
#[derive(Default)]
struct Changes {
    new: Vec<VolumeId>,
    deleted: Vec<VolumeId>,
}

impl Topology {
    pub fn new(size_limit: u64, allocation_grace: Duration) -> Self {
        Self {
            nodes: BTreeMap::new(),
            volumes: HashMap::new(),
            layouts: HashMap::new(),
            size_limit,
            allocation_grace,
            next_session: 1,
            vacuuming: BTreeSet::new(),
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = &DataNode> {
        self.nodes.values()
    }

    pub fn node(&self, id: &str) -> Option<&DataNode> {
        self.nodes.get(id)
    }

    pub fn volume_count(&self) -> usize {
        self.volumes.len()
    }

    pub fn has_data_center(&self, dc: &str) -> bool {
        self.nodes.values().any(|n| n.data_center == dc)
    }

    pub fn has_rack(&self, rack: &str) -> bool {
        self.nodes.values().any(|n| n.rack == rack)
    }

    /// Layouts with their volume ids and which are writable, for status.
    pub fn layouts(&self) -> Vec<(LayoutKey, Vec<VolumeId>, Vec<VolumeId>)> {
        let mut out: Vec<_> = self
            .layouts
            .iter()
            .map(|(k, vids)| {
                let all: Vec<VolumeId> = vids.iter().copied().collect();
                let writable = all
                    .iter()
                    .copied()
                    .filter(|v| self.is_writable(*v, &NodeFilter::default()))
                    .collect();
                (k.clone(), all, writable)
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.0.collection, a.0.replication.to_byte(), a.0.ttl.to_u32()).cmp(&(
                &b.0.collection,
                b.0.replication.to_byte(),
                b.0.ttl.to_u32(),
            ))
        });
        out
    }

    /// First beat of a stream: (re)creates the node and returns its session.
    /// `None` when the beat cannot identify a node.
    pub fn register(
        &mut self,
        beat: &Heartbeat,
        now: Instant,
    ) -> Option<(String, u64, Vec<VolumeLocation>)> {
        if beat.ip.is_empty() {
            return None;
        }
        let port = u16::try_from(beat.port).ok().filter(|p| *p != 0)?;
        let id = format!("{}:{}", beat.ip, port);
        let session = self.next_session;
        self.next_session += 1;
        let mut events = Vec::new();
        if self.nodes.contains_key(&id) {
            // Same node, new stream: its volumes stay until the full list
            // in this beat replaces them.
            tracing::info!(node = %id, "data node reconnected on a new heartbeat stream");
        } else {
            tracing::info!(node = %id, dc = %non_empty(&beat.data_center, DEFAULT_DATA_CENTER),
                rack = %non_empty(&beat.rack, DEFAULT_RACK), "data node joined");
            self.nodes.insert(
                id.clone(),
                DataNode {
                    ip: beat.ip.clone(),
                    port,
                    grpc_port: 0,
                    public_url: String::new(),
                    data_center: String::new(),
                    rack: String::new(),
                    max_volumes: 0,
                    reserved: 0,
                    volumes: BTreeMap::new(),
                    session,
                },
            );
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.session = session;
        }
        events.extend(self.apply_beat(&id, session, beat, true, now));
        Some((id, session, events))
    }

    /// Applies a beat of an established stream. `full` forces the volume
    /// list to be taken as complete (first beat of a stream).
    pub fn apply_beat(
        &mut self,
        id: &str,
        session: u64,
        beat: &Heartbeat,
        full: bool,
        now: Instant,
    ) -> Vec<VolumeLocation> {
        let grace = self.allocation_grace;
        let Some(node) = self.nodes.get_mut(id).filter(|n| n.session == session) else {
            return Vec::new();
        };
        // Location attributes: only fields a beat carries are updated; Go
        // volume servers send delta beats with ip/port/dc/rack but no
        // grpc_port or public_url.
        if let Some(p) = u16::try_from(beat.grpc_port).ok().filter(|p| *p != 0) {
            node.grpc_port = p;
        }
        if node.grpc_port == 0 {
            node.grpc_port = kelp_proto::default_grpc_port(node.port);
        }
        if !beat.public_url.is_empty() {
            node.public_url = beat.public_url.clone();
        } else if node.public_url.is_empty() {
            node.public_url = node.url();
        }
        let dc = non_empty(&beat.data_center, &node.data_center);
        let dc = non_empty(dc, DEFAULT_DATA_CENTER).to_string();
        let rack = non_empty(&beat.rack, &node.rack);
        let rack = non_empty(rack, DEFAULT_RACK).to_string();
        if (!node.data_center.is_empty() && node.data_center != dc)
            || (!node.rack.is_empty() && node.rack != rack)
        {
            tracing::info!(node = %id, %dc, %rack, "data node moved");
        }
        node.data_center = dc;
        node.rack = rack;
        if !beat.max_volume_counts.is_empty() {
            node.max_volumes = beat
                .max_volume_counts
                .values()
                .fold(0u32, |a, b| a.saturating_add(*b));
        }

        let mut ch = Changes::default();
        if full || !beat.volumes.is_empty() || beat.has_no_volumes {
            let reported: BTreeMap<VolumeId, VolumeInfo> = beat
                .volumes
                .iter()
                .map(|v| (v.id, VolumeInfo::from(v)))
                .collect();
            let gone: Vec<VolumeId> = node
                .volumes
                .iter()
                .filter(|(vid, info)| {
                    !reported.contains_key(vid)
                        && info
                            .allocated_at
                            .is_none_or(|t| now.saturating_duration_since(t) > grace)
                })
                .map(|(vid, _)| *vid)
                .collect();
            for vid in gone {
                self.remove_replica(id, vid, &mut ch);
            }
            for (_, info) in reported {
                self.upsert_replica(id, info, &mut ch);
            }
        }
        for v in &beat.changed_volumes {
            self.upsert_replica(id, VolumeInfo::from(v), &mut ch);
        }
        for v in &beat.new_volumes {
            let known = self
                .nodes
                .get(id)
                .is_some_and(|n| n.volumes.contains_key(&v.id));
            if !known {
                self.upsert_replica(id, VolumeInfo::from(v), &mut ch);
            }
        }
        for v in &beat.deleted_volumes {
            self.remove_replica(id, v.id, &mut ch);
        }
        self.event(id, ch).into_iter().collect()
    }

    /// The stream of `session` ended or went silent. A newer stream of the
    /// same node keeps it registered.
    pub fn unregister(&mut self, id: &str, session: u64, why: &str) -> Option<VolumeLocation> {
        if self.nodes.get(id).is_none_or(|n| n.session != session) {
            return None;
        }
        let mut ch = Changes::default();
        let vids: Vec<VolumeId> = self.nodes[id].volumes.keys().copied().collect();
        for vid in vids {
            self.remove_replica(id, vid, &mut ch);
        }
        let ev = self.event(id, ch);
        self.nodes.remove(id);
        tracing::info!(node = %id, reason = why, "data node left");
        ev
    }

    /// Master-side registration right after AllocateVolume succeeded, so
    /// the next assign can use the volume before any heartbeat mentions it.
    pub fn register_allocated(
        &mut self,
        vid: VolumeId,
        layout: &LayoutKey,
        node_ids: &[String],
        now: Instant,
    ) -> Vec<VolumeLocation> {
        let mut events = Vec::new();
        for id in node_ids {
            if !self.nodes.contains_key(id) {
                continue;
            }
            let mut ch = Changes::default();
            self.upsert_replica(id, VolumeInfo::new_empty(vid, layout, now), &mut ch);
            events.extend(self.event(id, ch));
        }
        events
    }

    /// Drops every volume of `collection`; returns the gRPC addresses of
    /// the servers that held one.
    pub fn remove_collection(&mut self, collection: &str) -> (Vec<String>, Vec<VolumeLocation>) {
        let mut servers = Vec::new();
        let mut events = Vec::new();
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            let vids: Vec<VolumeId> = self.nodes[&id]
                .volumes
                .values()
                .filter(|v| v.collection == collection)
                .map(|v| v.id)
                .collect();
            if vids.is_empty() {
                continue;
            }
            servers.push(self.nodes[&id].grpc_address());
            let mut ch = Changes::default();
            for vid in vids {
                self.remove_replica(&id, vid, &mut ch);
            }
            events.extend(self.event(&id, ch));
        }
        (servers, events)
    }

    pub fn lookup(&self, vid: VolumeId) -> Option<Lookup> {
        let e = self.volumes.get(&vid)?;
        Some(Lookup {
            collection: e.layout.collection.clone(),
            locations: e
                .locations
                .iter()
                .filter_map(|id| self.nodes.get(id))
                .map(DataNode::location)
                .collect(),
        })
    }

    /// A random writable volume of `layout` with a replica matching
    /// `filter`; that replica is listed first.
    pub fn pick_writable(
        &self,
        layout: &LayoutKey,
        filter: &NodeFilter,
        rng: &mut impl rand::Rng,
    ) -> Option<Writable> {
        let vids: Vec<VolumeId> = self
            .layouts
            .get(layout)?
            .iter()
            .copied()
            .filter(|v| self.is_writable(*v, filter))
            .collect();
        // Concentrate writes: pick a server at random, then its writable
        // volume with the lowest id. Concurrent writers to one server then
        // share a volume and so its group-commit fsyncs, instead of being
        // spread over every writable volume (7 after a growth) with a
        // batch of one or two each. Servers still share the load.
        let mut per_server: BTreeMap<&str, VolumeId> = BTreeMap::new();
        for vid in vids {
            let Some(server) = self.volumes.get(&vid).and_then(|e| e.locations.first()) else {
                continue;
            };
            let slot = per_server.entry(server.as_str()).or_insert(vid);
            *slot = (*slot).min(vid);
        }
        if per_server.is_empty() {
            return None;
        }
        let vid = *per_server
            .values()
            .nth(rng.random_range(0..per_server.len()))?;
        let entry = self.volumes.get(&vid)?;
        let mut nodes: Vec<&DataNode> = entry
            .locations
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .collect();
        if let Some(i) = nodes.iter().position(|n| filter.matches(n)) {
            nodes.swap(0, i);
        }
        Some(Writable {
            volume_id: vid,
            locations: nodes.into_iter().map(DataNode::location).collect(),
        })
    }

    /// Writable: exactly copy_count replicas, none read-only or full, and
    /// (with a filter) one replica on a matching node.
    fn is_writable(&self, vid: VolumeId, filter: &NodeFilter) -> bool {
        let Some(e) = self.volumes.get(&vid) else {
            return false;
        };
        if self.vacuuming.contains(&vid) {
            return false;
        }
        if e.locations.len() != e.layout.replication.copy_count() {
            return false;
        }
        let mut any_match = false;
        for id in &e.locations {
            let Some(n) = self.nodes.get(id) else {
                return false;
            };
            let Some(info) = n.volumes.get(&vid) else {
                return false;
            };
            if info.read_only || info.size >= self.size_limit {
                return false;
            }
            any_match |= filter.matches(n);
        }
        any_match
    }

    pub fn candidates(&self, excluded: &BTreeSet<String>) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|(id, _)| !excluded.contains(*id))
            .map(|(id, n)| Candidate {
                id: id.clone(),
                data_center: n.data_center.clone(),
                rack: n.rack.clone(),
                free_slots: n.free_slots(),
            })
            .collect()
    }

    pub fn reserve(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(n) = self.nodes.get_mut(id) {
                n.reserved += 1;
            }
        }
    }

    pub fn release(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(n) = self.nodes.get_mut(id) {
                n.reserved = n.reserved.saturating_sub(1);
            }
        }
    }

    /// Volumes with at least one but fewer live copies than their placement
    /// asks for, by id: (id, layout, holder node ids, holder spots).
    pub fn under_replicated(&self) -> Vec<UnderReplicated> {
        let mut out: Vec<UnderReplicated> = self
            .volumes
            .iter()
            .filter(|(_, e)| {
                !e.locations.is_empty() && e.locations.len() < e.layout.replication.copy_count()
            })
            .map(|(vid, e)| UnderReplicated {
                vid: *vid,
                layout: e.layout.clone(),
                holders: e.locations.clone(),
                spots: e
                    .locations
                    .iter()
                    .filter_map(|id| self.nodes.get(id))
                    .map(|n| crate::placement::Spot {
                        data_center: n.data_center.clone(),
                        rack: n.rack.clone(),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|u| u.vid);
        out
    }

    /// Volumes with more live copies than their placement asks for, by id,
    /// each with its placement and what every holder last reported.
    pub fn over_replicated(&self) -> Vec<OverReplicated> {
        let mut out: Vec<OverReplicated> = self
            .volumes
            .iter()
            .filter(|(_, e)| e.locations.len() > e.layout.replication.copy_count())
            .map(|(vid, e)| OverReplicated {
                vid: *vid,
                replication: e.layout.replication,
                copies: e
                    .locations
                    .iter()
                    .filter_map(|id| {
                        let n = self.nodes.get(id)?;
                        let v = n.volumes.get(vid)?;
                        Some(CopyInfo {
                            node: id.clone(),
                            grpc: n.grpc_address(),
                            spot: crate::placement::Spot {
                                data_center: n.data_center.clone(),
                                rack: n.rack.clone(),
                            },
                            modified_at_second: v.modified_at_second,
                            size: v.size,
                        })
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|o| o.vid);
        out
    }

    /// Marks a volume as being vacuumed (not writable for assigns) or not.
    pub fn set_vacuuming(&mut self, vid: VolumeId, on: bool) {
        if on {
            self.vacuuming.insert(vid);
        } else {
            self.vacuuming.remove(&vid);
        }
    }

    /// Volumes to consider for vacuum, by id, each with its replicas as
    /// (node id, gRPC address); optionally only one collection or volume.
    pub fn vacuum_targets(
        &self,
        collection: Option<&str>,
        only: Option<VolumeId>,
    ) -> Vec<(VolumeId, Vec<(String, String)>)> {
        let mut out: Vec<_> = self
            .volumes
            .iter()
            .filter(|(vid, e)| {
                only.is_none_or(|o| o == **vid)
                    && collection.is_none_or(|c| c == e.layout.collection)
            })
            .map(|(vid, e)| {
                let replicas = e
                    .locations
                    .iter()
                    .filter_map(|id| self.nodes.get(id).map(|n| (id.clone(), n.grpc_address())))
                    .collect();
                (*vid, replicas)
            })
            .collect();
        out.sort_by_key(|(vid, _)| *vid);
        out
    }

    /// Records a replica's new size after a compaction commit, so the
    /// size limit is right before its next heartbeat.
    pub fn note_compacted(&mut self, vid: VolumeId, node: &str, size: u64) {
        if let Some(info) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.volumes.get_mut(&vid))
        {
            info.size = size;
            info.deleted_byte_count = 0;
            info.delete_count = 0;
            info.compact_revision = info.compact_revision.wrapping_add(1);
        }
    }

    /// Every node's volumes, as pushed to a new KeepConnected client.
    pub fn snapshot(&self) -> Vec<VolumeLocation> {
        self.nodes
            .values()
            .map(|n| VolumeLocation {
                new_vids: n.volumes.keys().copied().collect(),
                ..n.volume_location()
            })
            .collect()
    }

    fn upsert_replica(&mut self, id: &str, info: VolumeInfo, ch: &mut Changes) {
        let vid = info.id;
        let layout = info.layout();
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        let is_new = node.volumes.insert(vid, info).is_none();
        let entry = self.volumes.entry(vid).or_insert_with(|| VolumeEntry {
            layout: layout.clone(),
            locations: Vec::new(),
        });
        if entry.layout != layout {
            // Replication or ttl changed on the server (volume.configure):
            // move the volume to its new layout.
            if let Some(set) = self.layouts.get_mut(&entry.layout) {
                set.remove(&vid);
            }
            entry.layout = layout.clone();
        }
        if !entry.locations.iter().any(|l| l == id) {
            entry.locations.push(id.to_string());
        }
        self.layouts.entry(layout).or_default().insert(vid);
        if is_new {
            ch.new.push(vid);
        }
    }

    fn remove_replica(&mut self, id: &str, vid: VolumeId, ch: &mut Changes) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        if node.volumes.remove(&vid).is_none() {
            return;
        }
        ch.deleted.push(vid);
        if let Some(e) = self.volumes.get_mut(&vid) {
            e.locations.retain(|l| l != id);
            if e.locations.is_empty() {
                let layout = e.layout.clone();
                self.volumes.remove(&vid);
                if let Some(set) = self.layouts.get_mut(&layout) {
                    set.remove(&vid);
                    if set.is_empty() {
                        self.layouts.remove(&layout);
                    }
                }
            }
        }
    }

    fn event(&self, id: &str, ch: Changes) -> Option<VolumeLocation> {
        if ch.new.is_empty() && ch.deleted.is_empty() {
            return None;
        }
        let node = self.nodes.get(id)?;
        if !ch.new.is_empty() {
            tracing::debug!(node = %id, vids = ?ch.new, "volumes registered");
        }
        if !ch.deleted.is_empty() {
            tracing::debug!(node = %id, vids = ?ch.deleted, "volumes unregistered");
        }
        Some(VolumeLocation {
            new_vids: ch.new,
            deleted_vids: ch.deleted,
            ..node.volume_location()
        })
    }
}

fn non_empty<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(port: u32, vids: &[(u32, u32)]) -> Heartbeat {
        Heartbeat {
            ip: "127.0.0.1".into(),
            port,
            max_volume_counts: [(String::new(), 8)].into_iter().collect(),
            volumes: vids
                .iter()
                .map(|(id, rp)| VolumeInformationMessage {
                    id: *id,
                    replica_placement: *rp,
                    version: 3,
                    ..Default::default()
                })
                .collect(),
            has_no_volumes: vids.is_empty(),
            ..Default::default()
        }
    }

    fn layout(rp: &str) -> LayoutKey {
        LayoutKey {
            collection: String::new(),
            replication: rp.parse().unwrap(),
            ttl: Ttl::EMPTY,
        }
    }

    #[test]
    fn vacuuming_volume_is_not_assigned() {
        let now = Instant::now();
        let mut t = Topology::new(1000, Duration::from_secs(10));
        let (a, _, _) = t.register(&beat(8080, &[(1, 0), (3, 0)]), now).unwrap();
        let mut rng = rand::rng();
        let targets = t.vacuum_targets(None, None);
        assert_eq!(
            targets
                .iter()
                .map(|(v, r)| (*v, r.len()))
                .collect::<Vec<_>>(),
            vec![(1, 1), (3, 1)]
        );
        assert_eq!(t.vacuum_targets(None, Some(3)).len(), 1);
        assert!(t.vacuum_targets(Some("other"), None).is_empty());
        t.set_vacuuming(1, true);
        for _ in 0..20 {
            let w = t.pick_writable(&layout("000"), &NodeFilter::default(), &mut rng);
            assert_eq!(w.unwrap().volume_id, 3);
        }
        t.set_vacuuming(3, true);
        assert!(
            t.pick_writable(&layout("000"), &NodeFilter::default(), &mut rng)
                .is_none()
        );
        // Lookups (reads) are unaffected.
        assert!(t.lookup(1).is_some());
        t.set_vacuuming(1, false);
        t.set_vacuuming(3, false);
        assert!(
            t.pick_writable(&layout("000"), &NodeFilter::default(), &mut rng)
                .is_some()
        );
        t.note_compacted(1, &a, 8);
        assert_eq!(t.node(&a).unwrap().volumes[&1].size, 8);
    }

    #[test]
    fn writable_needs_exact_copy_count() {
        let now = Instant::now();
        let mut t = Topology::new(1000, Duration::from_secs(10));
        let (a, sa, ev) = t.register(&beat(8080, &[(1, 0), (2, 1)]), now).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].new_vids, vec![1, 2]);
        let mut rng = rand::rng();
        assert_eq!(
            t.pick_writable(&layout("000"), &NodeFilter::default(), &mut rng)
                .unwrap()
                .volume_id,
            1
        );
        assert!(
            t.pick_writable(&layout("001"), &NodeFilter::default(), &mut rng)
                .is_none()
        );
        let (b, _, _) = t.register(&beat(8081, &[(2, 1)]), now).unwrap();
        let w = t
            .pick_writable(&layout("001"), &NodeFilter::default(), &mut rng)
            .unwrap();
        assert_eq!((w.volume_id, w.locations.len()), (2, 2));
        assert_eq!(t.node(&a).unwrap().free_slots(), 6);
        let ev = t.unregister(&a, sa, "test").unwrap();
        assert_eq!(ev.deleted_vids, vec![1, 2]);
        assert!(t.lookup(1).is_none());
        assert_eq!(t.lookup(2).unwrap().locations[0].url, b);
        assert!(
            t.pick_writable(&layout("001"), &NodeFilter::default(), &mut rng)
                .is_none()
        );
    }

    #[test]
    fn stale_session_cannot_unregister() {
        let now = Instant::now();
        let mut t = Topology::new(1000, Duration::from_secs(10));
        let (a, s1, _) = t.register(&beat(8080, &[(1, 0)]), now).unwrap();
        let (_, s2, ev) = t.register(&beat(8080, &[(1, 0)]), now).unwrap();
        assert!(ev.is_empty(), "same volumes, nothing new");
        assert!(t.unregister(&a, s1, "test").is_none());
        assert!(t.lookup(1).is_some());
        assert!(t.unregister(&a, s2, "test").is_some());
    }

    #[test]
    fn deltas_and_grace() {
        let now = Instant::now();
        let mut t = Topology::new(1000, Duration::from_secs(10));
        let (a, s, _) = t.register(&beat(8080, &[]), now).unwrap();
        let ev = t.register_allocated(5, &layout("000"), std::slice::from_ref(&a), now);
        assert_eq!(ev[0].new_vids, vec![5]);
        // A full beat that predates the allocation does not drop it...
        assert!(t.apply_beat(&a, s, &beat(8080, &[]), false, now).is_empty());
        // ...but one after the grace period does.
        let later = now + Duration::from_secs(11);
        let ev = t.apply_beat(&a, s, &beat(8080, &[]), false, later);
        assert_eq!(ev[0].deleted_vids, vec![5]);
        let delta = Heartbeat {
            new_volumes: vec![VolumeShortInformationMessage {
                id: 9,
                ..Default::default()
            }],
            ..Default::default()
        };
        let ev = t.apply_beat(&a, s, &delta, false, later);
        assert_eq!(ev[0].new_vids, vec![9]);
        assert_eq!(ev[0].url, a);
        // A Go-style delta beat (ip, port, no grpc_port/public_url) keeps
        // the advertised addresses.
        let full = Heartbeat {
            grpc_port: 9999,
            public_url: "pub:1".into(),
            rack: "r7".into(),
            ..beat(8080, &[(9, 0)])
        };
        t.apply_beat(&a, s, &full, false, later);
        let delta = Heartbeat {
            ip: "127.0.0.1".into(),
            port: 8080,
            ..Default::default()
        };
        t.apply_beat(&a, s, &delta, false, later);
        let n = t.node(&a).unwrap();
        assert_eq!(
            (n.grpc_port, n.public_url.as_str(), n.rack.as_str()),
            (9999, "pub:1", "r7")
        );
        let delta = Heartbeat {
            deleted_volumes: vec![VolumeShortInformationMessage {
                id: 9,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            t.apply_beat(&a, s, &delta, false, later)[0].deleted_vids,
            vec![9]
        );
        assert!(t.lookup(9).is_none());
    }

    #[test]
    fn bad_beats_are_ignored() {
        let mut t = Topology::new(1000, Duration::from_secs(10));
        let now = Instant::now();
        assert!(t.register(&Heartbeat::default(), now).is_none());
        let mut b = beat(70_000, &[]);
        assert!(t.register(&b, now).is_none());
        b.port = 1;
        b.volumes.push(VolumeInformationMessage {
            id: 3,
            replica_placement: 9999,
            ttl: u32::MAX,
            ..Default::default()
        });
        assert!(t.register(&b, now).is_some());
    }
}
