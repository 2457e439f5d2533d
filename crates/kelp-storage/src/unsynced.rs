//! The real file system with every sync skipped: `fdatasync` and directory
//! syncs return success at once. Writes reach the page cache as usual, so a
//! process kill loses nothing, but a power cut loses everything not written
//! back by the kernel on its own. For throwaway data and for showing that a
//! power-cut test notices a missing fsync (its control run).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::{Backend, File, FileOps, Open, Real};

/// [`Real`] without syncs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unsynced;

/// A real file whose syncs do nothing.
#[derive(Debug)]
struct UnsyncedFile(File);

impl FileOps for UnsyncedFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.0.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        self.0.write_at(buf, off)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.0.allocate(len)
    }
    fn try_lock(&self) -> io::Result<()> {
        self.0.try_lock()
    }
}

impl Backend for Unsynced {
    fn open(&self, path: &Path, how: Open) -> io::Result<File> {
        let real = Real.open(path, how)?;
        Ok(File::Sim(Arc::new(UnsyncedFile(real))))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Real.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        Real.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        Real.list(dir)
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        Real.create_dir_all(dir)
    }
    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        Real.modified(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Storage;

    #[test]
    fn writes_reach_the_file_and_syncs_succeed() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::new(Unsynced);
        let p = d.path().join("a");
        let f = s.open(&p, Open::CREATE_NEW).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        s.sync_dir(d.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        f.try_lock().unwrap();
    }
}
