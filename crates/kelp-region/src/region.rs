//! A region: one replica of a block volume, a directory holding a region
//! file, a generation file and one file per extent.
//!
//! ```text
//! <dir>/region.kelp            geometry (below)
//! <dir>/generation             highest activation generation accepted
//! <dir>/extents/<id:08x>.ext   extent files (layout in extent.rs)
//! <dir>/extents/<id:08x>.snap  saved versions snapshots need (saved.rs)
//! <dir>/snapshots.kelp         snapshot catalog and flush mark (catalog.rs)
//! ```
//!
//! Region file layout (44 bytes, little-endian):
//! ```text
//!  0 [8]  magic "KELPRGN1"
//!  8 u32  format version (1)
//! 12 u32  block size (512, 1024, 2048 or 4096)
//! 16 u32  extent size in blocks
//! 20 u32  extent count
//! 24 [16] region uuid (random, per replica)
//! 40 u32  crc32c of bytes 0..40
//! ```
//!
//! Generation file layout (20 bytes): `magic "KELPGEN1" | u64 generation |
//! u32 crc32c of bytes 0..16`. It is replaced atomically (write, fsync,
//! rename, fsync directory) whenever an upstairs activates with a higher
//! generation, so fencing survives a downstairs restart.
//!
//! # IO errors
//!
//! A failed write, zeroing or flush (fdatasync) fails the region: after a
//! failed writeback the kernel may drop the dirty pages and report success
//! to the next fsync, and a failed write may have torn a slot whose
//! in-memory state still looks valid. So that operation returns its error
//! (`NoSpace` for a full disk, the downstairs answers it with
//! `ErrorCode::NoSpace` and the NBD server the guest with ENOSPC), and
//! every later write, flush or repair gets `StorageFailed` until the
//! region is reopened, which re-validates every dirty extent from disk.
//! Reads go on: each block is checked against its context by the reader.

use std::path::{Path, PathBuf};

use kelp_storage::{File, Open, Storage};

use crate::catalog::{Catalog, Snapshot};
use crate::codec::{Reader, Writer};
use crate::context::BlockContext;
use crate::error::{BlockError, Result};
use crate::extent::{Birth, Extent, ExtentImage, ExtentVersion, FlushHandle, sync_dir};
use crate::link::{Link, ORIGIN_FILE, Origin};

pub const REGION_MAGIC: &[u8; 8] = b"KELPRGN1";
pub const REGION_FORMAT_VERSION: u32 = 1;
pub const REGION_FILE: &str = "region.kelp";
pub const GENERATION_FILE: &str = "generation";
const GEN_MAGIC: &[u8; 8] = b"KELPGEN1";
/// An extent is copied whole in one frame during repair, so it is bounded.
pub const MAX_EXTENT_BYTES: u64 = 32 << 20;
pub const MAX_EXTENT_COUNT: u32 = 1 << 20;

/// A region's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDef {
    pub block_size: u32,
    pub extent_size: u32,
    pub extent_count: u32,
    pub uuid: [u8; 16],
}

impl RegionDef {
    pub const LEN: usize = 44;

    pub fn new(block_size: u32, extent_size: u32, extent_count: u32) -> Result<RegionDef> {
        let def = RegionDef {
            block_size,
            extent_size,
            extent_count,
            uuid: rand::random(),
        };
        def.validate()?;
        Ok(def)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BlockError::BadOptions(m));
        if !(512..=4096).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            return bad(format!(
                "block size {} is not 512, 1024, 2048 or 4096",
                self.block_size
            ));
        }
        if self.extent_size == 0
            || self.extent_size as u64 * self.block_size as u64 > MAX_EXTENT_BYTES
        {
            return bad(format!(
                "extent size {} blocks must be at least 1 and at most {} bytes",
                self.extent_size, MAX_EXTENT_BYTES
            ));
        }
        if self.extent_count == 0 || self.extent_count > MAX_EXTENT_COUNT {
            return bad(format!(
                "extent count {} must be 1..={MAX_EXTENT_COUNT}",
                self.extent_count
            ));
        }
        Ok(())
    }

    pub fn total_blocks(&self) -> u64 {
        self.extent_size as u64 * self.extent_count as u64
    }

    pub fn size_bytes(&self) -> u64 {
        self.total_blocks() * self.block_size as u64
    }

    /// Same shape (uuid aside): replicas of one volume must agree on this.
    pub fn same_geometry(&self, other: &RegionDef) -> bool {
        self.block_size == other.block_size
            && self.extent_size == other.extent_size
            && self.extent_count == other.extent_count
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut w = Writer::with_capacity(Self::LEN);
        w.bytes(REGION_MAGIC)
            .u32(REGION_FORMAT_VERSION)
            .u32(self.block_size)
            .u32(self.extent_size)
            .u32(self.extent_count)
            .bytes(&self.uuid);
        let c = crc32c::crc32c(&w.buf);
        w.u32(c);
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(&w.buf);
        out
    }

    pub fn decode(b: &[u8]) -> Result<RegionDef> {
        let mut r = Reader::new(b, "region file");
        if r.bytes(8)? != REGION_MAGIC {
            return Err(BlockError::corrupt("region file", "bad magic"));
        }
        let version = r.u32()?;
        if version != REGION_FORMAT_VERSION {
            return Err(BlockError::UnsupportedVersion {
                what: "region file",
                version,
            });
        }
        let def = RegionDef {
            block_size: r.u32()?,
            extent_size: r.u32()?,
            extent_count: r.u32()?,
            uuid: r.array()?,
        };
        let stored = r.u32()?;
        if crc32c::crc32c(&b[0..40]) != stored {
            return Err(BlockError::corrupt("region file", "checksum mismatch"));
        }
        def.validate()?;
        Ok(def)
    }
}

/// One replica's storage. All methods are synchronous; async callers run
/// them on blocking threads.
pub struct Region {
    pub(crate) storage: Storage,
    pub(crate) dir: PathBuf,
    pub(crate) def: RegionDef,
    pub(crate) extents: Vec<Extent>,
    generation: u64,
    /// A flush begun by `flush_begin` has not yet finished.
    pub(crate) flushing: bool,
    pub(crate) read_only: bool,
    /// Why the region refuses writes after an IO error (module comment).
    failed: Option<String>,
    pub(crate) catalog: Catalog,
    /// The highest flush number begun: new versions are born one after it.
    pub(crate) flush_mark: u64,
    /// The snapshot whose flush is under way, recorded when it ends.
    pub(crate) pending: Option<Snapshot>,
    /// A linked clone's origin, until every extent is copied (link.rs).
    origin: Option<Origin>,
    /// Block data written since the last writeback sweep or flush, and the
    /// extents that took some (writeback.rs).
    unstarted: u64,
    touched: Vec<u32>,
    _lock: Option<File>,
}

pub(crate) fn extent_path(dir: &Path, id: u32) -> PathBuf {
    dir.join("extents").join(format!("{id:08x}.ext"))
}

fn write_atomic(st: &Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    st.write_atomic(&path, bytes)
        .map_err(|e| BlockError::io(path.display().to_string(), e))
}

fn lock_region(st: &Storage, dir: &Path) -> Result<File> {
    let path = dir.join(REGION_FILE);
    let f = st
        .open(&path, Open::READ)
        .map_err(|e| BlockError::io(path.display().to_string(), e))?;
    f.try_lock().map_err(|e| {
        BlockError::io(
            format!("{} (is another downstairs serving it?)", path.display()),
            e,
        )
    })?;
    Ok(f)
}

impl Region {
    /// Creates a new region in `dir` (which may exist but must not hold a
    /// region), with sparse extent files.
    pub fn create(
        dir: &Path,
        block_size: u32,
        extent_size: u32,
        extent_count: u32,
    ) -> Result<Region> {
        Region::create_with(dir, block_size, extent_size, extent_count, false)
    }

    /// Like `create`; with `preallocate` every extent file is allocated in
    /// full (both slots of every block), so writes never fill holes. It
    /// takes twice the volume's size on disk at once.
    pub fn create_with(
        dir: &Path,
        block_size: u32,
        extent_size: u32,
        extent_count: u32,
        preallocate: bool,
    ) -> Result<Region> {
        Region::create_in(
            Storage::real(),
            dir,
            block_size,
            extent_size,
            extent_count,
            preallocate,
        )
    }

    /// `create_with` on a chosen storage backend.
    pub fn create_in(
        st: Storage,
        dir: &Path,
        block_size: u32,
        extent_size: u32,
        extent_count: u32,
        preallocate: bool,
    ) -> Result<Region> {
        let def = RegionDef::new(block_size, extent_size, extent_count)?;
        let io = |e| BlockError::io(dir.display().to_string(), e);
        st.create_dir_all(&dir.join("extents")).map_err(io)?;
        if st.exists(&dir.join(REGION_FILE)).map_err(io)? {
            return Err(BlockError::RegionExists(dir.display().to_string()));
        }
        for id in 0..extent_count {
            let p = extent_path(dir, id);
            let _ = st.remove_if_exists(&p);
            Extent::create(&st, &p, id, block_size, extent_size, preallocate)?;
        }
        sync_dir(&st, &dir.join("extents"))?;
        write_generation(&st, dir, 0)?;
        // The region file goes last: its presence means the region is whole.
        write_atomic(&st, dir, REGION_FILE, &def.encode())?;
        Region::open_in(st, dir, false)
    }

    /// Opens a region. A writable open takes an exclusive lock on the region
    /// file; a read-only open (verify) takes none and never writes.
    pub fn open(dir: &Path, read_only: bool) -> Result<Region> {
        Region::open_in(Storage::real(), dir, read_only)
    }

    /// `open` on a chosen storage backend.
    pub fn open_in(st: Storage, dir: &Path, read_only: bool) -> Result<Region> {
        let path = dir.join(REGION_FILE);
        let bytes = st
            .read(&path)
            .map_err(|e| BlockError::io(path.display().to_string(), e))?;
        let def = RegionDef::decode(&bytes)?;
        let lock = if read_only {
            None
        } else {
            Some(lock_region(&st, dir)?)
        };
        let generation = read_generation(&st, dir)?;
        let catalog = Catalog::load(&st, dir)?;
        let snaps = catalog.flushes();
        let mut origin = Origin::load(&st, dir)?;
        let mut extents = Vec::with_capacity(def.extent_count as usize);
        for id in 0..def.extent_count {
            let p = extent_path(dir, id);
            if !read_only {
                // A repair or prune that crashed before its rename leaves
                // these behind.
                for ext in ["replace", "snap-replace", "snap-new", "snap.tmp", "fill"] {
                    let _ = st.remove_if_exists(&p.with_extension(ext));
                }
            }
            let mut e = Extent::open(
                &st,
                &p,
                id,
                def.block_size,
                def.extent_size,
                read_only,
                &snaps,
            )?;
            if e.is_linked() {
                let Some(o) = &origin else {
                    return Err(BlockError::corrupt(
                        p.display().to_string(),
                        format!("a linked clone's extent, but {ORIGIN_FILE} is missing"),
                    ));
                };
                e.attach(Link::new(
                    &st,
                    o.extent_path(id),
                    (id, def.block_size, def.extent_size),
                    o.flush,
                ));
            }
            extents.push(e);
        }
        if !read_only && origin.is_some() && !extents.iter().any(|e| e.is_linked()) {
            // The last copy ended before the link was dropped.
            unlink_origin(&st, dir)?;
            origin = None;
        }
        // Never behind a flush a durable mark or version shows begun: a
        // version born at b was written after flush b - 1 began.
        let flush_mark = extents
            .iter()
            .map(|e| {
                let born = e.max_birth();
                e.version().flush.max(born.saturating_sub(1))
            })
            .max()
            .unwrap_or(0)
            .max(catalog.flush_mark);
        Ok(Region {
            storage: st,
            dir: dir.to_path_buf(),
            def,
            extents,
            generation,
            flushing: false,
            read_only,
            failed: None,
            catalog,
            flush_mark,
            pending: None,
            origin,
            unstarted: 0,
            touched: Vec::new(),
            _lock: lock,
        })
    }

    /// Creates linked clone region `dir` of `src` (open, read-only) at the
    /// snapshot `origin` names (link.rs): every extent a header of format
    /// 3, labelled alike on every replica of the clone.
    pub(crate) fn create_linked(
        st: &Storage,
        dir: &Path,
        src: &Region,
        origin: &Origin,
    ) -> Result<()> {
        let io = |e| BlockError::io(dir.display().to_string(), e);
        st.create_dir_all(&dir.join("extents")).map_err(io)?;
        let label = ExtentVersion {
            generation: src.generation(),
            flush: origin.flush,
            dirty: false,
        };
        let def = src.def;
        let mut files = Vec::with_capacity(def.extent_count as usize);
        for id in 0..def.extent_count {
            let p = extent_path(dir, id);
            st.remove_if_exists(&p).map_err(io)?;
            let f = Extent::create_linked(st, &p, id, def.block_size, def.extent_size, &label)?;
            files.push((p, f));
        }
        // One header per extent: synced side by side, not in turn.
        parallel(&mut files, |(p, f)| {
            f.sync_all()
                .map_err(|e| BlockError::io(p.display().to_string(), e))
        })?;
        sync_dir(st, &dir.join("extents"))?;
        write_generation(st, dir, src.generation())?;
        let catalog = Catalog {
            flush_mark: src.flush_mark.max(origin.flush),
            snapshots: Vec::new(),
        };
        catalog.store(st, dir)?;
        origin.store(st, dir)?;
        let mut def = def;
        def.uuid = rand::random();
        // The region file goes last: its presence means the region is whole.
        write_atomic(st, dir, REGION_FILE, &def.encode())
    }

    /// A linked clone's origin, while it still reads from it.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Extents still reading the clone's origin.
    pub fn linked_extents(&self) -> usize {
        self.extents.iter().filter(|e| e.is_linked()).count()
    }

    /// The next linked extent to copy from the clone's origin, if any.
    pub fn fill_job(&self) -> Option<FillJob> {
        let o = self.origin.as_ref()?;
        let e = self.extents.iter().find(|e| e.is_linked())?;
        Some(FillJob {
            storage: self.storage.clone(),
            path: e.path().to_path_buf(),
            geometry: (e.id(), self.def.block_size, self.def.extent_size),
            label: e.version(),
            origin: o.extent_path(e.id()),
            at: o.flush,
        })
    }

    /// Puts a copy staged by `FillJob::stage` in place (unless a write
    /// copied the extent meanwhile). Returns whether any extent is left
    /// linked; once none is, the region forgets its origin, which may then
    /// delete the snapshot.
    pub fn fill_install(&mut self, job: &FillJob, staged: &Path) -> Result<bool> {
        self.writable()?;
        self.not_flushing()?;
        let eid = job.geometry.0;
        let r = self.extent_mut(eid)?.install_fill(staged);
        self.note(r)?;
        self.forget_origin_when_copied()
    }

    /// Copies one linked extent from the clone's origin. Returns whether
    /// any is left (see `fill_install`).
    pub fn fill_next(&mut self) -> Result<bool> {
        self.writable()?;
        match self.fill_job() {
            Some(job) => {
                let staged = job.stage()?;
                self.fill_install(&job, &staged)
            }
            None => self.forget_origin_when_copied(),
        }
    }

    fn forget_origin_when_copied(&mut self) -> Result<bool> {
        if self.linked_extents() > 0 {
            return Ok(true);
        }
        if let Some(o) = self.origin.take() {
            unlink_origin(&self.storage, &self.dir)?;
            tracing::info!(
                region = %self.dir.display(),
                origin = %o.dir.display(),
                snapshot = %o.name,
                "clone copied in full; it no longer reads its origin"
            );
        }
        Ok(false)
    }

    /// Copies every linked extent (`kelp block fill`).
    pub fn fill_all(&mut self) -> Result<()> {
        while self.fill_next()? {}
        Ok(())
    }

    /// Closes and opens the region again: the way out of a failed region
    /// (see "IO errors"), re-validating every dirty extent.
    pub fn reopen(&mut self) -> Result<()> {
        let (st, dir, ro) = (self.storage.clone(), self.dir.clone(), self.read_only);
        self._lock = None;
        *self = Region::open_in(st, &dir, ro)?;
        Ok(())
    }

    pub fn def(&self) -> &RegionDef {
        &self.def
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Highest generation this region has accepted or been stamped with.
    pub fn generation(&self) -> u64 {
        self.extents
            .iter()
            .map(|e| e.version().generation)
            .max()
            .unwrap_or(0)
            .max(self.generation)
    }

    /// Why the region refuses writes after an IO error, if it does (see
    /// "IO errors"); cleared only by reopening.
    pub fn io_failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Refuses a modifying operation on a failed region.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        match &self.failed {
            Some(why) => Err(BlockError::StorageFailed(why.clone())),
            None => Ok(()),
        }
    }

    /// Fails the region if `r` is an IO error (see "IO errors").
    pub(crate) fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e @ (BlockError::Io { .. } | BlockError::NoSpace(_))) = &r {
            self.fail(e.to_string());
        }
        r
    }

    pub(crate) fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            tracing::error!(region = %self.dir.display(), "{why}; refusing writes until the region is reopened");
            self.failed = Some(why);
        }
    }

    /// Records an accepted activation generation durably.
    pub fn set_generation(&mut self, generation: u64) -> Result<()> {
        self.writable()?;
        if generation > self.generation {
            write_generation(&self.storage, &self.dir, generation)?;
            self.generation = generation;
        }
        Ok(())
    }

    pub fn versions(&self) -> Vec<ExtentVersion> {
        self.extents.iter().map(|e| e.version()).collect()
    }

    pub(crate) fn check(&self, start: u64, count: u64) -> Result<()> {
        let total = self.def.total_blocks();
        if start.checked_add(count).is_none_or(|end| end > total) {
            return Err(BlockError::OutOfRange {
                start,
                end: start.saturating_add(count),
                total,
            });
        }
        Ok(())
    }

    /// Splits [start, start+count) into per-extent pieces:
    /// (extent, first block in extent, blocks, offset in blocks from start).
    pub(crate) fn pieces(&self, start: u64, count: u64) -> Vec<(u32, u32, u32, u64)> {
        let es = self.def.extent_size as u64;
        let mut out = Vec::new();
        let mut b = start;
        while b < start + count {
            let eid = b / es;
            let off = b % es;
            let n = (es - off).min(start + count - b);
            out.push((eid as u32, off as u32, n as u32, b - start));
            b += n;
        }
        out
    }

    /// Reads live blocks: their contexts and data (checked by the caller).
    pub fn read(&self, start: u64, count: u64) -> Result<(Vec<BlockContext>, Vec<u8>)> {
        self.read_at_flush(crate::extent::LIVE, start, count)
    }

    pub fn write(&mut self, start: u64, data: &[u8], crcs: &[u32]) -> Result<()> {
        self.writable()?;
        let r = self.write_inner(start, data, crcs);
        self.note(r)
    }

    fn write_inner(&mut self, start: u64, data: &[u8], crcs: &[u32]) -> Result<()> {
        let count = crcs.len() as u64;
        self.check(start, count)?;
        let bs = self.def.block_size as usize;
        if data.len() != crcs.len() * bs {
            return Err(BlockError::BadLength {
                len: data.len(),
                blocks: count,
                block_size: self.def.block_size,
            });
        }
        let birth = self.birth();
        for (eid, first, n, at) in self.pieces(start, count) {
            let at = at as usize;
            let d = &data[at * bs..(at + n as usize) * bs];
            let e = &mut self.extents[eid as usize];
            let listed = e.unstarted() > 0;
            e.write(first, d, &crcs[at..at + n as usize], birth)?;
            if !listed && e.unstarted() > 0 {
                self.touched.push(eid);
            }
            self.unstarted += d.len() as u64;
        }
        if self.unstarted >= crate::writeback::REGION_WRITEBACK_AFTER {
            self.start_writeback();
        }
        Ok(())
    }

    /// Starts the writeback of every extent written since the last sweep
    /// (writeback.rs). An extent listed twice, or started on its own since,
    /// has nothing left to start and is skipped; one whose flush is under
    /// way stays listed for the next sweep.
    fn start_writeback(&mut self) {
        let mut batch = Vec::new();
        let extents = &mut self.extents;
        self.touched.retain(|&eid| {
            let e = &mut extents[eid as usize];
            batch.extend(e.writeback_request());
            e.unstarted() > 0
        });
        self.unstarted = 0;
        crate::writeback::start(batch);
    }

    /// A flush began: every dirty extent's count started again, so the
    /// region's does too (writeback.rs).
    fn restart_writeback_count(&mut self) {
        self.unstarted = 0;
        self.touched.clear();
    }

    /// What new versions are stamped with: born after the last flush begun,
    /// saved for the newest snapshot (including one being taken).
    pub(crate) fn birth(&self) -> Birth {
        Birth {
            birth: self.flush_mark + 1,
            newest_snapshot: self
                .pending
                .as_ref()
                .or(self.catalog.newest())
                .map(|s| s.flush),
        }
    }

    pub fn write_zeroes(&mut self, start: u64, count: u64) -> Result<()> {
        self.writable()?;
        self.check(start, count)?;
        let birth = self.birth();
        for (eid, first, n, _) in self.pieces(start, count) {
            let r = self.extents[eid as usize].write_zeroes(first, n, birth);
            self.note(r)?;
        }
        Ok(())
    }

    /// Makes every write so far durable and stamps each dirty extent with
    /// (flush, generation), all before returning.
    pub fn flush(&mut self, flush: u64, generation: u64) -> Result<()> {
        self.writable()?;
        self.not_flushing()?;
        self.flush_mark = self.flush_mark.max(flush);
        self.restart_writeback_count();
        let mut dirty: Vec<&mut Extent> =
            self.extents.iter_mut().filter(|e| e.is_dirty()).collect();
        // Each extent's sync, clean header, sync sequence is independent of
        // the others; running them side by side lets the fdatasyncs overlap
        // (and the block layer merge their cache flushes) instead of paying
        // for each in turn.
        let r = parallel(&mut dirty, |e| e.flush(flush, generation));
        if let Err(e) = &r {
            self.fail(format!("flush failed: {e}"));
        }
        r
    }

    /// Starts a flush that runs beside later writes: the caller syncs each
    /// returned extent's handle without holding the region, calling
    /// `flush_header` and `flush_end` in between and after (the rules are in
    /// extent.rs), then `flush_finish`. Empty when nothing is dirty; then
    /// there is nothing to finish. With `snapshot`, the flush also takes
    /// that snapshot (at flush number `flush`): it is recorded when the
    /// flush ends well, at once if nothing was dirty.
    pub fn flush_begin(
        &mut self,
        flush: u64,
        snapshot: Option<Snapshot>,
    ) -> Result<Vec<(u32, FlushHandle)>> {
        self.writable()?;
        self.not_flushing()?;
        if let Some(s) = &snapshot {
            if s.flush != flush {
                return Err(BlockError::protocol(format!(
                    "snapshot {} at flush {} carried by flush {flush}",
                    s.name, s.flush
                )));
            }
            // A snapshot at or below the flush mark would miss the writes
            // since the last flush (they are born at the mark + 1).
            if flush <= self.flush_mark {
                return Err(BlockError::SnapshotConflict(format!(
                    "snapshot {} at flush {flush} is not after this region's last flush {}",
                    s.name, self.flush_mark
                )));
            }
            // Checks the name, GUID and order before anything changes.
            self.catalog.clone().add(s.clone())?;
        }
        self.flush_mark = self.flush_mark.max(flush);
        let mut out = Vec::new();
        for i in 0..self.extents.len() {
            match self.extents[i].flush_begin(false) {
                Ok(Some(h)) => out.push((i as u32, h)),
                Ok(None) => {}
                Err(e) => {
                    self.flush_finish();
                    return Err(e);
                }
            }
        }
        self.restart_writeback_count();
        self.flushing = !out.is_empty();
        if let Some(s) = snapshot {
            if self.flushing {
                self.pending = Some(s);
            } else {
                self.record_snapshot(s)?;
            }
        }
        Ok(out)
    }

    pub fn flush_header(&mut self, eid: u32, flush: u64, generation: u64) -> Result<()> {
        let r = self.extent_mut(eid)?.flush_header(flush, generation);
        self.note(r)
    }

    /// Ends one extent's part of the flush; `ok` false (its sync or header
    /// failed) fails the region.
    pub fn flush_end(&mut self, eid: u32, ok: bool) -> Result<()> {
        if !ok {
            self.fail(format!("flush of extent {eid} failed"));
        }
        let r = self.extent_mut(eid)?.flush_end(ok);
        self.note(r)
    }

    /// Ends the flush begun by `flush_begin`; any extent not yet ended is
    /// ended as failed.
    pub fn flush_finish(&mut self) {
        let mut unfinished = false;
        for e in &mut self.extents {
            if e.in_flush() {
                unfinished = true;
                if let Err(err) = e.flush_end(false) {
                    tracing::warn!(extent = e.id(), error = %err, "restoring a dirty header failed");
                }
            }
        }
        if unfinished {
            self.fail("a flush did not finish".to_string());
        }
        self.flushing = false;
        if let Some(s) = self.pending.take()
            && self.failed.is_none()
            && let Err(e) = self.record_snapshot(s)
        {
            self.fail(format!("recording a snapshot failed: {e}"));
        }
    }

    /// Did the flush that `flush_finish` ended take its snapshot? (False
    /// when the region failed during it.)
    pub fn snapshot_recorded(&self, name: &str) -> bool {
        self.catalog.get(name).is_some()
    }

    /// A flush begun by `flush_begin` is under way.
    pub fn flush_in_flight(&self) -> bool {
        self.flushing
    }

    /// Whether a write to `count` blocks from `start` may run now, or must
    /// wait for the flush under way. Out-of-range writes say yes (and fail).
    pub fn can_write(&self, start: u64, count: u64) -> bool {
        if !self.flushing || self.check(start, count).is_err() {
            return true;
        }
        self.pieces(start, count)
            .into_iter()
            .all(|(eid, first, n, _)| self.extents[eid as usize].can_write(first, n))
    }

    /// Marks dirty, side by side, the clean extents that the writes to the
    /// given block ranges (start, count) will touch, so the writes that
    /// follow do not each wait for their own header fdatasync in turn.
    /// Only an optimisation: each write still makes sure of it itself.
    pub fn prepare_writes(&mut self, ranges: &[(u64, u64)]) -> Result<()> {
        if self.read_only || self.failed.is_some() || ranges.len() < 2 {
            return Ok(());
        }
        let mut want = vec![false; self.extents.len()];
        for &(start, count) in ranges {
            if count == 0 || self.check(start, count).is_err() {
                continue;
            }
            for (eid, _, _, _) in self.pieces(start, count) {
                want[eid as usize] = true;
            }
        }
        let mut todo: Vec<&mut Extent> = self
            .extents
            .iter_mut()
            .zip(want)
            .filter(|(e, w)| *w && !e.is_dirty() && !e.in_flush())
            .map(|(e, _)| e)
            .collect();
        if todo.len() < 2 {
            return Ok(());
        }
        let r = parallel(&mut todo, |e| e.ensure_dirty());
        self.note(r)
    }

    fn extent(&self, eid: u32) -> Result<&Extent> {
        self.extents
            .get(eid as usize)
            .ok_or(BlockError::NoSuchExtent(eid))
    }

    fn extent_mut(&mut self, eid: u32) -> Result<&mut Extent> {
        self.extents
            .get_mut(eid as usize)
            .ok_or(BlockError::NoSuchExtent(eid))
    }

    pub fn extent_image(&self, eid: u32) -> Result<ExtentImage> {
        self.extent(eid)?.image()
    }

    pub fn extent_replace(&mut self, eid: u32, image: &ExtentImage) -> Result<()> {
        self.writable()?;
        self.not_flushing()?;
        let r = self.extent_mut(eid)?.replace(image);
        self.note(r)?;
        // As `open` would find it: never behind a flush the copy shows
        // begun, so later writes are born after the copied versions.
        let born = image.births.iter().copied().max().unwrap_or(0);
        self.flush_mark = self
            .flush_mark
            .max(image.version.flush)
            .max(born.saturating_sub(1));
        Ok(())
    }

    pub fn extent_stamp(&mut self, eid: u32, flush: u64, generation: u64) -> Result<()> {
        self.writable()?;
        self.not_flushing()?;
        let r = self.extent_mut(eid)?.stamp(flush, generation);
        self.note(r)
    }

    fn not_flushing(&self) -> Result<()> {
        if self.flushing {
            return Err(BlockError::protocol("a flush is already under way"));
        }
        Ok(())
    }
}

/// One linked extent to copy from a clone's origin. `stage` reads the
/// origin and writes the copy beside the extent, and needs no lock on the
/// region: a background fill runs it between the jobs, and holds the
/// region only for `Region::fill_install`'s rename.
pub struct FillJob {
    storage: Storage,
    path: PathBuf,
    geometry: (u32, u32, u32),
    label: ExtentVersion,
    origin: PathBuf,
    at: u64,
}

impl FillJob {
    /// Writes the extent's copy beside it; returns the staged file.
    pub fn stage(&self) -> Result<PathBuf> {
        let link = Link::new(&self.storage, self.origin.clone(), self.geometry, self.at);
        let image = link.image(self.label)?;
        Extent::stage_fill(&self.storage, &self.path, self.geometry, &image)
    }
}

fn unlink_origin(st: &Storage, dir: &Path) -> Result<()> {
    let p = dir.join(ORIGIN_FILE);
    st.remove_if_exists(&p)
        .and_then(|_| st.sync_parent(&p))
        .map_err(|e| BlockError::io(p.display().to_string(), e))
}

fn write_generation(st: &Storage, dir: &Path, generation: u64) -> Result<()> {
    let mut w = Writer::with_capacity(20);
    w.bytes(GEN_MAGIC).u64(generation);
    let c = crc32c::crc32c(&w.buf);
    w.u32(c);
    write_atomic(st, dir, GENERATION_FILE, &w.buf)
}

fn read_generation(st: &Storage, dir: &Path) -> Result<u64> {
    let path = dir.join(GENERATION_FILE);
    let b = match st.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(BlockError::io(path.display().to_string(), e)),
    };
    let mut r = Reader::new(&b, "generation file");
    let ok = r.bytes(8)? == GEN_MAGIC;
    let g = r.u64()?;
    let c = r.u32()?;
    if !ok || crc32c::crc32c(&b[0..16]) != c {
        return Err(BlockError::corrupt(
            "generation file",
            "bad magic or checksum",
        ));
    }
    Ok(g)
}

/// Runs `f` on every item (one per extent), on up to `MAX_SYNC_THREADS`
/// threads at once; the first error is returned once all have run.
pub fn parallel<T: Send>(extents: &mut [T], f: impl Fn(&mut T) -> Result<()> + Sync) -> Result<()> {
    const MAX_SYNC_THREADS: usize = 32;
    match extents.len() {
        0 => return Ok(()),
        1 => return f(&mut extents[0]),
        _ => {}
    }
    let per = extents.len().div_ceil(MAX_SYNC_THREADS);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = extents
            .chunks_mut(per)
            .map(|chunk| {
                s.spawn(move || {
                    let mut first = Ok(());
                    for e in chunk.iter_mut() {
                        let r = f(e);
                        if first.is_ok() {
                            first = r;
                        }
                    }
                    first
                })
            })
            .collect();
        let mut first = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(BlockError::protocol("extent sync thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_file_golden() {
        let def = RegionDef {
            block_size: 4096,
            extent_size: 16,
            extent_count: 3,
            uuid: [0xab; 16],
        };
        let b = def.encode();
        assert_eq!(&b[0..8], b"KELPRGN1");
        assert_eq!(
            &b[8..24],
            &[1, 0, 0, 0, 0, 16, 0, 0, 16, 0, 0, 0, 3, 0, 0, 0]
        );
        assert_eq!(RegionDef::decode(&b).unwrap(), def);
        let mut bad = b;
        bad[13] ^= 1;
        assert!(RegionDef::decode(&bad).is_err());
    }

    #[test]
    fn bad_options() {
        assert!(RegionDef::new(100, 10, 10).is_err());
        assert!(RegionDef::new(8192, 10, 10).is_err());
        assert!(RegionDef::new(4096, 0, 10).is_err());
        assert!(RegionDef::new(4096, 1 << 20, 10).is_err());
        assert!(RegionDef::new(512, 10, 0).is_err());
    }

    /// `read_into` (the downstairs' reads into a reused buffer) reads what
    /// `read` does, across extents, and refuses a buffer of the wrong size.
    #[test]
    fn read_into_matches_read_and_checks_the_buffer() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Region::create(d.path(), 512, 8, 2).unwrap();
        let data: Vec<u8> = (0..6 * 512).map(|i| (i % 251) as u8).collect();
        let crcs: Vec<u32> = data.chunks(512).map(crate::context::block_crc).collect();
        r.write(5, &data, &crcs).unwrap();
        let (ctxs, want) = r.read(4, 8).unwrap();
        let mut got = vec![0u8; 8 * 512];
        assert_eq!(r.read_into(4, 8, &mut got).unwrap(), ctxs);
        assert_eq!(got, want);
        assert_eq!(&got[512..512 + data.len()], &data[..]);
        let mut short = vec![0u8; 7 * 512];
        assert!(matches!(
            r.read_into(4, 8, &mut short),
            Err(BlockError::BadLength { .. })
        ));
    }

    /// Writes `len` bytes of `fill` from block `start`, with their CRCs.
    fn write_filled(r: &mut Region, start: u64, len: u64, fill: u8) {
        let data = vec![fill; len as usize];
        let crcs: Vec<u32> = data
            .chunks(r.def.block_size as usize)
            .map(crate::context::block_crc)
            .collect();
        r.write(start, &data, &crcs).unwrap();
    }

    /// Random writes spread thinly over many extents, none of which takes
    /// `WRITEBACK_AFTER`, still start writeback once the region has taken
    /// `REGION_WRITEBACK_AFTER`; a flush starts the region's count again.
    #[test]
    fn thin_writes_over_many_extents_start_writeback() {
        use crate::writeback::{REGION_WRITEBACK_AFTER, WRITEBACK_AFTER, started};
        let d = tempfile::tempdir().unwrap();
        let bs = 4096u64;
        let (extent_blocks, extents) = (256u32, 40u32);
        let mut r = Region::create(d.path(), bs as u32, extent_blocks, extents).unwrap();
        // Each write: half the extent mark, in extent `i`.
        let per = WRITEBACK_AFTER / 2;
        let write = |r: &mut Region, i: u32, fill: u8| {
            write_filled(r, i as u64 * extent_blocks as u64, per, fill);
        };
        let marks = (REGION_WRITEBACK_AFTER / per) as u32;
        assert!(marks < extents, "the test needs more extents");
        let before = started();
        // One write short of the region's mark, then a flush: nothing
        // starts, and the count starts again.
        for i in 0..marks - 1 {
            write(&mut r, i, 1);
        }
        r.flush(1, 1).unwrap();
        for i in 0..marks - 1 {
            write(&mut r, i, 2);
        }
        assert_eq!(started(), before, "started before the region's mark");
        let data_off = crate::extent::data_offset(extent_blocks);
        let path = |i: u32| extent_path(d.path(), i);
        // Where the page cache can be watched (crate::extent::tests), the
        // extents' data is dirty until their writeback starts.
        let watch = crate::extent::tests::dirty_pages(&path(0), data_off).is_some_and(|n| n > 0);
        // The write that reaches the mark starts every extent written.
        write(&mut r, marks - 1, 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let dirty: Vec<u64> = (0..marks)
                .map(|i| crate::extent::tests::dirty_pages(&path(i), data_off).unwrap_or(0))
                .collect();
            if started() - before >= marks as u64 && (!watch || dirty.iter().all(|&n| n == 0)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "writeback of {marks} thinly written extents not started within 10 s \
                 (started {}, dirty pages {dirty:?})",
                started() - before
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            started() - before,
            marks as u64,
            "each written extent started once, no other"
        );
        r.flush(2, 1).unwrap();
        let (_, got) = r.read(0, per / bs).unwrap();
        assert!(got.iter().all(|&b| b == 2));
    }

    /// Extents whose flush is under way are not started by a sweep but stay
    /// listed, and the first sweep after the flush ended starts them; a
    /// flush begun starts the region's count again.
    #[test]
    fn a_sweep_skips_extents_being_flushed_and_starts_them_later() {
        use crate::writeback::{REGION_WRITEBACK_AFTER, WRITEBACK_AFTER};
        let d = tempfile::tempdir().unwrap();
        let bs = 4096u64;
        let (extent_blocks, extents) = (256u32, 80u32);
        let mut r = Region::create(d.path(), bs as u32, extent_blocks, extents).unwrap();
        let per = WRITEBACK_AFTER / 2;
        // `per` bytes at block `at` of extent `i`.
        let write = |r: &mut Region, i: u32, at: u64| {
            write_filled(r, i as u64 * extent_blocks as u64 + at, per, 7);
        };
        let marks = (REGION_WRITEBACK_AFTER / per) as u32;
        assert!(2 * marks <= extents, "the test needs more extents");
        // Extents 0..4 written, then their flush begins.
        for i in 0..4 {
            write(&mut r, i, 0);
        }
        let handles = r.flush_begin(1, None).unwrap();
        assert_eq!(handles.len(), 4);
        assert_eq!(r.unstarted, 0, "the flush did not start the count again");
        // Past the region's mark, the flushing extents among those written
        // (blocks the flush does not hold).
        for i in 0..marks {
            write(&mut r, i, extent_blocks as u64 / 2);
        }
        for i in 0..4 {
            assert_eq!(
                r.extents[i as usize].unstarted(),
                per,
                "extent {i} started in its flush"
            );
        }
        for i in 4..marks {
            assert_eq!(
                r.extents[i as usize].unstarted(),
                0,
                "extent {i} not started"
            );
        }
        assert_eq!(
            r.touched,
            vec![0, 1, 2, 3],
            "flushing extents kept for the next sweep"
        );
        for (eid, h) in &handles {
            h.sync().unwrap();
            r.flush_header(*eid, 1, 1).unwrap();
            h.sync_header().unwrap();
            r.flush_end(*eid, true).unwrap();
        }
        r.flush_finish();
        assert!(r.writable().is_ok(), "the flush failed the region");
        // The next sweep starts them.
        for i in marks..2 * marks {
            write(&mut r, i, 0);
        }
        for i in 0..2 * marks {
            assert_eq!(
                r.extents[i as usize].unstarted(),
                0,
                "extent {i} not started"
            );
        }
    }

    /// A snapshot flush must be newer than every flush begun: writes since
    /// the last flush are born after it and would be missing.
    #[test]
    fn snapshot_flush_at_or_below_the_mark_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Region::create(d.path(), 512, 8, 2).unwrap();
        r.flush(5, 1).unwrap();
        r.write(0, &[7; 512], &[crate::context::block_crc(&[7; 512])])
            .unwrap();
        for at in [3, 5] {
            let s = Snapshot {
                name: "s".into(),
                guid: 1,
                flush: at,
                created: 0,
            };
            assert!(matches!(
                r.flush_begin(at, Some(s)),
                Err(BlockError::SnapshotConflict(_))
            ));
            assert!(!r.flush_in_flight() && !r.snapshot_recorded("s"));
        }
        let s = Snapshot {
            name: "s".into(),
            guid: 1,
            flush: 6,
            created: 0,
        };
        let hs = r.flush_begin(6, Some(s)).unwrap();
        for (eid, h) in hs {
            h.sync().unwrap();
            r.flush_header(eid, 6, 1).unwrap();
            h.sync().unwrap();
            r.flush_end(eid, true).unwrap();
        }
        r.flush_finish();
        assert!(r.snapshot_recorded("s"));
        assert_eq!(r.read_snapshot("s", 0, 1).unwrap().1, vec![7; 512]);
    }

    /// A replica that missed a snapshot gets its extents copied from one
    /// that took it, then the record: the snapshot then reads the same
    /// there, through a reopen, and later writes keep it intact.
    #[test]
    fn a_snapshot_recorded_after_repair_reads_like_the_source() {
        let crc = |b: u8| vec![crate::context::block_crc(&[b; 512])];
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = Region::create(da.path(), 512, 4, 2).unwrap();
        let mut b = Region::create(db.path(), 512, 4, 2).unwrap();
        for r in [&mut a, &mut b] {
            r.write(0, &[1; 512], &crc(1)).unwrap();
            r.flush(1, 1).unwrap();
        }
        // Only `a` takes s0 and s1 and sees the write between them.
        let s0 = a.next_snapshot("s0");
        a.snapshot_take(s0.clone()).unwrap();
        a.write(0, &[2; 512], &crc(2)).unwrap();
        let s1 = a.next_snapshot("s1");
        a.snapshot_take(s1.clone()).unwrap();
        a.write(0, &[3; 512], &crc(3)).unwrap();
        a.flush(4, 1).unwrap();
        // `b` holds another s0 (another GUID): recording s0 is refused
        // until it is deleted, as the upstairs does first.
        let mut other = s0.clone();
        other.guid ^= 1;
        b.snapshot_record(other).unwrap();
        assert!(matches!(
            b.snapshot_record(s0.clone()),
            Err(BlockError::SnapshotConflict(_))
        ));
        b.snapshot_delete("s0").unwrap();
        for e in 0..2 {
            b.extent_replace(e, &a.extent_image(e).unwrap()).unwrap();
        }
        assert_eq!(b.flush_mark(), 4, "as a reopen would find it");
        // Out of order (s1 before s0) and twice.
        b.snapshot_record(s1.clone()).unwrap();
        b.snapshot_record(s0.clone()).unwrap();
        b.snapshot_record(s1.clone()).unwrap();
        assert_eq!(b.catalog().snapshots, a.catalog().snapshots);
        for s in ["s0", "s1"] {
            assert_eq!(
                b.read_snapshot(s, 0, 8).unwrap(),
                a.read_snapshot(s, 0, 8).unwrap()
            );
        }
        assert_eq!(b.read_snapshot("s0", 0, 1).unwrap().1, vec![1; 512]);
        assert_eq!(b.read_snapshot("s1", 0, 1).unwrap().1, vec![2; 512]);
        // Later writes are born after both and keep them intact.
        b.write(0, &[4; 512], &crc(4)).unwrap();
        b.flush(5, 1).unwrap();
        b.reopen().unwrap();
        assert_eq!(b.catalog().snapshots, a.catalog().snapshots);
        assert_eq!(b.read_snapshot("s1", 0, 1).unwrap().1, vec![2; 512]);
        assert_eq!(b.read(0, 1).unwrap().1, vec![4; 512]);
    }

    #[test]
    fn create_twice_and_lock() {
        let d = tempfile::tempdir().unwrap();
        let r = Region::create(d.path(), 512, 8, 2).unwrap();
        assert!(matches!(
            Region::create(d.path(), 512, 8, 2),
            Err(BlockError::RegionExists(_))
        ));
        assert!(Region::open(d.path(), false).is_err(), "locked");
        assert!(Region::open(d.path(), true).is_ok());
        drop(r);
        let mut r = Region::open(d.path(), false).unwrap();
        r.set_generation(5).unwrap();
        drop(r);
        assert_eq!(Region::open(d.path(), true).unwrap().generation(), 5);
    }
}
