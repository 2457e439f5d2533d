//! Linked clones: a clone that reads its origin's snapshot until it has
//! copied it, so that it serves IO at once on file systems that cannot
//! share blocks (ext4; XFS and btrfs clones are reflinks, snapshot.rs).
//!
//! A linked clone region starts with no data of its own. Each of its
//! extent files holds only a header of format 3 (extent.rs), which says
//! "my blocks are extent `id` of my origin as of flush `at`". Reads of a
//! linked extent go to a read-only view of the origin's extent file at the
//! snapshot; the origin may keep running meanwhile. An extent is *copied*
//! (materialized) by writing a whole format-2 extent file beside it and
//! renaming it over the header-only one, the way repair replaces an
//! extent, so a crash leaves either the link or the copy, never a mix:
//! - before its first write (or zeroing, or stamp), synchronously;
//! - in the background, one extent at a time, by the downstairs serving
//!   the clone (`Region::fill_next`), or at once by
//!   `kelp block clone --fill`.
//!
//! When no extent is linked any more, `origin.kelp` is removed and the
//! clone is independent. Until then the origin must keep the snapshot: each
//! origin replica holds a *hold* file naming every replica of the clone,
//! and refuses to delete (or roll back past) that snapshot while any of
//! them still links to it. A hold whose clones are all copied, or gone, is
//! stale and removed at the next such check.
//!
//! # Where the origin's data moves
//!
//! A snapshot's versions never change, but the origin's downstairs may move
//! one: a write over a version the snapshot reads first appends it to the
//! saved-version file and, after a flush, reuses its slot. The view of the
//! origin was loaded earlier and may then point at the reused slot. So a
//! linked read checks every block against the context the snapshot holds,
//! and on a mismatch loads the view again and reads again (a few times,
//! then fails: the origin's copy is bad, and the upstairs reads another
//! replica).
//!
//! # File layouts (little-endian)
//!
//! `origin.kelp` in the clone region:
//! ```text
//!  0  [8] magic "KELPORG1"
//!  8  u32 format version (1)
//! 12  [16] clone id (shared by the replicas of one clone)
//! 28  [16] origin region uuid
//! 44  u64 snapshot flush (the `at` of every linked extent)
//! 52  [16] snapshot guid
//! 68  u16 name length | name (UTF-8)
//! ..  u16 path length | origin region directory (UTF-8)
//! ..  u32 crc32c of every byte before it
//! ```
//! `clones/<clone id hex>.kelp` in each origin region (a hold):
//! ```text
//!  0  [8] magic "KELPHLD1"
//!  8  u32 format version (1)
//! 12  [16] clone id
//! 28  [16] snapshot guid
//! 44  u32 clone replica count (1..=16)
//! 48  per replica: u16 path length | clone region directory (UTF-8)
//! ..  u32 crc32c of every byte before it
//! ```
//! Both are written atomically (beside, fsync, rename, fsync directory).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kelp_storage::Storage;

use crate::codec::{Reader, Writer, seal, unseal};
use crate::context::BlockContext;
use crate::error::{BlockError, Result};
use crate::extent::{Extent, ExtentImage, ExtentVersion};

pub const ORIGIN_FILE: &str = "origin.kelp";
pub const HOLDS_DIR: &str = "clones";
const ORIGIN_MAGIC: &[u8; 8] = b"KELPORG1";
const HOLD_MAGIC: &[u8; 8] = b"KELPHLD1";
pub const LINK_FORMAT_VERSION: u32 = 1;
const MAX_PATH: usize = 4096;
const MAX_REPLICAS: usize = 16;
/// Reads of a moving origin block before it counts as bad.
const READ_TRIES: usize = 5;

/// What a linked clone region reads from (`origin.kelp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub clone_id: u128,
    pub origin_uuid: [u8; 16],
    pub flush: u64,
    pub guid: u128,
    pub name: String,
    pub dir: PathBuf,
}

/// An origin region's promise to keep a snapshot for a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub clone_id: u128,
    pub guid: u128,
    pub clones: Vec<PathBuf>,
}

fn path_str<'a>(p: &'a Path, what: &str) -> Result<&'a str> {
    let s = p
        .to_str()
        .ok_or_else(|| BlockError::Invalid(format!("{what} {} is not UTF-8", p.display())))?;
    if s.len() > MAX_PATH {
        return Err(BlockError::Invalid(format!("{what} path is too long")));
    }
    Ok(s)
}

fn string(r: &mut Reader, what: &'static str) -> Result<String> {
    let n = r.u16()? as usize;
    String::from_utf8(r.bytes(n)?.to_vec()).map_err(|_| BlockError::corrupt(what, "not UTF-8"))
}

impl Origin {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let dir = path_str(&self.dir, "origin")?;
        let mut w = Writer::with_capacity(96 + dir.len());
        w.bytes(ORIGIN_MAGIC)
            .u32(LINK_FORMAT_VERSION)
            .bytes(&self.clone_id.to_le_bytes())
            .bytes(&self.origin_uuid)
            .u64(self.flush)
            .bytes(&self.guid.to_le_bytes())
            .u16(self.name.len() as u16)
            .bytes(self.name.as_bytes())
            .u16(dir.len() as u16)
            .bytes(dir.as_bytes());
        Ok(seal(w))
    }

    pub fn decode(b: &[u8]) -> Result<Origin> {
        let mut r = unseal(b, ORIGIN_MAGIC, ORIGIN_FILE, LINK_FORMAT_VERSION)?;
        let o = Origin {
            clone_id: u128::from_le_bytes(r.array()?),
            origin_uuid: r.array()?,
            flush: r.u64()?,
            guid: u128::from_le_bytes(r.array()?),
            name: string(&mut r, ORIGIN_FILE)?,
            dir: PathBuf::from(string(&mut r, ORIGIN_FILE)?),
        };
        r.finish()?;
        Ok(o)
    }

    /// The clone region `dir`'s origin, if it is still linked.
    pub fn load(st: &Storage, dir: &Path) -> Result<Option<Origin>> {
        let p = dir.join(ORIGIN_FILE);
        match st.read(&p) {
            Ok(b) => Origin::decode(&b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlockError::io(p.display().to_string(), e)),
        }
    }

    pub fn store(&self, st: &Storage, dir: &Path) -> Result<()> {
        let p = dir.join(ORIGIN_FILE);
        st.write_atomic(&p, &self.encode()?)
            .map_err(|e| BlockError::io(p.display().to_string(), e))
    }

    /// The origin's file for extent `id`.
    pub fn extent_path(&self, id: u32) -> PathBuf {
        crate::region::extent_path(&self.dir, id)
    }
}

impl Hold {
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.clones.is_empty() || self.clones.len() > MAX_REPLICAS {
            return Err(BlockError::Invalid(format!(
                "a clone has 1 to {MAX_REPLICAS} replicas"
            )));
        }
        let mut w = Writer::with_capacity(64);
        w.bytes(HOLD_MAGIC)
            .u32(LINK_FORMAT_VERSION)
            .bytes(&self.clone_id.to_le_bytes())
            .bytes(&self.guid.to_le_bytes())
            .u32(self.clones.len() as u32);
        for c in &self.clones {
            let s = path_str(c, "clone")?;
            w.u16(s.len() as u16).bytes(s.as_bytes());
        }
        Ok(seal(w))
    }

    pub fn decode(b: &[u8]) -> Result<Hold> {
        const WHAT: &str = "clone hold";
        let mut r = unseal(b, HOLD_MAGIC, WHAT, LINK_FORMAT_VERSION)?;
        let clone_id = u128::from_le_bytes(r.array()?);
        let guid = u128::from_le_bytes(r.array()?);
        let n = r.count(2, MAX_REPLICAS)?;
        if n == 0 {
            return Err(BlockError::corrupt(WHAT, "no clone replicas"));
        }
        let mut clones = Vec::with_capacity(n);
        for _ in 0..n {
            clones.push(PathBuf::from(string(&mut r, WHAT)?));
        }
        r.finish()?;
        Ok(Hold {
            clone_id,
            guid,
            clones,
        })
    }

    fn path(dir: &Path, clone_id: u128) -> PathBuf {
        dir.join(HOLDS_DIR).join(format!("{clone_id:032x}.kelp"))
    }

    /// Writes this hold into origin region `dir`.
    pub fn store(&self, st: &Storage, dir: &Path) -> Result<()> {
        let d = dir.join(HOLDS_DIR);
        let io = |e| BlockError::io(d.display().to_string(), e);
        st.create_dir_all(&d).map_err(io)?;
        st.sync_parent(&d).map_err(io)?;
        let p = Hold::path(dir, self.clone_id);
        st.write_atomic(&p, &self.encode()?)
            .map_err(|e| BlockError::io(p.display().to_string(), e))
    }

    /// Whether any replica of the clone still reads the snapshot.
    fn active(&self, st: &Storage) -> bool {
        self.clones.iter().any(|c| {
            // A clone that cannot be read counts as linked: never free a
            // snapshot on a guess.
            match Origin::load(st, c) {
                Ok(Some(o)) => o.clone_id == self.clone_id,
                Ok(None) => false,
                Err(_) => st.exists(&c.join(ORIGIN_FILE)).unwrap_or(true),
            }
        })
    }
}

/// The holds of origin region `dir` (an unreadable hold is an error: it
/// may protect a snapshot).
pub fn holds(st: &Storage, dir: &Path) -> Result<Vec<(PathBuf, Hold)>> {
    let d = dir.join(HOLDS_DIR);
    let names = match st.list(&d) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BlockError::io(d.display().to_string(), e)),
    };
    let mut out = Vec::new();
    for name in names {
        if !name.to_string_lossy().ends_with(".kelp") {
            continue;
        }
        let p = d.join(&name);
        let b = st
            .read(&p)
            .map_err(|e| BlockError::io(p.display().to_string(), e))?;
        let h = Hold::decode(&b).map_err(|e| match e {
            BlockError::Corrupt { reason, .. } => {
                BlockError::corrupt(p.display().to_string(), reason)
            }
            e => e,
        })?;
        out.push((p, h));
    }
    Ok(out)
}

/// Refuses when a clone still reads one of `guids` (snapshots about to be
/// deleted from origin region `dir`). Removes stale holds when `writable`.
pub fn check_holds(st: &Storage, dir: &Path, guids: &[(u128, &str)], writable: bool) -> Result<()> {
    for (p, h) in holds(st, dir)? {
        if !h.active(st) {
            if writable {
                st.remove_if_exists(&p)
                    .and_then(|_| st.sync_parent(&p))
                    .map_err(|e| BlockError::io(p.display().to_string(), e))?;
            }
            continue;
        }
        if let Some((_, name)) = guids.iter().find(|(g, _)| *g == h.guid) {
            return Err(BlockError::SnapshotConflict(format!(
                "snapshot {name} is the origin of clone {}, which still reads from it; \
                 it can go once the clone has copied every block (the downstairs serving \
                 the clone copies them in the background, or run `kelp block fill` \
                 on the stopped clone)",
                h.clones
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
    }
    Ok(())
}

/// A linked extent's way to its origin: a read-only view of the origin's
/// extent, loaded at first use and again when the origin moved a block.
pub struct Link {
    storage: Storage,
    path: PathBuf,
    /// The extent's id, block size and blocks (the origin's are the same).
    geometry: (u32, u32, u32),
    at: u64,
    view: Mutex<Option<Extent>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({} at flush {})", self.path.display(), self.at)
    }
}

impl Link {
    pub fn new(storage: &Storage, path: PathBuf, geometry: (u32, u32, u32), at: u64) -> Link {
        Link {
            storage: storage.clone(),
            path,
            geometry,
            at,
            view: Mutex::new(None),
        }
    }

    /// The snapshot flush this link reads at.
    pub fn at(&self) -> u64 {
        self.at
    }

    fn with<T>(&self, reload: bool, f: impl FnOnce(&Extent) -> Result<T>) -> Result<T> {
        let mut g = match self.view.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if reload || g.is_none() {
            // Told the snapshot, the view also finds a version the running
            // origin replaced but has not copied out yet (saved.rs): it is
            // still in its slot.
            let (id, block_size, n) = self.geometry;
            let e = Extent::open(
                &self.storage,
                &self.path,
                id,
                block_size,
                n,
                true,
                &[self.at],
            )
            .map_err(|e| origin_err(&self.path, e))?;
            if e.format() == crate::extent::LINKED_FORMAT {
                return Err(BlockError::corrupt(
                    self.path.display().to_string(),
                    "the clone's origin is itself a linked clone",
                ));
            }
            *g = Some(e);
        }
        match g.as_ref() {
            Some(e) => f(e),
            None => Err(BlockError::protocol("origin view missing")),
        }
    }

    /// The origin's version of block `b` at the snapshot.
    pub fn version(&self, b: u32) -> Result<Option<(u64, BlockContext)>> {
        self.with(false, |e| Ok(e.stored_version_at(b, self.at)))
    }

    /// Every block's birth at the snapshot (0 for never written).
    pub fn births(&self) -> Result<Vec<u64>> {
        self.with(false, |e| {
            Ok((0..self.geometry.2)
                .map(|b| {
                    e.stored_version_at(b, self.at)
                        .map_or(0, |(birth, _)| birth)
                })
                .collect())
        })
    }

    /// Reads blocks at the snapshot, each checked against its context.
    pub fn read(
        &self,
        first: u32,
        count: u32,
        out: &mut [u8],
        ctxs: &mut Vec<BlockContext>,
    ) -> Result<()> {
        let start = ctxs.len();
        let mut bad = None;
        for attempt in 0..READ_TRIES {
            ctxs.truncate(start);
            self.with(attempt > 0, |e| {
                e.read_at_flush(first, count, self.at, out, ctxs)
            })?;
            bad = ctxs[start..]
                .iter()
                .zip(out.chunks_exact(self.geometry.1 as usize))
                .position(|(c, d)| !c.verify(d));
            if bad.is_none() {
                return Ok(());
            }
        }
        let b = first + bad.unwrap_or(0) as u32;
        Err(BlockError::corrupt(
            self.path.display().to_string(),
            format!(
                "block {b} of the clone's origin does not match its checksum after {READ_TRIES} reads"
            ),
        ))
    }

    /// The whole extent at the snapshot, labelled `version`: what a linked
    /// extent is materialized from, and copied to other replicas as.
    pub fn image(&self, version: ExtentVersion) -> Result<ExtentImage> {
        let (_, bs, n) = self.geometry;
        let mut data = vec![0u8; n as usize * bs as usize];
        let mut contexts = Vec::with_capacity(n as usize);
        self.read(0, n, &mut data, &mut contexts)?;
        Ok(ExtentImage {
            version,
            contexts,
            births: self.births()?,
            data,
            saved: Vec::new(),
        })
    }
}

fn origin_err(path: &Path, e: BlockError) -> BlockError {
    match e {
        BlockError::Io { source, .. } => {
            BlockError::io(format!("{} (the clone's origin)", path.display()), source)
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_and_hold_round_trip_and_refuse_damage() {
        let o = Origin {
            clone_id: 7,
            origin_uuid: [3; 16],
            flush: 42,
            guid: 9,
            name: "s1".into(),
            dir: PathBuf::from("/v/r0"),
        };
        let b = o.encode().unwrap();
        assert_eq!(&b[..8], b"KELPORG1");
        assert_eq!(Origin::decode(&b).unwrap(), o);
        let h = Hold {
            clone_id: 7,
            guid: 9,
            clones: vec!["/c/0".into(), "/c/1".into()],
        };
        let hb = h.encode().unwrap();
        assert_eq!(Hold::decode(&hb).unwrap(), h);
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x10;
            assert!(Origin::decode(&x).is_err(), "flip at {i}");
        }
        for n in 0..hb.len() {
            assert!(Hold::decode(&hb[..n]).is_err(), "cut at {n}");
        }
        let mut v2 = o.encode().unwrap();
        v2[8] = 2;
        let end = v2.len() - 4;
        let c = crc32c::crc32c(&v2[..end]);
        v2[end..].copy_from_slice(&c.to_le_bytes());
        assert!(matches!(
            Origin::decode(&v2),
            Err(BlockError::UnsupportedVersion { version: 2, .. })
        ));
    }
}
