//! Single calls to one volume server: upload a body to a file id, GET one
//! (optionally a byte range), DELETE one. Choosing the server, failing
//! over and tokens belong to the caller ([`crate::Client`]).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Response, StatusCode, header};
use serde::Deserialize;

use crate::error::{ClientError, Op, Server};
use crate::reply::{capped_body, status_error};

/// How an upload is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadOptions {
    /// File name kept with the data (served in `Content-Disposition`).
    pub name: String,
    /// MIME type kept with the data; empty leaves it unset.
    pub mime: String,
    /// Sync to disk before answering, even on a server that does not by default.
    pub fsync: bool,
    /// Time to live, `3m`, `4h`…; empty for none. Must fit the volume's.
    pub ttl: String,
    /// The body is a chunk manifest (`cm=true`): reads expand it.
    pub chunk_manifest: bool,
}

/// What the volume server reports for a stored upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadResult {
    /// Bytes of content stored.
    pub size: u64,
    /// The needle's checksum as the server's `ETag` (empty when the server
    /// kept an identical earlier upload and answered 204).
    pub etag: String,
}

/// The data of an upload: bytes in memory or a stream read as it is sent.
pub struct UploadBody {
    body: reqwest::Body,
    /// Known length (bytes in memory).
    len: Option<u64>,
    /// Bytes a stream has produced so far.
    sent: Arc<AtomicU64>,
}

impl UploadBody {
    /// A body read from `stream` while it is sent, never held whole.
    pub fn stream<S>(stream: S) -> Self
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        S::Ok: Into<Bytes>,
    {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let counted = stream.into_stream().map(move |r| {
            r.map(|b| {
                let b: Bytes = b.into();
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                b
            })
        });
        Self {
            body: reqwest::Body::wrap_stream(counted),
            len: None,
            sent,
        }
    }
}

impl From<Bytes> for UploadBody {
    fn from(b: Bytes) -> Self {
        Self {
            len: Some(b.len() as u64),
            body: reqwest::Body::from(b),
            sent: Arc::default(),
        }
    }
}

impl From<Vec<u8>> for UploadBody {
    fn from(b: Vec<u8>) -> Self {
        Bytes::from(b).into()
    }
}

#[derive(Deserialize)]
struct UploadReply {
    #[serde(default)]
    size: u64,
    #[serde(rename = "eTag", default)]
    etag: String,
}

/// Reaches volume servers with the cluster's HTTP client.
pub(crate) struct Volumes {
    pub(crate) http: reqwest::Client,
    pub(crate) scheme: &'static str,
}

impl Volumes {
    fn url(&self, server: &str, fid: &str) -> String {
        format!("{}://{server}/{fid}", self.scheme)
    }

    /// Multipart POST of `body` as file id `fid` to `server`.
    pub(crate) async fn upload(
        &self,
        server: &str,
        fid: &str,
        auth: Option<&str>,
        body: UploadBody,
        opts: &UploadOptions,
    ) -> Result<UploadResult, ClientError> {
        let op = Op::Upload(fid.to_string());
        let at = Server::Volume(server.to_string());
        let transport = ClientError::transport(&op, &at);
        let length = (body.len, body.sent.clone());
        let mut part = match body.len {
            Some(len) => reqwest::multipart::Part::stream_with_length(body.body, len),
            None => reqwest::multipart::Part::stream(body.body),
        }
        .file_name(opts.name.clone());
        if !opts.mime.is_empty() {
            part = part
                .mime_str(&opts.mime)
                .map_err(|e| ClientError::Invalid {
                    op: op.clone(),
                    reason: format!("MIME type {:?}: {e}", opts.mime),
                })?;
        }
        let mut query = Vec::new();
        if opts.fsync {
            query.push(("fsync", "true"));
        }
        if !opts.ttl.is_empty() {
            query.push(("ttl", opts.ttl.as_str()));
        }
        if opts.chunk_manifest {
            query.push(("cm", "true"));
        }
        let mut req = self
            .http
            .post(self.url(server, fid))
            .query(&query)
            .multipart(reqwest::multipart::Form::new().part("file", part));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(&transport)?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(UploadResult {
                size: length.0.unwrap_or_else(|| length.1.load(Ordering::Relaxed)),
                etag: String::new(),
            }),
            s if s.is_success() => {
                let bytes = capped_body(resp, 64 * 1024)
                    .await
                    .map_err(transport)?
                    .unwrap_or_default();
                let r: UploadReply =
                    serde_json::from_slice(&bytes).map_err(|e| ClientError::Reply {
                        op: op.clone(),
                        server: at.clone(),
                        reason: format!("upload reply: {e}"),
                    })?;
                Ok(UploadResult {
                    size: r.size,
                    etag: r.etag,
                })
            }
            _ => Err(status_error(op, at, resp).await),
        }
    }

    /// GET `fid` (bytes `range` of it) from `server`; the response when it
    /// is 200 or 206.
    pub(crate) async fn get(
        &self,
        server: &str,
        fid: &str,
        range: Option<&Range<u64>>,
        token: Option<&str>,
    ) -> Result<Response, ClientError> {
        let op = Op::Read(fid.to_string());
        let at = Server::Volume(server.to_string());
        let mut req = self.http.get(self.url(server, fid));
        if let Some(r) = range {
            req = req.header(
                header::RANGE,
                format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
            );
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(ClientError::transport(&op, &at))?;
        match resp.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(resp),
            _ => Err(status_error(op, at, resp).await),
        }
    }

    /// DELETE `fid` on `server` (which deletes it on the other replicas).
    pub(crate) async fn delete(
        &self,
        server: &str,
        fid: &str,
        token: Option<&str>,
    ) -> Result<(), ClientError> {
        let op = Op::Delete(fid.to_string());
        let at = Server::Volume(server.to_string());
        let mut req = self.http.delete(self.url(server, fid));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(ClientError::transport(&op, &at))?;
        if !resp.status().is_success() {
            return Err(status_error(op, at, resp).await);
        }
        Ok(())
    }
}
