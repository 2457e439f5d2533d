//! Replicated writes and deletes: the volume server that receives a write
//! or delete for a volume with more than one copy sends it to every other
//! replica (`type=replicate`) at the same time as it applies it locally.
//!
//! The acknowledgement rule: the client gets success only when **every**
//! replica the volume's placement asks for has the change durable (each
//! replica answers only after its own fdatasync). Consequences:
//!
//! - A volume with fewer live replicas than its placement takes no writes:
//!   the master stops assigning it (it counts locations), and a write sent
//!   anyway is refused here before anything is written.
//! - If a replica fails mid-write, the client gets an error (5xx), never a
//!   success that is not true. The replicas may now differ on that one
//!   needle, so this server marks the volume read-only (the master hears it
//!   at once, stops assigning it and grows another) and logs why. An unacknowledged write may thus exist on some replicas only;
//!   a client that retries gets a fresh file id on a healthy volume.
//!
//! A replica request carries the needle as a raw body with its metadata in
//! headers and query parameters, so the copy is byte-identical (same data,
//! name, mime, pairs, last-modified, TTL, flags) and SeaweedFS volume
//! servers accept it too.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures::future::join_all;
use kelp_core::{NeedleId, VolumeId};
use kelp_needle::Needle;
use kelp_proto::master_pb::Location;

use crate::peers::Peers;
use crate::store::{Store, StoreError, WriteResult};

/// Base bound on one replica request ...
const REPLICA_TIMEOUT: Duration = Duration::from_secs(10);
/// ... plus one second per this many bytes of body.
const REPLICA_MIN_RATE: u64 = 4 << 20;

/// What a replicated change fails with; `error.rs` maps it to HTTP and gRPC.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The local copy refused or failed the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Fewer replicas are live than the placement asks for; nothing was
    /// changed anywhere.
    #[error("volume {vid} has {live} of its {copies} replicas live; refusing the change")]
    TooFewReplicas {
        vid: VolumeId,
        live: usize,
        copies: usize,
    },
    /// The local copy took the change but another replica did not (each
    /// failure names the replica): the volume is now read-only.
    #[error("replication failed: {0}")]
    Failed(String),
}

/// Where a replicated change goes besides the local copy: nowhere for a
/// single-copy volume or a change that is itself a replica's copy.
#[derive(Debug, Default)]
pub struct Targets(Vec<Location>);

/// The client request a change came from, passed on to the replicas: the
/// path (so a write token's file-id claim still matches there) and the
/// client's write token (so each replica checks it too).
pub struct Origin<'a> {
    pub path: &'a str,
    pub token: Option<&'a str>,
}

/// Owns the replicated write: the local store plus the peers that hold the
/// other copies. HTTP handlers call it; gRPC, a filer or S3 code can too.
#[derive(Clone)]
pub struct Replicator {
    store: Arc<Store>,
    peers: Arc<Peers>,
}

/// What to send to the other replicas.
enum Change<'a> {
    Write(&'a Needle),
    Delete,
}

/// How a fan-out went.
struct Outcome {
    /// Replicas that answered success.
    succeeded: usize,
    /// One line per replica that did not.
    failures: Vec<String>,
}

impl Replicator {
    pub fn new(store: Arc<Store>, peers: Arc<Peers>) -> Self {
        Replicator { store, peers }
    }

    /// The other replicas of `vid`, asked before anything is read or
    /// written: an error when fewer are live than the placement needs, or
    /// when the volume is read-only after an earlier failed replication.
    pub async fn targets(&self, vid: VolumeId) -> Result<Targets, ReplicationError> {
        let copies = self
            .store
            .volume(vid)?
            .superblock()
            .replica_placement
            .copy_count();
        if copies <= 1 {
            return Ok(Targets::default());
        }
        // Refuse before sending anything anywhere.
        if self.store.is_diverged(vid) {
            return Err(StoreError::ReadOnly(vid).into());
        }
        let want = copies - 1;
        let mut locations = self.peers.locate(vid).await.unwrap_or_default();
        if locations.len() != want {
            // The cached answer may predate a change: ask once more.
            self.peers.forget(vid);
            locations = self.peers.locate(vid).await.unwrap_or_default();
        }
        if locations.len() != want {
            return Err(ReplicationError::TooFewReplicas {
                vid,
                live: locations.len() + 1,
                copies,
            });
        }
        Ok(Targets(locations))
    }

    /// Writes `needle` here and on every target at once; success only when
    /// every copy has it durable.
    pub async fn write(
        &self,
        vid: VolumeId,
        needle: Needle,
        fsync: bool,
        to: &Targets,
        origin: &Origin<'_>,
    ) -> Result<WriteResult, ReplicationError> {
        if to.0.is_empty() {
            return Ok(self.store.write(vid, needle, fsync).await?);
        }
        let copy = needle.clone();
        let (local, remote) = tokio::join!(
            self.store.write(vid, needle, fsync),
            self.send(vid, origin, Change::Write(&copy), &to.0)
        );
        self.settle(vid, local, remote)
    }

    /// Deletes a needle here and on every target at once. Returns the
    /// deleted needle's size; `NeedleNotFound` when no copy had it.
    pub async fn delete(
        &self,
        vid: VolumeId,
        key: NeedleId,
        cookie: u32,
        fsync: bool,
        to: &Targets,
        origin: &Origin<'_>,
    ) -> Result<u32, ReplicationError> {
        let local = self.store.delete(vid, key, cookie, fsync);
        if to.0.is_empty() {
            return Ok(local.await?);
        }
        let (local, remote) = tokio::join!(local, self.send(vid, origin, Change::Delete, &to.0));
        // Absent here but present on a replica is still a change to make.
        let local = match local {
            Err(StoreError::NeedleNotFound) if remote.succeeded > 0 => Ok(0),
            other => other,
        };
        self.settle(vid, local, remote)
    }

    /// Combines the local result of a replicated change with the fan-out's:
    /// success only if every copy succeeded. When some copies took the
    /// change and others did not, the volume is marked diverged (read-only
    /// until anti-entropy finds every replica equal again).
    fn settle<T>(
        &self,
        vid: VolumeId,
        local: Result<T, StoreError>,
        remote: Outcome,
    ) -> Result<T, ReplicationError> {
        if remote.failures.is_empty() {
            return Ok(local?);
        }
        metrics::counter!(crate::metrics::REPLICATION_FAILURES).increment(1);
        let why = remote.failures.join("; ");
        if (local.is_ok() || remote.succeeded > 0) && self.store.mark_diverged(vid) {
            tracing::error!(
                volume = vid,
                reason = why,
                "replication failed; volume is read-only until anti-entropy repairs its replicas"
            );
        }
        match local {
            Ok(_) => Err(ReplicationError::Failed(why)),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `change` to every replica in `to` concurrently.
    async fn send(
        &self,
        vid: VolumeId,
        origin: &Origin<'_>,
        change: Change<'_>,
        to: &[Location],
    ) -> Outcome {
        let calls = to.iter().map(|loc| self.send_one(origin, &change, loc));
        let results = join_all(calls).await;
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if !failures.is_empty() {
            self.peers.forget(vid);
        }
        Outcome {
            succeeded: to.len() - failures.len(),
            failures,
        }
    }

    async fn send_one(
        &self,
        origin: &Origin<'_>,
        change: &Change<'_>,
        loc: &Location,
    ) -> Result<(), String> {
        let url = self.peers.url(&loc.url, origin.path);
        let http = self.peers.http();
        let mut req = match change {
            Change::Write(n) => {
                let mut query: Vec<(&str, String)> = vec![
                    ("type", "replicate".to_string()),
                    ("ts", n.last_modified.to_string()),
                ];
                if !n.ttl.is_empty() {
                    query.push(("ttl", n.ttl.to_string()));
                }
                if n.chunk_manifest {
                    query.push(("cm", "true".to_string()));
                }
                http.put(&url)
                    .query(&query)
                    .headers(needle_headers(n))
                    .body(n.data.clone())
            }
            Change::Delete => http.delete(&url).query(&[("type", "replicate")]),
        };
        if let Some(t) = origin.token {
            req = req.bearer_auth(t);
        }
        // A replica cut off by the network must not hold the client for the
        // peer client's long read timeout: bound the whole request.
        let len = match change {
            Change::Write(n) => n.data.len() as u64,
            Change::Delete => 0,
        };
        req = req.timeout(REPLICA_TIMEOUT + Duration::from_secs(len / REPLICA_MIN_RATE));
        let resp = req.send().await.map_err(|e| format!("{}: {e}", loc.url))?;
        let status = resp.status();
        let ok = status.is_success()
            // Deleting what a replica no longer has leaves it as wanted.
            || (matches!(change, Change::Delete) && status == StatusCode::NOT_FOUND);
        if ok {
            Ok(())
        } else {
            let body = resp.text().await.unwrap_or_default();
            Err(format!("{} answered {status}: {}", loc.url, body.trim()))
        }
    }
}

/// The needle's metadata as the headers a raw upload is parsed from.
fn needle_headers(n: &Needle) -> HeaderMap {
    let mut h = HeaderMap::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Ok(v) = HeaderValue::from_str(&text(&n.mime))
        && !n.mime.is_empty()
    {
        h.insert(header::CONTENT_TYPE, v);
    }
    if !n.name.is_empty() {
        let name = text(&n.name).replace(['"', '\\'], "_");
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    if n.compressed {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if let Ok(serde_json::Value::Object(pairs)) = serde_json::from_slice(&n.pairs) {
        for (k, v) in pairs {
            if let (Ok(name), Some(Ok(value))) = (
                axum::http::HeaderName::try_from(format!("seaweed-{k}")),
                v.as_str().map(HeaderValue::from_str),
            ) {
                h.insert(name, value);
            }
        }
    }
    h
}
