//! One extent: a fixed run of blocks stored in its own file.
//!
//! # Torn writes: two slots per block
//!
//! Every block has two slots, A and B, each a context record and a data
//! area. A write never touches the slot holding the block's last *flushed*
//! value: the first write to a block after a flush goes to the other slot
//! (with a higher sequence number); further writes before the next flush
//! overwrite that same unflushed slot. After a crash each slot is judged on
//! its own: its context must pass its own CRC and its data must match the
//! context's data CRC. The newest slot that passes wins. So a crash in the
//! middle of a write leaves either the old or the new block, never a mix,
//! and the flushed value is never at risk.
//!
//! Checking data costs a read, so it is done only for extents whose dirty
//! bit is set (written since their last flush). A clean extent was fsynced
//! whole at its last flush and not written since, so its newest valid
//! context is trusted. Before the first write after a flush the dirty bit is
//! written and fsynced, so a crash can never leave a written-to extent
//! marked clean.
//!
//! # Flushing beside writes
//!
//! A flush is split so that its fdatasyncs run outside the region lock
//! while later writes go on (`flush_begin`, `FlushHandle::sync`,
//! `flush_header`, `FlushHandle::sync`, `flush_end`):
//! - `flush_begin` turns every unflushed block into a *flushing* one. Its
//!   current slot is what the flush makes durable, and its other slot holds
//!   the last flushed value, which is the fallback if that sync is torn. So
//!   a write to a flushing block must wait for `flush_end`: it would either
//!   overwrite the slot being synced or the only durable copy.
//! - Writes to other blocks of the extent go ahead. If any lands before the
//!   header is stamped, the header is stamped *dirty* with the new flush
//!   number: the disk must never call an extent clean while it holds data
//!   no flush has synced.
//! - If none did, the header is stamped clean, and from then until
//!   `flush_end` writes to the extent wait: the clean header must be synced
//!   before a later write marks it dirty again.
//! - If a sync fails, the flushing blocks go back to unflushed and the
//!   header is rewritten dirty at its old version.
//!
//! The worker (`downstairs/work.rs`) asks `can_write` before running a
//! write; `write` and `write_zeroes` refuse a write that breaks these rules.
//!
//! # Births and snapshots (format 2)
//!
//! Every slot records its version's *birth*: one more than the region's
//! last flush number when it was written, so the flush that makes it
//! durable (format-1 extents read as birth 0). A snapshot at flush `s` reads, per block, the
//! newest version born at or before `s`. The live slot serves it when its
//! birth is old enough; when a write replaces a flushed version that the
//! newest snapshot still reads, the old version is noted as pending in the
//! extent's saved-version store (saved.rs) and stays in its slot. The next
//! flush copies every pending version of the extent into the saved-version
//! file in one write and syncs it before it syncs and stamps the extent
//! (`FlushHandle::sync`); the replaced slot is reused only after that
//! flush has ended, so the saved copy is durable before the only other copy
//! can go. The write path itself reads and writes nothing more.
//!
//! # File layout (little-endian)
//!
//! ```text
//! 0       64-byte header
//!   0  [8] magic "KELPEXT1"
//!   8  u32 format version (2; 1 is read, and rewritten as 2 at the next
//!          header stamp: its slots have no births, which read as 0)
//!  12  u32 block size
//!  16  u32 extent size (blocks, n)
//!  20  u32 extent id
//!  24  u64 generation number (of the upstairs whose flush last stamped it)
//!  32  u64 flush number
//!  40  u8  dirty (1 = written since the last flush)
//!  41  [19] zero
//!  60  u32 crc32c of bytes 0..60
//! 64      context table: 2n slots of 24 bytes (`SlotCtx`), slot s of block b
//!         at 64 + (s*n + b)*24
//! D       data: 2n blocks, slot s of block b at D + (s*n + b)*bs, where
//!         D = round_up(64 + 48n, 4096)
//! ```
//! The file is created sparse at its full size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kelp_storage::{File, Open, Storage};

use crate::context::{BlockContext, SLOT_DATA, SLOT_ZERO, SlotCtx, block_crc};
use crate::error::{BlockError, Result};
use crate::link::Link;
use crate::saved::{CopyOut, SavedStore, SavedVersion};

pub const EXTENT_MAGIC: &[u8; 8] = b"KELPEXT1";
pub const EXTENT_FORMAT_VERSION: u32 = 2;
/// The flush number a read of the live volume is made at.
pub const LIVE: u64 = u64::MAX;
/// Format versions this release opens.
pub const EXTENT_FORMATS_READ: [u32; 3] = [1, 2, LINKED_FORMAT];
/// The format of a linked clone's extent: a header alone, whose blocks are
/// its origin's at a snapshot (link.rs).
pub const LINKED_FORMAT: u32 = 3;

/// The largest piece of block data written in one call (see
/// `Extent::write_data`).
const DATA_WRITE_CHUNK: usize = 16 * 1024;

/// What a write needs to know beyond its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Birth {
    /// The birth stamped on the new versions.
    pub birth: u64,
    /// The newest snapshot's flush, if any: a flushed version born at or
    /// before it is saved before it is replaced.
    pub newest_snapshot: Option<u64>,
}

impl Birth {
    /// For tests and tools without snapshots.
    pub const NONE: Birth = Birth {
        birth: 0,
        newest_snapshot: None,
    };

    fn keeps(&self, birth: u64) -> bool {
        self.newest_snapshot.is_some_and(|s| birth <= s)
    }
}

/// Whether a version born at `birth` and replaced by one born at `next` is
/// read by one of the snapshots at `snaps` (ascending flush numbers).
pub fn needed(snaps: &[u64], birth: u64, next: u64) -> bool {
    let i = snaps.partition_point(|&s| s < birth);
    snaps.get(i).is_some_and(|&s| s < next)
}
pub const HEADER_LEN: usize = 64;

/// The version of an extent's contents, compared across replicas at
/// activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtentVersion {
    pub generation: u64,
    pub flush: u64,
    pub dirty: bool,
}

impl ExtentVersion {
    /// Orders replicas for repair: higher generation, then higher flush,
    /// then dirty (it may hold writes the others lack).
    pub fn freshness(&self) -> (u64, u64, bool) {
        (self.generation, self.flush, self.dirty)
    }
}

/// A whole extent's contents, used to copy an extent between replicas:
/// the live blocks with their births and the versions snapshots keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentImage {
    pub version: ExtentVersion,
    pub contexts: Vec<BlockContext>,
    pub births: Vec<u64>,
    pub data: Vec<u8>,
    pub saved: Vec<SavedVersion>,
}

#[derive(Debug, Clone, Copy, Default)]
struct BlockState {
    /// The current (newest valid) slot, if the block was ever written.
    cur: Option<(u8, SlotCtx)>,
    /// Written since the last flush: `cur` is then the unflushed slot and
    /// further writes overwrite it, keeping the other (flushed) slot intact.
    unflushed: bool,
    /// Being made durable by the flush under way: writes wait.
    flushing: bool,
}

/// What an extent's flush under way has seen (see "Flushing beside writes").
#[derive(Debug, Clone, Copy)]
struct FlushFlight {
    /// The version before the flush, restored (dirty) if it fails.
    before: ExtentVersion,
    /// A write landed on the extent after the flush began.
    written: bool,
    /// The header is stamped clean but not yet synced: writes wait.
    clean_header: bool,
}

/// A flush's handle on one extent's files, synced outside the region lock.
pub struct FlushHandle {
    file: File,
    path: PathBuf,
    /// The saved-version file's copy-out, when it has versions to copy or
    /// appends to make durable.
    saved: Option<CopyOut>,
}

impl FlushHandle {
    /// After the header stamp: makes the header durable. Only the extent
    /// file changed since `sync` (saved versions appended meanwhile protect
    /// slots reused after the *next* flush, which syncs them).
    pub fn sync_header(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))
    }

    /// Copies out the versions the flush took and makes them durable, then
    /// everything written to the extent file so far.
    pub fn sync(&self) -> Result<()> {
        if let Some(c) = &self.saved {
            c.write_and_sync()?;
        }
        self.file
            .sync_data()
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))
    }
}

pub struct Extent {
    storage: Storage,
    id: u32,
    path: PathBuf,
    /// Shared with writeback requests (writeback.rs), which need no
    /// handle of their own.
    file: Arc<File>,
    block_size: u32,
    n: u32,
    data_off: u64,
    version: ExtentVersion,
    blocks: Vec<BlockState>,
    flight: Option<FlushFlight>,
    read_only: bool,
    /// Format version of the file as opened (1 until the header is
    /// rewritten).
    format: u32,
    saved: Option<SavedStore>,
    /// A linked clone's way to its origin (format 3 only).
    link: Option<Box<Link>>,
    /// Block data written since this extent's writeback was last started
    /// or its last flush began (writeback.rs).
    unstarted: u64,
    /// Shared with this extent's queued writeback request (writeback.rs).
    writeback: Arc<crate::writeback::Flags>,
}

pub fn data_offset(n: u32) -> u64 {
    let end = HEADER_LEN as u64 + 2 * n as u64 * SlotCtx::LEN as u64;
    end.div_ceil(4096) * 4096
}

pub fn file_len(block_size: u32, n: u32) -> u64 {
    data_offset(n) + 2 * n as u64 * block_size as u64
}

fn encode_header(id: u32, block_size: u32, n: u32, v: &ExtentVersion) -> [u8; HEADER_LEN] {
    encode_header_as(EXTENT_FORMAT_VERSION, id, block_size, n, v)
}

fn encode_header_as(
    format: u32,
    id: u32,
    block_size: u32,
    n: u32,
    v: &ExtentVersion,
) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(EXTENT_MAGIC);
    b[8..12].copy_from_slice(&format.to_le_bytes());
    b[12..16].copy_from_slice(&block_size.to_le_bytes());
    b[16..20].copy_from_slice(&n.to_le_bytes());
    b[20..24].copy_from_slice(&id.to_le_bytes());
    b[24..32].copy_from_slice(&v.generation.to_le_bytes());
    b[32..40].copy_from_slice(&v.flush.to_le_bytes());
    b[40] = v.dirty as u8;
    let c = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&c.to_le_bytes());
    b
}

/// Decodes a header. A header whose own CRC fails yields `Ok(None)`: it was
/// torn, and the extent is then treated as dirty at version 0 so that
/// reconciliation replaces it from a healthy replica.
fn decode_header(
    b: &[u8],
    id: u32,
    block_size: u32,
    n: u32,
) -> Result<Option<(ExtentVersion, u32)>> {
    let what = || format!("extent {id} header");
    if b.len() < HEADER_LEN {
        return Err(BlockError::corrupt(what(), "short header"));
    }
    let stored = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
    if crc32c::crc32c(&b[0..60]) != stored {
        return Ok(None);
    }
    if &b[0..8] != EXTENT_MAGIC {
        return Err(BlockError::corrupt(what(), "bad magic"));
    }
    let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let le64 = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let version = le32(8);
    if !EXTENT_FORMATS_READ.contains(&version) {
        return Err(BlockError::UnsupportedVersion {
            what: "extent file",
            version,
        });
    }
    if le32(12) != block_size || le32(16) != n || le32(20) != id {
        return Err(BlockError::corrupt(
            what(),
            format!(
                "geometry {}x{} id {} does not match the region",
                le32(12),
                le32(16),
                le32(20)
            ),
        ));
    }
    Ok(Some((
        ExtentVersion {
            generation: le64(24),
            flush: le64(32),
            dirty: b[40] != 0,
        },
        version,
    )))
}

impl Extent {
    /// Creates an empty extent file (clean, version 0): sparse, or with
    /// every byte allocated if `preallocate` is set.
    pub fn create(
        storage: &Storage,
        path: &Path,
        id: u32,
        block_size: u32,
        n: u32,
        preallocate: bool,
    ) -> Result<Extent> {
        let io = |e| BlockError::io(path.display().to_string(), e);
        let file = storage.open(path, Open::CREATE_NEW).map_err(io)?;
        file.set_len(file_len(block_size, n)).map_err(io)?;
        if preallocate {
            file.allocate(file_len(block_size, n))
                .map_err(|e| BlockError::io(format!("preallocating {}", path.display()), e))?;
        }
        file.write_all_at(
            &encode_header(id, block_size, n, &ExtentVersion::default()),
            0,
        )
        .map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        Extent::open(storage, path, id, block_size, n, false, &[])
    }

    /// Opens an extent and works out each block's current slot (see the
    /// module comment). A read-only open never writes or syncs. `snaps`
    /// are the region's snapshots' flush numbers, ascending: a dirty
    /// extent's open saves any version they need that a crash kept from
    /// reaching the saved-version file.
    pub fn open(
        storage: &Storage,
        path: &Path,
        id: u32,
        block_size: u32,
        n: u32,
        read_only: bool,
        snaps: &[u64],
    ) -> Result<Extent> {
        let io = |e| BlockError::io(path.display().to_string(), e);
        let how = if read_only { Open::READ } else { Open::WRITE };
        let file = storage.open(path, how).map_err(io)?;
        let len = file.len().map_err(io)?;
        let want = file_len(block_size, n);
        if len < data_offset(n) {
            return Err(BlockError::corrupt(
                path.display().to_string(),
                format!("file is {len} bytes, shorter than its header and contexts"),
            ));
        }
        if len < want && !read_only {
            // A truncated tail reads as holes; restore the full length so
            // later writes land where they belong.
            file.set_len(want).map_err(io)?;
        }
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0).map_err(io)?;
        let (version, format) = match decode_header(&header, id, block_size, n)? {
            Some(v) => v,
            None => {
                tracing::warn!(
                    extent = id,
                    "torn extent header; treating it as dirty at version 0"
                );
                let v = ExtentVersion {
                    generation: 0,
                    flush: 0,
                    dirty: true,
                };
                (v, EXTENT_FORMAT_VERSION)
            }
        };
        let mut saved = SavedStore::open(storage, path, id, block_size, n, read_only)?;
        if let Some(s) = saved.as_mut() {
            s.set_source(file.try_clone().map_err(io)?);
        }
        if version.dirty
            && !read_only
            && let Some(s) = saved.as_mut()
        {
            // Like the extent file below: saved copies appended before a
            // restart must be durable before the slots they protect are
            // reused.
            s.sync()?;
        }
        if version.dirty && !read_only {
            // Whatever reached the page cache before a crash becomes durable
            // now, so the slots chosen below stay valid across another crash.
            file.sync_data().map_err(io)?;
        }
        let mut ext = Extent {
            storage: storage.clone(),
            id,
            path: path.to_path_buf(),
            file: Arc::new(file),
            block_size,
            n,
            data_off: data_offset(n),
            version,
            blocks: vec![BlockState::default(); n as usize],
            flight: None,
            read_only,
            format,
            saved,
            link: None,
            unstarted: 0,
            writeback: Arc::default(),
        };
        if format != LINKED_FORMAT {
            ext.load_slots(snaps)?;
        }
        Ok(ext)
    }

    /// Creates a linked clone's extent: a header of format 3 labelled
    /// `version`, whose blocks are its origin's (link.rs). Returns the file,
    /// not yet synced: the caller syncs every extent's at once.
    pub fn create_linked(
        storage: &Storage,
        path: &Path,
        id: u32,
        block_size: u32,
        n: u32,
        version: &ExtentVersion,
    ) -> Result<File> {
        let io = |e| BlockError::io(path.display().to_string(), e);
        let file = storage.open(path, Open::CREATE_NEW).map_err(io)?;
        file.set_len(data_offset(n)).map_err(io)?;
        file.write_all_at(
            &encode_header_as(LINKED_FORMAT, id, block_size, n, version),
            0,
        )
        .map_err(io)?;
        Ok(file)
    }

    /// Gives a linked extent its way to the origin.
    pub(crate) fn attach(&mut self, link: Link) {
        self.link = Some(Box::new(link));
    }

    /// Still reading its origin (link.rs).
    pub fn is_linked(&self) -> bool {
        self.format == LINKED_FORMAT
    }

    fn geometry(&self) -> (u32, u32, u32) {
        (self.id, self.block_size, self.n)
    }

    fn linked(&self) -> Result<&Link> {
        self.link.as_deref().ok_or_else(|| {
            BlockError::corrupt(
                self.path.display().to_string(),
                "a linked clone's extent, but the region names no origin (origin.kelp)",
            )
        })
    }

    /// Copies a linked extent's blocks from its origin into a file of its
    /// own, replacing the header-only one atomically (see `replace`).
    pub fn materialize(&mut self) -> Result<()> {
        if !self.is_linked() {
            return Ok(());
        }
        let image = self.linked()?.image(self.version)?;
        self.replace(&image)?;
        tracing::debug!(extent = self.id, "copied from the clone's origin");
        Ok(())
    }

    fn load_slots(&mut self, snaps: &[u64]) -> Result<()> {
        let n = self.n as usize;
        let mut table = vec![0u8; 2 * n * SlotCtx::LEN];
        self.read_at(&mut table, HEADER_LEN as u64)?;
        let mut buf = vec![0u8; self.block_size as usize];
        // Slots whose context is whole but whose data does not match it
        // (a torn write). Their contexts are erased below: once a flush
        // stamps the extent clean, the next open trusts contexts without
        // reading data, and must not find these.
        let mut torn = Vec::new();
        // Older versions (block, slot, context) that a snapshot needs, in
        // case the crash lost their saved copy.
        let mut keep = Vec::new();
        for b in 0..n {
            let mut cands: Vec<(u8, SlotCtx)> = (0..2u8)
                .filter_map(|s| {
                    let o = (s as usize * n + b) * SlotCtx::LEN;
                    SlotCtx::decode(&table[o..o + SlotCtx::LEN]).map(|c| (s, c))
                })
                .collect();
            cands.sort_by_key(|(_, c)| std::cmp::Reverse(c.seq));
            if self.version.dirty
                && let [(_, new), (s_old, old)] = cands[..]
                && needed(snaps, old.birth, new.birth)
            {
                keep.push((b as u32, s_old, old));
            }
            let mut chosen = None;
            for (s, c) in cands {
                if !self.version.dirty || c.kind == SLOT_ZERO {
                    chosen = Some((s, c));
                    break;
                }
                self.read_at(&mut buf, self.slot_data_off(s, b as u32))?;
                if block_crc(&buf) == c.crc {
                    chosen = Some((s, c));
                    break;
                }
                torn.push((s, b as u32));
            }
            self.blocks[b].cur = chosen;
        }
        if !self.read_only {
            for (s, b) in torn {
                self.write_at(&[0u8; SlotCtx::LEN], self.slot_ctx_off(s, b))?;
            }
            self.recover_saved(keep)?;
        } else {
            // A view beside a running downstairs: versions it has not
            // copied out yet are read from their slots, as it reads them.
            let keep: Vec<_> = keep
                .into_iter()
                .map(|(b, s, c)| (b, c, self.slot_data_off(s, b)))
                .collect();
            if let Some(st) = self.saved.as_mut() {
                for (b, c, off) in keep {
                    if !st.has(b, c.birth) {
                        st.pend(b, c.birth, c.context(), off);
                    }
                }
            }
        }
        Ok(())
    }

    /// Saves the older versions a snapshot needs whose saved copy a crash
    /// lost (see "Births and snapshots"); only slots whose data is whole.
    fn recover_saved(&mut self, keep: Vec<(u32, u8, SlotCtx)>) -> Result<()> {
        let mut buf = vec![0u8; self.block_size as usize];
        let mut added = false;
        for (b, s, c) in keep {
            if self.saved.as_ref().is_some_and(|st| st.has(b, c.birth)) {
                continue;
            }
            if c.kind == SLOT_DATA {
                self.read_at(&mut buf, self.slot_data_off(s, b))?;
                if block_crc(&buf) != c.crc {
                    continue;
                }
            }
            tracing::info!(
                extent = self.id,
                block = b,
                birth = c.birth,
                "re-saving a version a snapshot needs"
            );
            self.saved_store()?.append(b, c.birth, c.context(), &buf)?;
            added = true;
        }
        if added && let Some(st) = self.saved.as_mut() {
            st.sync()?;
        }
        Ok(())
    }

    /// The saved-version file, created on first use.
    fn saved_store(&mut self) -> Result<&mut SavedStore> {
        if let Some(s) = self.saved.take() {
            return Ok(self.saved.insert(s));
        }
        let mut s = SavedStore::create(&self.storage, &self.path, self.id, self.block_size)?;
        s.set_source(self.file.try_clone().map_err(|e| self.io_err(e))?);
        Ok(self.saved.insert(s))
    }

    /// The newest birth of any live block (0 when none was written).
    pub fn max_birth(&self) -> u64 {
        if let Some(l) = &self.link {
            // Not read from the origin: no version is born after its
            // snapshot.
            return l.at();
        }
        self.blocks
            .iter()
            .filter_map(|b| b.cur.map(|(_, c)| c.birth))
            .max()
            .unwrap_or(0)
    }

    fn io_err(&self, e: std::io::Error) -> BlockError {
        BlockError::io(self.path.display().to_string(), e)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        // Reads past the end (a truncated file) see zeros, like a hole.
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.file.write_all_at(buf, off).map_err(|e| self.io_err(e))
    }

    /// Writes block data in pieces of at most `DATA_WRITE_CHUNK` bytes.
    ///
    /// Why: the page cache (ext4 on Linux 6.x) caches a buffered write in
    /// folios as large as the write, and a later small write into a large
    /// folio walks all of that folio's buffer heads (`ext4_block_write_begin`,
    /// and `mpage_process_page_bufs` at writeback). After 1 MiB guest writes,
    /// that walk was 40% of a downstairs worker's CPU under 4 KiB random
    /// writes. Smaller pieces keep the folios small; much smaller ones cost
    /// a syscall each on large writes (docs/benchmarks.md, 2026-12-07).
    fn write_data(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut done = 0;
        for piece in buf.chunks(DATA_WRITE_CHUNK) {
            self.write_at(piece, off + done)?;
            done += piece.len() as u64;
        }
        Ok(())
    }

    fn slot_data_off(&self, slot: u8, b: u32) -> u64 {
        self.data_off + (slot as u64 * self.n as u64 + b as u64) * self.block_size as u64
    }

    fn slot_ctx_off(&self, slot: u8, b: u32) -> u64 {
        HEADER_LEN as u64 + (slot as u64 * self.n as u64 + b as u64) * SlotCtx::LEN as u64
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> ExtentVersion {
        self.version
    }

    fn check_range(&self, first: u32, count: u32) -> Result<()> {
        if first as u64 + count as u64 > self.n as u64 {
            return Err(BlockError::OutOfRange {
                start: first as u64,
                end: first as u64 + count as u64,
                total: self.n as u64,
            });
        }
        Ok(())
    }

    /// Reads `count` blocks from `first` into `out` (count × block size
    /// bytes) and appends their contexts. Data is returned as stored; the
    /// caller checks it against the contexts. The live volume reads as the
    /// newest snapshot there could be (`LIVE`): every live version is born
    /// at or before it.
    pub fn read(
        &self,
        first: u32,
        count: u32,
        out: &mut [u8],
        ctxs: &mut Vec<BlockContext>,
    ) -> Result<()> {
        self.read_at_flush(first, count, LIVE, out, ctxs)
    }

    /// The version of block `b` that a snapshot at flush `at` holds: its
    /// birth and context, None if the block was not written by then. Reads
    /// nothing from disk.
    pub fn version_at(&self, b: u32, at: u64) -> Result<Option<(u64, BlockContext)>> {
        if self.is_linked() {
            return self.linked()?.version(b);
        }
        Ok(self.stored_version_at(b, at))
    }

    /// `version_at` of this extent's own file.
    pub(crate) fn stored_version_at(&self, b: u32, at: u64) -> Option<(u64, BlockContext)> {
        if let Some((_, c)) = self.blocks.get(b as usize)?.cur
            && c.birth <= at
        {
            return Some((c.birth, c.context()));
        }
        let s = self.saved.as_ref().filter(|_| at != LIVE)?.at(b, at)?;
        Some((s.birth, s.context()))
    }

    /// Like `read`, but of the snapshot at flush `at`.
    pub fn read_at_flush(
        &self,
        first: u32,
        count: u32,
        at: u64,
        out: &mut [u8],
        ctxs: &mut Vec<BlockContext>,
    ) -> Result<()> {
        self.check_range(first, count)?;
        let bs = self.block_size as usize;
        if out.len() != count as usize * bs {
            return Err(BlockError::BadLength {
                len: out.len(),
                blocks: count as u64,
                block_size: self.block_size,
            });
        }
        if self.is_linked() {
            // A clone's snapshots and live volume all read its origin's
            // snapshot until the extent is copied.
            return self.linked()?.read(first, count, out, ctxs);
        }
        // The live slot of block b when the snapshot reads it as data.
        let live_data = |b: u32| match self.blocks[b as usize].cur {
            Some((s, c)) if c.birth <= at && c.kind == SLOT_DATA => Some(s),
            _ => None,
        };
        let mut i = 0;
        while i < count {
            let b = first + i;
            if let Some(s) = live_data(b) {
                // Coalesce a run of live data blocks in the same slot: one
                // read, as `read` does.
                let mut j = i + 1;
                while j < count && live_data(first + j) == Some(s) {
                    j += 1;
                }
                self.read_at(
                    &mut out[i as usize * bs..j as usize * bs],
                    self.slot_data_off(s, b),
                )?;
                for k in i..j {
                    if let Some((_, c)) = self.blocks[(first + k) as usize].cur {
                        ctxs.push(c.context());
                    }
                }
                i = j;
                continue;
            }
            let o = &mut out[i as usize * bs..(i as usize + 1) * bs];
            i += 1;
            match self.blocks[b as usize].cur {
                Some((_, c)) if c.birth <= at => {
                    o.fill(0);
                    ctxs.push(c.context());
                }
                // The live volume never reads saved versions.
                _ => match self
                    .saved
                    .as_ref()
                    .filter(|_| at != LIVE)
                    .and_then(|st| st.at(b, at))
                {
                    Some(sv) => {
                        if let Some(st) = &self.saved {
                            st.read(&sv, o)?;
                        }
                        ctxs.push(sv.context());
                    }
                    None => {
                        o.fill(0);
                        ctxs.push(BlockContext::Unwritten);
                    }
                },
            }
        }
        Ok(())
    }

    /// The births of the live blocks (0 for never written).
    pub fn births(&self) -> Result<Vec<u64>> {
        if self.is_linked() {
            return self.linked()?.births();
        }
        Ok(self
            .blocks
            .iter()
            .map(|b| b.cur.map_or(0, |(_, c)| c.birth))
            .collect())
    }

    /// Bytes held by saved versions on disk.
    pub fn saved_bytes(&self) -> u64 {
        self.saved.as_ref().map_or(0, |s| s.len())
    }

    /// Format version of the file as opened.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// Drops the saved versions none of the snapshots at `snaps` (flush
    /// numbers, ascending) reads any more. Returns the bytes freed.
    pub fn prune_saved(&mut self, snaps: &[u64]) -> Result<u64> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let Some(store) = self.saved.as_mut() else {
            return Ok(0);
        };
        let blocks = &self.blocks;
        // Each saved version is read by the snapshots from its birth up to
        // (not including) the birth of the next version of its block: the
        // next saved one, or else the live one.
        let mut next: std::collections::HashMap<(u32, u64), u64> = Default::default();
        let mut prev: Option<(u32, u64)> = None;
        for (b, sv) in store.iter() {
            if let Some((pb, pbirth)) = prev
                && pb == b
            {
                next.insert((pb, pbirth), sv.birth);
            }
            prev = Some((b, sv.birth));
        }
        let live_birth = |b: u32| {
            blocks
                .get(b as usize)
                .and_then(|st| st.cur)
                .map_or(u64::MAX, |(_, c)| c.birth)
        };
        let freed = store.retain(|b, sv| {
            let until = next
                .get(&(b, sv.birth))
                .copied()
                .unwrap_or_else(|| live_birth(b));
            needed(snaps, sv.birth, until)
        })?;
        if store.is_empty() {
            let before = store.len();
            if let Some(st) = self.saved.take() {
                st.remove()?;
            }
            return Ok(freed + before);
        }
        Ok(freed)
    }

    /// Notes block `b`'s flushed version for the next flush to save before
    /// a write replaces it, if the newest snapshot reads it (see "Births
    /// and snapshots"). Its slot is not reused before that flush ends.
    fn save_before_write(&mut self, b: u32, birth: Birth) -> Result<()> {
        let st = self.blocks[b as usize];
        let Some((slot, c)) = st.cur else {
            return Ok(());
        };
        if st.unflushed || !birth.keeps(c.birth) || c.birth == birth.birth {
            return Ok(());
        }
        if self.saved.as_ref().is_some_and(|s| s.has(b, c.birth)) {
            return Ok(());
        }
        let off = self.slot_data_off(slot, b);
        self.saved_store()?.pend(b, c.birth, c.context(), off);
        Ok(())
    }

    /// Writes one block's version back with its original birth (rollback).
    pub(crate) fn restore(
        &mut self,
        b: u32,
        ctx: BlockContext,
        data: &[u8],
        birth: Birth,
    ) -> Result<()> {
        match ctx {
            BlockContext::Data(crc) => self.write(b, data, &[crc], birth),
            BlockContext::Zero | BlockContext::Unwritten => self.zero_blocks(b, 1, birth, true),
        }
    }

    /// Marks the extent dirty on disk (and fsyncs) before its first write
    /// since the last flush.
    pub(crate) fn ensure_dirty(&mut self) -> Result<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.materialize()?;
        if !self.version.dirty {
            // Remembered as dirty only once it is durably so.
            let v = ExtentVersion {
                dirty: true,
                ..self.version
            };
            let h = encode_header(self.id, self.block_size, self.n, &v);
            self.write_at(&h, 0)?;
            self.file.sync_data().map_err(|e| self.io_err(e))?;
            self.version = v;
        }
        Ok(())
    }

    /// Dirty on disk already (the next write needs no header update).
    pub(crate) fn is_dirty(&self) -> bool {
        self.version.dirty
    }

    fn write_header(&self) -> Result<()> {
        let h = encode_header(self.id, self.block_size, self.n, &self.version);
        self.write_at(&h, 0)
    }

    /// Picks the slot a new write of block `b` goes to, and its sequence.
    fn target(&self, b: u32) -> (u8, u64) {
        let st = &self.blocks[b as usize];
        match st.cur {
            None => (0, 1),
            Some((s, c)) if st.unflushed => (s, c.seq + 1),
            Some((s, c)) => (1 - s, c.seq + 1),
        }
    }

    /// Writes blocks from `first`; `crcs` holds each block's CRC32-C, which
    /// must match the data (checked here: nothing unverified is stored).
    pub fn write(&mut self, first: u32, data: &[u8], crcs: &[u32], birth: Birth) -> Result<()> {
        let bs = self.block_size as usize;
        let count = crcs.len() as u32;
        self.check_range(first, count)?;
        if data.len() != crcs.len() * bs {
            return Err(BlockError::BadLength {
                len: data.len(),
                blocks: crcs.len() as u64,
                block_size: self.block_size,
            });
        }
        for (i, (blk, &crc)) in data.chunks_exact(bs).zip(crcs).enumerate() {
            let computed = block_crc(blk);
            if computed != crc {
                return Err(BlockError::ChecksumMismatch {
                    block: first as u64 + i as u64,
                    stored: crc,
                    computed,
                });
            }
        }
        if count == 0 {
            return Ok(());
        }
        self.check_writable(first, count)?;
        self.ensure_dirty()?;
        for b in first..first + count {
            self.save_before_write(b, birth)?;
        }
        let targets: Vec<(u8, u64)> = (0..count).map(|i| self.target(first + i)).collect();
        // Data and contexts are written in runs of consecutive blocks that
        // go to the same slot (contiguous on disk). Order between data and
        // context does not matter: each slot is validated on its own.
        let mut i = 0usize;
        while i < count as usize {
            let s = targets[i].0;
            let mut j = i + 1;
            while j < count as usize && targets[j].0 == s {
                j += 1;
            }
            let b0 = first + i as u32;
            self.write_data(&data[i * bs..j * bs], self.slot_data_off(s, b0))?;
            let mut ctxbuf = Vec::with_capacity((j - i) * SlotCtx::LEN);
            for k in i..j {
                let c = SlotCtx {
                    seq: targets[k].1,
                    crc: crcs[k],
                    kind: SLOT_DATA,
                    birth: birth.birth,
                };
                ctxbuf.extend_from_slice(&c.encode());
            }
            self.write_at(&ctxbuf, self.slot_ctx_off(s, b0))?;
            i = j;
        }
        for (k, &(s, seq)) in targets.iter().enumerate() {
            self.blocks[first as usize + k] = BlockState {
                cur: Some((
                    s,
                    SlotCtx {
                        seq,
                        crc: crcs[k],
                        kind: SLOT_DATA,
                        birth: birth.birth,
                    },
                )),
                unflushed: true,
                flushing: false,
            };
        }
        self.unstarted += data.len() as u64;
        if self.unstarted >= crate::writeback::WRITEBACK_AFTER {
            crate::writeback::start(self.writeback_request().into_iter().collect());
        }
        Ok(())
    }

    /// Block data written since this extent's writeback was last started
    /// or its last flush began.
    pub(crate) fn unstarted(&self) -> u64 {
        self.unstarted
    }

    /// A request to start writing this extent's data area back, if it took
    /// block data since it last did and none is queued. Not while its flush
    /// is under way: its fdatasync would wait for the new writeback too, so
    /// the count waits for the flush's end.
    pub(crate) fn writeback_request(&mut self) -> Option<crate::writeback::Request> {
        if self.unstarted == 0 || self.flight.is_some() {
            return None;
        }
        self.unstarted = 0;
        crate::writeback::request(&self.file, self.data_off, &self.writeback)
    }

    /// Zeroes blocks (WRITE_ZEROES and TRIM): a zero context, no data
    /// written. Blocks that already read as zeros (never written, or
    /// zeroed) stay as they are, but the extent is marked dirty all the
    /// same: whether a job dirties an extent depends on the job alone,
    /// never on what this replica holds. A replica that replays jobs it
    /// had already run (their acknowledgements lost) may hold zeros where
    /// the others still hold data; if the zeroing left it clean here and
    /// dirty there, the next flush would stamp the extent on the others
    /// only, and the replicas' version labels would part for good.
    pub fn write_zeroes(&mut self, first: u32, count: u32, birth: Birth) -> Result<()> {
        self.zero_blocks(first, count, birth, false)
    }

    /// `write_zeroes`; with `exact`, blocks already zero are rewritten too
    /// so that every block ends with `birth` (rollback restores births).
    fn zero_blocks(&mut self, first: u32, count: u32, birth: Birth, exact: bool) -> Result<()> {
        self.check_range(first, count)?;
        if count == 0 {
            return Ok(());
        }
        self.check_writable(first, count)?;
        self.ensure_dirty()?;
        let todo: Vec<u32> = (first..first + count)
            .filter(|&b| match self.blocks[b as usize].cur {
                Some((_, c)) => c.kind != SLOT_ZERO || (exact && c.birth != birth.birth),
                None => exact,
            })
            .collect();
        for b in todo {
            self.save_before_write(b, birth)?;
            let (s, seq) = self.target(b);
            let c = SlotCtx {
                seq,
                crc: 0,
                kind: SLOT_ZERO,
                birth: birth.birth,
            };
            self.write_at(&c.encode(), self.slot_ctx_off(s, b))?;
            self.blocks[b as usize] = BlockState {
                cur: Some((s, c)),
                unflushed: true,
                flushing: false,
            };
        }
        Ok(())
    }

    /// Makes everything written durable and stamps the extent clean with
    /// (flush, generation). A clean extent is left alone.
    pub fn flush(&mut self, flush: u64, generation: u64) -> Result<()> {
        self.flush_whole(false, flush, generation)
    }

    /// Like `flush`, but stamps even a clean extent (reconciliation uses it
    /// to bring a source extent to the agreed version).
    pub fn stamp(&mut self, flush: u64, generation: u64) -> Result<()> {
        self.flush_whole(true, flush, generation)
    }

    /// All the steps of a flush in turn, with nothing written in between.
    fn flush_whole(&mut self, force: bool, flush: u64, generation: u64) -> Result<()> {
        let Some(handle) = self.flush_begin(force)? else {
            return Ok(());
        };
        // Data and contexts first, then the header: a crash between the two
        // syncs leaves the extent dirty, which is safe.
        let r = handle
            .sync()
            .and_then(|_| self.flush_header(flush, generation))
            .and_then(|_| handle.sync_header());
        let end = self.flush_end(r.is_ok());
        r.and(end)
    }

    /// Starts a flush: every unflushed block becomes flushing. Returns the
    /// handle to sync, or None if the extent is clean and `force` is unset.
    pub(crate) fn flush_begin(&mut self, force: bool) -> Result<Option<FlushHandle>> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if self.flight.is_some() {
            return Err(BlockError::protocol(format!(
                "extent {}: a flush is already under way",
                self.id
            )));
        }
        if !self.version.dirty && !force {
            return Ok(None);
        }
        self.materialize()?;
        let file = self.file.try_clone().map_err(|e| self.io_err(e))?;
        let saved = match self.saved.as_mut() {
            Some(s) => s.copy_out()?,
            None => None,
        };
        for b in &mut self.blocks {
            b.flushing = b.unflushed;
            b.unflushed = false;
        }
        self.unstarted = 0;
        self.writeback.set_flushing(true);
        self.flight = Some(FlushFlight {
            before: self.version,
            written: false,
            clean_header: false,
        });
        Ok(Some(FlushHandle {
            file,
            path: self.path.clone(),
            saved,
        }))
    }

    /// Stamps the header with (flush, generation) once the flushing blocks
    /// are synced: clean, unless a write landed since `flush_begin`.
    pub(crate) fn flush_header(&mut self, flush: u64, generation: u64) -> Result<()> {
        let Some(flight) = self.flight.as_mut() else {
            return Err(BlockError::protocol(format!(
                "extent {}: no flush under way",
                self.id
            )));
        };
        flight.clean_header = !flight.written;
        self.version = ExtentVersion {
            generation,
            flush,
            dirty: flight.written,
        };
        self.write_header()
    }

    /// Ends the flush. On success the flushing blocks are now the flushed
    /// ones; on failure they go back to unflushed and the header is
    /// rewritten dirty at the version it had before.
    pub(crate) fn flush_end(&mut self, ok: bool) -> Result<()> {
        let Some(flight) = self.flight.take() else {
            return Ok(());
        };
        self.writeback.set_flushing(false);
        for b in &mut self.blocks {
            if b.flushing && !ok {
                b.unflushed = true;
            }
            b.flushing = false;
        }
        if let Some(s) = self.saved.as_mut() {
            s.copy_done(ok);
        }
        if ok {
            self.format = EXTENT_FORMAT_VERSION;
            return Ok(());
        }
        self.version = ExtentVersion {
            dirty: true,
            ..flight.before
        };
        self.write_header()
    }

    /// A flush of this extent is under way.
    pub(crate) fn in_flush(&self) -> bool {
        self.flight.is_some()
    }

    /// Whether a write to `count` blocks from `first` may run now (see
    /// "Flushing beside writes"). Out-of-range writes say yes and fail later.
    pub(crate) fn can_write(&self, first: u32, count: u32) -> bool {
        match self.flight {
            None => true,
            Some(f) if f.clean_header => false,
            Some(_) => self
                .blocks
                .get(first as usize..(first as usize).saturating_add(count as usize))
                .is_none_or(|bs| bs.iter().all(|b| !b.flushing)),
        }
    }

    /// Refuses a write that `can_write` forbids, and notes that the flush
    /// under way (if any) saw a write.
    fn check_writable(&mut self, first: u32, count: u32) -> Result<()> {
        if !self.can_write(first, count) {
            return Err(BlockError::protocol(format!(
                "extent {}: blocks {first}..{} are being flushed",
                self.id,
                first + count
            )));
        }
        if let Some(f) = self.flight.as_mut() {
            f.written = true;
        }
        Ok(())
    }

    /// The whole extent, for copying to another replica.
    pub fn image(&self) -> Result<ExtentImage> {
        if self.is_linked() {
            return self.linked()?.image(self.version);
        }
        let mut data = vec![0u8; self.n as usize * self.block_size as usize];
        let mut contexts = Vec::with_capacity(self.n as usize);
        self.read(0, self.n, &mut data, &mut contexts)?;
        let mut saved = Vec::new();
        if let Some(st) = &self.saved {
            for (block, sv) in st.iter() {
                let mut d = vec![0u8; self.block_size as usize];
                st.read(sv, &mut d)?;
                if sv.kind != SLOT_DATA {
                    d.clear();
                }
                saved.push(SavedVersion {
                    block,
                    birth: sv.birth,
                    context: sv.context(),
                    data: d,
                });
            }
        }
        Ok(ExtentImage {
            version: self.version,
            contexts,
            births: self.births()?,
            data,
            saved,
        })
    }

    /// Replaces this extent with `image`: a new file is written beside it,
    /// fsynced and renamed over the old one (then the directory fsynced), so
    /// a crash leaves either the old or the new extent whole.
    pub fn replace(&mut self, image: &ExtentImage) -> Result<()> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let (id, bs, n) = self.geometry();
        check_image(id, bs, n, image)?;
        let st = self.storage.clone();
        // The saved versions first: a crash before the extent's rename
        // leaves the old extent, whose version still differs from the
        // source's, so the next reconciliation repairs it again.
        self.saved = None;
        if image.saved.is_empty() {
            let p = crate::saved::saved_path(&self.path);
            st.remove_if_exists(&p)
                .and_then(|_| st.sync_parent(&p))
                .map_err(|e| BlockError::io(p.display().to_string(), e))?;
        } else {
            let from = self.path.with_extension("snap-replace");
            let mut store = SavedStore::create_at(&st, &from, self.id, self.block_size)?;
            for sv in &image.saved {
                store.append(sv.block, sv.birth, sv.context, &sv.data)?;
            }
            store.sync()?;
            drop(store);
            let to = crate::saved::saved_path(&self.path);
            st.rename(&from, &to)
                .and_then(|_| st.sync_parent(&to))
                .map_err(|e| BlockError::io(to.display().to_string(), e))?;
        }
        let tmp = self.path.with_extension("replace");
        write_image(&st, &tmp, (id, bs, n), image)?;
        self.install(&tmp)
    }

    /// Writes the copy of a linked extent beside it (`<id>.fill`), without
    /// touching the extent: the slow half of a background fill, run
    /// without the region lock. `install_fill` puts it in place.
    pub(crate) fn stage_fill(
        storage: &Storage,
        path: &Path,
        (id, bs, n): (u32, u32, u32),
        image: &ExtentImage,
    ) -> Result<PathBuf> {
        if !image.saved.is_empty() {
            return Err(BlockError::protocol(
                "a linked extent has no saved versions",
            ));
        }
        check_image(id, bs, n, image)?;
        let tmp = path.with_extension("fill");
        write_image(storage, &tmp, (id, bs, n), image)?;
        Ok(tmp)
    }

    /// Puts a staged copy in place, if this extent is still linked (a
    /// write may have copied it meanwhile; then the stage is dropped).
    /// Returns whether it was installed.
    pub(crate) fn install_fill(&mut self, staged: &Path) -> Result<bool> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if !self.is_linked() {
            self.storage
                .remove_if_exists(staged)
                .map_err(|e| BlockError::io(staged.display().to_string(), e))?;
            return Ok(false);
        }
        self.install(staged)?;
        Ok(true)
    }

    /// Renames a written and fsynced file over this extent's, fsyncs the
    /// directory and opens the result.
    fn install(&mut self, tmp: &Path) -> Result<()> {
        let st = self.storage.clone();
        st.rename(tmp, &self.path)
            .map_err(|e| BlockError::io(tmp.display().to_string(), e))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(&st, dir)?;
        }
        *self = Extent::open(
            &st,
            &self.path,
            self.id,
            self.block_size,
            self.n,
            false,
            &[],
        )?;
        Ok(())
    }
}

/// Checks an extent image's lengths, and every block and saved version
/// against its context: nothing unverified is stored.
fn check_image(id: u32, block_size: u32, n: u32, image: &ExtentImage) -> Result<()> {
    let bs = block_size as usize;
    let n = n as usize;
    if image.contexts.len() != n || image.births.len() != n || image.data.len() != n * bs {
        return Err(BlockError::BadLength {
            len: image.data.len(),
            blocks: n as u64,
            block_size,
        });
    }
    for (i, (ctx, blk)) in image
        .contexts
        .iter()
        .zip(image.data.chunks_exact(bs))
        .enumerate()
    {
        if !ctx.verify(blk) {
            return Err(BlockError::ChecksumMismatch {
                block: i as u64,
                stored: match ctx {
                    BlockContext::Data(c) => *c,
                    _ => 0,
                },
                computed: block_crc(blk),
            });
        }
    }
    for sv in &image.saved {
        let ok = sv.block < n as u32
            && match sv.context {
                BlockContext::Data(_) => sv.data.len() == bs && sv.context.verify(&sv.data),
                BlockContext::Zero => sv.data.is_empty(),
                BlockContext::Unwritten => false,
            };
        if !ok {
            return Err(BlockError::corrupt(
                format!("extent {id} image"),
                format!("saved version of block {} does not check", sv.block),
            ));
        }
    }
    Ok(())
}

/// Writes `image` as a whole format-2 extent file at `tmp` (every block in
/// slot 0) and fsyncs it.
fn write_image(
    st: &Storage,
    tmp: &Path,
    (id, block_size, n): (u32, u32, u32),
    image: &ExtentImage,
) -> Result<()> {
    let _ = st.remove_if_exists(tmp);
    let io = |e| BlockError::io(tmp.display().to_string(), e);
    let file = st.open(tmp, Open::CREATE_NEW).map_err(io)?;
    file.set_len(file_len(block_size, n)).map_err(io)?;
    file.write_all_at(&encode_header(id, block_size, n, &image.version), 0)
        .map_err(io)?;
    let mut table = vec![0u8; n as usize * SlotCtx::LEN];
    for (b, (ctx, &birth)) in image.contexts.iter().zip(&image.births).enumerate() {
        let slot = match ctx {
            BlockContext::Unwritten => continue,
            BlockContext::Zero => SlotCtx {
                seq: 1,
                crc: 0,
                kind: SLOT_ZERO,
                birth,
            },
            BlockContext::Data(c) => SlotCtx {
                seq: 1,
                crc: *c,
                kind: SLOT_DATA,
                birth,
            },
        };
        table[b * SlotCtx::LEN..(b + 1) * SlotCtx::LEN].copy_from_slice(&slot.encode());
    }
    file.write_all_at(&table, HEADER_LEN as u64).map_err(io)?;
    file.write_all_at(&image.data, data_offset(n)).map_err(io)?;
    file.sync_all().map_err(io)
}

/// fsyncs `dir`, making creates and renames in it durable.
pub fn sync_dir(storage: &Storage, dir: &Path) -> Result<()> {
    storage
        .sync_dir(dir)
        .map_err(|e| BlockError::io(dir.display().to_string(), e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn crcs(data: &[u8], bs: usize) -> Vec<u32> {
        data.chunks_exact(bs).map(block_crc).collect()
    }

    #[test]
    fn header_golden_bytes() {
        let v = ExtentVersion {
            generation: 3,
            flush: 9,
            dirty: true,
        };
        let h = encode_header(5, 512, 8, &v);
        assert_eq!(&h[0..8], b"KELPEXT1");
        assert_eq!(&h[8..24], &[2, 0, 0, 0, 0, 2, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(h[24], 3);
        assert_eq!(h[32], 9);
        assert_eq!(h[40], 1);
        assert_eq!(decode_header(&h, 5, 512, 8).unwrap(), Some((v, 2)));
        let mut torn = h;
        torn[30] = 1;
        assert_eq!(decode_header(&torn, 5, 512, 8).unwrap(), None);
        assert!(decode_header(&h, 6, 512, 8).is_err());
    }

    #[test]
    fn write_flush_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e");
        let mut e = Extent::create(&Storage::real(), &p, 0, 512, 8, false).unwrap();
        let data = vec![7u8; 1024];
        e.write(2, &data, &crcs(&data, 512), Birth::NONE).unwrap();
        assert!(e.version().dirty);
        e.flush(4, 2).unwrap();
        drop(e);
        let e = Extent::open(&Storage::real(), &p, 0, 512, 8, true, &[]).unwrap();
        assert_eq!(
            e.version(),
            ExtentVersion {
                generation: 2,
                flush: 4,
                dirty: false
            }
        );
        let mut out = vec![1u8; 512 * 4];
        let mut ctx = vec![];
        e.read(1, 4, &mut out, &mut ctx).unwrap();
        assert_eq!(&out[512..1536], &data[..]);
        assert!(out[..512].iter().all(|&b| b == 0));
        assert_eq!(ctx[0], BlockContext::Unwritten);
        assert_eq!(ctx[1], BlockContext::Data(block_crc(&data[..512])));
    }

    /// Pages of `path` from `from` to its end that are dirty in the page
    /// cache, by `cachestat` (Linux 6.5 and later; libc has no constant for
    /// it on x86_64, and its number is 451 on every architecture). None
    /// where the kernel or the file system cannot tell.
    pub(crate) fn dirty_pages(path: &Path, from: u64) -> Option<u64> {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            cache: u64,
            dirty: u64,
            writeback: u64,
            evicted: u64,
            recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let f = std::fs::File::open(path).unwrap();
        let range = Range { off: from, len: 0 };
        let mut st = Stat::default();
        // SAFETY: both pointers are to live `repr(C)` structs laid out as
        // the kernel's `cachestat_range` and `cachestat`.
        let rc = unsafe { libc::syscall(SYS_CACHESTAT, f.as_raw_fd(), &range, &mut st, 0) };
        if rc != 0 {
            eprintln!("cachestat: {}", std::io::Error::last_os_error());
            return None;
        }
        Some(st.dirty)
    }

    /// Once an extent has taken `WRITEBACK_AFTER` bytes of block data, its
    /// data starts going to disk before any flush asks (writeback.rs).
    #[test]
    fn writeback_starts_once_enough_is_written() {
        let d = tempfile::tempdir().unwrap();
        let bs = 4096usize;
        let n = 256u32;
        let path = d.path().join("e");
        let mut e = Extent::create(&Storage::real(), &path, 0, bs as u32, n, false).unwrap();
        let before = crate::writeback::started();
        let half = vec![5u8; crate::writeback::WRITEBACK_AFTER as usize / 2];
        e.write(0, &half, &crcs(&half, bs), Birth::NONE).unwrap();
        let data_off = data_offset(n);
        // Where the page cache can be watched (not tmpfs or overlayfs, a
        // kernel with cachestat), the data is dirty until writeback starts.
        let watch = dirty_pages(&path, data_off).is_some_and(|d| d > 0);
        if !watch {
            eprintln!(
                "the page cache of {} cannot be watched here; checking requests only",
                path.display()
            );
        }
        // The second write, at a distance, passes the mark.
        e.write(128, &half, &crcs(&half, bs), Birth::NONE).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::writeback::started() == before
            || (watch && dirty_pages(&path, data_off).unwrap_or(0) > 0)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no writeback started for an extent written past the mark within 10 s \
                 (started {} -> {}, dirty pages {:?})",
                before,
                crate::writeback::started(),
                dirty_pages(&path, data_off)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Whatever writeback did, the flush and the data are as before.
        e.flush(1, 1).unwrap();
        let mut out = vec![0u8; half.len()];
        let mut ctx = vec![];
        e.read(128, (half.len() / bs) as u32, &mut out, &mut ctx)
            .unwrap();
        assert_eq!(out, half);
    }

    /// A flush starts the count again, nothing starts while the extent's
    /// own flush is under way (its fdatasync would wait for it), and the
    /// first write after the flush that finds the count past the mark
    /// starts it.
    #[test]
    fn writeback_waits_for_the_flush_under_way() {
        let d = tempfile::tempdir().unwrap();
        let bs = 4096usize;
        let mut e = Extent::create(
            &Storage::real(),
            &d.path().join("e"),
            0,
            bs as u32,
            256,
            false,
        )
        .unwrap();
        let mark = crate::writeback::WRITEBACK_AFTER;
        let one = vec![6u8; bs];
        e.write(0, &one, &crcs(&one, bs), Birth::NONE).unwrap();
        assert_eq!(e.unstarted, bs as u64);
        let handle = e.flush_begin(false).unwrap().unwrap();
        assert_eq!(e.unstarted, 0, "a flush did not start the count again");
        let more = vec![4u8; mark as usize + bs];
        e.write(16, &more, &crcs(&more, bs), Birth::NONE).unwrap();
        assert_eq!(e.unstarted, mark + bs as u64, "started during the flush");
        handle.sync().unwrap();
        e.flush_header(1, 1).unwrap();
        handle.sync_header().unwrap();
        e.flush_end(true).unwrap();
        e.write(200, &one, &crcs(&one, bs), Birth::NONE).unwrap();
        assert_eq!(e.unstarted, 0, "not started after the flush ended");
    }

    /// A write longer than one data piece lands whole, in both slots, and
    /// survives a reopen.
    #[test]
    fn write_larger_than_a_piece() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e");
        let n = (3 * DATA_WRITE_CHUNK / 512 + 5) as u32;
        let mut e = Extent::create(&Storage::real(), &p, 0, 512, n, false).unwrap();
        let data: Vec<u8> = (0..(n as usize - 2) * 512)
            .map(|i| (i / 512) as u8)
            .collect();
        e.write(1, &data, &crcs(&data, 512), Birth::NONE).unwrap();
        e.flush(1, 1).unwrap();
        // The second write goes to the other slot of every block.
        let again: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
        e.write(1, &again, &crcs(&again, 512), Birth::NONE).unwrap();
        e.flush(2, 1).unwrap();
        drop(e);
        let e = Extent::open(&Storage::real(), &p, 0, 512, n, true, &[]).unwrap();
        let mut out = vec![0u8; again.len()];
        let mut ctx = vec![];
        e.read(1, n - 2, &mut out, &mut ctx).unwrap();
        assert!(out == again, "data read back differs");
    }

    #[test]
    fn zeroing_blocks_already_zero_dirties_the_extent() {
        // Whether a job dirties an extent must not depend on what the
        // replica holds (see `write_zeroes`): never-written blocks and
        // zeroed ones alike.
        let st = Storage::new(kelp_storage::Memory::new());
        let mut e = Extent::create(&st, Path::new("e"), 0, 512, 4, false).unwrap();
        e.write_zeroes(0, 2, Birth::NONE).unwrap();
        assert!(e.version().dirty, "never-written blocks");
        e.flush(1, 1).unwrap();
        assert!(!e.version().dirty);
        e.write_zeroes(0, 1, Birth::NONE).unwrap();
        assert!(e.version().dirty, "blocks zeroed before");
        e.flush(2, 1).unwrap();
        e.write_zeroes(0, 0, Birth::NONE).unwrap();
        assert!(!e.version().dirty, "an empty range is no job");
    }

    #[test]
    fn bad_crc_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut e = Extent::create(&Storage::real(), &d.path().join("e"), 0, 512, 4, true).unwrap();
        let data = vec![7u8; 512];
        assert!(matches!(
            e.write(0, &data, &[1], Birth::NONE),
            Err(BlockError::ChecksumMismatch { .. })
        ));
    }
}
