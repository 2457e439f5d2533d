//! [`RemoteBackend`]: the store of another process, a running `kelp
//! filer`, reached over HTTP (`POST /__kelp/store/{get,range,commit}` in
//! the layout of [`super::wire`]). `kelp s3 -filer=HOST:PORT` runs its
//! filer over it: the gateway uploads chunks to the volume servers itself
//! and commits its entries (and its leases) through the filer, whose store
//! applies every namespace rule, stamps the change log with its clock and
//! wakes its own subscribers.
//!
//! Reads (`get`, `range`) are tried up to [`ATTEMPTS`] times. A commit is
//! not idempotent, so it is tried again only when the connection was
//! refused before anything was sent; when the request may have reached the
//! filer and no answer came back, the error says the outcome is unknown.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::wire::{self, Payload, WIRE_VERSION};
use super::{Backend, Replaced, Rows, Table, Txn};
use crate::error::FilerError;

/// Tries per request (reads; a commit only while nothing was sent).
pub const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A commit may walk a large directory (a recursive delete, a move).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(300);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A filer's store, over HTTP.
pub struct RemoteBackend {
    addr: String,
    base: String,
    http: reqwest::Client,
    version: u8,
}

/// What a filer's `/__kelp/status` says that a gateway needs.
#[derive(Debug, Clone)]
pub struct RemoteStatus {
    /// The masters the filer writes chunks through, as it was given them.
    pub masters: Vec<String>,
    /// The filer's own store (`describe`).
    pub store: String,
}

/// Why one try failed.
enum Failure {
    /// Nothing reached the filer (connection refused, no route).
    NotSent(String),
    /// The request may have reached the filer; no usable answer came back.
    Unknown(String),
    /// The filer answered: this is final.
    Final(FilerError),
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

impl RemoteBackend {
    /// A backend for the filer at `addr` (`host:port`, or `http://host:port`).
    /// Nothing is sent yet.
    pub fn new(addr: &str) -> Result<Self, FilerError> {
        let addr = addr
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if addr.is_empty() || !addr.contains(':') {
            return Err(FilerError::BadRequest(format!(
                "filer address {addr:?} is not host:port"
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            // Well before a server gives up on an idle connection: a commit
            // sent on a connection the filer is closing has an unknown
            // outcome.
            .pool_idle_timeout(IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| FilerError::Store(format!("building the HTTP client: {}", chain(&e))))?;
        Ok(Self {
            addr: addr.to_string(),
            base: format!("http://{addr}"),
            http,
            version: WIRE_VERSION,
        })
    }

    /// Sends `v` as the wire version of every request (tests of a filer
    /// speaking another version).
    #[doc(hidden)]
    pub fn with_wire_version(mut self, v: u8) -> Self {
        self.version = v;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The filer's status, checking it serves this wire version; tried
    /// [`ATTEMPTS`] times while the filer cannot be reached.
    pub async fn status(&self) -> Result<RemoteStatus, FilerError> {
        self.status_within(Duration::ZERO).await
    }

    /// Like [`Self::status`], trying for up to `within` (at least
    /// [`ATTEMPTS`] times) while the filer cannot be reached: a gateway
    /// may start before its filer.
    pub async fn status_within(&self, within: Duration) -> Result<RemoteStatus, FilerError> {
        let start = std::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = match self.try_status().await {
                Ok(answer) => return answer,
                Err(e) => e,
            };
            if attempt >= ATTEMPTS && start.elapsed() >= within {
                return Err(FilerError::Store(format!(
                    "cannot reach the filer at {}: {last}",
                    self.addr
                )));
            }
            let backoff = FIRST_BACKOFF * 3u32.pow(attempt.min(ATTEMPTS) - 1);
            tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
        }
    }

    /// One try: `Err` when the filer could not be reached (worth another).
    async fn try_status(&self) -> Result<Result<RemoteStatus, FilerError>, String> {
        let url = format!("{}/__kelp/status", self.base);
        let r = self
            .http
            .get(&url)
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        if !r.status().is_success() {
            return Err(format!("its status answered {}", r.status()));
        }
        match r.json::<serde_json::Value>().await {
            Ok(v) => Ok(self.check_status(&v)),
            Err(e) => Ok(Err(FilerError::Store(format!(
                "the status of the filer at {} is not JSON: {}",
                self.addr,
                chain(&e)
            )))),
        }
    }

    fn check_status(&self, v: &serde_json::Value) -> Result<RemoteStatus, FilerError> {
        match v.get("store_wire").and_then(|w| w.as_u64()) {
            Some(w) if w == u64::from(WIRE_VERSION) => {}
            Some(w) => {
                return Err(FilerError::Store(format!(
                    "the filer at {} speaks store wire version {w}; this process speaks version {WIRE_VERSION}",
                    self.addr
                )));
            }
            None => {
                return Err(FilerError::Store(format!(
                    "the filer at {} does not serve its store over HTTP (an older kelp, or not a kelp filer)",
                    self.addr
                )));
            }
        }
        let masters = v
            .get("masters")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(RemoteStatus {
            masters,
            store: v
                .get("store")
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_string(),
        })
    }

    /// One POST of `body` to `/__kelp/store/<what>`.
    async fn once<P: Payload>(
        &self,
        what: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<P, FilerError>, Failure> {
        let url = format!("{}/__kelp/store/{what}", self.base);
        let r = self
            .http
            .post(&url)
            .header("content-type", "application/octet-stream")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    Failure::NotSent(chain(&e))
                } else {
                    Failure::Unknown(chain(&e))
                }
            })?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(|e| Failure::Unknown(chain(&e)))?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            // The filer could not read the request: its JSON error says why.
            let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Failure::Final(FilerError::Store(format!(
                "the filer at {} refused the store request: {msg}",
                self.addr
            ))));
        }
        if !status.is_success() {
            return Err(Failure::Unknown(format!(
                "it answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )));
        }
        wire::decode_answer::<P>(&bytes).map_err(|e| {
            Failure::Final(FilerError::Store(format!(
                "the filer at {} sent an answer this process cannot read: {e}",
                self.addr
            )))
        })
    }

    /// Posts `body`, trying again as [`ATTEMPTS`] and `idempotent` allow.
    async fn call<P: Payload>(
        &self,
        what: &str,
        mut body: Vec<u8>,
        idempotent: bool,
    ) -> Result<P, FilerError> {
        if let Some(first) = body.first_mut() {
            *first = self.version;
        }
        let timeout = if idempotent {
            READ_TIMEOUT
        } else {
            COMMIT_TIMEOUT
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            match self.once::<P>(what, body.clone(), timeout).await {
                Ok(answer) => return answer,
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::NotSent(e)) if last => {
                    return Err(FilerError::Store(format!(
                        "cannot reach the filer at {} ({what}, {attempt} tries): {e}",
                        self.addr
                    )));
                }
                Err(Failure::NotSent(e)) => {
                    tracing::debug!(filer = %self.addr, what, error = %e, "filer unreachable; trying again");
                }
                Err(Failure::Unknown(e)) if !idempotent => {
                    return Err(FilerError::Store(format!(
                        "{what} to the filer at {}: no answer ({e}); the transaction may or may not have been applied",
                        self.addr
                    )));
                }
                Err(Failure::Unknown(e)) if last => {
                    return Err(FilerError::Store(format!(
                        "{what} from the filer at {} failed ({attempt} tries): {e}",
                        self.addr
                    )));
                }
                Err(Failure::Unknown(e)) => {
                    tracing::debug!(filer = %self.addr, what, error = %e, "filer read failed; trying again");
                }
            }
            tokio::time::sleep(FIRST_BACKOFF * 3u32.pow(attempt - 1)).await;
        }
    }
}

impl Backend for RemoteBackend {
    fn get(&self, t: Table, k: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, FilerError>> {
        async move { self.call("get", wire::encode_get(t, &k), true).await }.boxed()
    }

    fn range(
        &self,
        t: Table,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Rows, FilerError>> {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        async move {
            self.call("range", wire::encode_range(t, &start, &end, limit), true)
                .await
        }
        .boxed()
    }

    /// Committed by the filer, at the filer's time: `_now_ns` is not sent,
    /// so the change log has one clock.
    fn commit(&self, txn: Txn, _now_ns: i64) -> BoxFuture<'_, Result<Replaced, FilerError>> {
        async move { self.call("commit", wire::encode_txn(&txn), false).await }.boxed()
    }

    fn describe(&self) -> String {
        format!("remote filer at {}", self.addr)
    }
}
