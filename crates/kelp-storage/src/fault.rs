//! A backend that wraps another and fails chosen operations.
//!
//! [`Fault::fail`] arms one failure: the write, fdatasync (file or
//! directory) or rename that comes after `skip` more matching ones fails
//! with EIO or ENOSPC. ENOSPC on a write leaves the disk *full*: every
//! later write (and file growth) fails with ENOSPC too, until
//! [`Fault::free_space`]. [`FaultKind::NoSpaceHalfway`] first writes half
//! of the buffer (a short write), so the caller's next write hits the full
//! disk. Other failures are one-shot.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::{Backend, EIO, ENOSPC, File, FileOps, Open, Storage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    /// fdatasync of a file or fsync of a directory.
    Sync,
    Rename,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Eio,
    NoSpace,
    /// A write stores the first half of its buffer, then the disk is full.
    NoSpaceHalfway,
}

#[derive(Debug)]
struct Armed {
    op: FaultOp,
    /// Only operations on paths ending with this count.
    suffix: Option<String>,
    skip: u64,
    kind: FaultKind,
}

#[derive(Debug, Default)]
struct State {
    armed: Vec<Armed>,
    full: bool,
    fired: u64,
}

/// Wraps a backend; clones share the armed faults.
#[derive(Debug, Clone)]
pub struct Fault {
    inner: Storage,
    state: Arc<Mutex<State>>,
}

fn err(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Eio => io::Error::from_raw_os_error(EIO),
        FaultKind::NoSpace | FaultKind::NoSpaceHalfway => io::Error::from_raw_os_error(ENOSPC),
    }
}

impl Fault {
    pub fn new(inner: Storage) -> Fault {
        Fault {
            inner,
            state: Arc::default(),
        }
    }

    /// A `Storage` on this backend.
    pub fn storage(&self) -> Storage {
        Storage::new(self.clone())
    }

    /// The `op` after `skip` more matching ones fails with `kind`.
    pub fn fail(&self, op: FaultOp, skip: u64, kind: FaultKind) {
        self.arm(op, None, skip, kind);
    }

    /// Like `fail`, counting only operations on paths ending with `suffix`.
    pub fn fail_on(&self, op: FaultOp, suffix: &str, skip: u64, kind: FaultKind) {
        self.arm(op, Some(suffix.to_string()), skip, kind);
    }

    fn arm(&self, op: FaultOp, suffix: Option<String>, skip: u64, kind: FaultKind) {
        self.state.lock().armed.push(Armed {
            op,
            suffix,
            skip,
            kind,
        });
    }

    /// Ends a disk-full condition and disarms every fault.
    pub fn free_space(&self) {
        let mut s = self.state.lock();
        s.full = false;
        s.armed.clear();
    }

    /// How many faults have fired.
    pub fn fired(&self) -> u64 {
        self.state.lock().fired
    }

    /// Counts `op` on `path`; returns the failure to inject, if any.
    fn check(&self, op: FaultOp, path: &Path) -> Option<FaultKind> {
        let mut s = self.state.lock();
        if op == FaultOp::Write && s.full {
            return Some(FaultKind::NoSpace);
        }
        let path = path.as_os_str().to_string_lossy();
        let i = s.armed.iter_mut().position(|a| {
            if a.op != op
                || a.suffix
                    .as_ref()
                    .is_some_and(|x| !path.ends_with(x.as_str()))
            {
                return false;
            }
            if a.skip > 0 {
                a.skip -= 1;
                return false;
            }
            true
        })?;
        let a = s.armed.remove(i);
        s.fired += 1;
        if op == FaultOp::Write && a.kind != FaultKind::Eio {
            s.full = true;
        }
        Some(a.kind)
    }
}

impl Backend for Fault {
    fn open(&self, path: &Path, how: Open) -> io::Result<File> {
        let inner = self.inner.open(path, how)?;
        Ok(File::Sim(Arc::new(FaultFile {
            inner,
            path: path.into(),
            fault: self.clone(),
        })))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(k) = self.check(FaultOp::Rename, from) {
            return Err(err(k));
        }
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.inner.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if let Some(k) = self.check(FaultOp::Sync, dir) {
            return Err(err(k));
        }
        self.inner.sync_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        self.inner.modified(path)
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: File,
    path: std::path::PathBuf,
    fault: Fault,
}

impl FileOps for FaultFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.inner.read_at(buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        match self.fault.check(FaultOp::Write, &self.path) {
            None => self.inner.write_at(buf, off),
            Some(FaultKind::NoSpaceHalfway) if buf.len() > 1 => {
                self.inner.write_all_at(&buf[..buf.len() / 2], off)?;
                Ok(buf.len() / 2)
            }
            Some(k) => Err(err(k)),
        }
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.inner.len()? && self.fault.state.lock().full {
            return Err(err(FaultKind::NoSpace));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(k) = self.fault.check(FaultOp::Sync, &self.path) {
            return Err(err(k));
        }
        self.inner.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if len > self.inner.len()? && self.fault.state.lock().full {
            return Err(err(FaultKind::NoSpace));
        }
        self.inner.allocate(len)
    }

    fn try_lock(&self) -> io::Result<()> {
        self.inner.try_lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Memory, is_no_space};

    #[test]
    fn nth_sync_fails_once() {
        let f = Fault::new(Memory::new().storage());
        let s = f.storage();
        let a = s.open(Path::new("a"), Open::CREATE).unwrap();
        f.fail(FaultOp::Sync, 2, FaultKind::Eio);
        a.sync_data().unwrap();
        a.sync_data().unwrap();
        let e = a.sync_data().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(EIO));
        a.sync_data().unwrap();
        assert_eq!(f.fired(), 1);
    }

    #[test]
    fn enospc_halfway_then_full_until_freed() {
        let f = Fault::new(Memory::new().storage());
        let s = f.storage();
        let a = s.open(Path::new("v.dat"), Open::CREATE).unwrap();
        let b = s.open(Path::new("v.idx"), Open::CREATE).unwrap();
        f.fail_on(FaultOp::Write, ".dat", 1, FaultKind::NoSpaceHalfway);
        b.write_all_at(b"idx", 0).unwrap();
        a.write_all_at(b"first", 0).unwrap();
        let e = a.write_all_at(b"12345678", 5).unwrap_err();
        assert!(is_no_space(&e));
        assert_eq!(
            s.read(Path::new("v.dat")).unwrap(),
            b"first1234",
            "half written"
        );
        assert!(
            is_no_space(&b.write_all_at(b"x", 3).unwrap_err()),
            "disk full"
        );
        assert!(is_no_space(&b.set_len(100).unwrap_err()));
        f.free_space();
        b.write_all_at(b"x", 3).unwrap();
    }

    #[test]
    fn rename_fails_and_leaves_both_names() {
        let f = Fault::new(Memory::new().storage());
        let s = f.storage();
        s.write_atomic(Path::new("a"), b"1").unwrap();
        f.fail(FaultOp::Rename, 0, FaultKind::Eio);
        assert!(s.rename(Path::new("a"), Path::new("b")).is_err());
        assert!(s.exists(Path::new("a")).unwrap());
        assert!(!s.exists(Path::new("b")).unwrap());
    }
}
