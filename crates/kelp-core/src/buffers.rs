//! Reused buffers for large payloads: block data arriving over NBD or
//! between upstairs and downstairs (`kelp_block::buffers`), blob upload
//! bodies that come with a Content-Length (`kelp_volume`'s upload
//! handler), and pieces of large blobs read back (`kelp_needle`'s
//! `DataStream`).
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
//! lists). Large buffers are allocated in whole multiples of [`LARGE`], so
//! payloads of nearby sizes share buffers, and when the pool is full the
//! oldest idle buffer makes room for the newest: a change of workload
//! replaces the sizes kept instead of leaving the pool full of sizes no
//! one asks for.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// Buffers at least this long are kept for reuse.
pub const LARGE: usize = 64 << 10;

/// Idle buffers kept for reuse, in bytes of capacity, per process.
pub const POOL_BYTES: usize = 32 << 20;

struct Pool {
    /// Oldest first.
    free: VecDeque<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: VecDeque::new(),
    bytes: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // Nothing can panic while the lock is held (push, pop, arithmetic), so
    // a poisoned lock still guards a consistent pool.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with room for at least `len` bytes. For a large `len`:
/// an idle one with room for `len` and at most a quarter (or one [`LARGE`])
/// more, so a buffer never pins much more memory than its payload; else a
/// new one rounded up to a multiple of [`LARGE`].
pub fn take(len: usize) -> PooledBuf {
    if len < LARGE {
        return PooledBuf {
            vec: Vec::with_capacity(len),
        };
    }
    let most = len.saturating_add((len / 4).max(LARGE));
    let reused = {
        let mut p = pool();
        let hit = p
            .free
            .iter()
            .rposition(|v| (len..=most).contains(&v.capacity()));
        hit.and_then(|i| p.free.remove(i)).inspect(|v| {
            p.bytes -= v.capacity();
        })
    };
    let vec = reused.unwrap_or_else(|| Vec::with_capacity(len.next_multiple_of(LARGE)));
    PooledBuf { vec }
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
        if v.capacity() > POOL_BYTES {
            return;
        }
        v.clear();
        let mut p = pool();
        // Room for the newest by letting the oldest go (freed once the
        // lock is released).
        let mut evicted = Vec::new();
        while p.bytes + v.capacity() > POOL_BYTES {
            let Some(old) = p.free.pop_front() else { break };
            p.bytes -= old.capacity();
            evicted.push(old);
        }
        p.bytes += v.capacity();
        p.free.push_back(v);
        drop(p);
        drop(evicted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is per process and `cargo test` runs tests on threads, so
    // the tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    fn turn() -> std::sync::MutexGuard<'static, ()> {
        TURN.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_dropped_buffer_is_reused_once_its_last_slice_is_gone() {
        let _turn = turn();
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
        let _turn = turn();
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
        let _turn = turn();
        let big = take(LARGE * 11);
        let ptr = big.vec.as_ptr();
        drop(big);
        let mut small = take(LARGE * 3 + 1);
        assert_ne!(small.vec_mut().as_ptr(), ptr);
        assert!(small.vec.capacity() < LARGE * 11);
    }

    #[test]
    fn a_full_pool_lets_its_oldest_buffer_go_for_the_newest() {
        let _turn = turn();
        let old: Vec<_> = (0..POOL_BYTES / (LARGE * 13) + 1)
            .map(|_| take(LARGE * 13))
            .collect();
        drop(old);
        let mut newest = take(LARGE * 2 + 9);
        assert_eq!(
            newest.vec_mut().capacity(),
            LARGE * 3,
            "rounded up to a multiple of LARGE"
        );
        let ptr = newest.vec_mut().as_ptr();
        drop(newest);
        assert!(idle_bytes() <= POOL_BYTES, "{} idle", idle_bytes());
        let mut again = take(LARGE * 2 + 500);
        assert_eq!(
            again.vec_mut().as_ptr(),
            ptr,
            "kept although the pool was full, and reused for a nearby size"
        );
    }

    #[test]
    fn the_pool_keeps_at_most_pool_bytes() {
        let _turn = turn();
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
