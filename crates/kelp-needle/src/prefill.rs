//! Zero-filling `.dat` ahead of the appends of a durable volume.
//!
//! An fdatasync after an append must also write the metadata the append
//! changed: the file's size and its newly allocated blocks. On ext4
//! without a journal that is two more synchronous writes (the inode and
//! the allocation buffers) besides the data; on ext4 with a journal or
//! XFS it is a journal commit. Overwriting blocks that are already
//! allocated and written changes no metadata, so its fdatasync writes
//! the data only. A profile of 1 KiB durable writes put 22% of the
//! server's CPU in fdatasync, a third of it in the two extra writes' VM
//! exits (`docs/benchmarks.md`).
//!
//! So while a durable volume is open, its writer zeroes `.dat` a chunk
//! (`CHUNK`) ahead of the next append, in the page cache, and the next
//! group commit makes the chunk durable along with its batch; the
//! appends that follow land in that chunk and sync as plain overwrites.
//!
//! **On disk**, an open volume's `.dat` may therefore end in up to about
//! `CHUNK` zero bytes after its last needle. The logical end is the
//! writer's `dat_end`; nothing reads past it. `Volume::close` cuts the
//! zeros, so a closed `.dat` ends at its last needle as SeaweedFS
//! expects; after a crash, recovery at open stops at the first needle
//! whose bytes are all zero (`recovery::index_tail`: no write is all
//! zeros, though 32 zero bytes parse as a tombstone of key 0) and cuts
//! the rest (logged as `released zero-filled space`).
//!
//! Needles of `LARGE` bytes or more are appended as before: their own
//! write dwarfs the metadata, and zeroing them first would write them
//! twice. If zeroing fails (a full disk), the volume stops prefilling
//! until it is reopened and appends grow the file as before.

use crate::volume::{Files, Volume, WriterState};

/// How far ahead of the next append `.dat` is zeroed.
pub(crate) const CHUNK: u64 = 1 << 20;

/// Appends of at least this many bytes are not prefilled.
pub(crate) const LARGE: u64 = 256 << 10;

/// Zeroes written per call.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl Volume {
    /// Makes sure `.dat` is zeroed past an append of `total` bytes at
    /// `w.dat_end`, by `CHUNK` more when it is not. Called under the
    /// writer lock, before the append is written.
    pub(crate) fn prefill(&self, w: &mut WriterState, f: &Files, total: u64) {
        let end = w.dat_end + total;
        if !w.prefilling || end <= w.zeroed_end || total >= LARGE {
            return;
        }
        // Whole pages, so the chunk ends on a block boundary.
        let to = ((end + CHUNK) & !4095).min(self.layout.width.max_dat_size());
        let from = w.zeroed_end.max(w.dat_end);
        if to <= from {
            return;
        }
        let (reached, result) = write_zeros(&f.dat, from, to);
        w.zeroed_end = reached;
        if let Err(e) = result {
            tracing::warn!(
                volume = self.id,
                error = %e,
                "cannot zero .dat ahead of appends; appending without it until the volume is reopened"
            );
            w.prefilling = false;
        }
    }

    /// Stops zeroing ahead and cuts whatever lies past the last needle
    /// (zeros, or the torn bytes of a failed append), so the file ends
    /// where SeaweedFS expects; for a volume about to be closed (`close`
    /// calls it). Returns whether it cut; the caller syncs the files
    /// afterwards (a checkpoint does).
    pub fn release_zeroed_space(&self) -> Result<bool, crate::VolumeError> {
        let mut w = self.writer.lock();
        w.prefilling = false;
        let f = self.files();
        if f.dat.len()? <= w.dat_end {
            return Ok(false);
        }
        f.dat.set_len(w.dat_end)?;
        w.zeroed_end = w.dat_end;
        Ok(true)
    }
}

/// Writes zeros over `[from, to)`; returns how far it got (a full disk
/// can stop it part-way) and how it ended.
fn write_zeros(dat: &kelp_storage::File, mut from: u64, to: u64) -> (u64, std::io::Result<()>) {
    while from < to {
        let n = (to - from).min(ZEROS.len() as u64);
        if let Err(e) = dat.write_all_at(&ZEROS[..n as usize], from) {
            return (from, Err(e));
        }
        from += n;
    }
    (from, Ok(()))
}
