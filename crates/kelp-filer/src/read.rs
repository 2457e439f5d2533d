//! Reading a file's content: the chunks that cover a byte range, fetched
//! in order with one chunk read ahead, decompressed when stored with zstd.
//! Bytes no chunk covers read as zeros.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use kelp_client::Client;

use crate::entry::{Chunk, Entry};
use crate::error::FilerError;

/// Chunks fetched ahead of the one being sent.
const READ_AHEAD: usize = 2;

enum Piece {
    Chunk(Chunk, Range<u64>),
    Zeros(u64),
}

/// The bytes `range` of `entry` (already clipped to its size).
pub fn content(
    client: &Client,
    entry: &Entry,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, FilerError>> {
    if range.start >= range.end {
        return stream::empty().boxed();
    }
    if !entry.inline.is_empty() || entry.chunks.is_empty() {
        let len = entry.inline.len() as u64;
        let b = Bytes::copy_from_slice(
            &entry.inline[range.start.min(len) as usize..range.end.min(len) as usize],
        );
        let mut holes = Vec::new();
        let mut n = range.end - range.start - b.len() as u64;
        while n > 0 {
            holes.push(n.min(1 << 20));
            n -= n.min(1 << 20);
        }
        return stream::once(std::future::ready(Ok(b)))
            .chain(stream::iter(holes).map(|n| Ok(Bytes::from(vec![0u8; n as usize]))))
            .boxed();
    }
    let mut chunks = entry.chunks.clone();
    chunks.sort_by_key(|c| c.offset);
    let mut pieces = Vec::new();
    let mut at = range.start;
    for c in chunks {
        let (lo, hi) = (c.offset.max(at), (c.offset + c.size).min(range.end));
        if hi <= lo {
            continue;
        }
        if lo > at {
            push_zeros(&mut pieces, lo - at);
        }
        pieces.push(Piece::Chunk(c.clone(), lo - c.offset..hi - c.offset));
        at = hi;
    }
    if at < range.end {
        push_zeros(&mut pieces, range.end - at);
    }
    let client = Arc::new(client.clone());
    stream::iter(pieces)
        .map(move |p| {
            let client = client.clone();
            async move { fetch(&client, p).await }
        })
        .buffered(READ_AHEAD)
        .try_filter(|b| std::future::ready(!b.is_empty()))
        .boxed()
}

/// A hole, in pieces of at most 1 MiB so that a sparse file never makes a
/// large buffer.
fn push_zeros(pieces: &mut Vec<Piece>, mut n: u64) {
    while n > 0 {
        let k = n.min(1 << 20);
        pieces.push(Piece::Zeros(k));
        n -= k;
    }
}

/// Tries per chunk read: a cluster that just started may not know the
/// chunk's volume yet (its volume server has not sent its first
/// heartbeat), and a replica may be restarting.
const READ_TRIES: u32 = 6;

async fn fetch(client: &Client, p: Piece) -> Result<Bytes, FilerError> {
    let mut wait = std::time::Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match fetch_once(client, &p).await {
            Err(FilerError::Blob(e)) if !e.is_missing_file() && tries < READ_TRIES => {
                tracing::debug!(error = %e, "chunk read failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            r => return r,
        }
    }
}

async fn fetch_once(client: &Client, p: &Piece) -> Result<Bytes, FilerError> {
    match p {
        Piece::Zeros(n) => Ok(Bytes::from(vec![0u8; *n as usize])),
        Piece::Chunk(c, r) if c.zstd => {
            let stored = client.read(&c.fid).await?;
            let plain = zstd::bulk::decompress(&stored, c.size as usize)
                .map_err(|e| FilerError::Corrupt(format!("chunk {}: zstd: {e}", c.fid)))?;
            if plain.len() as u64 != c.size {
                return Err(FilerError::Corrupt(format!(
                    "chunk {} holds {} bytes, its entry says {}",
                    c.fid,
                    plain.len(),
                    c.size
                )));
            }
            Ok(Bytes::from(plain).slice(r.start as usize..r.end as usize))
        }
        Piece::Chunk(c, r) => {
            let b = if r.start == 0 && r.end == c.size {
                client.read(&c.fid).await?
            } else {
                client.read_range(&c.fid, r.clone()).await?
            };
            if b.len() as u64 != r.end - r.start {
                return Err(FilerError::Corrupt(format!(
                    "chunk {} gave {} bytes of {:?}",
                    c.fid,
                    b.len(),
                    r
                )));
            }
            Ok(b)
        }
    }
}
