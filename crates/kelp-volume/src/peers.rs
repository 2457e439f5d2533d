//! Other volume servers: where a volume lives (the master's
//! `LookupVolume`, cached briefly) and the HTTP client that reaches them,
//! for proxied reads and for the chunks of chunk manifests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kelp_core::VolumeId;
use kelp_proto::master_pb::seaweed_client::SeaweedClient;
use kelp_proto::master_pb::{Location, LookupVolumeRequest};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use tonic::transport::{Channel, Endpoint};

use crate::config::master_grpc_address;
use crate::error::ApiError;

/// How long a master's answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(10);
/// Bound on one `LookupVolume` call (connect included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer that stops sending for this long fails the request.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Cache entries kept at most; beyond it the cache is emptied.
const MAX_CACHED: usize = 4096;

pub struct Peers {
    /// Masters' gRPC addresses (`host:port`).
    masters: Vec<String>,
    /// This server's own addresses, never returned as a location.
    own: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    cache: Mutex<HashMap<VolumeId, (Instant, Vec<Location>)>>,
    http: reqwest::Client,
}

impl Peers {
    /// `masters` as configured (`host:port` or `host:port.grpcPort`);
    /// `own` are the addresses this server is known by.
    pub fn new(masters: &[String], own: Vec<String>) -> Self {
        let masters = masters
            .iter()
            .filter_map(|m| master_grpc_address(m))
            .collect();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            masters,
            own,
            channels: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            http,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Other servers holding `vid`, in random order. `VolumeNotFound` when
    /// no master knows one.
    pub async fn locate(&self, vid: VolumeId) -> Result<Vec<Location>, ApiError> {
        let cached = self
            .cache
            .lock()
            .get(&vid)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, l)| l.clone());
        let mut locations = match cached {
            Some(l) => l,
            None => {
                let l = self.ask_masters(vid).await?;
                let mut cache = self.cache.lock();
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(vid, (Instant::now(), l.clone()));
                l
            }
        };
        if locations.is_empty() {
            return Err(ApiError::VolumeNotFound(vid));
        }
        locations.shuffle(&mut rand::rng());
        Ok(locations)
    }

    /// Drops a cached answer that turned out wrong.
    pub fn forget(&self, vid: VolumeId) {
        self.cache.lock().remove(&vid);
    }

    async fn ask_masters(&self, vid: VolumeId) -> Result<Vec<Location>, ApiError> {
        if self.masters.is_empty() {
            return Err(ApiError::VolumeNotFound(vid));
        }
        let mut last_error = String::new();
        for addr in &self.masters {
            match self.ask(addr, vid).await {
                Ok(Some(locations)) => {
                    return Ok(locations
                        .into_iter()
                        .filter(|l| !l.url.is_empty() && !self.is_own(l))
                        .collect());
                }
                // The master answered: the volume is unknown.
                Ok(None) => return Err(ApiError::VolumeNotFound(vid)),
                Err(e) => {
                    tracing::debug!(master = addr, volume = vid, error = %e, "volume lookup failed");
                    last_error = e;
                }
            }
        }
        Err(ApiError::Upstream(format!(
            "looking up volume {vid}: {last_error}"
        )))
    }

    /// `Ok(None)` when the master does not know the volume.
    async fn ask(&self, addr: &str, vid: VolumeId) -> Result<Option<Vec<Location>>, String> {
        let channel = self.channel(addr)?;
        let mut client = SeaweedClient::new(channel);
        let call = client.lookup_volume(LookupVolumeRequest {
            volume_or_file_ids: vec![vid.to_string()],
            collection: String::new(),
        });
        let resp = tokio::time::timeout(LOOKUP_TIMEOUT, call)
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| e.message().to_string())?
            .into_inner();
        let Some(found) = resp.volume_id_locations.into_iter().next() else {
            return Ok(None);
        };
        if !found.error.is_empty() || found.locations.is_empty() {
            return Ok(None);
        }
        Ok(Some(found.locations))
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        self.channels
            .lock()
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn is_own(&self, l: &Location) -> bool {
        self.own
            .iter()
            .any(|o| *o == l.url || (!l.public_url.is_empty() && *o == l.public_url))
    }
}
