//! The small file-system recipes every caller uses, in one place: atomic
//! replace, parent-directory fsync, remove-if-present, whole-file and
//! sequential reads.

use std::io;
use std::path::Path;

use crate::{File, Open, Storage};

/// Where `write_atomic_with` takes each piece of a file's new content.
pub type Sink<'a> = dyn FnMut(&[u8]) -> io::Result<()> + 'a;

/// Sequential `std::io::Read` over a file's positional reads.
pub struct FileReader {
    file: File,
    pos: u64,
}

impl io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Storage {
    /// Replaces `path` with `bytes` so a crash leaves either the old or the
    /// new content: write `<path>.tmp`, fsync it, rename it over `path`,
    /// fsync the directory.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.write_atomic_with(path, &mut |sink| sink(bytes))
    }

    /// `write_atomic` for content made in pieces: `fill` hands each piece
    /// to the sink it is given, which appends it to the temp file.
    pub fn write_atomic_with(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(&mut Sink<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        {
            let f = self.open(tmp, Open::REPLACE)?;
            let mut at = 0u64;
            fill(&mut |piece| {
                f.write_all_at(piece, at)?;
                at += piece.len() as u64;
                Ok(())
            })?;
            f.sync_all()?;
        }
        self.rename(tmp, path)?;
        self.sync_parent(path)
    }

    /// A reader of `path` from its start, and the file's length.
    pub fn reader(&self, path: &Path) -> io::Result<(FileReader, u64)> {
        let f = self.open(path, Open::READ)?;
        let len = f.len()?;
        Ok((FileReader { file: f, pos: 0 }, len))
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
