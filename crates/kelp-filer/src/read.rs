//! Reading a file's content: the chunks that cover a byte range, in order,
//! with the next chunks' reads already started. A whole plain chunk is
//! streamed from its volume server into the answer as it arrives (no
//! copy, no buffering of the chunk); a part of one, or a zstd chunk, is
//! fetched whole first. Bytes no chunk covers read as zeros.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use kelp_client::Client;

use crate::entry::{Chunk, Entry};
use crate::error::FilerError;

/// Chunk reads in flight: the one being sent and those started ahead.
const READ_AHEAD: usize = 3;

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
            async move { open(&client, p).await }
        })
        .buffered(READ_AHEAD)
        .try_flatten()
        .try_filter(|b| std::future::ready(!b.is_empty()))
        .boxed()
}

/// A piece's bytes: a whole plain chunk as its volume server sends it,
/// anything else fetched first.
async fn open(
    client: &Client,
    p: Piece,
) -> Result<BoxStream<'static, Result<Bytes, FilerError>>, FilerError> {
    match p {
        Piece::Chunk(c, r) if !c.zstd && r.start == 0 && r.end == c.size => {
            let s = retrying(|| async { Ok(client.read_stream(&c.fid).await?) }).await?;
            Ok(exactly(c, s.map_err(FilerError::from)))
        }
        p => Ok(stream::once(std::future::ready(fetch(client, p).await)).boxed()),
    }
}

/// `s`, ended with an error when it does not carry exactly the chunk's
/// size in bytes (a volume server that sent less than its header said).
fn exactly(
    c: Chunk,
    s: impl futures::Stream<Item = Result<Bytes, FilerError>> + Send + 'static,
) -> BoxStream<'static, Result<Bytes, FilerError>> {
    stream::unfold(Some((s.boxed(), c, 0u64)), |state| async move {
        let (mut s, c, seen) = state?;
        match s.next().await {
            Some(Ok(b)) => {
                let seen = seen + b.len() as u64;
                Some((Ok(b), Some((s, c, seen))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None if seen == c.size => None,
            None => Some((
                Err(FilerError::Corrupt(format!(
                    "chunk {} gave {seen} bytes of {}",
                    c.fid, c.size
                ))),
                None,
            )),
        }
    })
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
    retrying(|| fetch_once(client, &p)).await
}

/// `attempt` until it succeeds, fails for good (a missing file), or has
/// been tried [`READ_TRIES`] times.
async fn retrying<T, F, Fut>(attempt: F) -> Result<T, FilerError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, FilerError>>,
{
    let mut wait = std::time::Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match attempt().await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(size: u64) -> Chunk {
        Chunk {
            fid: "3,01637037d6".into(),
            offset: 0,
            size,
            stored: size,
            zstd: false,
            mtime_ns: 0,
        }
    }

    async fn collect(size: u64, parts: Vec<&'static [u8]>) -> Result<Vec<u8>, FilerError> {
        let s = stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))));
        let mut out = Vec::new();
        let mut s = exactly(chunk(size), s);
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_streamed_chunk_must_carry_exactly_its_size() {
        assert_eq!(collect(6, vec![b"abc", b"def"]).await.unwrap(), b"abcdef");
        let short = collect(7, vec![b"abc", b"def"]).await.unwrap_err();
        assert!(short.to_string().contains("gave 6 bytes of 7"), "{short}");
        let long = collect(5, vec![b"abc", b"def"]).await.unwrap_err();
        assert!(long.to_string().contains("gave 6 bytes of 5"), "{long}");
    }
}
