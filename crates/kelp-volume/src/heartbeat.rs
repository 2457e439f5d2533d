//! Heartbeat client (`master_pb.Seaweed/SendHeartbeat`): a full beat on
//! connect and every pulse, a delta beat whenever a volume appears or
//! disappears. Reconnects with backoff, trying each master in turn and
//! following a leader redirect.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kelp_proto::master_pb::seaweed_client::SeaweedClient;
use kelp_proto::master_pb::{Heartbeat, HeartbeatResponse, VolumeInformationMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::{VolumeServerConfig, master_grpc_address};
use crate::http::Health;
use crate::store::{Store, StoreEvent};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the master may take to accept the heartbeat stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a session with one master ended.
enum SessionEnd {
    Shutdown,
    /// The master is a follower; dial this (gRPC) address next.
    Redirect(String),
}

pub struct HeartbeatClient {
    cfg: Arc<VolumeServerConfig>,
    store: Arc<Store>,
    events: mpsc::UnboundedReceiver<StoreEvent>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    security: Arc<kelp_core::SecurityConfig>,
}

impl HeartbeatClient {
    pub fn new(
        cfg: Arc<VolumeServerConfig>,
        store: Arc<Store>,
        events: mpsc::UnboundedReceiver<StoreEvent>,
        health: Arc<Health>,
        shutdown: CancellationToken,
        security: Arc<kelp_core::SecurityConfig>,
    ) -> Self {
        Self {
            security,
            cfg,
            store,
            events,
            health,
            shutdown,
        }
    }

    pub async fn run(mut self) {
        let masters: Vec<String> = self
            .cfg
            .masters
            .iter()
            .filter_map(|m| {
                let a = master_grpc_address(m);
                if a.is_none() {
                    tracing::error!(master = m, "ignoring unparsable master address");
                }
                a
            })
            .collect();
        if masters.is_empty() {
            return;
        }
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        let mut backoff = MIN_BACKOFF;
        let mut last_error: Option<String> = None;
        loop {
            let addr = redirect
                .take()
                .unwrap_or_else(|| masters[next % masters.len()].clone());
            let result = self.session(&addr).await;
            self.set_up(false);
            match result {
                Ok(SessionEnd::Shutdown) => return,
                Ok(SessionEnd::Redirect(leader)) => {
                    tracing::info!(from = addr, to = leader, "following master leader");
                    redirect = Some(leader);
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Err((connected, e)) => {
                    if connected {
                        backoff = MIN_BACKOFF;
                    }
                    // Log a failure once, not on every retry.
                    if connected || last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(
                            master = addr,
                            error = e,
                            "heartbeat to master failed; retrying"
                        );
                    } else {
                        tracing::debug!(master = addr, error = e, "heartbeat retry failed");
                    }
                    last_error = Some(e);
                    next += 1;
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set_up(&self, up: bool) {
        self.health.heartbeat_up.store(up, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::HEARTBEAT_CONNECTED).set(if up { 1.0 } else { 0.0 });
    }

    /// One stream to one master. `Err((connected, message))`.
    async fn session(&mut self, addr: &str) -> Result<SessionEnd, (bool, String)> {
        let channel = kelp_net::client::grpc_channel(
            &self.security,
            kelp_core::GrpcRole::Volume,
            addr,
            CONNECT_TIMEOUT,
        )
        .map_err(|e| (false, e.to_string()))?;
        let mut client = SeaweedClient::new(channel);
        let (tx, rx) = mpsc::channel::<Heartbeat>(16);
        // Events so far are covered by the full beat that opens the stream.
        while self.events.try_recv().is_ok() {}
        tx.send(self.full_beat())
            .await
            .map_err(|_| (false, "heartbeat channel closed".to_string()))?;
        let mut responses = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            r = tokio::time::timeout(OPEN_TIMEOUT, client.send_heartbeat(ReceiverStream::new(rx))) => {
                r.map_err(|_| (false, "SendHeartbeat: no answer from master".to_string()))?
                    .map_err(|e| (false, format!("SendHeartbeat: {}", e.message())))?
                    .into_inner()
            }
        };
        self.set_up(true);
        tracing::info!(master = addr, "heartbeat stream up");
        let mut ticker = tokio::time::interval(self.cfg.pulse);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut events_open = true;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                _ = ticker.tick() => {
                    // A master that stops reading must not wedge this loop
                    // (shutdown waits for it): skip the pulse instead.
                    match tx.try_send(self.full_beat()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::debug!(master = addr, "master is not reading heartbeats; pulse skipped");
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Err((true, "heartbeat stream closed".to_string()));
                        }
                    }
                }
                ev = self.events.recv(), if events_open => {
                    let Some(ev) = ev else {
                        events_open = false;
                        continue;
                    };
                    let mut batch = vec![ev];
                    while let Ok(ev) = self.events.try_recv() {
                        batch.push(ev);
                    }
                    let beat = self.beat_for(batch);
                    // A delta must not be lost: if it cannot be queued,
                    // reconnect, and the opening full beat covers it.
                    tx.try_send(beat).map_err(|_| {
                        (true, "master is not reading heartbeats".to_string())
                    })?;
                }
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        if let Some(end) = self.on_response(addr, resp) {
                            return Ok(end);
                        }
                    }
                    Ok(None) => return Err((true, "master closed the heartbeat stream".to_string())),
                    Err(e) => return Err((true, format!("heartbeat stream: {}", e.message()))),
                },
            }
        }
    }

    fn on_response(&self, addr: &str, resp: HeartbeatResponse) -> Option<SessionEnd> {
        if resp.volume_size_limit > 0 {
            self.store.set_volume_size_limit(resp.volume_size_limit);
        }
        if !resp.duplicated_uuids.is_empty() {
            tracing::error!(uuids = ?resp.duplicated_uuids, "master reports duplicated directory uuids");
        }
        if !resp.leader.is_empty()
            && let Some(leader) = master_grpc_address(&resp.leader)
            && leader != addr
        {
            return Some(SessionEnd::Redirect(leader));
        }
        None
    }

    /// The fields every beat carries.
    fn identity(&self) -> Heartbeat {
        let c = &self.cfg;
        Heartbeat {
            ip: c.ip.clone(),
            port: c.port as u32,
            grpc_port: c.grpc_port as u32,
            public_url: c.effective_public_url(),
            data_center: c.data_center.clone(),
            rack: c.rack.clone(),
            id: format!("{}:{}", c.ip, c.port),
            ..Heartbeat::default()
        }
    }

    fn full_beat(&self) -> Heartbeat {
        full_beat(self.identity(), &self.store)
    }

    /// The beat that reports `events`: a delta of added and deleted
    /// volumes, or a full beat when a volume's writability changed (deltas
    /// cannot carry that; a full beat covers the rest of the batch too).
    fn beat_for(&self, events: Vec<StoreEvent>) -> Heartbeat {
        if let Some(StoreEvent::StateChanged(vid)) = events
            .iter()
            .find(|e| matches!(e, StoreEvent::StateChanged(_)))
        {
            tracing::info!(volume = vid, "volume state changed; telling the master now");
            return self.full_beat();
        }
        let mut beat = self.identity();
        for ev in events {
            match ev {
                StoreEvent::Added(v) => beat.new_volumes.push(v),
                StoreEvent::Deleted(v) => beat.deleted_volumes.push(v),
                StoreEvent::StateChanged(_) => {}
            }
        }
        beat
    }
}

/// A full heartbeat: identity plus every volume.
pub fn full_beat(mut beat: Heartbeat, store: &Store) -> Heartbeat {
    let stats = store.stats();
    beat.max_volume_counts = HashMap::from([(String::new(), store.max_volumes())]);
    beat.max_file_key = stats.iter().map(|s| s.max_file_key).max().unwrap_or(0);
    beat.has_no_volumes = stats.is_empty();
    beat.has_no_ec_shards = true;
    beat.volumes = stats
        .into_iter()
        .map(|s| VolumeInformationMessage {
            id: s.id,
            size: s.size,
            collection: s.collection,
            file_count: s.file_count,
            delete_count: s.delete_count,
            deleted_byte_count: s.deleted_byte_count,
            read_only: s.read_only,
            replica_placement: s.replica_placement.to_byte() as u32,
            version: s.version as u32,
            ttl: s.ttl.to_u32(),
            compact_revision: s.compaction_revision as u32,
            modified_at_second: s.modified_at_second as i64,
            ..VolumeInformationMessage::default()
        })
        .collect();
    beat
}
