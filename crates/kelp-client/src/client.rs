//! [`Client`]: one handle on a cluster, built from its masters and its
//! security settings, that assigns, locates, uploads, reads (failing over
//! between replicas) and deletes files.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kelp_core::{FileId, SecurityConfig, VolumeId};
use reqwest::StatusCode;

use crate::error::{ClientError, Op, Server};
use crate::locations::LocationMap;
use crate::master::{AssignRequest, Assignment, Location, Masters};
use crate::volume::{UploadBody, UploadOptions, UploadResult, Volumes};

/// Tuning of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// A server that sends nothing for this long fails the call.
    pub read_timeout: Duration,
    /// Bound on a whole call, body included; `None` for none (streams of
    /// large files take as long as they take).
    pub timeout: Option<Duration>,
    /// Idle connections kept per server.
    pub pool_max_idle_per_host: usize,
    /// How long the master's answer to a volume lookup is reused.
    pub location_ttl: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            timeout: None,
            pool_max_idle_per_host: 32,
            location_ttl: Duration::from_secs(10),
        }
    }
}

/// Where to upload: an [`Assignment`], or a file id and server by hand.
#[derive(Debug, Clone, Copy)]
pub struct UploadTarget<'a> {
    pub fid: &'a str,
    /// Volume server, `host:port`.
    pub url: &'a str,
    /// Write token, when the cluster signs writes.
    pub auth: Option<&'a str>,
}

impl<'a> From<&'a Assignment> for UploadTarget<'a> {
    fn from(a: &'a Assignment) -> Self {
        Self {
            fid: &a.fid,
            url: &a.url,
            auth: a.auth.as_deref(),
        }
    }
}

/// A cluster client. Cheap to clone; clones share connections and the
/// volume location map.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    masters: Masters,
    volumes: Volumes,
    locations: LocationMap,
    /// Writes and deletes need a token (`jwt.signing` is set here).
    signed_writes: bool,
    /// Reads need a token (`jwt.signing.read` is set here).
    signed_reads: bool,
}

/// Which file token an operation needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Read,
    Write,
}

impl Client {
    /// A client of the cluster whose masters are `masters` (`host:port`),
    /// speaking HTTPS when `security` has `[https.client]`. JWT keys in
    /// `security` only say whether tokens are needed up front; tokens
    /// always come from the master.
    pub fn new<S: AsRef<str>>(
        masters: &[S],
        security: &SecurityConfig,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let masters: Vec<String> = masters
            .iter()
            .map(|m| m.as_ref().trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if masters.is_empty() {
            return Err(ClientError::Setup("no master address".to_string()));
        }
        let mut builder = kelp_net::client::http_builder(security)
            .map_err(|e| ClientError::Setup(e.to_string()))?
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host);
        if let Some(t) = options.timeout {
            builder = builder.timeout(t);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let scheme = kelp_net::client::http_scheme(security);
        Ok(Self {
            inner: Arc::new(Inner {
                masters: Masters::new(&masters, http.clone(), scheme),
                volumes: Volumes { http, scheme },
                locations: LocationMap::new(options.location_ttl),
                signed_writes: security.signing.is_enabled(),
                signed_reads: security.read.is_enabled(),
            }),
        })
    }

    /// The masters' HTTP addresses (`host:port`), as given.
    pub fn masters(&self) -> &[String] {
        self.inner.masters.addrs()
    }

    /// Reserves a file id on a writable volume.
    pub async fn assign(&self, req: &AssignRequest) -> Result<Assignment, ClientError> {
        self.inner.masters.assign(req).await
    }

    /// The volume servers holding `vid`, from the location map (asking the
    /// master when the entry is missing or older than the TTL).
    pub async fn lookup(&self, vid: VolumeId) -> Result<Vec<Location>, ClientError> {
        Ok(self.locate(vid).await?.locations)
    }

    async fn locate(&self, vid: VolumeId) -> Result<crate::locations::Found, ClientError> {
        let masters = &self.inner.masters;
        self.inner.locations.get(vid, || masters.lookup(vid)).await
    }

    /// What the location map holds for `vid` now, without asking anyone.
    pub fn cached_locations(&self, vid: VolumeId) -> Option<Vec<Location>> {
        self.inner.locations.peek(vid)
    }

    /// Uploads `body` to `target` (an [`Assignment`] or a fid and server).
    pub async fn upload<'a>(
        &self,
        target: impl Into<UploadTarget<'a>>,
        body: impl Into<UploadBody>,
        opts: &UploadOptions,
    ) -> Result<UploadResult, ClientError> {
        let t = target.into();
        self.inner
            .volumes
            .upload(t.url, t.fid, t.auth, body.into(), opts)
            .await
    }

    /// The whole content of `fid` (a chunk manifest reads as its file).
    pub async fn read(&self, fid: &str) -> Result<Bytes, ClientError> {
        self.read_bytes(fid, None).await
    }

    /// Bytes `range` of `fid`.
    pub async fn read_range(&self, fid: &str, range: Range<u64>) -> Result<Bytes, ClientError> {
        if range.start >= range.end {
            return Err(ClientError::Invalid {
                op: Op::Read(fid.to_string()),
                reason: format!("empty range {range:?}"),
            });
        }
        self.read_bytes(fid, Some(range)).await
    }

    async fn read_bytes(&self, fid: &str, range: Option<Range<u64>>) -> Result<Bytes, ClientError> {
        let volumes = &self.inner.volumes;
        let range = range.as_ref();
        self.on_replicas(
            Op::Read(fid.to_string()),
            fid,
            Token::Read,
            |url, token| async move {
                let resp = volumes.get(&url, fid, range, token.as_deref()).await?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(ClientError::transport(
                    &Op::Read(fid.to_string()),
                    &Server::Volume(url.clone()),
                ))?;
                Ok(match range {
                    // A server that ignored Range sent the whole file.
                    Some(r) if status == StatusCode::OK => {
                        let len = body.len() as u64;
                        body.slice(r.start.min(len) as usize..r.end.min(len) as usize)
                    }
                    _ => body,
                })
            },
        )
        .await
    }

    /// The content of `fid` as a stream. Replicas are failed over until one
    /// answers; a failure after that ends the stream with an error.
    pub async fn read_stream(&self, fid: &str) -> Result<ReadStream, ClientError> {
        let volumes = &self.inner.volumes;
        let (url, resp) = self
            .on_replicas(
                Op::Read(fid.to_string()),
                fid,
                Token::Read,
                |url, token| async move {
                    let resp = volumes.get(&url, fid, None, token.as_deref()).await?;
                    Ok((url, resp))
                },
            )
            .await?;
        let content_length = resp.content_length();
        let op = Op::Read(fid.to_string());
        let server = Server::Volume(url);
        let transport = ClientError::transport(&op, &server);
        let inner = resp
            .bytes_stream()
            .map(move |r| r.map_err(&transport))
            .boxed();
        Ok(ReadStream {
            content_length,
            inner,
        })
    }

    /// Deletes `fid` (on every replica; a chunk manifest takes its chunks
    /// with it). A missing file is a 404 error
    /// ([`ClientError::is_not_found`]).
    pub async fn delete(&self, fid: &str) -> Result<(), ClientError> {
        let volumes = &self.inner.volumes;
        self.on_replicas(
            Op::Delete(fid.to_string()),
            fid,
            Token::Write,
            |url, token| async move { volumes.delete(&url, fid, token.as_deref()).await },
        )
        .await
    }

    /// Runs `attempt` against the servers holding `fid`'s volume until one
    /// answers: no answer or a 5xx moves on to the next; a 401 is retried
    /// once on the same server with a token from the master; any other
    /// answer (404 included) is the result. A failed location drops the
    /// volume from the location map; when every cached location failed,
    /// the master is asked again and the servers it adds are tried.
    async fn on_replicas<T, F, Fut>(
        &self,
        op: Op,
        fid: &str,
        kind: Token,
        attempt: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(String, Option<String>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let id: FileId = fid
            .parse()
            .map_err(|e: kelp_core::FileIdError| ClientError::Invalid {
                op: op.clone(),
                reason: e.to_string(),
            })?;
        let vid = id.volume_id;
        let needs_token = match kind {
            Token::Read => self.inner.signed_reads,
            Token::Write => self.inner.signed_writes,
        };
        let mut token = None;
        let mut token_fetched = false;
        if needs_token {
            token = self.token(fid, kind).await?;
            token_fetched = true;
        }
        let mut tried: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        let mut found = self.locate(vid).await?;
        loop {
            for loc in &found.locations {
                if tried.contains(&loc.url) {
                    continue;
                }
                tried.push(loc.url.clone());
                let mut result = attempt(loc.url.clone(), token.clone()).await;
                if !token_fetched
                    && matches!(&result, Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED))
                {
                    token = self.token(fid, kind).await?;
                    token_fetched = true;
                    result = attempt(loc.url.clone(), token.clone()).await;
                }
                match result {
                    Ok(v) => {
                        if !errors.is_empty() {
                            self.inner.locations.forget(vid);
                        }
                        return Ok(v);
                    }
                    Err(e) if e.is_retriable() => {
                        tracing::debug!(error = %e, "trying the next replica");
                        errors.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            self.inner.locations.forget(vid);
            if found.fresh {
                break;
            }
            found = match self.locate(vid).await {
                Ok(f) => f,
                Err(e) => {
                    errors.push(e);
                    break;
                }
            };
            if found.locations.iter().all(|l| tried.contains(&l.url)) {
                break;
            }
        }
        Err(match errors.len() {
            1 => errors.remove(0),
            _ => ClientError::Exhausted { op, errors },
        })
    }

    async fn token(&self, fid: &str, kind: Token) -> Result<Option<String>, ClientError> {
        self.inner.masters.token(fid, kind == Token::Read).await
    }
}

/// The body of a file being read, and its length when the server said.
pub struct ReadStream {
    pub content_length: Option<u64>,
    inner: futures::stream::BoxStream<'static, Result<Bytes, ClientError>>,
}

impl Stream for ReadStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
