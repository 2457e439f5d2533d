//! The real file system (`std::fs`).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::{Backend, File, Open};

/// `std::fs`, what runs in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

impl Backend for Real {
    fn open(&self, path: &Path, how: Open) -> io::Result<File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(how.write)
            .create(how.create && !how.create_new)
            .create_new(how.create_new)
            .truncate(how.truncate)
            .open(path)?;
        Ok(File::Real(f))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn is_real(&self) -> bool {
        true
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        std::fs::metadata(path)?.modified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Storage;

    #[test]
    fn real_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::real();
        let p = d.path().join("a");
        let f = s.open(&p, Open::CREATE_NEW).unwrap();
        assert!(s.open(&p, Open::CREATE_NEW).is_err(), "create_new twice");
        f.write_all_at(b"hello", 3).unwrap();
        assert_eq!(f.len().unwrap(), 8);
        assert_eq!(f.append(b"!").unwrap(), 8);
        let mut b = [0u8; 9];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"\0\0\0hello!");
        f.sync_data().unwrap();
        f.try_lock().unwrap();
        let other = s.open(&p, Open::READ).unwrap();
        assert!(other.try_lock().is_err(), "lock held by the first handle");
        s.rename(&p, &d.path().join("b")).unwrap();
        s.sync_dir(d.path()).unwrap();
        assert_eq!(s.list(d.path()).unwrap(), vec![OsString::from("b")]);
        s.remove(&d.path().join("b")).unwrap();
        assert!(s.list(d.path()).unwrap().is_empty());
    }
}

#[cfg(test)]
mod cached_read_tests {
    use std::os::fd::AsRawFd;

    use crate::{File, Open, Storage};

    /// `read_cached_at` reads what the page cache holds and refuses, without
    /// waiting, what it does not: here pages dropped with
    /// `POSIX_FADV_DONTNEED` after an fsync, and bytes past the end.
    #[test]
    fn cached_reads_refuse_what_is_not_cached() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        let f = Storage::real().open(&p, Open::CREATE_NEW).unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        f.write_all_at(&data, 0).unwrap();
        let mut buf = vec![0u8; 300_000];
        assert!(f.read_cached_at(&mut buf, 4096).unwrap());
        assert_eq!(buf, data[4096..4096 + 300_000]);
        assert!(
            !f.read_cached_at(&mut buf, data.len() as u64 - 10).unwrap(),
            "past the end"
        );

        f.sync_data().unwrap();
        let File::Real(real) = &f else { unreachable!() };
        // SAFETY: an advice call on a descriptor we own; no memory involved.
        let rc = unsafe { libc::posix_fadvise(real.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        if f.read_cached_at(&mut buf, 4096).unwrap() {
            // The kernel kept the pages anyway (allowed); nothing to check.
            return;
        }
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, data[4096..4096 + 300_000]);
        assert!(
            f.read_cached_at(&mut buf, 4096).unwrap(),
            "read once, now cached"
        );
    }
}

#[cfg(test)]
mod vectored_write_tests {
    use crate::{Memory, Open, Storage};

    /// Pieces land one after another from the offset, on a real file
    /// (including more pieces than one `pwritev` takes) and on a simulated
    /// one; empty pieces are skipped.
    #[test]
    fn vectored_writes_land_in_order() {
        let d = tempfile::tempdir().unwrap();
        let pieces: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| vec![(i % 251) as u8; (i % 7) as usize])
            .collect();
        let slices: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let want: Vec<u8> = pieces.concat();
        for storage in [Storage::real(), Memory::new().storage()] {
            let dir = d.path().join(format!("{}", storage.is_real()));
            storage.create_dir_all(&dir).unwrap();
            let f = storage.open(&dir.join("a"), Open::CREATE_NEW).unwrap();
            f.write_all_vectored_at(&[b"head", b"", b"er"], 0).unwrap();
            f.write_all_vectored_at(&slices, 6).unwrap();
            let mut got = vec![0u8; 6 + want.len()];
            f.read_exact_at(&mut got, 0).unwrap();
            assert_eq!(&got[..6], b"header");
            assert_eq!(&got[6..], &want[..]);
            assert_eq!(f.len().unwrap(), got.len() as u64);
        }
    }
}
