//! An extent's saved versions: the old contents of blocks that a snapshot
//! still needs after the live volume wrote over them (copy-on-write).
//!
//! A block's live version lives in one of its two slots (extent.rs). When
//! a write replaces a flushed version that some snapshot still reads (its
//! birth is at or before that snapshot's flush), the extent first appends
//! the old version here. The append is not synced at once: the old slot is
//! reused only after the *next* flush, and that flush syncs this file
//! before it stamps the extent, so the saved copy is durable before the
//! only other copy can go. A crash before that flush leaves the old version
//! in its slot, and a dirty extent's open saves it again if the copy here
//! was lost (`Extent::open`).
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
    /// Where its data starts in the file (data records only).
    off: u64,
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
                    off: data_off,
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
        }
    }

    /// Whether version `birth` of `block` is saved.
    pub fn has(&self, block: u32, birth: u64) -> bool {
        self.index
            .get(&block)
            .is_some_and(|v| v.binary_search_by_key(&birth, |x| x.birth).is_ok())
    }

    /// Appends a version (not synced; see the module comment).
    pub fn append(&mut self, block: u32, birth: u64, ctx: BlockContext, data: &[u8]) -> Result<()> {
        if matches!(ctx, BlockContext::Data(_)) && data.len() != self.block_size as usize {
            return Err(BlockError::BadLength {
                len: data.len(),
                blocks: 1,
                block_size: self.block_size,
            });
        }
        self.append_with(block, birth, ctx, |buf| {
            buf.copy_from_slice(data);
            Ok(())
        })
    }

    /// Appends a version whose data `fill` writes into the record (one
    /// block; not called for a zero version): one write, no allocation.
    pub fn append_with(
        &mut self,
        block: u32,
        birth: u64,
        ctx: BlockContext,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let (kind, crc) = match ctx {
            BlockContext::Data(c) => (SLOT_DATA, c),
            BlockContext::Zero => (SLOT_ZERO, 0),
            BlockContext::Unwritten => return Ok(()),
        };
        let len = RECORD_HEAD
            + if kind == SLOT_DATA {
                self.block_size as usize
            } else {
                0
            };
        self.scratch.resize(len, 0);
        self.scratch[..RECORD_HEAD].copy_from_slice(&encode_record(block, kind, birth, crc));
        if kind == SLOT_DATA {
            fill(&mut self.scratch[RECORD_HEAD..])?;
        }
        let at = self.end;
        self.file
            .write_all_at(&self.scratch, at)
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))?;
        self.end += len as u64;
        self.unsynced = true;
        self.insert(
            block,
            Saved {
                birth,
                kind,
                crc,
                off: at + RECORD_HEAD as u64,
            },
        );
        Ok(())
    }

    /// A handle to sync the appends so far outside the region lock, if
    /// there are any.
    pub fn sync_handle(&mut self) -> Result<Option<File>> {
        if !self.unsynced {
            return Ok(None);
        }
        self.unsynced = false;
        self.file
            .try_clone()
            .map(Some)
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))
    }

    /// Forgets that appends were synced (a flush that failed).
    pub fn mark_unsynced(&mut self) {
        self.unsynced = true;
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

    /// Reads a saved version's data into `out` (zeros for a zero record).
    pub fn read(&self, s: &Saved, out: &mut [u8]) -> Result<()> {
        if s.kind != SLOT_DATA {
            out.fill(0);
            return Ok(());
        }
        self.file
            .read_exact_at(out, s.off)
            .map_err(|e| BlockError::io(self.path.display().to_string(), e))
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
    /// leaves the old or the new file whole). Returns the bytes freed.
    pub fn retain(&mut self, keep: impl Fn(u32, &Saved) -> bool) -> Result<u64> {
        let live: Vec<(u32, Saved)> = self
            .iter()
            .filter(|(b, s)| keep(*b, s))
            .map(|(b, s)| (b, *s))
            .collect();
        let total: usize = self.index.values().map(Vec::len).sum();
        if live.len() == total {
            return Ok(0);
        }
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
            out.extend_from_slice(&encode_record(b, s.kind, s.birth, s.crc));
            let off = end + RECORD_HEAD as u64;
            if s.kind == SLOT_DATA {
                self.read(&s, &mut data)?;
                out.extend_from_slice(&data);
            }
            end = HEADER_LEN + out.len() as u64;
            index.entry(b).or_default().push(Saved { off, ..s });
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
}
