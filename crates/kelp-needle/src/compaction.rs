//! Compaction (vacuum): rewrite a volume without its garbage (deleted and
//! overwritten needles, expired TTL needles) while it keeps serving reads
//! and writes, and switch to the result so that a crash (`kill -9` or
//! power loss) at any instant loses no acknowledged write and resurrects
//! no acknowledged delete.
//!
//! # Files
//!
//! | file | content |
//! |---|---|
//! | `<base>.cpd` | the new `.dat`: superblock with compaction revision + 1, then the live needles, byte-identical to the originals (AppendAtNs kept) |
//! | `<base>.cpx` | the new `.idx`: one entry per live needle in increasing key order, then the entries of the make-up diff (below) |
//! | `<base>.cpc` | commit marker; its *existence* means "the switch has begun, roll forward". Kelp writes a 28-byte record into it (below); an empty or unreadable marker (SeaweedFS writes an empty one) is still a marker |
//!
//! `.cpc` record, big-endian:
//!
//! ```text
//! 0   4  magic "KCPC"
//! 4   2  compaction revision of the new files
//! 6   2  reserved (0)
//! 8   8  length of .cpd
//! 16  8  length of .cpx
//! 24  4  CRC32-C of bytes 0..24
//! ```
//!
//! # Protocol
//!
//! `Volume::compact` (writes continue meanwhile):
//!
//! 1. Under the writer lock, only long enough to read them: note the
//!    current `.dat`/`.idx` generation and the `.idx` length `S`.
//! 2. Replay `.idx[0..S)` into a fresh needle map (entries below `S` never
//!    change). Write the superblock (revision + 1) to a new `.cpd`.
//! 3. Walk the live keys in increasing order. Read each needle, check the
//!    header's id and size against the index and the CRC. Needles that are
//!    provably corrupt (short read at end of file, wrong header, bad CRC,
//!    malformed body) are dropped with a warning; any other I/O error
//!    aborts. Expired TTL needles are skipped. The rest are appended to
//!    `.cpd` unchanged and indexed in `.cpx`. Optionally rate limited.
//! 4. fsync `.cpd`, `.cpx` and the directory (outside every lock) and keep
//!    the result as the pending compaction.
//!
//! `Volume::commit_compaction` (writes wait only for the last few entries
//! and a handful of fsyncs):
//!
//! 1. Catch up without blocking writers: replay the make-up diff (below)
//!    of `.idx[S..E)`, where `E` is the current `.idx` length, fsync, set
//!    `S = E`; repeat (at most 4 times) while the remainder is large.
//! 2. Take `checkpoint_lock`, `sync`, `writer` (see the lock order in
//!    `volume.rs`); no write, delete or fsync of the live files runs until
//!    the end. Refuse if the generation changed since the compaction.
//! 3. Make-up diff of the remainder `.idx[S..end)`: keep the last entry per
//!    key and apply it in key order: a live needle is read, verified and
//!    copied (an unreadable one aborts the commit: dropping it could
//!    resurrect an older version); a deletion of a key the new map holds
//!    appends a tombstone needle (the original one when it verifies, else
//!    a new one with the live copy's cookie and CRC) and a tombstone entry.
//!    Entries are encoded with the volume's offset width, so 5-byte
//!    offsets keep their high byte (SeaweedFS #11410 rewrote only the low
//!    4 bytes). Replaying in rounds is the same as replaying at once: each
//!    round applies the final state of its keys on top of the previous.
//! 4. fsync `.cpd` and `.cpx` (their directory entries are already durable).
//! 5. Write the `.cpc` record, fsync it, fsync the directory. **Point of no
//!    return**: from here the new pair is the volume.
//! 6. rename `.cpd` → `.dat`, rename `.cpx` → `.idx`, fsync the directory.
//! 7. Remove the stale `.knm` checkpoint. The `.kwm` watermark is rewritten
//!    after the switch (by the checkpoint that follows the commit); until
//!    then the stale one is ignored, as both sidecars are trusted only if
//!    their compaction revision and their last `.idx` entry match.
//! 8. Remove `.cpc`, fsync the directory.
//! 9. In memory: swap the needle map and the file generation (readers
//!    clone the generation under the map lock, so a reader sees either the
//!    old map with the old files or the new map with the new files; the
//!    old files stay open, unlinked, until their last reader is done),
//!    set the writer's end offsets, mark everything synced. Release the
//!    locks, then write a checkpoint and watermark of the new files.
//!
//! An error before step 5 removes `.cpd`/`.cpx` and leaves the volume as it
//! was. An error after it marks the volume read-only until it is reopened,
//! and reopening finishes the switch.
//!
//! `Volume::open` first calls [`reconcile`]:
//!
//! * no `.cpc`: the switch never began; the old `.dat`/`.idx` are intact
//!   and authoritative. Orphan `.cpd`/`.cpx` are deleted.
//! * `.cpc` and `.cpd` present: no rename happened, so the old pair is
//!   still intact. If the new pair matches the record (or there is no
//!   record and `.cpx` exists), roll forward: the renames of step 6, then
//!   steps 7–8 (and `.kwm` is removed). If it does not (a damaged `.cpd`/`.cpx`), roll back to the
//!   old pair (delete `.cpd`, `.cpx`, `.cpc`).
//! * `.cpc`, no `.cpd`: `.dat` is already the new one. Rename `.cpx` if it
//!   is still there; if `.cpx` (or the renamed `.idx`) does not match the
//!   record, the new `.idx` is cut to nothing so that open rebuilds it by
//!   scanning the new `.dat`, which holds every live needle and tombstone.
//!   Then steps 7–8 (and `.kwm` is removed).
//!
//! Every step of `reconcile` is idempotent, so a crash during it is
//! handled by the next open.
//!
//! # Invariants
//!
//! * Until `.cpc` exists on disk, nothing of the old `.dat`/`.idx` has been
//!   modified by compaction, so they hold every acknowledged write and
//!   delete (their own fsyncs acknowledged them).
//! * `.cpc` is created only after `.cpd`/`.cpx` hold every write and delete
//!   ever made to the volume and are fsynced, with their directory entries:
//!   the writer lock is held from the diff to the swap, so nothing can be
//!   acknowledged against the old files that the new ones lack.
//! * `.cpd` is renamed before `.cpx`, so a surviving `.cpd` proves both old
//!   files are intact.
//! * Nothing is written to the new files until `.cpc` is gone (its
//!   removal is fsynced before the swap), so at recovery the new files'
//!   lengths equal the record exactly.
//! * A deleted key is never resurrected: the diff applies the final state
//!   of every key touched after `S`, and a needle dropped as corrupt is
//!   dropped together with every older version of its key (only the live
//!   version is ever considered).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kelp_storage::{File, Storage};
use parking_lot::MutexGuard;

use crate::dir::with_ext;
use crate::error::VolumeError;
use crate::idx::IdxEntry;
use crate::needle::{self, Needle, PADDING};
use crate::needle_map::NeedleMap;
use crate::recovery;
use crate::superblock::SuperBlock;
use crate::volume::{Files, SyncState, Volume, WriterState, open_rw, read_superblock};

/// What a finished `compact` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// `.dat` length when the compaction started.
    pub old_dat_size: u64,
    /// `.cpd` length (before the make-up diff of the commit).
    pub new_dat_size: u64,
    /// `.idx` length noted at the start; the commit replays what follows.
    pub idx_len_at_start: u64,
    pub live_needles: u64,
    /// Bytes of needles read from the old `.dat`.
    pub processed_bytes: u64,
    pub dropped_corrupt: u64,
    pub dropped_expired: u64,
    pub compaction_revision: u16,
    pub elapsed: Duration,
}

/// What a finished `commit_compaction` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReport {
    /// Distinct keys replayed from the `.idx` tail written during compaction.
    pub replayed_keys: u64,
    pub dat_size: u64,
    pub idx_size: u64,
    pub compaction_revision: u16,
    /// How long writers were held off (the locked part of the commit).
    pub writes_blocked: Duration,
}

/// Places where a test can stop compaction as if the process died there:
/// the operation returns `VolumeError::FaultInjected` and leaves every file
/// exactly as it is (no cleanup). Only honoured with `cfg(test)` or the
/// `fault-injection` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// `.cpd` holds its superblock, nothing copied yet.
    CompactCreated,
    /// About half the live needles copied (buffers written, not fsynced).
    CompactMidCopy,
    /// Everything copied, `.cpd`/`.cpx` not fsynced.
    CompactCopied,
    /// Commit: make-up diff appended, not fsynced.
    CommitDiffWritten,
    /// `.cpd`/`.cpx` and the directory fsynced; no `.cpc`.
    CommitSynced,
    /// `.cpc` written but neither it nor the directory fsynced.
    CommitMarkerWritten,
    /// `.cpc` durable: the point of no return.
    CommitMarkerDurable,
    /// `.cpd` renamed to `.dat`, `.cpx` not yet renamed.
    CommitDatRenamed,
    /// Both renamed, directory not fsynced.
    CommitIdxRenamed,
    /// Renames durable; `.knm`/`.kwm` not yet replaced.
    CommitRenamesDurable,
    /// Stale `.knm` removed; `.cpc` still present.
    CommitSidecarsReplaced,
    /// `.cpc` removed (durably); the in-memory switch not done.
    CommitMarkerRemoved,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 12] = [
        FaultPoint::CompactCreated,
        FaultPoint::CompactMidCopy,
        FaultPoint::CompactCopied,
        FaultPoint::CommitDiffWritten,
        FaultPoint::CommitSynced,
        FaultPoint::CommitMarkerWritten,
        FaultPoint::CommitMarkerDurable,
        FaultPoint::CommitDatRenamed,
        FaultPoint::CommitIdxRenamed,
        FaultPoint::CommitRenamesDurable,
        FaultPoint::CommitSidecarsReplaced,
        FaultPoint::CommitMarkerRemoved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::CompactCreated => "compact: .cpd created",
            FaultPoint::CompactMidCopy => "compact: mid copy",
            FaultPoint::CompactCopied => "compact: copied, not synced",
            FaultPoint::CommitDiffWritten => "commit: diff written",
            FaultPoint::CommitSynced => "commit: .cpd/.cpx synced",
            FaultPoint::CommitMarkerWritten => "commit: .cpc written",
            FaultPoint::CommitMarkerDurable => "commit: .cpc durable",
            FaultPoint::CommitDatRenamed => "commit: .cpd renamed",
            FaultPoint::CommitIdxRenamed => "commit: .cpx renamed",
            FaultPoint::CommitRenamesDurable => "commit: renames durable",
            FaultPoint::CommitSidecarsReplaced => "commit: .knm removed",
            FaultPoint::CommitMarkerRemoved => "commit: .cpc removed",
        }
    }

    /// Whether the point is inside `commit_compaction` (else `compact`).
    pub fn in_commit(self) -> bool {
        !matches!(
            self,
            FaultPoint::CompactCreated | FaultPoint::CompactMidCopy | FaultPoint::CompactCopied
        )
    }
}

/// A finished compaction waiting for its commit.
pub(crate) struct Pending {
    /// The generation it was compacted from.
    from: Arc<Files>,
    /// `.idx` length at the start; the commit replays from here.
    start_idx: u64,
    cpd: File,
    cpx: File,
    cpd_len: u64,
    cpx_len: u64,
    map: NeedleMap,
    /// In-memory superblock of the new generation.
    superblock: SuperBlock,
}

const MARKER_MAGIC: &[u8; 4] = b"KCPC";
const MARKER_LEN: usize = 28;
/// Write buffer for `.cpd`/`.cpx`.
const FLUSH_AT: usize = 4 << 20;
/// The commit's unlocked catch-up stops once at most this many `.idx`
/// entries remain for the locked part, or after `CATCH_UP_ROUNDS` rounds.
const CATCH_UP_ENTRIES: u64 = 256;
const CATCH_UP_ROUNDS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    revision: u16,
    cpd_len: u64,
    cpx_len: u64,
}

impl Marker {
    fn encode(&self) -> [u8; MARKER_LEN] {
        let mut b = [0u8; MARKER_LEN];
        b[..4].copy_from_slice(MARKER_MAGIC);
        b[4..6].copy_from_slice(&self.revision.to_be_bytes());
        b[8..16].copy_from_slice(&self.cpd_len.to_be_bytes());
        b[16..24].copy_from_slice(&self.cpx_len.to_be_bytes());
        let crc = crc32c::crc32c(&b[..24]);
        b[24..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// `None` for an empty, torn or foreign (SeaweedFS: empty) marker.
    fn decode(b: &[u8]) -> Option<Marker> {
        let b = b.get(..MARKER_LEN)?;
        if &b[..4] != MARKER_MAGIC || crc32c::crc32c(&b[..24]).to_be_bytes() != b[24..28] {
            return None;
        }
        let u = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(a)
        };
        Some(Marker {
            revision: u16::from_be_bytes([b[4], b[5]]),
            cpd_len: u(8),
            cpx_len: u(16),
        })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Appends to a file through a buffer, tracking the logical length.
struct Appender<'a> {
    file: &'a File,
    buf: Vec<u8>,
    flushed: u64,
}

impl<'a> Appender<'a> {
    fn new(file: &'a File, at: u64) -> Self {
        Self {
            file,
            buf: Vec::new(),
            flushed: at,
        }
    }

    fn len(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn push(&mut self, b: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.flushed)?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Keeps the average copy rate at or below `bps` bytes per second.
struct Throttle {
    bps: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    fn account(&mut self, n: u64, v: &Volume) -> Result<(), VolumeError> {
        self.bytes += n;
        let Some(bps) = self.bps.filter(|b| *b > 0) else {
            return Ok(());
        };
        loop {
            if v.compaction_cancel.load(Ordering::Acquire) {
                return Err(VolumeError::Compaction("cancelled".to_string()));
            }
            let due = Duration::from_secs_f64(self.bytes as f64 / bps as f64);
            let elapsed = self.start.elapsed();
            if due <= elapsed {
                return Ok(());
            }
            std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
        }
    }
}

/// Why a stored needle cannot be copied.
enum Unreadable {
    /// Provably not a valid needle: it may be dropped (or must abort a diff).
    Corrupt(String),
    /// The read itself failed: abort.
    Io(io::Error),
}

impl Volume {
    /// Garbage ratio as SeaweedFS reports it: bytes of deleted and
    /// overwritten needles over all needle bytes ever indexed.
    pub fn garbage_ratio(&self) -> f64 {
        let c = self.map.read().counters();
        if c.content_bytes == 0 {
            0.0
        } else {
            c.deleted_bytes as f64 / c.content_bytes as f64
        }
    }

    /// Whether a finished compaction waits for `commit_compaction`.
    pub fn compaction_pending(&self) -> bool {
        self.compaction.lock().is_some()
    }

    /// Test hook: stop the next compaction step `at` as if the process died.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_fault(&self, at: Option<FaultPoint>) {
        *self.fault.lock() = at;
    }

    fn fault(&self, p: FaultPoint) -> Result<(), VolumeError> {
        #[cfg(any(test, feature = "fault-injection"))]
        if *self.fault.lock() == Some(p) {
            return Err(VolumeError::FaultInjected(p.name()));
        }
        let _ = p;
        Ok(())
    }

    /// Copies the live needles into `.cpd`/`.cpx` while the volume keeps
    /// serving (see the module doc). `bytes_per_second` limits the read
    /// rate. The result waits for `commit_compaction` or
    /// `cleanup_compaction`.
    pub fn compact(&self, bytes_per_second: Option<u64>) -> Result<CompactionReport, VolumeError> {
        self.compact_with_progress(bytes_per_second, &mut |_| {})
    }

    /// `compact`, calling `progress` with the bytes processed so far.
    pub fn compact_with_progress(
        &self,
        bytes_per_second: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CompactionReport, VolumeError> {
        let mut slot = self.compaction.lock();
        self.check_compactable()?;
        if slot.take().is_some() {
            tracing::info!(
                volume = self.id,
                "discarding an uncommitted compaction to start again"
            );
        }
        let res = self.compact_inner(bytes_per_second, progress);
        match res {
            Ok((pending, report)) => {
                *slot = Some(pending);
                Ok(report)
            }
            Err(e @ VolumeError::FaultInjected(_)) => Err(e),
            Err(e) => {
                self.remove_output();
                Err(e)
            }
        }
    }

    fn check_compactable(&self) -> Result<(), VolumeError> {
        if let Some(why) = self.sync_failure.lock().clone() {
            return Err(VolumeError::SyncFailed(why));
        }
        if self.damaged {
            return Err(VolumeError::Compaction(
                "an .idx entry points past the end of .dat; refusing to compact a damaged volume"
                    .to_string(),
            ));
        }
        if self.storage.exists(&with_ext(&self.base, "cpc"))? {
            return Err(VolumeError::Compaction(
                "an interrupted commit is pending (.cpc exists); reopen the volume to finish it"
                    .to_string(),
            ));
        }
        Ok(())
    }

    fn compact_inner(
        &self,
        bps: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Pending, CompactionReport), VolumeError> {
        let started = Instant::now();
        let l = self.layout;
        let (from, start_idx, old_dat_size) = {
            let w = self.writer.lock();
            (self.files(), w.idx_end, w.dat_end)
        };
        let mut disk_sb = read_superblock(&from.dat)?;
        let revision = disk_sb.compaction_revision.wrapping_add(1);
        disk_sb.compaction_revision = revision;
        let mut mem_sb = from.superblock.clone();
        mem_sb.compaction_revision = revision;

        let mut old = NeedleMap::new();
        recovery::replay(&from.idx, &l, 0, start_idx, &mut old)?;

        let cpd = create_truncated(&self.storage, &with_ext(&self.base, "cpd"))?;
        let cpx = create_truncated(&self.storage, &with_ext(&self.base, "cpx"))?;
        let sb_bytes = disk_sb.encode();
        cpd.write_all_at(&sb_bytes, 0)?;
        self.fault(FaultPoint::CompactCreated)?;

        let mut dat = Appender::new(&cpd, sb_bytes.len() as u64);
        let mut idx = Appender::new(&cpx, 0);
        let mut map = NeedleMap::new();
        let mut throttle = Throttle {
            bps,
            start: Instant::now(),
            bytes: 0,
        };
        let now = now_secs();
        let (mut dropped_corrupt, mut dropped_expired) = (0u64, 0u64);
        let total = old.len();
        let mut buf = Vec::new();
        for (i, (key, v)) in old.iter().enumerate() {
            if i == total / 2 && self.fault(FaultPoint::CompactMidCopy).is_err() {
                dat.flush()?;
                idx.flush()?;
                self.fault(FaultPoint::CompactMidCopy)?;
            }
            if self.compaction_cancel.load(Ordering::Acquire) {
                return Err(VolumeError::Compaction("cancelled".to_string()));
            }
            let n = match self.read_verified(&from, key, v.offset, v.size, &mut buf) {
                Ok(n) => n,
                Err(Unreadable::Io(e)) => return Err(e.into()),
                Err(Unreadable::Corrupt(why)) => {
                    tracing::warn!(
                        volume = self.id,
                        key = format_args!("{key:x}"),
                        offset = v.offset,
                        reason = why,
                        "compaction drops a corrupt needle"
                    );
                    dropped_corrupt += 1;
                    continue;
                }
            };
            throttle.account(buf.len() as u64, self)?;
            progress(throttle.bytes);
            if n.is_expired(now) {
                dropped_expired += 1;
                continue;
            }
            let offset = dat.len();
            let mut e = Vec::with_capacity(17);
            IdxEntry::new(key, offset / PADDING, v.size).encode(l.width, &mut e)?;
            dat.push(&buf)?;
            idx.push(&e)?;
            map.put(key, offset, v.size);
        }
        dat.flush()?;
        idx.flush()?;
        drop(old);
        self.fault(FaultPoint::CompactCopied)?;
        // The bulk fsync happens here, outside every lock; the commit only
        // syncs its small diff.
        cpd.sync_all()?;
        cpx.sync_all()?;
        self.storage.sync_parent(&with_ext(&self.base, "cpd"))?;
        map.shrink_to_fit();
        let (cpd_len, cpx_len) = (dat.len(), idx.len());
        let report = CompactionReport {
            old_dat_size,
            new_dat_size: cpd_len,
            idx_len_at_start: start_idx,
            live_needles: map.len() as u64,
            processed_bytes: throttle.bytes,
            dropped_corrupt,
            dropped_expired,
            compaction_revision: revision,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            volume = self.id,
            old_dat_size,
            new_dat_size = cpd_len,
            live = report.live_needles,
            dropped_corrupt,
            dropped_expired,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "compaction copied live needles"
        );
        progress(throttle.bytes);
        Ok((
            Pending {
                from,
                start_idx,
                cpd,
                cpx,
                cpd_len,
                cpx_len,
                map,
                superblock: mem_sb,
            },
            report,
        ))
    }

    /// Reads the needle at `offset` into `buf` and checks it belongs to
    /// `key`, has Size `size` and a valid CRC.
    fn read_verified(
        &self,
        f: &Files,
        key: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<Needle, Unreadable> {
        let total = needle::actual_size(size, self.layout.version);
        buf.clear();
        buf.resize(total as usize, 0);
        match f.dat.read_exact_at(buf, offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Unreadable::Corrupt(format!(
                    "needle of {total} bytes at {offset} runs past the end of .dat"
                )));
            }
            Err(e) => return Err(Unreadable::Io(e)),
        }
        let head: [u8; 16] = buf[..16].try_into().unwrap_or([0; 16]);
        let (_, id, hsize) = needle::parse_header(&head);
        if id != key || hsize != size {
            return Err(Unreadable::Corrupt(format!(
                "header says id {id:x} size {hsize}, index says id {key:x} size {size}"
            )));
        }
        Needle::decode(buf, self.layout.version).map_err(|e| Unreadable::Corrupt(e.to_string()))
    }

    /// Switches the volume to the compacted files (see the module doc).
    pub fn commit_compaction(&self) -> Result<CommitReport, VolumeError> {
        let mut slot = self.compaction.lock();
        let mut pending = slot.take().ok_or_else(|| {
            VolumeError::Compaction("no finished compaction to commit".to_string())
        })?;
        let mut replayed = 0;
        if let Err(e) = self.catch_up(&mut pending, &mut replayed) {
            if !matches!(e, VolumeError::FaultInjected(_)) {
                tracing::warn!(volume = self.id, error = %e, "compaction commit failed; old files kept");
                self.remove_output();
            }
            return Err(e);
        }
        let mut last_checkpoint = self.checkpoint_lock.lock();
        let mut s = self.sync.lock();
        let mut w = self.writer.lock();
        let locked_at = Instant::now();
        let mut past_no_return = false;
        let res = self
            .commit_locked(pending, replayed, &mut s, &mut w, &mut past_no_return)
            .map(|r| CommitReport {
                writes_blocked: locked_at.elapsed(),
                ..r
            });
        drop(w);
        drop(s);
        match res {
            Ok(report) => {
                *last_checkpoint = report.idx_size;
                drop(last_checkpoint);
                // A checkpoint and watermark of the new files make the next
                // open fast and give recovery a trusted point; failing to
                // write them costs nothing else.
                if let Err(e) = self.checkpoint() {
                    tracing::warn!(volume = self.id, error = %e, "checkpoint after compaction failed");
                }
                tracing::info!(
                    volume = self.id,
                    dat_size = report.dat_size,
                    replayed_keys = report.replayed_keys,
                    revision = report.compaction_revision,
                    writes_blocked_us = report.writes_blocked.as_micros() as u64,
                    "compaction committed"
                );
                Ok(report)
            }
            // Leave every file exactly as a crash at this point would.
            Err(e @ VolumeError::FaultInjected(_)) => Err(e),
            Err(e) if past_no_return => {
                let why = format!(
                    "compaction commit failed after its point of no return ({e}); reopen the volume to finish it"
                );
                tracing::error!(volume = self.id, "{why}");
                self.poison(why);
                Err(e)
            }
            Err(e) => {
                tracing::warn!(volume = self.id, error = %e, "compaction commit failed; old files kept");
                self.abandon_commit();
                Err(e)
            }
        }
    }

    /// Undoes a commit that failed before its point of no return. `.cpc`
    /// goes first, durably: `.cpc` without `.cpd` means "the renames
    /// happened" to `reconcile`, so removing the output under a `.cpc`
    /// would make the next open rename a lone `.cpx` over the live `.idx`.
    /// If `.cpc` cannot be removed, the next open may still roll the
    /// commit forward, so nothing more may be written to the old files.
    fn abandon_commit(&self) {
        let cpc = with_ext(&self.base, "cpc");
        match self
            .storage
            .remove_if_exists(&cpc)
            .and_then(|()| self.storage.sync_parent(&cpc))
        {
            Ok(()) => self.remove_output(),
            Err(e) => self.poison(format!(
                "cannot remove {} after a failed compaction commit ({e})",
                cpc.display()
            )),
        }
    }

    /// Step 1 of the commit: replays the `.idx` tail while writers go on.
    fn catch_up(&self, p: &mut Pending, replayed: &mut u64) -> Result<(), VolumeError> {
        if !Arc::ptr_eq(&self.files(), &p.from) {
            return Err(VolumeError::Compaction(
                "the volume changed generation since the compaction started".to_string(),
            ));
        }
        let small = CATCH_UP_ENTRIES * self.layout.width.entry_size() as u64;
        for _ in 0..CATCH_UP_ROUNDS {
            let (end, last_ns) = {
                let w = self.writer.lock();
                (w.idx_end, w.last_append_at_ns)
            };
            if end.saturating_sub(p.start_idx) <= small {
                break;
            }
            *replayed += self.make_up_diff(p, end, last_ns)?;
            p.cpd.sync_data()?;
            p.cpx.sync_data()?;
        }
        Ok(())
    }

    fn commit_locked(
        &self,
        mut p: Pending,
        mut replayed_keys: u64,
        _s: &mut MutexGuard<'_, SyncState>,
        w: &mut MutexGuard<'_, WriterState>,
        past_no_return: &mut bool,
    ) -> Result<CommitReport, VolumeError> {
        if !Arc::ptr_eq(&self.files(), &p.from) {
            return Err(VolumeError::Compaction(
                "the volume changed generation since the compaction started".to_string(),
            ));
        }
        if let Some(why) = self.sync_failure.lock().clone() {
            return Err(VolumeError::SyncFailed(why));
        }
        replayed_keys += self.make_up_diff(&mut p, w.idx_end, w.last_append_at_ns)?;
        self.fault(FaultPoint::CommitDiffWritten)?;

        let base = &self.base;
        let (cpd_path, cpx_path, cpc_path) = (
            with_ext(base, "cpd"),
            with_ext(base, "cpx"),
            with_ext(base, "cpc"),
        );
        p.cpd.sync_all()?;
        p.cpx.sync_all()?;
        self.fault(FaultPoint::CommitSynced)?;

        let marker = Marker {
            revision: p.superblock.compaction_revision,
            cpd_len: p.cpd_len,
            cpx_len: p.cpx_len,
        };
        let st = &self.storage;
        let cpc = create_truncated(st, &cpc_path)?;
        cpc.write_all_at(&marker.encode(), 0)?;
        self.fault(FaultPoint::CommitMarkerWritten)?;
        cpc.sync_all()?;
        drop(cpc);
        st.sync_parent(&cpc_path)?;
        *past_no_return = true;
        self.fault(FaultPoint::CommitMarkerDurable)?;

        st.rename(&cpd_path, &with_ext(base, "dat"))?;
        self.fault(FaultPoint::CommitDatRenamed)?;
        st.rename(&cpx_path, &with_ext(base, "idx"))?;
        self.fault(FaultPoint::CommitIdxRenamed)?;
        st.sync_parent(&cpc_path)?;
        self.fault(FaultPoint::CommitRenamesDurable)?;

        st.remove_if_exists(&with_ext(base, "knm"))?;
        self.fault(FaultPoint::CommitSidecarsReplaced)?;

        st.remove(&cpc_path)?;
        st.sync_parent(&cpc_path)?;
        self.fault(FaultPoint::CommitMarkerRemoved)?;

        let report = CommitReport {
            replayed_keys,
            dat_size: p.cpd_len,
            idx_size: p.cpx_len,
            compaction_revision: p.superblock.compaction_revision,
            writes_blocked: Duration::ZERO,
        };
        let new_files = Arc::new(Files {
            dat: p.cpd,
            idx: p.cpx,
            superblock: p.superblock,
        });
        let (old_map, old_files) = {
            let mut m = self.map.write();
            let mut f = self.files.write();
            (
                std::mem::replace(&mut *m, p.map),
                std::mem::replace(&mut *f, new_files),
            )
        };
        w.dat_end = report.dat_size;
        w.zeroed_end = report.dat_size;
        w.idx_end = report.idx_size;
        // Everything written so far is in the new files, fsynced.
        self.synced_seq.fetch_max(w.seq, Ordering::AcqRel);
        drop(old_map);
        drop(old_files);
        Ok(report)
    }

    /// Applies `.idx[p.start_idx..to)` of the old files to the pending
    /// files and map, then moves `p.start_idx` to `to`. `last_ns` stamps
    /// tombstones that have to be made up. Returns the keys replayed.
    fn make_up_diff(&self, p: &mut Pending, to: u64, last_ns: u64) -> Result<u64, VolumeError> {
        let l = self.layout;
        let mut tail = NeedleMapTail::default();
        let es = l.width.entry_size();
        let mut pos = p.start_idx;
        let mut chunk = vec![0u8; 64 * 1024 * es];
        while pos < to {
            let n = ((to - pos) as usize).min(chunk.len());
            p.from.idx.read_exact_at(&mut chunk[..n], pos)?;
            for c in chunk[..n].chunks_exact(es) {
                let e = IdxEntry::decode(c, l.width)?;
                tail.last.insert(e.key, e);
            }
            pos += n as u64;
        }
        let mut dat = Appender::new(&p.cpd, p.cpd_len);
        let mut idx = Appender::new(&p.cpx, p.cpx_len);
        let mut buf = Vec::new();
        for (key, e) in &tail.last {
            let key = *key;
            let offset = dat.len();
            let mut entry = Vec::with_capacity(17);
            if e.is_deletion() {
                let Some(live) = p.map.get(key) else {
                    // Nothing of this key is in the new files.
                    continue;
                };
                dat.flush()?;
                let t = self.tombstone_for(p, key, e, live, last_ns)?;
                IdxEntry::new(key, offset / PADDING, IdxEntry::TOMBSTONE_SIZE)
                    .encode(l.width, &mut entry)?;
                dat.push(&t)?;
                idx.push(&entry)?;
                p.map.delete(key);
            } else {
                match self.read_verified(&p.from, key, e.byte_offset(), e.size, &mut buf) {
                    Ok(_) => {}
                    Err(Unreadable::Io(err)) => return Err(err.into()),
                    Err(Unreadable::Corrupt(why)) => {
                        return Err(VolumeError::Compaction(format!(
                            "needle {key:x} written during compaction is unreadable ({why}); not committing"
                        )));
                    }
                }
                IdxEntry::new(key, offset / PADDING, e.size).encode(l.width, &mut entry)?;
                dat.push(&buf)?;
                idx.push(&entry)?;
                p.map.put(key, offset, e.size);
            }
        }
        dat.flush()?;
        idx.flush()?;
        p.cpd_len = dat.len();
        p.cpx_len = idx.len();
        p.start_idx = to;
        Ok(tail.last.len() as u64)
    }

    /// The tombstone needle to append for a diff deletion: the original
    /// one if it verifies, else one built from the live copy's header.
    fn tombstone_for(
        &self,
        p: &Pending,
        key: u64,
        e: &IdxEntry,
        live: crate::NeedleValue,
        last_ns: u64,
    ) -> Result<Vec<u8>, VolumeError> {
        let version = self.layout.version;
        let total = needle::actual_size(0, version) as usize;
        if e.offset_units != 0 {
            let mut b = vec![0u8; total];
            if p.from.dat.read_exact_at(&mut b, e.byte_offset()).is_ok() {
                let head: [u8; 16] = b[..16].try_into().unwrap_or([0; 16]);
                let (_, id, size) = needle::parse_header(&head);
                if id == key && size == 0 && Needle::decode(&b, version).is_ok() {
                    return Ok(b);
                }
            }
        }
        let mut head = [0u8; 16];
        p.cpd.read_exact_at(&mut head, live.offset)?;
        let (cookie, _, _) = needle::parse_header(&head);
        let mut crc = [0u8; 4];
        p.cpd
            .read_exact_at(&mut crc, live.offset + 16 + live.size as u64)?;
        Ok(Needle::encode_tombstone(
            cookie,
            key,
            u32::from_be_bytes(crc),
            last_ns,
            version,
        ))
    }

    /// Deletes `.cpd`/`.cpx` of an unfinished compaction and forgets it.
    /// A running `compact` is asked to stop first. Refused while a commit
    /// is half done (`.cpc` exists): those files are then the volume.
    pub fn cleanup_compaction(&self) -> Result<(), VolumeError> {
        self.compaction_cancel.store(true, Ordering::Release);
        let mut slot = self.compaction.lock();
        self.compaction_cancel.store(false, Ordering::Release);
        if self.storage.exists(&with_ext(&self.base, "cpc"))? {
            return Err(VolumeError::Compaction(
                "an interrupted commit is pending (.cpc exists); reopen the volume to finish it"
                    .to_string(),
            ));
        }
        slot.take();
        for ext in ["cpd", "cpx"] {
            self.storage.remove_if_exists(&with_ext(&self.base, ext))?;
        }
        self.storage.sync_parent(&with_ext(&self.base, "cpd"))?;
        Ok(())
    }

    /// Best-effort removal of `.cpd`/`.cpx` after a failure.
    fn remove_output(&self) {
        for ext in ["cpd", "cpx"] {
            if let Err(e) = self.storage.remove_if_exists(&with_ext(&self.base, ext)) {
                tracing::warn!(volume = self.id, error = %e, "cannot remove .{ext}");
            }
        }
    }
}

/// Last `.idx` entry per key of the diff, in key order.
#[derive(Default)]
struct NeedleMapTail {
    last: BTreeMap<u64, IdxEntry>,
}

fn create_truncated(storage: &Storage, p: &Path) -> io::Result<File> {
    let f = open_rw(storage, p, true)?;
    f.set_len(0)?;
    Ok(f)
}

/// Brings the files of the volume at `base` to a consistent state after a
/// crash during compaction (see the module doc). Idempotent.
pub(crate) fn reconcile(st: &Storage, base: &Path) -> Result<(), VolumeError> {
    let (cpd, cpx, cpc) = (
        with_ext(base, "cpd"),
        with_ext(base, "cpx"),
        with_ext(base, "cpc"),
    );
    let (dat, idx) = (with_ext(base, "dat"), with_ext(base, "idx"));
    let cpd_len = st.len_if_exists(&cpd)?;
    let cpx_len = st.len_if_exists(&cpx)?;
    if !st.exists(&cpc)? {
        if cpd_len.is_some() || cpx_len.is_some() {
            tracing::info!(base = %base.display(), "removing the output of an unfinished compaction");
            st.remove_if_exists(&cpd)?;
            st.remove_if_exists(&cpx)?;
            st.sync_parent(&cpd)?;
        }
        return Ok(());
    }
    let marker = match st.read(&cpc) {
        Ok(b) => Marker::decode(&b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut rebuild_idx = false;
    if let Some(dl) = cpd_len {
        // No rename happened yet: the old pair is intact, so a new pair
        // that does not look complete can still be given up.
        let complete = match marker {
            Some(m) => dl == m.cpd_len && cpx_len == Some(m.cpx_len),
            None => cpx_len.is_some(),
        };
        if !complete {
            tracing::error!(
                base = %base.display(),
                cpd_len = dl,
                cpx_len,
                expected = ?marker,
                "compaction output is damaged; keeping the old .dat/.idx"
            );
            st.remove_if_exists(&cpd)?;
            st.remove_if_exists(&cpx)?;
            st.sync_parent(&cpd)?;
            st.remove(&cpc)?;
            st.sync_parent(&cpc)?;
            return Ok(());
        }
        tracing::warn!(base = %base.display(), "finishing an interrupted compaction commit");
        st.rename(&cpd, &dat)?;
    }
    // `.dat` is the new one from here on.
    match cpx_len {
        Some(xl) if marker.is_none_or(|m| m.cpx_len == xl) => {
            st.rename(&cpx, &idx)?;
        }
        Some(xl) => {
            tracing::error!(base = %base.display(), cpx_len = xl, expected = ?marker,
                "compacted .cpx is damaged; rebuilding .idx from the compacted .dat");
            st.remove_if_exists(&cpx)?;
            rebuild_idx = true;
        }
        None => {
            if let Some(m) = marker
                && st.len_if_exists(&idx)? != Some(m.cpx_len)
            {
                tracing::error!(base = %base.display(), expected = m.cpx_len,
                    "compacted .idx has the wrong length; rebuilding it from the compacted .dat");
                rebuild_idx = true;
            }
        }
    }
    if rebuild_idx {
        // An empty .idx without a trusted point makes open scan .dat.
        let f = open_rw(st, &idx, true)?;
        f.set_len(0)?;
        f.sync_all()?;
    }
    st.sync_parent(&dat)?;
    st.remove_if_exists(&with_ext(base, "knm"))?;
    st.remove_if_exists(&with_ext(base, "kwm"))?;
    st.remove(&cpc)?;
    st.sync_parent(&cpc)?;
    tracing::info!(base = %base.display(), "interrupted compaction commit finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_damage() {
        let m = Marker {
            revision: 7,
            cpd_len: 1 << 40,
            cpx_len: 17 * 3,
        };
        let b = m.encode();
        assert_eq!(Marker::decode(&b), Some(m));
        for i in 0..b.len() {
            let mut c = b;
            c[i] ^= 1;
            assert_eq!(Marker::decode(&c), None, "flip at {i}");
        }
        for l in 0..b.len() {
            assert_eq!(Marker::decode(&b[..l]), None);
        }
    }
}
