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
//! Random writes spread over a large volume reach that mark in no extent
//! before the next flush (16 MiB over a 4 GiB volume is 128 KiB per 32 MiB
//! extent). So the region counts too: once it has taken
//! `REGION_WRITEBACK_AFTER` bytes since its last sweep, it starts the
//! writeback of every extent written since, however little each took.
//!
//! The call is made on one background thread per process, never on a
//! session's worker: submitting a few hundred random writes to the block
//! layer takes long enough to show in the guest's write latency. An extent
//! has at most one request queued; a batch of requests that finds the
//! queue full is dropped. This is only a hint, and the flush writes
//! whatever is still dirty: durability does not depend on any of it.
//! Nothing is started while the extent's own flush is under way (its
//! fdatasync would wait for the new writeback too): no request is made
//! then, and one queued before the flush began is dropped when its turn
//! comes. A flush starts the counts again.
//!
//! Limits: on file systems where `sync_file_range` does nothing
//! (overlayfs) nothing changes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use kelp_storage::File;

/// Block data written to an extent after which its writeback is started.
/// 1 MiB measured worse than 256 KiB for both random and sequential writes
/// (docs/benchmarks.md).
pub(crate) const WRITEBACK_AFTER: u64 = 256 << 10;

/// Block data written to a whole region after which the writeback of
/// every extent written since is started, however little each took:
/// random writes spread over a large volume reach `WRITEBACK_AFTER` in
/// no extent before the next flush (docs/benchmarks.md).
pub(crate) const REGION_WRITEBACK_AFTER: u64 = 4 << 20;

/// Batches waiting for the background thread at most.
const QUEUE: usize = 64;

/// What an extent and its queued request share.
#[derive(Default)]
pub(crate) struct Flags {
    /// A request for the extent is queued (cleared once done).
    queued: AtomicBool,
    /// The extent's flush is under way: a request queued before it began
    /// is dropped when its turn comes.
    flushing: AtomicBool,
}

impl Flags {
    pub(crate) fn set_flushing(&self, on: bool) {
        self.flushing.store(on, Ordering::Release);
    }
}

/// A file whose writeback should start, from an offset to its end, and
/// its extent's flags.
pub(crate) struct Request {
    file: Arc<File>,
    from: u64,
    flags: Arc<Flags>,
}

static QUEUE_TX: OnceLock<Option<SyncSender<Vec<Request>>>> = OnceLock::new();

/// Writebacks started so far in this process (the tests watch it).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Writebacks the background thread has started so far in this process.
#[cfg(test)]
pub(crate) fn started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

/// A request to start writing `file` back from `from` to its end, unless
/// one for the same extent is already queued (then `None`).
pub(crate) fn request(file: &Arc<File>, from: u64, flags: &Arc<Flags>) -> Option<Request> {
    if flags.queued.swap(true, Ordering::AcqRel) {
        return None;
    }
    Some(Request {
        file: file.clone(),
        from,
        flags: flags.clone(),
    })
}

/// Starts one request's writeback, on the background thread.
fn run(r: Request) {
    // Looked at just before the call: a flush that begins during it waits
    // for this writeback too, a narrow window left open rather than making
    // the flush wait for this thread.
    if !r.flags.flushing.load(Ordering::Acquire) {
        // An I/O error here comes back from the flush's own fdatasync,
        // which fails the region.
        if let Err(e) = r.file.start_writeback(r.from) {
            tracing::debug!(error = %e, "starting writeback failed");
        }
        STARTED.fetch_add(1, Ordering::Relaxed);
    }
    drop(r.file);
    r.flags.queued.store(false, Ordering::Release);
}

/// Hands `batch` to the background thread (started on the first call),
/// as one entry of its queue; a batch that finds the queue full is dropped.
pub(crate) fn start(batch: Vec<Request>) {
    if batch.is_empty() {
        return;
    }
    let tx = QUEUE_TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Vec<Request>>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("kelp-writeback".into())
            .spawn(move || {
                for batch in rx {
                    batch.into_iter().for_each(run);
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
    let refused = match tx {
        Some(tx) => match tx.try_send(batch) {
            Ok(()) => None,
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => Some(b),
        },
        None => Some(batch),
    };
    for r in refused.into_iter().flatten() {
        r.flags.queued.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelp_storage::{Open, Storage};

    /// A request queued before its extent's flush began is dropped when
    /// its turn comes, and frees the extent for the next request.
    #[test]
    fn a_request_is_dropped_once_its_extent_is_flushing() {
        let d = tempfile::tempdir().unwrap();
        let f = Storage::real()
            .open(&d.path().join("f"), Open::CREATE)
            .unwrap();
        let file = Arc::new(f);
        let flags = Arc::new(Flags::default());
        let r = request(&file, 0, &flags).unwrap();
        assert!(request(&file, 0, &flags).is_none(), "queued twice");
        flags.set_flushing(true);
        let before = started();
        run(r);
        assert_eq!(started(), before, "started during the flush");
        flags.set_flushing(false);
        run(request(&file, 0, &flags).expect("the extent is free again"));
        assert_eq!(started(), before + 1);
    }
}
