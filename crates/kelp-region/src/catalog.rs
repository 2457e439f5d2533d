//! A region's snapshot catalog: which snapshots exist, and the region's
//! flush mark.
//!
//! A snapshot is a flush with a name. It holds every block's version born
//! at or before its flush number (`SlotCtx::birth`); the versions the live
//! volume has since written over are kept in the extents' saved-version
//! files (saved.rs). The catalog also remembers the highest flush number
//! the region has begun (`flush_mark`), so that writes after a snapshot
//! get a later birth even when the snapshot's flush stamped no extent.
//!
//! # File layout (`snapshots.kelp`, little-endian)
//!
//! ```text
//!  0  [8] magic "KELPSNS1"
//!  8  u32 format version (1)
//! 12  u32 snapshot count
//! 16  u64 flush mark
//! 24  per snapshot, by ascending flush:
//!       u64 flush | [16] guid | u64 created (unix seconds) | u16 name length | name (UTF-8)
//! ..  u32 crc32c of every byte before it
//! ```
//! Replaced atomically (write beside, fsync, rename, fsync directory). A
//! region without the file has no snapshots and flush mark 0.

use std::path::Path;

use kelp_storage::Storage;

use crate::codec::{Writer, seal, unseal};
use crate::error::{BlockError, Result};

pub const CATALOG_FILE: &str = "snapshots.kelp";
const MAGIC: &[u8; 8] = b"KELPSNS1";
pub const CATALOG_FORMAT_VERSION: u32 = 1;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_SNAPSHOTS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    /// Names this snapshot's content wherever it is sent: a received
    /// snapshot keeps its sender's GUID, so incrementals match by GUID.
    pub guid: u128,
    pub flush: u64,
    /// Unix seconds.
    pub created: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub flush_mark: u64,
    /// By ascending flush.
    pub snapshots: Vec<Snapshot>,
}

/// Checks a snapshot name: 1 to 64 of `A-Z a-z 0-9 . _ - : @`, not
/// starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(BlockError::Invalid(format!("snapshot name {name:?} {why}")));
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad(&format!("must be 1 to {MAX_NAME_LEN} characters long"));
    }
    if name.starts_with(['.', '-']) {
        return bad("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b))
    {
        return bad("may hold only letters, digits and . _ - : @");
    }
    Ok(())
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    pub fn by_guid(&self, guid: u128) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.guid == guid)
    }

    pub fn newest(&self) -> Option<&Snapshot> {
        self.snapshots.last()
    }

    /// The snapshots' flush numbers, ascending.
    pub fn flushes(&self) -> Vec<u64> {
        self.snapshots.iter().map(|s| s.flush).collect()
    }

    /// Adds a snapshot taken at `s.flush`, which must be newer than every
    /// snapshot so far; names and GUIDs are unique.
    pub fn add(&mut self, s: Snapshot) -> Result<()> {
        check_name(&s.name)?;
        if self.get(&s.name).is_some() {
            return Err(BlockError::SnapshotExists(s.name));
        }
        if self.by_guid(s.guid).is_some() {
            return Err(BlockError::Invalid(format!(
                "a snapshot with GUID {:032x} already exists",
                s.guid
            )));
        }
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(BlockError::Invalid(format!(
                "a region holds at most {MAX_SNAPSHOTS} snapshots"
            )));
        }
        if let Some(n) = self.newest()
            && n.flush >= s.flush
        {
            return Err(BlockError::protocol(format!(
                "snapshot {} at flush {} is not newer than {} at flush {}",
                s.name, s.flush, n.name, n.flush
            )));
        }
        self.flush_mark = self.flush_mark.max(s.flush);
        self.snapshots.push(s);
        Ok(())
    }

    /// Inserts a snapshot anywhere in flush order: how a replica that was
    /// away is given a snapshot the others took meanwhile (possibly older
    /// than one it holds). Its name, GUID and flush must all be new here.
    pub fn insert(&mut self, s: Snapshot) -> Result<()> {
        check_name(&s.name)?;
        if self.get(&s.name).is_some() {
            return Err(BlockError::SnapshotExists(s.name));
        }
        if self.by_guid(s.guid).is_some() {
            return Err(BlockError::SnapshotConflict(format!(
                "a snapshot with GUID {:032x} already exists",
                s.guid
            )));
        }
        if let Some(o) = self.snapshots.iter().find(|o| o.flush == s.flush) {
            return Err(BlockError::SnapshotConflict(format!(
                "snapshot {} at flush {} conflicts with {} at the same flush",
                s.name, s.flush, o.name
            )));
        }
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(BlockError::Invalid(format!(
                "a region holds at most {MAX_SNAPSHOTS} snapshots"
            )));
        }
        self.flush_mark = self.flush_mark.max(s.flush);
        let at = self.snapshots.partition_point(|o| o.flush < s.flush);
        self.snapshots.insert(at, s);
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.snapshots.len() * 48);
        w.bytes(MAGIC)
            .u32(CATALOG_FORMAT_VERSION)
            .u32(self.snapshots.len() as u32)
            .u64(self.flush_mark);
        for s in &self.snapshots {
            w.u64(s.flush)
                .bytes(&s.guid.to_le_bytes())
                .u64(s.created)
                .u16(s.name.len() as u16)
                .bytes(s.name.as_bytes());
        }
        seal(w)
    }

    pub fn decode(b: &[u8]) -> Result<Catalog> {
        let what = CATALOG_FILE;
        let mut r = unseal(b, MAGIC, "snapshot catalog", CATALOG_FORMAT_VERSION)?;
        let count = r.u32()? as usize;
        if count > MAX_SNAPSHOTS {
            return Err(BlockError::corrupt(what, format!("{count} snapshots")));
        }
        let flush_mark = r.u64()?;
        let mut snapshots: Vec<Snapshot> = Vec::with_capacity(count);
        for _ in 0..count {
            let flush = r.u64()?;
            let guid = u128::from_le_bytes(r.array()?);
            let created = r.u64()?;
            let n = r.u16()? as usize;
            let name = String::from_utf8(r.bytes(n)?.to_vec())
                .map_err(|_| BlockError::corrupt(what, "a name is not UTF-8"))?;
            if snapshots.last().is_some_and(|p| p.flush >= flush) {
                return Err(BlockError::corrupt(what, "snapshots out of order"));
            }
            snapshots.push(Snapshot {
                name,
                guid,
                flush,
                created,
            });
        }
        r.finish()?;
        Ok(Catalog {
            flush_mark,
            snapshots,
        })
    }

    pub fn load(st: &Storage, dir: &Path) -> Result<Catalog> {
        let path = dir.join(CATALOG_FILE);
        match st.read(&path) {
            Ok(b) => Catalog::decode(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
            Err(e) => Err(BlockError::io(path.display().to_string(), e)),
        }
    }

    pub fn store(&self, st: &Storage, dir: &Path) -> Result<()> {
        let path = dir.join(CATALOG_FILE);
        st.write_atomic(&path, &self.encode())
            .map_err(|e| BlockError::io(path.display().to_string(), e))
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, flush: u64) -> Snapshot {
        Snapshot {
            name: name.into(),
            guid: flush as u128 * 1000 + 7,
            flush,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip_golden_and_corruption() {
        let mut c = Catalog::default();
        c.add(snap("a", 3)).unwrap();
        c.add(snap("b", 9)).unwrap();
        let b = c.encode();
        assert_eq!(&b[0..8], b"KELPSNS1");
        assert_eq!(&b[8..24], &[1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Catalog::decode(&b).unwrap(), c);
        for i in 0..b.len() {
            let mut f = b.clone();
            f[i] ^= 0x10;
            assert!(Catalog::decode(&f).is_err(), "flip at {i}");
        }
        for n in 0..b.len() {
            assert!(Catalog::decode(&b[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn names_and_order_are_checked() {
        let mut c = Catalog::default();
        c.add(snap("a", 3)).unwrap();
        assert!(matches!(
            c.add(snap("a", 4)),
            Err(BlockError::SnapshotExists(_))
        ));
        assert!(c.add(snap("old", 2)).is_err());
        // Insert goes anywhere in flush order, but never twice.
        c.add(snap("c", 9)).unwrap();
        c.insert(snap("b", 5)).unwrap();
        c.insert(snap("z", 1)).unwrap();
        assert_eq!(c.flushes(), vec![1, 3, 5, 9]);
        assert_eq!(c.flush_mark, 9);
        assert!(c.insert(snap("b", 6)).is_err(), "same name");
        let same_guid = Snapshot {
            name: "q".into(),
            flush: 6,
            ..snap("b", 5)
        };
        assert!(c.insert(same_guid).is_err(), "same GUID");
        let mut same_flush = snap("q", 5);
        same_flush.guid = 1;
        assert!(c.insert(same_flush).is_err(), "same flush");
        assert_eq!(Catalog::decode(&c.encode()).unwrap(), c);
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["daily-2026-12-06", "s1", "a.b_c:d@e"] {
            check_name(good).unwrap();
        }
    }
}
