//! Chunk-manifest needles as whole files: `GET`/`HEAD` stream the chunks'
//! contents (local chunks from the store, others from the servers the
//! master names), honouring `Range` over the logical file; `DELETE`
//! removes every chunk before the manifest.
//!
//! A chunk that cannot be read never turns into wrong bytes: the first
//! chunk is read before the status line is sent, so its failure is an
//! error status; a later failure aborts the body, which the client sees as
//! a truncated transfer.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kelp_needle::Needle;
use kelp_proto::master_pb::Location;

use super::HttpState;
use super::manifest::{Chunk, Manifest, Piece};
use super::range::{RangeRequest, parse_range};
use super::read::{
    ReadContext, add_pairs, content_disposition, content_type_for, etag, inflate, not_modified, set,
};
use crate::error::ApiError;
use crate::replicate::{Origin, ReplicationError};
use crate::store::{StoreError, blocking};

/// Chunks deleted concurrently.
const DELETE_PARALLELISM: usize = 8;
/// Inflating more than this runs on a blocking thread.
const INLINE_INFLATE: usize = 256 * 1024;

/// One part of the body: literal bytes (multipart framing) or a piece of a
/// chunk.
enum Segment {
    Literal(Bytes),
    Piece(Piece),
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Self::Literal(b) => b.len() as u64,
            Self::Piece(p) => p.range.end - p.range.start,
        }
    }
}

/// Everything needed to read chunks, owned so the body stream can outlive
/// the handler.
#[derive(Clone)]
struct ChunkReader {
    st: HttpState,
    chunks: Arc<Vec<Chunk>>,
}

/// The response to `GET`/`HEAD` of manifest needle `n`.
pub async fn chunked_response(
    st: &HttpState,
    n: Needle,
    m: Manifest,
    ctx: &ReadContext<'_>,
) -> Result<Response, ApiError> {
    let tag = etag(n.checksum);
    let mut headers = HeaderMap::new();
    set(&mut headers, header::ETAG, &tag);
    if n.last_modified != 0 {
        let lm = std::time::UNIX_EPOCH + std::time::Duration::from_secs(n.last_modified);
        set(
            &mut headers,
            header::LAST_MODIFIED,
            &httpdate::fmt_http_date(lm),
        );
    }
    if not_modified(ctx.headers, &tag, n.last_modified) {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
    set(&mut headers, header::ACCEPT_RANGES, "bytes");
    set(
        &mut headers,
        HeaderName::from_static("x-file-store"),
        "chunked",
    );
    let content_type = content_type_for(&m.mime, ctx.path, &m.name, true);
    set(&mut headers, header::CONTENT_TYPE, &content_type);
    let display_name = ctx.path.filename.clone().unwrap_or_else(|| m.name.clone());
    if let Some(v) = content_disposition(&display_name, ctx.download) {
        set(&mut headers, header::CONTENT_DISPOSITION, &v);
    }
    add_pairs(&mut headers, &n.pairs);

    let total = m.total;
    let range_header = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, segments) = match parse_range(range_header, total) {
        RangeRequest::Full => (
            StatusCode::OK,
            m.pieces(0..total).into_iter().map(Segment::Piece).collect(),
        ),
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { len: total }),
        RangeRequest::Ranges(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            set(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{total}", r.start, r.end - 1),
            );
            let segs = m
                .pieces(r.clone())
                .into_iter()
                .map(Segment::Piece)
                .collect();
            (StatusCode::PARTIAL_CONTENT, segs)
        }
        RangeRequest::Ranges(ranges) => {
            let boundary = format!("{:016x}", rand::random::<u64>());
            let mut segs = Vec::new();
            for r in &ranges {
                segs.push(Segment::Literal(Bytes::from(format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{total}\r\n\r\n",
                    r.start,
                    r.end - 1
                ))));
                segs.extend(m.pieces(r.clone()).into_iter().map(Segment::Piece));
            }
            segs.push(Segment::Literal(Bytes::from(format!(
                "\r\n--{boundary}--\r\n"
            ))));
            set(
                &mut headers,
                header::CONTENT_TYPE,
                &format!("multipart/byteranges; boundary={boundary}"),
            );
            (StatusCode::PARTIAL_CONTENT, segs)
        }
    };
    let length: u64 = segments.iter().map(Segment::len).sum();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));

    let body = if *ctx.method == Method::HEAD {
        Body::empty()
    } else {
        let reader = ChunkReader {
            st: st.clone(),
            chunks: Arc::new(m.chunks),
        };
        body_stream(reader, segments).await?
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Reads up to and including the first chunk piece now (so its failure is
/// an error status), and streams the rest.
async fn body_stream(reader: ChunkReader, segments: Vec<Segment>) -> Result<Body, ApiError> {
    let mut queue: VecDeque<Segment> = segments.into();
    let mut ready = Vec::new();
    while let Some(seg) = queue.pop_front() {
        match seg {
            Segment::Literal(b) => ready.push(b),
            Segment::Piece(p) => {
                ready.push(reader.read(&p).await?);
                break;
            }
        }
    }
    let head = futures::stream::iter(ready.into_iter().map(Ok::<_, std::io::Error>));
    let rest = futures::stream::try_unfold((reader, queue), |(reader, mut queue)| async move {
        let Some(seg) = queue.pop_front() else {
            return Ok(None);
        };
        let bytes = match seg {
            Segment::Literal(b) => b,
            Segment::Piece(p) => reader.read(&p).await.map_err(|e| {
                tracing::warn!(error = %e, "chunk read failed mid-stream; aborting the response");
                std::io::Error::other(e.to_string())
            })?,
        };
        Ok(Some((bytes, (reader, queue))))
    });
    Ok(Body::from_stream(head.chain(rest)))
}

impl ChunkReader {
    async fn read(&self, p: &Piece) -> Result<Bytes, ApiError> {
        let chunk = self
            .chunks
            .get(p.chunk)
            .ok_or_else(|| ApiError::Internal("chunk index out of range".to_string()))?;
        read_chunk(&self.st, chunk, p.range.clone()).await
    }
}

/// Bytes `range` of `chunk`, which must hold exactly `chunk.size` bytes.
async fn read_chunk(st: &HttpState, chunk: &Chunk, range: Range<u64>) -> Result<Bytes, ApiError> {
    let fid = chunk.fid;
    if st.store.volume(fid.volume_id).is_ok() {
        let n = st
            .store
            .read(fid.volume_id, fid.key, fid.cookie)
            .await
            .map_err(|e| ApiError::Internal(format!("chunk {}: {e}", chunk.fid_text)))?;
        let data = if n.compressed {
            if n.data.len() > INLINE_INFLATE {
                Bytes::from(blocking(move || inflate(&n.data)).await??)
            } else {
                Bytes::from(inflate(&n.data)?)
            }
        } else {
            n.data
        };
        if data.len() as u64 != chunk.size {
            return Err(ApiError::Internal(format!(
                "chunk {} holds {} bytes, the manifest says {}",
                chunk.fid_text,
                data.len(),
                chunk.size
            )));
        }
        return Ok(data.slice(range.start as usize..range.end as usize));
    }
    let locations = st.peers.locate(fid.volume_id).await?;
    let mut errors = Vec::new();
    for loc in &locations {
        match read_remote(st, loc, chunk, range.clone()).await {
            Ok(b) => return Ok(b),
            Err(e) => errors.push(e),
        }
    }
    st.peers.forget(fid.volume_id);
    Err(ApiError::Upstream(format!(
        "chunk {}: {}",
        chunk.fid_text,
        errors.join("; ")
    )))
}

async fn read_remote(
    st: &HttpState,
    loc: &Location,
    chunk: &Chunk,
    range: Range<u64>,
) -> Result<Bytes, String> {
    let whole = range.start == 0 && range.end == chunk.size;
    // `cm=false`: a nested manifest comes back as stored, never expanded
    // (no loops); `proxied=true`: a stale location answers 404.
    let mut req = st.peers.http().get(st.peers.url(
        &loc.url,
        &format!("/{}?cm=false&proxied=true", chunk.fid_text),
    ));
    if !whole {
        req = req.header(
            header::RANGE,
            format!("bytes={}-{}", range.start, range.end - 1),
        );
    }
    if let Some(t) = st.security.read.mint(&chunk.fid_text) {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| format!("{}: {e}", loc.url))?;
    let status = resp.status();
    let want = range.end - range.start;
    match status.as_u16() {
        200 => {
            let body = read_limited(resp, chunk.size, &loc.url).await?;
            if body.len() as u64 != chunk.size {
                return Err(format!(
                    "{} sent {} bytes, the manifest says {}",
                    loc.url,
                    body.len(),
                    chunk.size
                ));
            }
            Ok(body.slice(range.start as usize..range.end as usize))
        }
        206 => {
            let total = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit_once('/'))
                .and_then(|(_, t)| t.trim().parse::<u64>().ok());
            if total.is_some_and(|t| t != chunk.size) {
                return Err(format!(
                    "{} holds a chunk of {} bytes, the manifest says {}",
                    loc.url,
                    total.unwrap_or(0),
                    chunk.size
                ));
            }
            let body = read_limited(resp, want, &loc.url).await?;
            if body.len() as u64 != want {
                return Err(format!(
                    "{} sent {} bytes for a {want}-byte range",
                    loc.url,
                    body.len()
                ));
            }
            Ok(body)
        }
        _ => Err(format!("{} answered {status}", loc.url)),
    }
}

/// The body, refusing more than `limit` bytes.
async fn read_limited(resp: reqwest::Response, limit: u64, url: &str) -> Result<Bytes, String> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(format!("{url} sent more than {limit} bytes"));
    }
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| format!("{url}: {e}"))?;
        if out.len() as u64 + part.len() as u64 > limit {
            return Err(format!("{url} sent more than {limit} bytes"));
        }
        out.extend_from_slice(&part);
    }
    Ok(out.freeze())
}

/// Deletes every chunk of `m` (already-missing chunks count as deleted).
/// One error message per failed chunk.
pub async fn delete_chunks(st: &HttpState, m: &Manifest) -> Result<(), ApiError> {
    let results: Vec<Result<(), String>> = futures::stream::iter(m.chunks.clone())
        .map(|c| {
            let st = st.clone();
            async move { delete_chunk(&st, &c).await }
        })
        .buffer_unordered(DELETE_PARALLELISM)
        .collect()
        .await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::ChunkDelete(errors.join("; ")))
    }
}

async fn delete_chunk(st: &HttpState, c: &Chunk) -> Result<(), String> {
    let fid = c.fid;
    let token = st.security.signing.mint(&c.fid_text);
    if st.store.volume(fid.volume_id).is_ok() {
        // Held here: delete it on every replica, as a client's DELETE would.
        let path = format!("/{}", c.fid_text);
        let origin = Origin {
            path: &path,
            token: token.as_deref(),
        };
        let deleted = match st.replicator.targets(fid.volume_id).await {
            Ok(to) => {
                st.replicator
                    .delete(fid.volume_id, fid.key, fid.cookie, false, &to, &origin)
                    .await
            }
            Err(e) => Err(e),
        };
        return match deleted {
            Ok(_) | Err(ReplicationError::Store(StoreError::NeedleNotFound)) => Ok(()),
            Err(e) => Err(format!("{}: {e}", c.fid_text)),
        };
    }
    let locations = st
        .peers
        .locate(fid.volume_id)
        .await
        .map_err(|e| format!("{}: {e}", c.fid_text))?;
    let mut errors = Vec::new();
    for loc in &locations {
        match delete_remote(st, loc, &c.fid_text, token.as_deref()).await {
            Ok(()) => return Ok(()),
            Err(e) => errors.push(e),
        }
    }
    st.peers.forget(fid.volume_id);
    Err(format!("{}: {}", c.fid_text, errors.join("; ")))
}

async fn delete_remote(
    st: &HttpState,
    loc: &Location,
    fid: &str,
    token: Option<&str>,
) -> Result<(), String> {
    let mut req = st
        .peers
        .http()
        .delete(st.peers.url(&loc.url, &format!("/{fid}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| format!("{}: {e}", loc.url))?;
    match resp.status().as_u16() {
        202 | 404 => Ok(()),
        s => {
            let body = resp.text().await.unwrap_or_default();
            Err(format!(
                "{} answered {s} {}",
                loc.url,
                body.chars().take(200).collect::<String>()
            ))
        }
    }
}

/// Whether reads of this needle are expanded (a manifest, and no `cm=false`).
pub fn expand_manifest(n: &Needle, query: &[(String, String)]) -> bool {
    n.chunk_manifest && !query.iter().any(|(k, v)| k == "cm" && v == "false")
}
