//! A region's snapshot operations: take, list, delete, read, roll back,
//! clone. How snapshots are stored is in catalog.rs (the list), saved.rs
//! (old versions) and extent.rs ("Births and snapshots").

use std::path::Path;

use kelp_storage::Storage;

use crate::catalog::{CATALOG_FILE, Catalog, Snapshot, now_secs};
use crate::context::BlockContext;
use crate::error::{BlockError, Result};
use crate::extent::Birth;
use crate::region::{GENERATION_FILE, REGION_FILE, Region, RegionDef};

/// One block of a snapshot as `Region::snapshot_versions` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockVersion {
    pub birth: u64,
    pub context: BlockContext,
}

impl Region {
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn snapshots(&self) -> &[Snapshot] {
        &self.catalog.snapshots
    }

    pub fn snapshot(&self, name: &str) -> Result<&Snapshot> {
        self.catalog
            .get(name)
            .ok_or_else(|| BlockError::NoSuchSnapshot(name.to_string()))
    }

    /// The highest flush number this region has begun.
    pub fn flush_mark(&self) -> u64 {
        self.flush_mark
    }

    /// Each extent file's format version as opened.
    pub fn extent_formats(&self) -> Vec<u32> {
        self.extents.iter().map(|e| e.format()).collect()
    }

    /// Bytes the saved versions of all snapshots take on disk.
    pub fn saved_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.saved_bytes()).sum()
    }

    /// Writes the catalog with `s` added, then remembers it.
    pub(crate) fn record_snapshot(&mut self, s: Snapshot) -> Result<()> {
        let mut c = self.catalog.clone();
        c.flush_mark = c.flush_mark.max(self.flush_mark);
        c.add(s)?;
        let r = c.store(&self.storage, &self.dir);
        self.note(r)?;
        self.catalog = c;
        Ok(())
    }

    /// Records snapshot `s`, taken by the other replicas while this one
    /// was away, without a flush: the caller (the upstairs, after
    /// repairing this region's extents from a replica that holds it) has
    /// made the data match. The flush mark rises to at least `s.flush`, so
    /// later writes are born after it. Recording a snapshot already held
    /// exactly (same name, GUID and flush) succeeds and changes nothing,
    /// so a replayed record is harmless; any other clash of name, GUID or
    /// flush is refused.
    pub fn snapshot_record(&mut self, s: Snapshot) -> Result<()> {
        self.writable()?;
        if self.flushing {
            return Err(BlockError::protocol("a flush is already under way"));
        }
        if let Some(have) = self.catalog.get(&s.name) {
            // (The flush mark is already at least its flush: `add` and
            // `insert` raise it with the entry.)
            if have.guid == s.guid && have.flush == s.flush {
                return Ok(());
            }
            return Err(BlockError::SnapshotConflict(format!(
                "snapshot {} exists here with GUID {:032x} at flush {}, not {:032x} at flush {}",
                s.name, have.guid, have.flush, s.guid, s.flush
            )));
        }
        let mut c = self.catalog.clone();
        c.flush_mark = c.flush_mark.max(self.flush_mark);
        c.insert(s)?;
        let r = c.store(&self.storage, &self.dir);
        self.note(r)?;
        self.flush_mark = self.flush_mark.max(c.flush_mark);
        self.catalog = c;
        Ok(())
    }

    /// A new snapshot description for this region, at the next flush.
    pub fn next_snapshot(&self, name: &str) -> Snapshot {
        Snapshot {
            name: name.to_string(),
            guid: rand::random(),
            flush: self.flush_mark + 1,
            created: now_secs(),
        }
    }

    /// Takes snapshot `s` now: a flush at `s.flush` that records it. For
    /// regions no upstairs is attached to (the upstairs sends it as a
    /// flush job instead).
    pub fn snapshot_take(&mut self, s: Snapshot) -> Result<()> {
        self.writable()?;
        if self.flushing {
            return Err(BlockError::protocol("a flush is already under way"));
        }
        if s.flush <= self.flush_mark {
            return Err(BlockError::SnapshotConflict(format!(
                "snapshot {} at flush {} is not after this region's last flush {}",
                s.name, s.flush, self.flush_mark
            )));
        }
        self.catalog.clone().add(s.clone())?;
        let generation = self.generation();
        self.flush(s.flush, generation)?;
        self.record_snapshot(s)
    }

    /// Deletes a snapshot and frees the saved versions only it read.
    /// Returns the bytes freed.
    pub fn snapshot_delete(&mut self, name: &str) -> Result<u64> {
        self.writable()?;
        if self.flushing {
            return Err(BlockError::protocol("a flush is already under way"));
        }
        let guid = self.snapshot(name)?.guid;
        crate::link::check_holds(&self.storage, &self.dir, &[(guid, name)], true)?;
        let mut c = self.catalog.clone();
        c.flush_mark = c.flush_mark.max(self.flush_mark);
        c.snapshots.retain(|s| s.name != name);
        let r = c.store(&self.storage, &self.dir);
        self.note(r)?;
        self.catalog = c;
        self.prune()
    }

    /// Drops saved versions no snapshot reads.
    fn prune(&mut self) -> Result<u64> {
        let snaps = self.catalog.flushes();
        let mut freed = 0;
        for i in 0..self.extents.len() {
            let r = self.extents[i].prune_saved(&snaps);
            freed += self.note(r)?;
        }
        Ok(freed)
    }

    /// Reads blocks of a snapshot: its contexts and data, like `read`.
    pub fn read_snapshot(
        &self,
        name: &str,
        start: u64,
        count: u64,
    ) -> Result<(Vec<BlockContext>, Vec<u8>)> {
        let at = self.snapshot(name)?.flush;
        self.read_at_flush(at, start, count)
    }

    pub(crate) fn read_at_flush(
        &self,
        at: u64,
        start: u64,
        count: u64,
    ) -> Result<(Vec<BlockContext>, Vec<u8>)> {
        self.check(start, count)?;
        let mut data = vec![0u8; count as usize * self.def.block_size as usize];
        let ctxs = self.read_at_flush_into(at, start, count, &mut data)?;
        Ok((ctxs, data))
    }

    /// Like `read`, into `data`, which must be exactly `count` blocks of
    /// zeros (a caller's reused buffer); returns the contexts.
    pub fn read_into(&self, start: u64, count: u64, data: &mut [u8]) -> Result<Vec<BlockContext>> {
        self.read_at_flush_into(crate::extent::LIVE, start, count, data)
    }

    fn read_at_flush_into(
        &self,
        at: u64,
        start: u64,
        count: u64,
        data: &mut [u8],
    ) -> Result<Vec<BlockContext>> {
        self.check(start, count)?;
        let bs = self.def.block_size as usize;
        if Some(data.len()) != (count as usize).checked_mul(bs) {
            return Err(BlockError::BadLength {
                len: data.len(),
                blocks: count,
                block_size: self.def.block_size,
            });
        }
        let mut ctxs = Vec::with_capacity(count as usize);
        for (eid, first, n, off) in self.pieces(start, count) {
            let o = off as usize * bs;
            self.extents[eid as usize].read_at_flush(
                first,
                n,
                at,
                &mut data[o..o + n as usize * bs],
                &mut ctxs,
            )?;
        }
        Ok(ctxs)
    }

    /// Each block's version in the snapshot at flush `at` (None: not
    /// written by then), from memory alone: an incremental send asks this
    /// to find what changed without reading data.
    pub fn snapshot_versions(
        &self,
        at: u64,
        start: u64,
        count: u64,
    ) -> Result<Vec<Option<BlockVersion>>> {
        self.check(start, count)?;
        let mut out = Vec::with_capacity(count as usize);
        for (eid, first, n, _) in self.pieces(start, count) {
            let e = &self.extents[eid as usize];
            for b in first..first + n {
                out.push(
                    e.version_at(b, at)?
                        .map(|(birth, context)| BlockVersion { birth, context }),
                );
            }
        }
        Ok(out)
    }

    /// Whether any block was written after the newest snapshot (any block
    /// at all when there is none).
    pub fn changed_since_newest_snapshot(&self) -> bool {
        let since = self.catalog.newest().map_or(0, |s| s.flush);
        self.extents.iter().any(|e| e.max_birth() > since)
    }

    /// Returns the live volume to snapshot `name`. Later snapshots are
    /// refused unless `destroy_later`, and then deleted. Returns the names
    /// of the snapshots destroyed.
    pub fn rollback(&mut self, name: &str, destroy_later: bool) -> Result<Vec<String>> {
        self.writable()?;
        if self.flushing {
            return Err(BlockError::protocol("a flush is already under way"));
        }
        let s = self.snapshot(name)?.clone();
        let later_guids: Vec<(u128, &str)> = self
            .catalog
            .snapshots
            .iter()
            .filter(|x| x.flush > s.flush)
            .map(|x| (x.guid, x.name.as_str()))
            .collect();
        let later: Vec<String> = later_guids.iter().map(|(_, n)| n.to_string()).collect();
        if !later.is_empty() && !destroy_later {
            return Err(BlockError::SnapshotConflict(format!(
                "snapshot {name} is not the newest: rolling back to it would destroy {}; \
                 pass --destroy-later to do so",
                later.join(", ")
            )));
        }
        crate::link::check_holds(&self.storage, &self.dir, &later_guids, true)?;
        let mut c = self.catalog.clone();
        c.flush_mark = c.flush_mark.max(self.flush_mark);
        c.snapshots.retain(|x| x.flush <= s.flush);
        let r = c.store(&self.storage, &self.dir);
        self.note(r)?;
        self.catalog = c;
        let bs = self.def.block_size as usize;
        for eid in 0..self.extents.len() {
            let births = self.extents[eid].births()?;
            for (b, &birth) in births.iter().enumerate() {
                if birth <= s.flush {
                    continue;
                }
                let b = b as u32;
                let e = &mut self.extents[eid];
                let mut data = vec![0u8; bs];
                let mut ctx = Vec::with_capacity(1);
                e.read_at_flush(b, 1, s.flush, &mut data, &mut ctx)?;
                let (born, context) = e.version_at(b, s.flush)?.unwrap_or((0, BlockContext::Zero));
                let w = Birth {
                    birth: born,
                    newest_snapshot: Some(s.flush),
                };
                let r = e.restore(b, context, &data, w);
                self.note(r)?;
            }
        }
        let (flush, generation) = (self.flush_mark + 1, self.generation());
        self.flush(flush, generation)?;
        self.prune()?;
        Ok(later)
    }
}

/// Clones snapshot `snapshot` of one region; see `clone_volume_in`.
pub fn clone_region(from: &Path, to: &Path, snapshot: &str) -> Result<CloneReport> {
    clone_region_in(&Storage::real(), from, to, snapshot)
}

/// `clone_region` on a chosen storage backend.
pub fn clone_region_in(
    st: &Storage,
    from: &Path,
    to: &Path,
    snapshot: &str,
) -> Result<CloneReport> {
    let mut r = clone_volume_in(st, &[from.to_path_buf()], &[to.to_path_buf()], snapshot)?;
    r.pop()
        .ok_or_else(|| BlockError::protocol("clone made no region"))
}

/// Clones snapshot `snapshot` of a volume, one new region in `to[i]` per
/// origin replica `from[i]`: a writable volume that holds what the
/// snapshot held, with a new uuid and no snapshots of its own.
///
/// Where the file system shares blocks (a reflink, on XFS or btrfs) the
/// origin's files are shared and the clone rolled back to the snapshot:
/// independent at once. Elsewhere the clone is *linked* (link.rs): created
/// at once with no data, it reads the origin's snapshot until it has
/// copied it, and the origin keeps that snapshot meanwhile. `to` must not
/// hold regions.
pub fn clone_volume_in(
    st: &Storage,
    from: &[std::path::PathBuf],
    to: &[std::path::PathBuf],
    snapshot: &str,
) -> Result<Vec<CloneReport>> {
    if from.len() != to.len() || from.is_empty() {
        return Err(BlockError::Invalid(format!(
            "give one clone directory per origin region ({} and {})",
            to.len(),
            from.len()
        )));
    }
    let io = |p: &Path, e| BlockError::io(p.display().to_string(), e);
    let abs = |p: &Path| std::path::absolute(p).map_err(|e| io(p, e));
    let clones = to.iter().map(|t| abs(t)).collect::<Result<Vec<_>>>()?;
    let clone_id: u128 = rand::random();
    let mut reports = Vec::with_capacity(from.len());
    for (from, to) in from.iter().zip(&clones) {
        let from = &abs(from)?;
        let src = Region::open_in(st.clone(), from, true)?;
        let snap = src.snapshot(snapshot)?.clone();
        if src.linked_extents() > 0 {
            return Err(BlockError::Invalid(format!(
                "{} is itself a clone still copying from its origin; run `kelp block fill` \
                 on it first",
                from.display()
            )));
        }
        if st.exists(&to.join(REGION_FILE)).map_err(|e| io(to, e))? {
            return Err(BlockError::RegionExists(to.display().to_string()));
        }
        let report = match reflink_region(st, from, to)? {
            Some(files) => {
                let mut clone = Region::open_in(st.clone(), to, false)?;
                clone.rollback(snapshot, true)?;
                let names: Vec<String> = clone.snapshots().iter().map(|s| s.name.clone()).collect();
                for name in names {
                    clone.snapshot_delete(&name)?;
                }
                CloneReport {
                    reflinked: files,
                    linked: 0,
                }
            }
            None => {
                crate::link::Hold {
                    clone_id,
                    guid: snap.guid,
                    clones: clones.clone(),
                }
                .store(st, from)?;
                let origin = crate::link::Origin {
                    clone_id,
                    origin_uuid: src.def().uuid,
                    flush: snap.flush,
                    guid: snap.guid,
                    name: snap.name.clone(),
                    dir: from.clone(),
                };
                Region::create_linked(st, to, &src, &origin)?;
                CloneReport {
                    reflinked: 0,
                    linked: src.def().extent_count as usize,
                }
            }
        };
        reports.push(report);
    }
    Ok(reports)
}

/// Shares every file of region `from` with a new region `to` (a reflink
/// per file); None, leaving `to` without a region, where the file system
/// cannot. Returns the number of files shared.
fn reflink_region(st: &Storage, from: &Path, to: &Path) -> Result<Option<usize>> {
    if !st.is_real() {
        return Ok(None);
    }
    let io = |p: &Path, e| BlockError::io(p.display().to_string(), e);
    let (src_ext, dst_ext) = (from.join("extents"), to.join("extents"));
    st.create_dir_all(&dst_ext).map_err(|e| io(to, e))?;
    let mut shared = 0;
    for name in st.list(&src_ext).map_err(|e| io(from, e))? {
        let n = name.to_string_lossy();
        if !(n.ends_with(".ext") || n.ends_with(".snap")) {
            continue;
        }
        let b = dst_ext.join(&name);
        st.remove_if_exists(&b).map_err(|e| io(&b, e))?;
        if !reflink(&src_ext.join(&name), &b).map_err(|e| io(&b, e))? {
            if shared > 0 {
                return Err(BlockError::Invalid(format!(
                    "{} shared some files and not others; remove it and try again",
                    to.display()
                )));
            }
            return Ok(None);
        }
        shared += 1;
    }
    crate::extent::sync_dir(st, &dst_ext)?;
    for f in [CATALOG_FILE, GENERATION_FILE] {
        let p = from.join(f);
        if st.exists(&p).map_err(|e| io(&p, e))? {
            let bytes = st.read(&p).map_err(|e| io(&p, e))?;
            st.write_atomic(&to.join(f), &bytes)
                .map_err(|e| io(&to.join(f), e))?;
        }
    }
    let mut def = RegionDef::decode(&st.read(&from.join(REGION_FILE)).map_err(|e| io(from, e))?)?;
    def.uuid = rand::random();
    // The region file goes last, as in `Region::create`.
    st.write_atomic(&to.join(REGION_FILE), &def.encode())
        .map_err(|e| io(to, e))?;
    Ok(Some(shared))
}

#[derive(Debug, Default)]
pub struct CloneReport {
    /// Files shared with the origin by the filesystem (a reflink clone).
    pub reflinked: usize,
    /// Extents linked to the origin, to be copied (a linked clone).
    pub linked: usize,
}

/// Shares `from`'s blocks with a new file `to` (FICLONE). False when the
/// filesystem cannot (then `to` does not exist).
fn reflink(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let src = std::fs::File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both descriptors are open for the duration of the call and
    // FICLONE takes the source descriptor by value.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        dst.sync_all()?;
        return Ok(true);
    }
    drop(dst);
    std::fs::remove_file(to)?;
    Ok(false)
}
