//! Writeback started ahead of flushes.
//!
//! A downstairs writes block data into the page cache and makes it
//! durable at the next flush (every 500 ms, or when the guest flushes).
//! Left to itself the kernel writes nothing back before then (its own
//! timer is 30 s), so every flush had to write out everything written
//! since the last one, while writes to the blocks being flushed waited
//! (extent.rs, "Flushing beside writes"). With 16 MiB of 4 KiB random
//! writes between guest flushes that took about 110 ms per flush, and the
//! guest's IOPS fell to nothing for as long.
//!
//! So once an extent has taken `WRITEBACK_AFTER` bytes of block data since
//! it last did, its data area's writeback is started
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), and the
//! next flush finds little left to write: about 20 ms in the case above.
//! Only the data area: the per-block contexts at the front of the file are
//! rewritten by most writes and are left for the flush to write once.
//!
//! The call is made on one background thread per process, never on a
//! session's worker: submitting a few hundred random writes to the block
//! layer takes long enough to show in the guest's write latency. An extent
//! has at most one request queued; a request that finds the queue full is
//! dropped. This is only a hint, and the flush writes whatever is still
//! dirty: durability does not depend on any of it. Nothing is started
//! while the extent's own flush is under way (its fdatasync would wait for
//! the new writeback too), and a flush starts the count again.
//!
//! Limits: the count is per extent, so a volume of many extents written
//! thinly between flushes (random writes over a large volume) rarely
//! reaches it, and its flushes write everything as before. On file systems
//! where `sync_file_range` does nothing (overlayfs) nothing changes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use kelp_storage::File;

/// Block data written to an extent after which its writeback is started.
/// 1 MiB measured worse than 256 KiB for both random and sequential writes
/// (docs/benchmarks.md).
pub(crate) const WRITEBACK_AFTER: u64 = 256 << 10;

/// Requests waiting for the background thread at most.
const QUEUE: usize = 64;

/// A file whose writeback should start, from an offset to its end, and
/// its extent's flag saying a request is queued (cleared once done).
struct Request {
    file: File,
    from: u64,
    queued: Arc<AtomicBool>,
}

static QUEUE_TX: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();

/// Writebacks started so far in this process (the tests watch it).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Writebacks the background thread has started so far in this process.
#[cfg(test)]
pub(crate) fn started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

/// Asks the background thread (started on the first call) to start writing
/// `file` back from `from` to its end, unless `queued` says a request for
/// the same extent is already waiting. `file` is opened only if asked.
pub(crate) fn start(
    file: impl FnOnce() -> std::io::Result<File>,
    from: u64,
    queued: &Arc<AtomicBool>,
) {
    if queued.swap(true, Ordering::AcqRel) {
        return;
    }
    let file = match file() {
        Ok(f) => f,
        // Without a second handle the flush writes it all.
        Err(_) => {
            queued.store(false, Ordering::Release);
            return;
        }
    };
    let tx = QUEUE_TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("kelp-writeback".into())
            .spawn(move || {
                for r in rx {
                    // An I/O error here comes back from the flush's own
                    // fdatasync, which fails the region; nothing to do.
                    if let Err(e) = r.file.start_writeback(r.from) {
                        tracing::debug!(error = %e, "starting writeback failed");
                    }
                    drop(r.file);
                    r.queued.store(false, Ordering::Release);
                    STARTED.fetch_add(1, Ordering::Relaxed);
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the writeback thread; flushes write everything themselves");
                None
            }
        }
    });
    let request = Request {
        file,
        from,
        queued: queued.clone(),
    };
    let refused = match tx {
        Some(tx) => match tx.try_send(request) {
            Ok(()) => None,
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => Some(r),
        },
        None => Some(request),
    };
    if let Some(r) = refused {
        r.queued.store(false, Ordering::Release);
    }
}
