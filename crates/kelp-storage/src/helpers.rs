//! The small file-system recipes every caller uses, in one place: atomic
//! replace, parent-directory fsync, remove-if-present, whole-file read.

use std::io;
use std::path::Path;

use crate::{Open, Storage};

impl Storage {
    /// Replaces `path` with `bytes` so a crash leaves either the old or the
    /// new content: write `<path>.tmp`, fsync it, rename it over `path`,
    /// fsync the directory.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        {
            let f = self.open(tmp, Open::REPLACE)?;
            f.write_all_at(bytes, 0)?;
            f.sync_all()?;
        }
        self.rename(tmp, path)?;
        self.sync_parent(path)
    }

    /// fsyncs the directory holding `path`, making a create, rename or
    /// remove of `path` durable.
    pub fn sync_parent(&self, path: &Path) -> io::Result<()> {
        self.sync_dir(path.parent().unwrap_or(Path::new("")))
    }

    /// Removes a file, ignoring "not found".
    pub fn remove_if_exists(&self, path: &Path) -> io::Result<()> {
        match self.remove(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The whole contents of a file.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, Open::READ)?;
        let len = usize::try_from(f.len()?).map_err(|_| io::Error::other("file too large"))?;
        let mut buf = vec![0u8; len];
        let mut n = 0;
        while n < len {
            match f.read_at(&mut buf[n..], n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Whether `path` names a file that can be opened.
    pub fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.open(path, Open::READ) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The length of `path`, or None if it does not exist.
    pub fn len_if_exists(&self, path: &Path) -> io::Result<Option<u64>> {
        match self.open(path, Open::READ) {
            Ok(f) => f.len().map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
