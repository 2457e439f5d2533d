//! Receive buffers for large payloads (block writes arriving over NBD,
//! frames carrying block data between upstairs and downstairs), reused
//! instead of allocated per message.
//!
//! Why: a fresh 1 MiB allocation is fresh pages. The allocator returns freed
//! memory to the kernel at once (see `kelp::allocator`, which holds RSS
//! down), so every new buffer page-faults all its 256 pages in, and a
//! buffer grown while a frame arrives is copied on each growth. Sequential
//! 1 MiB writes spent about a third of the block processes' CPU in those
//! faults and copies. A buffer taken from here has its pages mapped
//! already, is read into without being zeroed, and goes back here when the
//! last [`Bytes`] that shares it is dropped.
//!
//! The pool keeps at most [`POOL_BYTES`] of idle buffers per process;
//! buffers beyond that, and buffers far larger than asked for, are freed.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Payloads at least this long use a pooled buffer; smaller ones are cheap
/// to allocate and share the connection's streaming buffer.
pub const LARGE: usize = 64 << 10;

/// Idle buffers kept for reuse, in bytes of capacity, per process.
pub const POOL_BYTES: usize = 32 << 20;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while holding the lock cannot leave the pool inconsistent
    // (push and pop only), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with room for at least `len` bytes: an idle one whose
/// capacity is between `len` and twice `len`, or a new one.
pub fn take(len: usize) -> PooledBuf {
    let reused = {
        let mut p = pool();
        let hit = p
            .free
            .iter()
            .position(|v| v.capacity() >= len && v.capacity() / 2 <= len);
        hit.map(|i| {
            let v = p.free.swap_remove(i);
            p.bytes -= v.capacity();
            v
        })
    };
    PooledBuf {
        vec: reused.unwrap_or_else(|| Vec::with_capacity(len)),
    }
}

/// Idle bytes held by the pool (for tests and logs).
pub fn idle_bytes() -> usize {
    pool().bytes
}

/// A buffer that returns to the pool when dropped.
pub struct PooledBuf {
    vec: Vec<u8>,
}

impl PooledBuf {
    pub fn len(&self) -> usize {
        self.vec.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    pub fn extend_from_slice(&mut self, b: &[u8]) {
        self.vec.extend_from_slice(b);
    }

    /// Reads from `r` until the buffer holds `len` bytes, never past them
    /// (the bytes after belong to the next message). Reads into the spare
    /// capacity without zeroing it. A stream that ends first is
    /// `UnexpectedEof`.
    pub async fn fill_from<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        len: usize,
    ) -> std::io::Result<()> {
        if self.vec.capacity() < len {
            self.vec.reserve_exact(len - self.vec.len());
        }
        while self.vec.len() < len {
            let want = (len - self.vec.len()) as u64;
            let n = (&mut *r).take(want).read_buf(&mut self.vec).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The bytes as [`Bytes`]; the buffer returns to the pool when the last
    /// clone or slice of them is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.vec
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.vec);
        if v.capacity() < LARGE {
            return;
        }
        v.clear();
        let mut p = pool();
        if p.bytes + v.capacity() <= POOL_BYTES {
            p.bytes += v.capacity();
            p.free.push(v);
        }
    }
}

/// Reads a payload of `len` bytes whose first bytes, `prefix`, were already
/// received, into a pooled buffer.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    prefix: &[u8],
    len: usize,
) -> std::io::Result<Bytes> {
    let mut buf = take(len);
    buf.extend_from_slice(&prefix[..prefix.len().min(len)]);
    buf.fill_from(r, len).await?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is per process and tests run in parallel, so these tests
    // use sizes no other test in this crate asks for.

    #[tokio::test]
    async fn a_payload_is_read_exactly_and_leaves_the_rest() {
        let len = LARGE * 3 + 17;
        let data: Vec<u8> = (0..len + 10).map(|i| (i * 7) as u8).collect();
        let (mut a, mut b) = tokio::io::duplex(4096);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&sent[100..]).await.unwrap();
        });
        let got = read_payload(&mut b, &data[..100], len).await.unwrap();
        assert_eq!(&got[..], &data[..len]);
        let mut rest = Vec::new();
        writer.await.unwrap();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest,
            data[len..],
            "bytes past the payload stay in the stream"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_unexpected_eof() {
        let (a, mut b) = tokio::io::duplex(4096);
        drop(a);
        let e = read_payload(&mut b, &[1, 2, 3], LARGE + 5)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_dropped_buffer_is_reused_once_its_last_slice_is_gone() {
        let len = LARGE * 5 + 3;
        let mut b = take(len);
        b.extend_from_slice(&vec![9u8; len]);
        let bytes = b.freeze();
        let ptr = bytes.as_ptr();
        let tail = bytes.slice(len - 10..);
        drop(bytes);
        assert_eq!(&tail[..], &[9u8; 10], "a slice keeps its buffer alive");
        drop(tail);
        let again = take(len);
        assert_eq!(
            again.vec.as_ptr(),
            ptr,
            "the buffer came back from the pool"
        );
        assert!(again.is_empty());
    }

    #[test]
    fn small_buffers_and_a_full_pool_are_freed() {
        let small = take(LARGE - 1);
        drop(small);
        let huge = take(POOL_BYTES + LARGE * 7 + 1);
        let before = idle_bytes();
        drop(huge);
        assert!(
            idle_bytes() <= POOL_BYTES,
            "the pool holds at most POOL_BYTES ({} before the drop, {} after)",
            before,
            idle_bytes()
        );
        let fresh = take(POOL_BYTES + LARGE * 7 + 1);
        assert_eq!(fresh.len(), 0);
    }
}
