//! A volume: `.dat` + `.idx` + `.vif` (+ Kelp's `.knm` checkpoint and
//! `.kwm` watermark), opened with crash recovery, safe to share between
//! threads. Readers use positional reads and never take the write lock;
//! writers append under one mutex; durability is by group commit
//! (`group_commit.rs`); compaction (`compaction.rs`) swaps the open
//! `.dat`/`.idx` pair in place.
//!
//! Lock order (outermost first), which every path follows:
//! `compaction` → `checkpoint_lock` → `sync` → `writer` → `map` → `files`.
//! The `.dat`/`.idx` handles live in `files` as one `Arc<Files>`; a reader
//! clones it while holding the map read lock, so the offset it looked up
//! and the file it reads always belong to the same generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use kelp_core::{ReplicaPlacement, Ttl};
use kelp_storage::{File, Open, Storage};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::checkpoint::{self, CheckpointMeta};
use crate::compaction::{self, Pending};
use crate::dir::{base_path, with_ext};
use crate::error::{NeedleError, VolumeError};
use crate::idx::OffsetWidth;
use crate::needle::{CURRENT_VERSION, VERSION1};
use crate::needle_map::NeedleMap;
use crate::recovery::{self, Layout};
use crate::superblock::SuperBlock;
use crate::vif::VolumeInfoFile;
use crate::watermark::WatermarkFile;

/// Whether `sync_through` makes writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `sync_through` fdatasyncs (shared by concurrent callers).
    #[default]
    Durable,
    /// `sync_through` returns at once (SeaweedFS default behaviour).
    None,
}

#[derive(Debug, Clone)]
pub struct VolumeOptions {
    pub replica_placement: ReplicaPlacement,
    pub ttl: Ttl,
    pub offset_width: OffsetWidth,
    pub sync_mode: SyncMode,
    /// Needle version; only 3 (and 2) can be written.
    pub version: u8,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        Self {
            replica_placement: ReplicaPlacement::default(),
            ttl: Ttl::EMPTY,
            offset_width: OffsetWidth::Five,
            sync_mode: SyncMode::Durable,
            version: CURRENT_VERSION,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Used when the `.vif` does not say (`bytesOffset`).
    pub offset_width: OffsetWidth,
    pub sync_mode: SyncMode,
    pub read_only: bool,
    /// `maybe_checkpoint` writes a checkpoint once `.idx` grew this much.
    pub checkpoint_every_idx_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            offset_width: OffsetWidth::Five,
            sync_mode: SyncMode::Durable,
            read_only: false,
            checkpoint_every_idx_bytes: 8 << 20,
        }
    }
}

/// Result of a write. `seq` is what to pass to `sync_through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub seq: u64,
    /// The needle's Size field.
    pub size: u32,
    /// Same cookie and content were already stored; nothing was written.
    pub unchanged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub seq: u64,
    /// Size field of the deleted needle.
    pub size: u32,
}

/// How `open` rebuilt a volume's needle map (logged at open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// `.idx` bytes the `.knm` checkpoint covered; 0 if there was no
    /// usable checkpoint and all of `.idx` was replayed.
    pub checkpoint_idx_bytes: u64,
    /// `.idx` bytes replayed after the checkpoint (or from the start).
    pub replayed_idx_bytes: u64,
}

/// What a heartbeat reports about a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStats {
    pub id: u32,
    pub collection: String,
    pub size: u64,
    pub idx_size: u64,
    pub file_count: u64,
    pub delete_count: u64,
    pub deleted_byte_count: u64,
    pub content_bytes: u64,
    pub live_count: u64,
    pub read_only: bool,
    pub replica_placement: ReplicaPlacement,
    pub ttl: Ttl,
    pub version: u8,
    pub compaction_revision: u16,
    pub modified_at_second: u64,
    pub max_file_key: u64,
    pub offset_width: OffsetWidth,
    pub map_memory_bytes: usize,
}

/// Group-commit counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub syncs: u64,
    pub synced_seq: u64,
    pub written_seq: u64,
    /// Operations made durable by the most recent fdatasync.
    pub last_batch: u64,
}

/// State owned by the single writer.
pub(crate) struct WriterState {
    pub dat_end: u64,
    pub idx_end: u64,
    pub seq: u64,
    pub last_append_at_ns: u64,
    /// End of the zeros written ahead of `dat_end` (`prefill.rs`); at or
    /// below `dat_end` when there are none.
    pub zeroed_end: u64,
    /// Whether appends zero ahead (a durable volume, until zeroing fails).
    pub prefilling: bool,
}

pub(crate) struct SyncState {
    pub watermark: WatermarkFile,
    pub last_watermark: Option<Instant>,
    pub watermark_idx_len: u64,
}

/// One generation of the volume's data files. Compaction replaces the
/// whole `Arc` at once; the old generation stays readable (its files are
/// unlinked but open) until the last reader drops its clone.
pub(crate) struct Files {
    pub dat: File,
    pub idx: File,
    /// In-memory superblock (replica placement may come from `.vif`).
    pub superblock: SuperBlock,
}

pub struct Volume {
    /// Where every file of the volume lives (the real file system unless a
    /// test chose a simulated one).
    pub(crate) storage: Storage,
    pub(crate) id: u32,
    pub(crate) collection: String,
    pub(crate) base: PathBuf,
    pub(crate) files: RwLock<Arc<Files>>,
    pub(crate) layout: Layout,
    pub(crate) sync_mode: SyncMode,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) map: RwLock<NeedleMap>,
    pub(crate) sync: Mutex<SyncState>,
    /// Whether a caller is leading a group commit; the others wait on
    /// `sync_done` instead of queueing on `sync` (see `group_commit.rs`).
    pub(crate) sync_leader: Mutex<bool>,
    pub(crate) sync_done: Condvar,
    /// Parks `durable()` waiters and runs their group commits.
    pub(crate) syncer: Arc<crate::syncer::Syncer>,
    pub(crate) synced_seq: AtomicU64,
    pub(crate) written_seq: AtomicU64,
    pub(crate) sync_count: AtomicU64,
    pub(crate) last_batch: AtomicU64,
    pub(crate) read_only: AtomicBool,
    /// Set by the first failed fdatasync, never cleared while open: after a
    /// failed writeback the kernel may drop the dirty pages and report
    /// success to the next fsync, so nothing written since the last good
    /// sync can be trusted until recovery runs at the next open.
    pub(crate) sync_failure: Mutex<Option<String>>,
    /// Set when a write found the disk full; cleared by `set_read_only(false)`.
    pub(crate) no_space: Mutex<Option<String>>,
    pub(crate) modified_at: AtomicU64,
    pub(crate) vif: Mutex<VolumeInfoFile>,
    pub(crate) checkpoint_lock: Mutex<u64>,
    pub(crate) checkpoint_every: u64,
    /// An `.idx` entry pointed past the end of `.dat` at open: needles are
    /// missing, so compaction (which would drop their entries for good)
    /// is refused until an operator looks.
    pub(crate) damaged: bool,
    pub(crate) open_report: OpenReport,
    /// Output of a finished `compact` waiting for `commit_compaction`.
    /// Held for the whole of a compact, commit or cleanup.
    pub(crate) compaction: Mutex<Option<Pending>>,
    /// Set by `cleanup_compaction` to stop a running compact early.
    pub(crate) compaction_cancel: AtomicBool,
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fault: Mutex<Option<compaction::FaultPoint>>,
}

pub(crate) fn open_rw(storage: &Storage, path: &Path, create: bool) -> std::io::Result<File> {
    storage.open(path, if create { Open::CREATE } else { Open::WRITE })
}

impl Volume {
    /// Creates a new empty volume; fails if its `.dat` exists.
    pub fn create(
        dir: &Path,
        collection: &str,
        vid: u32,
        opts: VolumeOptions,
    ) -> Result<Volume, VolumeError> {
        Self::create_in(Storage::real(), dir, collection, vid, opts)
    }

    /// `create` on a chosen storage backend.
    pub fn create_in(
        storage: Storage,
        dir: &Path,
        collection: &str,
        vid: u32,
        opts: VolumeOptions,
    ) -> Result<Volume, VolumeError> {
        if opts.version != 2 && opts.version != 3 {
            return Err(VolumeError::Unsupported(format!(
                "cannot write needle version {}",
                opts.version
            )));
        }
        let base = base_path(dir, collection, vid);
        let dat_path = with_ext(&base, "dat");
        if storage.exists(&dat_path)? {
            return Err(VolumeError::Exists(dat_path.display().to_string()));
        }
        for ext in ["idx", "knm", "kwm", "cpd", "cpx", "cpc"] {
            storage.remove_if_exists(&with_ext(&base, ext))?;
        }
        let sb = SuperBlock::new(opts.version, opts.replica_placement, opts.ttl);
        let dat = storage.open(&dat_path, Open::CREATE_NEW)?;
        dat.write_all_at(&sb.encode(), 0)?;
        dat.sync_all()?;
        open_rw(&storage, &with_ext(&base, "idx"), true)?.sync_all()?;
        VolumeInfoFile::new(opts.version, opts.offset_width.bytes_offset())
            .save_to(&storage, &with_ext(&base, "vif"))?;
        storage.sync_parent(&dat_path)?;
        drop(dat);
        Self::open_in(
            storage,
            dir,
            collection,
            vid,
            &OpenOptions {
                offset_width: opts.offset_width,
                sync_mode: opts.sync_mode,
                ..OpenOptions::default()
            },
        )
    }

    /// Opens an existing volume, recovering from a crash (see `recovery.rs`).
    pub fn open(
        dir: &Path,
        collection: &str,
        vid: u32,
        opts: &OpenOptions,
    ) -> Result<Volume, VolumeError> {
        Self::open_in(Storage::real(), dir, collection, vid, opts)
    }

    /// `open` on a chosen storage backend.
    pub fn open_in(
        storage: Storage,
        dir: &Path,
        collection: &str,
        vid: u32,
        opts: &OpenOptions,
    ) -> Result<Volume, VolumeError> {
        let started = std::time::Instant::now();
        let base = base_path(dir, collection, vid);
        // Finish (or undo) a compaction a crash interrupted, before any
        // file of the volume is looked at.
        compaction::reconcile(&storage, &base)?;
        let dat_path = with_ext(&base, "dat");
        let dat = match open_rw(&storage, &dat_path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::Missing(dat_path.display().to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let mut superblock = read_superblock(&dat)?;
        let vif_path = with_ext(&base, "vif");
        let vif = match VolumeInfoFile::load_from(&storage, &vif_path)? {
            Some(v) => v,
            None => {
                let v = VolumeInfoFile::new(superblock.version, opts.offset_width.bytes_offset());
                if !opts.read_only {
                    v.save_to(&storage, &vif_path)?;
                }
                v
            }
        };
        let width = OffsetWidth::from_bytes_offset(vif.bytes_offset).unwrap_or(opts.offset_width);
        if !vif.replication.is_empty()
            && let Ok(rp) = vif.replication.parse::<ReplicaPlacement>()
        {
            superblock.replica_placement = rp;
        }
        let layout = Layout {
            version: superblock.version,
            width,
            sb_size: superblock.block_size(),
        };
        let idx_path = with_ext(&base, "idx");
        let idx = open_rw(&storage, &idx_path, true)?;
        let (wm_file, wm) = WatermarkFile::open(&storage, &with_ext(&base, "kwm"))?;
        let knm_path = with_ext(&base, "knm");
        let ckpt = load_checkpoint(&storage, &knm_path);

        let es = width.entry_size() as u64;
        let dat_len = recovery::file_len(&dat)?;
        let idx_len = recovery::file_len(&idx)?;
        let whole = idx_len - idx_len % es;
        let rev = superblock.compaction_revision;
        let plausible = |il: u64, dl: u64, fp: &[u8], r: u16| -> bool {
            r == rev
                && il <= whole
                && il.is_multiple_of(es)
                && dl <= dat_len
                && dl >= layout.sb_size
                && recovery::fingerprint(&idx, width, il).is_ok_and(|f| f == fp)
        };
        let ckpt = ckpt.filter(|(m, _)| {
            m.width_bytes as u32 == width.bytes_offset()
                && plausible(m.idx_len, m.dat_len, &m.fingerprint, m.compaction_revision)
        });
        let wm =
            wm.filter(|w| plausible(w.idx_len, w.dat_len, &w.fingerprint, w.compaction_revision));
        let trusted = [
            wm.as_ref().map(|w| w.idx_len),
            ckpt.as_ref().map(|c| c.0.idx_len),
        ]
        .into_iter()
        .flatten()
        .max();

        let mut good_idx = recovery::cut_idx(&dat, &idx, &layout, trusted)?;
        let mut changed = good_idx != idx_len;

        // `checkpointed`: the `.idx` length the checkpoint on disk covers,
        // so the next one is written only once `.idx` grew past it again.
        let (mut map, mut max_end, mut last_ns, replay, checkpointed) = match ckpt {
            Some((meta, map)) if meta.idx_len <= good_idx => {
                let mut map = map;
                let r = recovery::replay(&idx, &layout, meta.idx_len, good_idx, &mut map)?;
                (map, meta.dat_len, meta.last_append_at_ns, r, meta.idx_len)
            }
            _ => {
                storage.remove_if_exists(&knm_path)?;
                let mut map = NeedleMap::new();
                let r = recovery::replay(&idx, &layout, 0, good_idx, &mut map)?;
                (map, layout.sb_size, 0, r, 0)
            }
        };
        let open_report = OpenReport {
            checkpoint_idx_bytes: checkpointed,
            replayed_idx_bytes: good_idx - checkpointed,
        };
        if let Some(tail) = replay.tail
            && replay.max_end > max_end
        {
            max_end = replay.max_end;
            last_ns = recovery::append_at_ns(&dat, &layout, &tail);
        }
        if dat_len > max_end {
            let tail = recovery::index_tail(&dat, &idx, &layout, max_end, good_idx, &mut map)?;
            if let Some(last) = tail.last {
                last_ns = recovery::append_at_ns(&dat, &layout, &last);
                good_idx = tail.idx_len;
                max_end = tail.dat_end;
                changed = true;
            }
        }
        if let Some(w) = &wm {
            last_ns = last_ns.max(w.last_append_at_ns);
        }
        map.shrink_to_fit();
        let mut read_only = opts.read_only || vif.read_only || superblock.version == VERSION1;
        let mut damaged = false;
        if dat_len > max_end {
            // Only picks the log line: an unreadable tail is cut anyway.
            if recovery::all_zero(&dat, max_end, dat_len).unwrap_or(false) {
                // A durable volume zeroes ahead of its appends (prefill.rs)
                // and was not closed.
                tracing::info!(
                    volume = vid,
                    dat_len,
                    kept = max_end,
                    "released zero-filled space after the last needle"
                );
            } else {
                tracing::warn!(
                    volume = vid,
                    dat_len,
                    kept = max_end,
                    "cutting .dat bytes after the last indexed needle"
                );
            }
            dat.set_len(max_end)?;
            dat.sync_all()?;
            changed = true;
        } else if dat_len < max_end {
            tracing::warn!(
                volume = vid,
                dat_len,
                needed = max_end,
                "an .idx entry points past the end of .dat; volume is read-only"
            );
            read_only = true;
            damaged = true;
            max_end = dat_len;
        }

        let modified = storage
            .modified(&dat_path)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let vol = Volume {
            storage,
            id: vid,
            collection: collection.to_string(),
            base,
            files: RwLock::new(Arc::new(Files {
                dat,
                idx,
                superblock,
            })),
            layout,
            sync_mode: opts.sync_mode,
            writer: Mutex::new(WriterState {
                dat_end: max_end,
                idx_end: good_idx,
                seq: 0,
                last_append_at_ns: last_ns,
                zeroed_end: max_end,
                prefilling: opts.sync_mode == SyncMode::Durable,
            }),
            map: RwLock::new(map),
            sync: Mutex::new(SyncState {
                watermark: wm_file,
                last_watermark: None,
                watermark_idx_len: wm.as_ref().map_or(0, |w| w.idx_len),
            }),
            sync_leader: Mutex::new(false),
            sync_done: Condvar::new(),
            syncer: Arc::default(),
            synced_seq: AtomicU64::new(0),
            written_seq: AtomicU64::new(0),
            sync_count: AtomicU64::new(0),
            last_batch: AtomicU64::new(0),
            sync_failure: Mutex::new(None),
            no_space: Mutex::new(None),
            read_only: AtomicBool::new(read_only),
            modified_at: AtomicU64::new(modified),
            vif: Mutex::new(vif),
            checkpoint_lock: Mutex::new(checkpointed),
            checkpoint_every: opts.checkpoint_every_idx_bytes.max(1),
            damaged,
            open_report,
            compaction: Mutex::new(None),
            compaction_cancel: AtomicBool::new(false),
            #[cfg(any(test, feature = "fault-injection"))]
            fault: Mutex::new(None),
        };
        let wm_current = wm
            .as_ref()
            .is_some_and(|w| w.idx_len == good_idx && w.dat_len == max_end);
        if (changed || !wm_current) && !opts.read_only {
            vol.write_watermark()?;
        }
        tracing::info!(
            volume = vid,
            collection,
            live = vol.map.read().len(),
            checkpoint_idx_bytes = open_report.checkpoint_idx_bytes,
            replayed_idx_bytes = open_report.replayed_idx_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volume opened"
        );
        Ok(vol)
    }

    /// How `open` rebuilt the needle map: from the checkpoint, or by
    /// replaying `.idx`.
    pub fn open_report(&self) -> OpenReport {
        self.open_report
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    pub fn version(&self) -> u8 {
        self.layout.version
    }

    pub fn offset_width(&self) -> OffsetWidth {
        self.layout.width
    }

    /// The superblock of the current generation (its compaction revision
    /// changes when a compaction commits).
    pub fn superblock(&self) -> SuperBlock {
        self.files().superblock.clone()
    }

    /// The current `.dat`/`.idx` generation. Callers that also look up the
    /// map must clone this while holding the map lock (see the lock order).
    pub(crate) fn files(&self) -> Arc<Files> {
        self.files.read().clone()
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync_mode
    }

    /// Path without extension (`<dir>/<collection>_<vid>`).
    pub fn base_path(&self) -> &Path {
        &self.base
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Marks the volume read-only (or writable); `persist` records it in
    /// `.vif`. A volume whose fdatasync or write failed cannot be made
    /// writable (`SyncFailed`): only a reopen, which recovers, brings it
    /// back. Making a volume that ran out of space writable again is for
    /// the operator who freed space.
    pub fn set_read_only(&self, read_only: bool, persist: bool) -> Result<(), VolumeError> {
        if !read_only {
            if let Some(why) = self.sync_failure.lock().clone() {
                return Err(VolumeError::SyncFailed(why));
            }
            *self.no_space.lock() = None;
        }
        self.read_only.store(read_only, Ordering::Release);
        if persist {
            let mut vif = self.vif.lock();
            vif.read_only = read_only;
            vif.save_to(&self.storage, &with_ext(&self.base, "vif"))?;
        }
        Ok(())
    }

    /// Why the volume refuses writes after an IO error, if it does: a
    /// failed fdatasync or write (until it is reopened) or a full disk
    /// (until it is marked writable or reopened). `None` for a healthy
    /// volume, including one an operator made read-only.
    pub fn io_failure(&self) -> Option<String> {
        if let Some(why) = self.sync_failure.lock().clone() {
            return Some(why);
        }
        self.no_space.lock().clone()
    }

    /// Poisons the volume after a failed fdatasync or write: every later
    /// sync and write fails, so nothing is acknowledged on the strength of
    /// a retried fsync. Returns the error for the caller.
    pub(crate) fn poison(&self, why: String) {
        tracing::error!(
            volume = self.id,
            "{why}; refusing writes until the volume is reopened"
        );
        let mut f = self.sync_failure.lock();
        if f.is_none() {
            *f = Some(why);
        }
        self.read_only.store(true, Ordering::Release);
    }

    /// Turns the error of a failed `.dat`/`.idx` write into the volume's
    /// state: a full disk makes it read-only (nothing was acknowledged,
    /// the torn tail is overwritten by the next append or cut at open);
    /// any other error poisons it.
    pub(crate) fn write_failed(&self, e: std::io::Error) -> VolumeError {
        let err = VolumeError::from(e);
        match &err {
            VolumeError::NoSpace(why) => {
                tracing::warn!(
                    volume = self.id,
                    "write failed, disk full ({why}); volume is read-only"
                );
                *self.no_space.lock() = Some(format!("no space left on device: {why}"));
                self.read_only.store(true, Ordering::Release);
            }
            other => self.poison(format!("write failed: {other}")),
        }
        err
    }

    pub fn info(&self) -> VolumeStats {
        let (size, idx_size) = {
            let w = self.writer.lock();
            (w.dat_end, w.idx_end)
        };
        let map = self.map.read();
        let sb = self.files().superblock.clone();
        let c = map.counters();
        VolumeStats {
            id: self.id,
            collection: self.collection.clone(),
            size,
            idx_size,
            file_count: c.file_count,
            delete_count: c.delete_count,
            deleted_byte_count: c.deleted_bytes,
            content_bytes: c.content_bytes,
            live_count: map.len() as u64,
            read_only: self.is_read_only(),
            replica_placement: sb.replica_placement,
            ttl: sb.ttl,
            version: self.layout.version,
            compaction_revision: sb.compaction_revision,
            modified_at_second: self.modified_at.load(Ordering::Relaxed),
            max_file_key: c.max_file_key,
            offset_width: self.layout.width,
            map_memory_bytes: map.memory_bytes(),
        }
    }

    /// Live (key, offset, size) entries in key order (for copies, scrubs).
    pub fn entries(&self) -> Vec<(u64, crate::NeedleValue)> {
        self.map.read().iter().collect()
    }

    /// Up to `max` live entries with keys ≥ `start`, in key order: a walk
    /// over every needle that holds a bounded piece of the map at a time.
    pub fn entries_from(&self, start: u64, max: usize) -> Vec<(u64, crate::NeedleValue)> {
        self.map.read().range_from(start).take(max).collect()
    }

    /// Syncs and writes a checkpoint so the next open is fast.
    pub fn close(self) -> Result<(), VolumeError> {
        if self.compaction.lock().take().is_some() {
            for ext in ["cpd", "cpx"] {
                self.storage.remove_if_exists(&with_ext(&self.base, ext))?;
            }
        }
        // A close that cannot cut still syncs and checkpoints; the next
        // open cuts instead.
        let cut = self.release_zeroed_space().unwrap_or_else(|e| {
            tracing::warn!(volume = self.id, error = %e, "cannot cut .dat after its last needle");
            false
        });
        if !self.is_read_only() || self.writer.lock().seq > 0 {
            self.checkpoint()?;
        } else if cut {
            self.files().dat.sync_all()?;
        }
        Ok(())
    }

    /// Deletes every file of the volume.
    pub fn destroy(self) -> Result<(), VolumeError> {
        let base = self.base.clone();
        let storage = self.storage.clone();
        drop(self);
        for ext in [
            "dat", "idx", "vif", "knm", "kwm", "knm.tmp", "vif.tmp", "note", "cpd", "cpx", "cpc",
        ] {
            storage.remove_if_exists(&with_ext(&base, ext))?;
        }
        storage.sync_parent(&with_ext(&base, "dat"))?;
        Ok(())
    }

    /// Writes a checkpoint if `.idx` grew enough since the last one. Call
    /// periodically from a background thread. Returns whether it wrote one.
    pub fn maybe_checkpoint(&self) -> Result<bool, VolumeError> {
        let idx_end = self.writer.lock().idx_end;
        let last = *self.checkpoint_lock.lock();
        if idx_end.saturating_sub(last) < self.checkpoint_every {
            return Ok(false);
        }
        self.checkpoint()?;
        Ok(true)
    }

    /// Writes a checkpoint of everything written so far (fsyncing it first).
    pub fn checkpoint(&self) -> Result<(), VolumeError> {
        let mut last = self.checkpoint_lock.lock();
        // A copy of the map (a memcpy of its blocks, taken under the locks
        // for a consistent point) is encoded to the file piece by piece
        // with no lock held: writers wait for the copy only, and memory
        // grows by one map, not by the encoded file.
        let (meta, map) = {
            let w = self.writer.lock();
            let map = self.map.read().clone();
            let f = self.files();
            let meta = CheckpointMeta {
                width_bytes: self.layout.width.bytes_offset() as u8,
                compaction_revision: f.superblock.compaction_revision,
                idx_len: w.idx_end,
                dat_len: w.dat_end,
                last_append_at_ns: w.last_append_at_ns,
                fingerprint: recovery::fingerprint(&f.idx, self.layout.width, w.idx_end)?,
            };
            (meta, map)
        };
        // Both files fdatasynced through (at least) the snapshot before
        // the checkpoint that trusts them is written.
        self.write_watermark()?;
        self.storage
            .write_atomic_with(&with_ext(&self.base, "knm"), &mut |sink| {
                checkpoint::encode_to(&meta, &map, sink)
            })?;
        *last = meta.idx_len;
        Ok(())
    }

    /// Records the current (already fsynced) lengths in the watermark.
    pub(crate) fn write_watermark(&self) -> Result<(), VolumeError> {
        let mut s = self.sync.lock();
        let (dat_len, idx_len, last_append_at_ns, seq) = {
            let w = self.writer.lock();
            (w.dat_end, w.idx_end, w.last_append_at_ns, w.seq)
        };
        // Stable while `sync` is held: a commit takes it before swapping.
        let f = self.files();
        self.sync_files(&f)?;
        self.synced_seq.fetch_max(seq, Ordering::AcqRel);
        self.record_watermark(&mut s, &f, dat_len, idx_len, last_append_at_ns)
    }
}

pub(crate) fn read_superblock(dat: &File) -> Result<SuperBlock, VolumeError> {
    let mut head = [0u8; 8];
    dat.read_exact_at(&mut head, 0)
        .map_err(|_| NeedleError::Truncated {
            what: "superblock",
            need: 8,
            have: dat.len().unwrap_or(0),
        })?;
    let (mut sb, extra) = SuperBlock::decode_header(&head)?;
    if extra > 0 {
        let mut b = vec![0u8; extra];
        dat.read_exact_at(&mut b, 8)
            .map_err(|_| NeedleError::Truncated {
                what: "superblock extra",
                need: 8 + extra as u64,
                have: dat.len().unwrap_or(0),
            })?;
        sb.extra = b;
    }
    Ok(sb)
}

fn load_checkpoint(storage: &Storage, path: &Path) -> Option<(CheckpointMeta, NeedleMap)> {
    let (mut reader, len) = match storage.reader(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read checkpoint");
            return None;
        }
    };
    match checkpoint::decode_from(&mut reader, len) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring invalid checkpoint");
            None
        }
    }
}
