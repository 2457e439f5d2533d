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
//! layer takes long enough to show in the guest's write latency. A
//! request that finds the queue full is dropped; this is only a hint, and
//! the flush writes whatever is still dirty. Durability does not depend on
//! any of it.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use kelp_storage::File;

/// Block data written to an extent after which its writeback is started.
/// 1 MiB measured worse than 256 KiB for both random and sequential writes
/// (docs/benchmarks.md).
pub(crate) const WRITEBACK_AFTER: u64 = 256 << 10;

/// Requests waiting for the background thread at most.
const QUEUE: usize = 64;

/// A file whose writeback should start, from an offset to its end.
type Request = (File, u64);

static QUEUE_TX: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();

/// Asks the background thread to start writing `file` back from `from`
/// to its end (started on the first call).
pub(crate) fn start(file: File, from: u64) {
    let tx = QUEUE_TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("kelp-writeback".into())
            .spawn(move || {
                for (file, from) in rx {
                    // An I/O error here comes back from the flush's own
                    // fdatasync, which fails the region; nothing to do.
                    if let Err(e) = file.start_writeback(from) {
                        tracing::debug!(error = %e, "starting writeback failed");
                    }
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
    if let Some(tx) = tx
        && let Err(TrySendError::Disconnected(_)) = tx.try_send((file, from))
    {
        tracing::debug!("the writeback thread has stopped");
    }
}
