//! An extent's saved versions: the old contents of blocks that a snapshot
//! still needs after the live volume wrote over them (copy-on-write).
//!
//! A block's live version lives in one of its two slots (extent.rs). When
//! a write replaces a flushed version that some snapshot still reads (its
//! birth is at or before that snapshot's flush), the old version is not
//! copied at once: it stays in its slot, which no write may reuse before
//! the *next* flush has ended, and the store only notes it as *pending*
//! (`pend`): an entry of the index that reads from the extent file.
//!
//! # Copy-out at flush time
//!
//! The next flush takes every pending version (`copy_out`, under the region
//! lock, when it begins) and, on its flusher thread, copies them into this
//! file in one write and syncs it (`CopyOut::write_and_sync`) before it
//! syncs and stamps the extent. The slots they come from hold still all
//! the while: their blocks are being flushed, so writes to them wait for
//! the flush to end. When it ends well the entries read from this file
//! (`copy_done`); when it fails they stay pending, for the next flush. So
//! the saved copy is durable before the only other copy can go, as when
//! each write copied its block out itself, but the serial write path pays
//! for a note in memory instead of a read and a buffered append (a fresh
//! page-cache page per block, partly zeroed: most of the copy-on-write
//! cost; docs/benchmarks.md, issue 16).
//!
//! A crash before that flush leaves the old version in its slot and the
//! extent dirty, and a dirty extent's open saves it again if the copy here
//! was lost or never made (`Extent::open`); a read-only open (a send
//! beside a running downstairs) notes it as pending instead, so it reads
//! what the live process would.
//!
//! # File layout (`extents/<id:08x>.snap`, little-endian)
//!
//! ```text
//! 0   32-byte header
//!   0  [8] magic "KELPSAV1"
//!   8  u32 format version (1)
//!  12  u32 extent id
//!  16  u32 block size
//!  20  [8] zero
//!  28  u32 crc32c of bytes 0..28
//! 32  records, appended:
//!   0  u32 block (within the extent)
//!   4  u8  kind (1 data, 2 zero)
//!   5  [3] zero
//!   8  u64 birth of the saved version
//!  16  u32 data crc32c (0 for zero)
//!  20  u32 crc32c of bytes 0..20
//!  24  block-size bytes of data (data records only)
//! ```
//! At open the records are read in order; the first that fails its own
//! check ends the file (a torn append) and, on a writable open, the tail is
//! cut off. Dropping records a deleted snapshot held rewrites the file
//! beside itself and renames it over (`SavedStore::retain`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kelp_storage::{File, Open, Storage};

use crate::context::{BlockContext, SLOT_DATA, SLOT_ZERO, block_crc};
use crate::error::{BlockError, Result};

pub const SAVED_MAGIC: &[u8; 8] = b"KELPSAV1";
pub const SAVED_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 32;
const RECORD_HEAD: usize = 24;

/// One saved version of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub birth: u64,
    pub kind: u8,
    pub crc: u32,
    /// Where its data is (data records only).
    at: At,
}

/// Where a saved version's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In this file, from this offset.
    File(u64),
    /// Pending: still in the extent file's slot at this offset, to be
    /// copied out by the next flush.
    Slot(u64),
}

impl Saved {
    pub fn context(&self) -> BlockContext {
        if self.kind == SLOT_ZERO {
            BlockContext::Zero
        } else {
            BlockContext::Data(self.crc)
        }
    }
}

/// A saved version with its bytes, as copied between replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedVersion {
    pub block: u32,
    pub birth: u64,
    pub context: BlockContext,
    /// One block of data for a data context, empty otherwise.
    pub data: Vec<u8>,
}

pub struct SavedStore {
    storage: Storage,
    path: PathBuf,
    file: File,
    id: u32,
    block_size: u32,
    end: u64,
    /// Appended since the last sync.
    unsynced: bool,
    /// Per block, its saved versions by ascending birth.
    index: BTreeMap<u32, Vec<Saved>>,
    /// A record being appended (kept to spare an allocation per append).
    scratch: Vec<u8>,
    /// The extent file, which pending versions are read from.
    source: Option<File>,
    /// Pending versions (block, version), in the order they were noted.
    pending: Vec<(u32, Saved)>,
    /// The versions a flush under way is copying out, and where.
    copying: Option<(u64, Vec<(u32, Saved)>)>,
}

/// A flush's copy-out of pending versions, run outside the region lock
/// (see "Copy-out at flush time").
pub struct CopyOut {
    file: File,
    source: Option<File>,
    path: PathBuf,
    block_size: u32,
    /// Where the records go: the end of the file when the flush began.
    at: u64,
    records: Vec<(u32, Saved)>,
}

impl CopyOut {
    /// Writes the records (one write) and syncs the file, with whatever
    /// was appended before.
    pub fn write_and_sync(&self) -> Result<()> {
        let io = |e| BlockError::io(self.path.display().to_string(), e);
        if !self.records.is_empty() {
            let bs = self.block_size as usize;
            let len: usize = self
                .records
                .iter()
                .map(|(_, s)| record_len(s.kind, bs))
                .sum();
            let mut buf = Vec::with_capacity(len);
            for (b, s) in &self.records {
                buf.extend_from_slice(&encode_record(*b, s.kind, s.birth, s.crc));
                if let (SLOT_DATA, At::Slot(off)) = (s.kind, s.at) {
                    let Some(src) = &self.source else {
                        return Err(BlockError::protocol("pending version without its extent"));
                    };
                    let from = buf.len();
                    buf.resize(from + bs, 0);
                    src.read_exact_at(&mut buf[from..], off).map_err(io)?;
                }
            }
            self.file.write_all_at(&buf, self.at).map_err(io)?;
        }
        self.file.sync_data().map_err(io)
    }
}

fn record_len(kind: u8, block_size: usize) -> usize {
    RECORD_HEAD + if kind == SLOT_DATA { block_size } else { 0 }
}

pub fn saved_path(extent_path: &Path) -> PathBuf {
    extent_path.with_extension("snap")
}

fn encode_header(id: u32, block_size: u32) -> [u8; HEADER_LEN as usize] {
    let mut b = [0u8; HEADER_LEN as usize];
    b[0..8].copy_from_slice(SAVED_MAGIC);
    b[8..12].copy_from_slice(&SAVED_FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&id.to_le_bytes());
    b[16..20].copy_from_slice(&block_size.to_le_bytes());
    let c = crc32c::crc32c(&b[0..28]);
    b[28..32].copy_from_slice(&c.to_le_bytes());
    b
}

fn encode_record(block: u32, kind: u8, birth: u64, crc: u32) -> [u8; RECORD_HEAD] {
    let mut b = [0u8; RECORD_HEAD];
    b[0..4].copy_from_slice(&block.to_le_bytes());
    b[4] = kind;
    b[8..16].copy_from_slice(&birth.to_le_bytes());
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    let c = crc32c::crc32c(&b[0..20]);
    b[20..24].copy_from_slice(&c.to_le_bytes());
    b
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl SavedStore {
    /// Opens the store beside an extent, or None if it has none.
    pub fn open(
        storage: &Storage,
        extent_path: &Path,
        id: u32,
        block_size: u32,
        blocks: u32,
        read_only: bool,
    ) -> Result<Option<SavedStore>> {
        let path = saved_path(extent_path);
        let what = || path.display().to_string();
        if !storage
            .exists(&path)
            .map_err(|e| BlockError::io(what(), e))?
        {
            return Ok(None);
        }
        let how = if read_only { Open::READ } else { Open::WRITE };
        let file = storage
            .open(&path, how)
            .map_err(|e| BlockError::io(what(), e))?;
        let len = file.len().map_err(|e| BlockError::io(what(), e))?;
        let mut head = [0u8; HEADER_LEN as usize];
        if len < HEADER_LEN {
            return Err(BlockError::corrupt(what(), "shorter than its header"));
        }
        file.read_exact_at(&mut head, 0)
            .map_err(|e| BlockError::io(what(), e))?;
        if &head[0..8] != SAVED_MAGIC || crc32c::crc32c(&head[0..28]) != le32(&head, 28) {
            return Err(BlockError::corrupt(what(), "bad magic or header checksum"));
        }
        let version = le32(&head, 8);
        if version != SAVED_FORMAT_VERSION {
            return Err(BlockError::UnsupportedVersion {
                what: "saved-version file",
                version,
            });
        }
        if le32(&head, 12) != id || le32(&head, 16) != block_size {
            return Err(BlockError::corrupt(
                what(),
                "extent id or block size does not match the region",
            ));
        }
        let mut store = SavedStore::empty(storage, &path, file, id, block_size);
        store.scan(len, blocks)?;
        if store.end < len && !read_only {
            tracing::warn!(
                path = %path.display(),
                kept = store.end,
                len,
                "cutting a torn tail off a saved-version file"
            );
            store
                .file
                .set_len(store.end)
                .map_err(|e| BlockError::io(what(), e))?;
        }
        Ok(Some(store))
    }

    fn scan(&mut self, len: u64, blocks: u32) -> Result<()> {
        let bs = self.block_size as u64;
        let mut head = [0u8; RECORD_HEAD];
        let mut data = vec![0u8; bs as usize];
        let mut off = HEADER_LEN;
        while off + RECORD_HEAD as u64 <= len {
            self.file
                .read_exact_at(&mut head, off)
                .map_err(|e| BlockError::io(self.path.display().to_string(), e))?;
            if crc32c::crc32c(&head[0..20]) != le32(&head, 20) {
                break;
            }
            let block = le32(&head, 0);
            let kind = head[4];
            let birth = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
            let crc = le32(&head, 16);
            if block >= blocks || !(kind == SLOT_DATA || kind == SLOT_ZERO) {
                break;
            }
            let data_off = off + RECORD_HEAD as u64;
            let mut next = data_off;
            if kind == SLOT_DATA {
                if data_off + bs > len {
                    break;
                }
                self.file
                    .read_exact_at(&mut data, data_off)
                    .map_err(|e| BlockError::io(self.path.display().to_string(), e))?;
                if block_crc(&data) != crc {
                    break;
                }
                next += bs;
            }
            self.insert(
                block,
                Saved {
                    birth,
                    kind,
                    crc,
                    at: At::File(data_off),
                },
            );
            off = next;
        }
        self.end = off;
        Ok(())
    }

    fn insert(&mut self, block: u32, s: Saved) {
        let v = self.index.entry(block).or_default();
        match v.binary_search_by_key(&s.birth, |x| x.birth) {
            // The same version saved twice (after a crash): keep one.
            Ok(i) => v[i] = s,
            Err(i) => v.insert(i, s),
        }
    }

    /// Creates an empty store beside an extent (synced, with its directory).
    pub fn create(
        storage: &Storage,
        extent_path: &Path,
        id: u32,
        block_size: u32,
    ) -> Result<SavedStore> {
        SavedStore::create_at(storage, &saved_path(extent_path), id, block_size)
    }

    /// Creates an empty store at `path`: written beside it and renamed
    /// into place, so the file is either absent or whole after a crash.
    pub fn create_at(
        storage: &Storage,
        path: &Path,
        id: u32,
        block_size: u32,
    ) -> Result<SavedStore> {
        let path = path.to_path_buf();
        let io = |e| BlockError::io(path.display().to_string(), e);
        storage
            .write_atomic(&path, &encode_header(id, block_size))
            .map_err(io)?;
        let file = storage.open(&path, Open::WRITE).map_err(io)?;
        Ok(SavedStore::empty(storage, &path, file, id, block_size))
    }

    /// A store over `file` holding its header and no record yet.
    fn empty(storage: &Storage, path: &Path, file: File, id: u32, block_size: u32) -> SavedStore {
        SavedStore {
            storage: storage.clone(),
            path: path.to_path_buf(),
            file,
            id,
            block_size,
            end: HEADER_LEN,
            unsynced: false,
            index: BTreeMap::new(),
            scratch: Vec::new(),
            source: None,
            pending: Vec::new(),
            copying: None,
        }
    }

    /// Gives the store the extent file that pending versions are read from.
    pub fn set_source(&mut self, extent: File) {
        self.source = Some(extent);
    }

    /// Whether version `birth` of `block` is saved.
    pub fn has(&self, block: u32, birth: u64) -> bool {
        self.index
            .get(&block)
            .is_some_and(|v| v.binary_search_by_key(&birth, |x| x.birth).is_ok())
    }

    /// Appends a version and indexes it (not synced: `sync`, or the next
    /// flush, makes it durable). For a data context `data` is one block.
    pub fn append(&mut self, block: u32, birth: u64, ctx: BlockContext, data: &[u8]) -> Result<()> {
        let (kind, crc) = match ctx {
            BlockContext::Data(c) => (SLOT_DATA, c),
            BlockContext::Zero => (SLOT_ZERO, 0),
            BlockContext::Unwritten => return Ok(()),
        };
        if kind == SLOT_DATA && data.len() != self.block_size as usize {
            return Err(BlockError::BadLength {
                len: data.len(),
                blocks: 1,
                block_size: self.block_size,
            });
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&encode_record(block, kind, birth, crc));
        if kind == SLOT_DATA {
            self.scratch.extend_from_slice(data);
        }
        let at = self.end;
        self.file
            .write_all_at(&self.scratch, at)
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))?;
        self.end += self.scratch.len() as u64;
        self.unsynced = true;
        self.insert(
            block,
            Saved {
                birth,
                kind,
                crc,
                at: At::File(at + RECORD_HEAD as u64),
            },
        );
        Ok(())
    }

    /// Notes that version `birth` of `block` is to be saved from the
    /// extent's slot whose data starts at `slot_off` (see "Copy-out at
    /// flush time"). Nothing is written.
    pub fn pend(&mut self, block: u32, birth: u64, ctx: BlockContext, slot_off: u64) {
        let (kind, crc) = match ctx {
            BlockContext::Data(c) => (SLOT_DATA, c),
            BlockContext::Zero => (SLOT_ZERO, 0),
            BlockContext::Unwritten => return,
        };
        let s = Saved {
            birth,
            kind,
            crc,
            at: At::Slot(slot_off),
        };
        self.insert(block, s);
        self.pending.push((block, s));
    }

    /// Versions noted and not yet copied out (nor being copied).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Begins a flush's copy-out: takes the pending versions and reserves
    /// their room at the end of the file. None if there is nothing to copy
    /// or sync.
    pub fn copy_out(&mut self) -> Result<Option<CopyOut>> {
        if self.copying.is_some() {
            return Err(BlockError::protocol("a copy-out is already under way"));
        }
        if self.pending.is_empty() && !self.unsynced {
            return Ok(None);
        }
        let io = |e| BlockError::io(self.path.display().to_string(), e);
        let records = std::mem::take(&mut self.pending);
        let at = self.end;
        let bs = self.block_size as usize;
        self.end += records
            .iter()
            .map(|(_, s)| record_len(s.kind, bs) as u64)
            .sum::<u64>();
        self.unsynced = false;
        self.copying = Some((at, records.clone()));
        Ok(Some(CopyOut {
            file: self.file.try_clone().map_err(io)?,
            source: match &self.source {
                Some(f) => Some(f.try_clone().map_err(io)?),
                None => None,
            },
            path: self.path.clone(),
            block_size: self.block_size,
            at,
            records,
        }))
    }

    /// Ends the copy-out begun by `copy_out`. Once it is durable (`ok`) its
    /// versions read from this file; otherwise they stay pending, their
    /// room is given back, and the file counts as unsynced.
    pub fn copy_done(&mut self, ok: bool) {
        let Some((at, records)) = self.copying.take() else {
            return;
        };
        if !ok {
            self.end = at;
            self.unsynced = true;
            let later = std::mem::replace(&mut self.pending, records);
            self.pending.extend(later);
            return;
        }
        let bs = self.block_size as usize;
        let mut off = at;
        for (b, s) in records {
            let data = off + RECORD_HEAD as u64;
            off += record_len(s.kind, bs) as u64;
            if let Some(v) = self.index.get_mut(&b)
                && let Ok(i) = v.binary_search_by_key(&s.birth, |x| x.birth)
            {
                v[i].at = At::File(data);
            }
        }
    }

    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))?;
        self.unsynced = false;
        Ok(())
    }

    /// The newest saved version of `block` born at or before `flush`.
    pub fn at(&self, block: u32, flush: u64) -> Option<Saved> {
        let v = self.index.get(&block)?;
        let i = v.partition_point(|x| x.birth <= flush);
        (i > 0).then(|| v[i - 1])
    }

    /// Reads a saved version's data into `out` (zeros for a zero record),
    /// from this file or, while it is pending, from its slot.
    pub fn read(&self, s: &Saved, out: &mut [u8]) -> Result<()> {
        if s.kind != SLOT_DATA {
            out.fill(0);
            return Ok(());
        }
        let io = |e| BlockError::io(self.path.display().to_string(), e);
        match s.at {
            At::File(off) => self.file.read_exact_at(out, off).map_err(io),
            At::Slot(off) => match &self.source {
                Some(f) => f.read_exact_at(out, off).map_err(io),
                None => Err(BlockError::protocol("pending version without its extent")),
            },
        }
    }

    /// Every saved version, by block then birth.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Saved)> {
        self.index
            .iter()
            .flat_map(|(b, v)| v.iter().map(move |s| (*b, s)))
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes on disk.
    pub fn len(&self) -> u64 {
        self.end
    }

    /// Keeps only the versions `keep(block, saved)` says yes to. If any goes,
    /// the file is rewritten beside itself, synced and renamed over (a crash
    /// leaves the old or the new file whole); pending versions kept stay
    /// pending. Returns the bytes freed. Not while a flush copies out.
    pub fn retain(&mut self, keep: impl Fn(u32, &Saved) -> bool) -> Result<u64> {
        if self.copying.is_some() {
            return Err(BlockError::protocol(
                "saved versions pruned while a flush copies them out",
            ));
        }
        let live: Vec<(u32, Saved)> = self
            .iter()
            .filter(|(b, s)| keep(*b, s))
            .map(|(b, s)| (b, *s))
            .collect();
        let total: usize = self.index.values().map(Vec::len).sum();
        if live.len() == total {
            return Ok(0);
        }
        self.pending.retain(|(b, s)| keep(*b, s));
        let before = self.end;
        let tmp = self.path.with_extension("snap-new");
        let io = |e| BlockError::io(tmp.display().to_string(), e);
        let _ = self.storage.remove_if_exists(&tmp);
        let file = self.storage.open(&tmp, Open::CREATE_NEW).map_err(io)?;
        file.write_all_at(&encode_header(self.id, self.block_size), 0)
            .map_err(io)?;
        let mut out = Vec::new();
        let mut data = vec![0u8; self.block_size as usize];
        let mut end = HEADER_LEN;
        let mut index: BTreeMap<u32, Vec<Saved>> = BTreeMap::new();
        for (b, s) in live {
            if let At::Slot(_) = s.at {
                index.entry(b).or_default().push(s);
                continue;
            }
            out.extend_from_slice(&encode_record(b, s.kind, s.birth, s.crc));
            let off = end + RECORD_HEAD as u64;
            if s.kind == SLOT_DATA {
                self.read(&s, &mut data)?;
                out.extend_from_slice(&data);
            }
            end = HEADER_LEN + out.len() as u64;
            index.entry(b).or_default().push(Saved {
                at: At::File(off),
                ..s
            });
        }
        file.write_all_at(&out, HEADER_LEN).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        self.storage.rename(&tmp, &self.path).map_err(io)?;
        self.storage.sync_parent(&self.path).map_err(io)?;
        self.file = self
            .storage
            .open(&self.path, Open::WRITE)
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))?;
        self.end = end;
        self.index = index;
        self.unsynced = false;
        Ok(before.saturating_sub(end))
    }

    /// Removes the file (no saved version left).
    pub fn remove(self) -> Result<()> {
        let path = self.path.clone();
        drop(self.file);
        self.storage
            .remove_if_exists(&path)
            .and_then(|_| self.storage.sync_parent(&path))
            .map_err(|e| BlockError::io(path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> Storage {
        Storage::new(kelp_storage::Memory::new())
    }

    #[test]
    fn record_golden_bytes() {
        let r = encode_record(3, SLOT_DATA, 0x0102, 0xdead_beef);
        assert_eq!(
            &r[0..20],
            &[
                3, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde
            ]
        );
        let h = encode_header(7, 512);
        assert_eq!(&h[0..8], b"KELPSAV1");
        assert_eq!(&h[8..20], &[1, 0, 0, 0, 7, 0, 0, 0, 0, 2, 0, 0]);
    }

    #[test]
    fn append_reopen_retain_and_torn_tail() {
        let st = st();
        let ext = Path::new("e.ext");
        let mut s = SavedStore::create(&st, ext, 0, 512).unwrap();
        let a = vec![1u8; 512];
        let b = vec![2u8; 512];
        s.append(1, 5, BlockContext::Data(block_crc(&a)), &a)
            .unwrap();
        s.append(1, 9, BlockContext::Zero, &[]).unwrap();
        s.append(2, 3, BlockContext::Data(block_crc(&b)), &b)
            .unwrap();
        s.sync().unwrap();
        assert_eq!(s.at(1, 4), None);
        assert_eq!(s.at(1, 8).unwrap().birth, 5);
        assert_eq!(s.at(1, 100).unwrap().context(), BlockContext::Zero);
        let mut out = vec![0u8; 512];
        s.read(&s.at(2, 3).unwrap(), &mut out).unwrap();
        assert_eq!(out, b);
        let len = s.len();
        drop(s);
        // A torn append: half a record at the end.
        let f = st.open(&saved_path(ext), Open::WRITE).unwrap();
        f.write_all_at(&[9u8; 30], len).unwrap();
        drop(f);
        let mut s = SavedStore::open(&st, ext, 0, 512, 8, false)
            .unwrap()
            .unwrap();
        assert_eq!(s.len(), len, "the torn tail is cut off");
        assert!(s.has(1, 5) && s.has(1, 9) && s.has(2, 3));
        let freed = s.retain(|b, _| b == 2).unwrap();
        assert!(freed >= 512, "freed {freed}");
        assert!(!s.has(1, 5) && s.has(2, 3));
        s.read(&s.at(2, 3).unwrap(), &mut out).unwrap();
        assert_eq!(out, b);
        drop(s);
        let s = SavedStore::open(&st, ext, 0, 512, 8, true)
            .unwrap()
            .unwrap();
        assert!(!s.has(1, 9) && s.has(2, 3));
        // Another extent's or geometry's file is refused.
        assert!(SavedStore::open(&st, ext, 1, 512, 8, true).is_err());
    }

    #[test]
    fn pending_versions_are_copied_out_by_a_flush() {
        let st = st();
        let ext = Path::new("e.ext");
        let src = st.open(ext, Open::CREATE_NEW).unwrap();
        let a = vec![3u8; 512];
        src.write_all_at(&a, 4096).unwrap();
        let mut s = SavedStore::create(&st, ext, 0, 512).unwrap();
        s.set_source(src.try_clone().unwrap());
        let ctx = BlockContext::Data(block_crc(&a));
        s.pend(1, 5, ctx, 4096);
        s.pend(2, 6, BlockContext::Zero, 0);
        assert!(s.has(1, 5) && s.has(2, 6));
        assert_eq!(s.len(), HEADER_LEN, "noting writes nothing");
        let mut out = vec![0u8; 512];
        s.read(&s.at(1, 5).unwrap(), &mut out).unwrap();
        assert_eq!(out, a, "a pending version reads from its slot");
        // A failed flush leaves them pending, and the next copies them.
        let c = s.copy_out().unwrap().unwrap();
        assert!(s.copy_out().is_err(), "one copy-out at a time");
        assert!(s.retain(|_, _| false).is_err(), "no pruning meanwhile");
        s.copy_done(false);
        assert_eq!((s.pending(), s.len()), (2, HEADER_LEN));
        drop(c);
        let c = s.copy_out().unwrap().unwrap();
        assert_eq!(s.pending(), 0);
        c.write_and_sync().unwrap();
        s.copy_done(true);
        // The slot may be reused now: the copy reads from the file.
        src.write_all_at(&[9u8; 512], 4096).unwrap();
        s.read(&s.at(1, 5).unwrap(), &mut out).unwrap();
        assert_eq!(out, a);
        assert!(s.copy_out().unwrap().is_none(), "nothing left to copy");
        drop(s);
        let s = SavedStore::open(&st, ext, 0, 512, 8, true)
            .unwrap()
            .unwrap();
        assert!(s.has(1, 5) && s.has(2, 6));
        assert_eq!(s.at(2, 9).unwrap().context(), BlockContext::Zero);
        s.read(&s.at(1, 5).unwrap(), &mut out).unwrap();
        assert_eq!(out, a);
    }
}
