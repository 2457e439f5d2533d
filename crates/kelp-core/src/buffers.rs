//! Reused buffers for large payloads: block data arriving over NBD or
//! between upstairs and downstairs (`kelp_block::buffers`), and blob upload
//! bodies (`kelp_volume`'s upload handler).
//!
//! Why: a fresh 1 MiB allocation is fresh pages. Kelp's allocator returns
//! freed memory to the kernel at once (`kelp::allocator`, which holds RSS
//! down), so every new buffer faults all its 256 pages in again, the kernel
//! zeroes each, and the purge that freed them before cost a TLB shootdown.
//! Under 1 MiB block writes that was about a third of the block processes'
//! CPU, under 1 MiB blob uploads about a quarter of the volume server's. A
//! buffer taken from here has its pages mapped already, and goes back here
//! when the last [`Bytes`] sharing it is dropped.
//!
//! The pool keeps at most [`POOL_BYTES`] of idle buffers per process, and
//! only buffers of at least [`LARGE`] bytes; smaller ones are allocated and
//! freed as usual (cheap, and they come from the allocator's own free
//! lists).

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers at least this long are kept for reuse.
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
    // Nothing can panic while the lock is held (push, pop, arithmetic), so
    // a poisoned lock still guards a consistent pool.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with room for at least `len` bytes: for a large `len`,
/// an idle one whose capacity is between `len` and 5/4 of `len` if there is
/// one (so held buffers never pin much more memory than their payloads);
/// otherwise a new one.
pub fn take(len: usize) -> PooledBuf {
    let reused = if len >= LARGE {
        let mut p = pool();
        let hit = p
            .free
            .iter()
            .position(|v| v.capacity() >= len && v.capacity() / 5 * 4 <= len);
        hit.map(|i| {
            let v = p.free.swap_remove(i);
            p.bytes -= v.capacity();
            v
        })
    } else {
        None
    };
    PooledBuf {
        vec: reused.unwrap_or_else(|| Vec::with_capacity(len)),
    }
}

/// A buffer of `len` zero bytes, to be read into (reused like [`take`]'s).
pub fn take_zeroed(len: usize) -> PooledBuf {
    let mut b = take(len);
    b.vec.resize(len, 0);
    b
}

/// Idle bytes held by the pool.
pub fn idle_bytes() -> usize {
    pool().bytes
}

/// A buffer that returns to the pool when dropped.
#[derive(Default)]
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

    /// The vector itself, to read into its spare capacity.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
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

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.vec
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

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is per process and `cargo test` runs tests on threads, so
    // each test asks for sizes no other test asks for.

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
        let mut again = take(len);
        assert_eq!(
            again.vec_mut().as_ptr(),
            ptr,
            "the buffer came back from the pool"
        );
        assert!(again.is_empty());
    }

    #[test]
    fn a_reused_buffer_taken_zeroed_holds_zeros() {
        let len = LARGE * 7 + 5;
        let mut b = take(len);
        b.extend_from_slice(&vec![0xAB; len]);
        let ptr = b.vec_mut().as_ptr();
        drop(b);
        let z = take_zeroed(len);
        assert_eq!(z.vec.as_ptr(), ptr, "the same buffer");
        assert_eq!(z.len(), len);
        assert!(z.as_ref().iter().all(|&x| x == 0));
    }

    #[test]
    fn a_much_larger_idle_buffer_is_not_handed_out_for_a_small_payload() {
        let big = take(LARGE * 11);
        let ptr = big.vec.as_ptr();
        drop(big);
        let mut small = take(LARGE * 3 + 1);
        assert_ne!(small.vec_mut().as_ptr(), ptr);
        assert!(small.vec.capacity() < LARGE * 11);
    }

    #[test]
    fn the_pool_keeps_at_most_pool_bytes() {
        let bufs: Vec<_> = (0..(POOL_BYTES / (LARGE * 13)) + 8)
            .map(|_| take(LARGE * 13))
            .collect();
        drop(bufs);
        assert!(idle_bytes() <= POOL_BYTES, "{} idle", idle_bytes());
        let huge = take(POOL_BYTES + 1);
        drop(huge);
        assert!(idle_bytes() <= POOL_BYTES, "{} idle", idle_bytes());
    }
}
