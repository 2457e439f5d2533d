//! Storing a file's content: the body is cut into chunks of
//! [`crate::FilerOptions::chunk_size`] and uploaded as it arrives, a few
//! chunks in parallel; at most `concurrency` chunks plus the one being
//! filled are in memory, whatever the file's size. Each chunk may be
//! compressed with zstd first. The MD5 of the whole content is computed
//! on the way.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use kelp_client::{UploadOptions, UploadTarget};
use md5::{Digest, Md5};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::entry::Chunk;
use crate::error::FilerError;
use crate::filer::Inner;
use crate::lease::Ticket;

/// Attempts per chunk: a failed upload is retried on a fresh file id
/// (and so, usually, another volume), after 0.4, 0.8, 1.6 and 3.2 s: long
/// enough for a cluster that is still starting to have a writable volume.
const ATTEMPTS: u32 = 5;

/// How chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// Never.
    Off,
    /// Content whose MIME type says text (text/*, JSON, XML, JavaScript,
    /// CSV, SVG), kept compressed when that saves at least 10%.
    Auto,
    /// Any content, kept compressed when that saves at least 10%.
    Always,
}

impl Compress {
    pub fn wants(self, mime: &str) -> bool {
        match self {
            Compress::Off => false,
            Compress::Always => true,
            Compress::Auto => {
                let m = mime
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                m.starts_with("text/")
                    || m.ends_with("json")
                    || m.ends_with("xml")
                    || m.ends_with("javascript")
                    || m.ends_with("csv")
                    || m.ends_with("svg")
                    || m.ends_with("yaml")
            }
        }
    }
}

/// Content stored: its chunks (each with the file id's ticket, settled
/// when the entry is committed or the chunk queued as garbage) or, for a
/// small file, inline bytes.
pub struct Stored {
    pub chunks: Vec<(Chunk, Ticket)>,
    pub inline: Vec<u8>,
    pub size: u64,
    pub md5: [u8; 16],
}

/// Stores `body`: in the entry when it has at most `inline_limit` bytes,
/// else as chunks on volume servers.
pub async fn store<S, E>(
    inner: &Arc<Inner>,
    body: S,
    mime: &str,
    inline_limit: usize,
) -> Result<Stored, FilerError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let opts = &inner.opts;
    let compress = opts.compress.wants(mime);
    let mut body = std::pin::pin!(body);
    let mut md5 = Md5::new();
    let mut buf = BytesMut::new();
    let mut offset = 0u64;
    let mut size = 0u64;
    let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks: JoinSet<ChunkResult> = JoinSet::new();
    let mut failure: Option<FilerError> = None;
    let mut done: Vec<(Chunk, Ticket)> = Vec::new();
    let mut spent: Vec<Ticket> = Vec::new();
    loop {
        let piece = match body.next().await {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                failure = Some(FilerError::Body(e.to_string()));
                break;
            }
            None => break,
        };
        md5.update(&piece);
        size += piece.len() as u64;
        buf.extend_from_slice(&piece);
        while buf.len() >= opts.chunk_size {
            let data = buf.split_to(opts.chunk_size).freeze();
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let inner = inner.clone();
            let at = offset;
            offset += data.len() as u64;
            tasks.spawn(async move {
                let r = upload_chunk(&inner, data, at, compress).await;
                drop(permit);
                r
            });
            // Collect finished uploads as we go, to stop early on failure.
            while let Some(r) = tasks.try_join_next() {
                settle_result(r, &mut done, &mut spent, &mut failure);
            }
            if failure.is_some() {
                break;
            }
        }
        if failure.is_some() {
            break;
        }
    }
    if failure.is_none() {
        if offset == 0 && buf.len() <= inline_limit {
            // Small enough to live in the entry itself.
            return Ok(Stored {
                chunks: Vec::new(),
                inline: buf.to_vec(),
                size,
                md5: md5.finalize().into(),
            });
        }
        if !buf.is_empty() {
            let data = buf.split().freeze();
            let inner = inner.clone();
            let at = offset;
            tasks.spawn(async move { upload_chunk(&inner, data, at, compress).await });
        }
    }
    while let Some(r) = tasks.join_next().await {
        settle_result(r, &mut done, &mut spent, &mut failure);
    }
    if let Some(e) = failure {
        spent.extend(done.into_iter().map(|(_, t)| t));
        inner.discard(spent).await;
        return Err(e);
    }
    if !spent.is_empty() {
        inner.discard(spent).await;
    }
    done.sort_by_key(|(c, _)| c.offset);
    Ok(Stored {
        chunks: done,
        inline: Vec::new(),
        size,
        md5: md5.finalize().into(),
    })
}

type ChunkResult = Result<(Chunk, Ticket), (FilerError, Vec<Ticket>)>;

fn settle_result(
    r: Result<ChunkResult, tokio::task::JoinError>,
    done: &mut Vec<(Chunk, Ticket)>,
    spent: &mut Vec<Ticket>,
    failure: &mut Option<FilerError>,
) {
    match r {
        Ok(Ok(c)) => done.push(c),
        Ok(Err((e, tickets))) => {
            spent.extend(tickets);
            failure.get_or_insert(e);
        }
        Err(e) => {
            failure.get_or_insert(FilerError::Store(format!("upload task: {e}")));
        }
    }
}

/// Uploads one chunk, retrying on a fresh file id. Tickets of failed
/// attempts come back with the error or are queued as garbage.
async fn upload_chunk(inner: &Arc<Inner>, data: Bytes, offset: u64, compress: bool) -> ChunkResult {
    let size = data.len() as u64;
    let (payload, zstd) = if compress {
        match zstd::bulk::compress(&data, 1) {
            Ok(z) if (z.len() as u64) * 10 <= size * 9 => (Bytes::from(z), true),
            _ => (data, false),
        }
    } else {
        (data, false)
    };
    let opts = UploadOptions {
        fsync: true,
        ..Default::default()
    };
    let mut failed = Vec::new();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            // A volume server restarting or a cluster still starting.
            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
        }
        let t = match inner.leases.take(crate::filer::now_ns()).await {
            Ok(t) => t,
            // The master has no writable volume yet, or cannot be reached.
            Err(e @ FilerError::Blob(_)) => {
                tracing::warn!(error = %e, "cannot reserve a file id; retrying");
                last = Some(e);
                continue;
            }
            Err(e) => return Err((e, failed)),
        };
        let target = UploadTarget {
            fid: &t.fid,
            url: &t.url,
            auth: t.auth.as_deref(),
        };
        match inner.client.upload(target, payload.clone(), &opts).await {
            Ok(_) => {
                inner.count_stored(size, payload.len() as u64);
                if !failed.is_empty() {
                    inner.discard(std::mem::take(&mut failed)).await;
                }
                let chunk = Chunk {
                    fid: t.fid.clone(),
                    offset,
                    size,
                    stored: payload.len() as u64,
                    zstd,
                    mtime_ns: crate::filer::now_ns(),
                };
                return Ok((chunk, t));
            }
            Err(e) => {
                tracing::warn!(fid = %t.fid, server = %t.url, error = %e, "chunk upload failed; trying another file id");
                inner.leases.abandon(t.lease);
                failed.push(t);
                last = Some(FilerError::Blob(e));
            }
        }
    }
    let e = last.unwrap_or_else(|| FilerError::Store("no upload attempt was made".into()));
    Err((e, failed))
}
