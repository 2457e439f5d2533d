//! Other volume servers: where a volume lives (the master's
//! `LookupVolume`, cached briefly) and the HTTP client that reaches them,
//! for proxied reads, replication and the chunks of chunk manifests, with
//! this cluster's TLS settings (kelp-net `client.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use kelp_core::tls::TlsError;
use kelp_core::{SecurityConfig, VolumeId};
use kelp_net::client::PeerChannel;
use kelp_proto::master_pb::seaweed_client::SeaweedClient;
use kelp_proto::master_pb::{Location, LookupVolumeRequest};
use parking_lot::Mutex;
use rand::seq::SliceRandom;

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
    channels: Mutex<HashMap<String, PeerChannel>>,
    cache: Mutex<HashMap<VolumeId, (Instant, Vec<Location>)>>,
    http: reqwest::Client,
    security: Arc<SecurityConfig>,
    /// `http` or `https`, for URLs to other servers.
    scheme: &'static str,
}

impl Peers {
    /// `masters` as configured (`host:port` or `host:port.grpcPort`);
    /// `own` are the addresses this server is known by.
    pub fn new(
        masters: &[String],
        own: Vec<String>,
        security: Arc<SecurityConfig>,
    ) -> Result<Self, TlsError> {
        let masters = masters
            .iter()
            .filter_map(|m| master_grpc_address(m))
            .collect();
        let http = kelp_net::client::http_builder(&security)?
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| TlsError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            masters,
            own,
            channels: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            http,
            scheme: kelp_net::client::http_scheme(&security),
            security,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http(s)://host` followed by `rest` (a path and query).
    pub fn url(&self, host: &str, rest: &str) -> String {
        format!("{}://{host}{rest}", self.scheme)
    }

    /// A GET to another server's peer-only route, with the peer credential.
    pub fn admin_get(&self, url: &str) -> reqwest::RequestBuilder {
        kelp_net::client::with_peer(self.http.get(url), &self.security)
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

    fn channel(&self, addr: &str) -> Result<PeerChannel, String> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let channel = kelp_net::client::grpc_channel(
            &self.security,
            kelp_core::GrpcRole::Volume,
            addr,
            CONNECT_TIMEOUT,
        )
        .map_err(|e| e.to_string())?;
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
