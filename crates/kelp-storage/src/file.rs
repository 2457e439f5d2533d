//! An open file: the real one called directly, a simulated one through
//! `dyn FileOps` (see the crate comment for why).

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The operations of a simulated (or wrapped) open file.
pub trait FileOps: Send + Sync + fmt::Debug {
    /// Reads at `off`; fewer bytes (0 at or past the end) near the end.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    /// Writes at `off`; may write fewer bytes than given (a short write).
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes this file's contents and length durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves space up to `len` bytes (reads as zeros where unwritten).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Takes an exclusive advisory lock without waiting.
    fn try_lock(&self) -> io::Result<()>;
}

/// An open file.
pub enum File {
    Real(std::fs::File),
    Sim(Arc<dyn FileOps>),
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            File::Real(r) => r.fmt(f),
            File::Sim(s) => s.fmt(f),
        }
    }
}

impl From<std::fs::File> for File {
    fn from(f: std::fs::File) -> Self {
        File::Real(f)
    }
}

impl File {
    #[inline]
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            File::Real(f) => f.read_at(buf, off),
            File::Sim(f) => f.read_at(buf, off),
        }
    }

    #[inline]
    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        match self {
            File::Real(f) => f.write_at(buf, off),
            File::Sim(f) => f.write_at(buf, off),
        }
    }

    /// Reads exactly `buf.len()` bytes at `off` (`UnexpectedEof` if the
    /// file is shorter).
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
        if let File::Real(f) = self {
            return f.read_exact_at(buf, off);
        }
        while !buf.is_empty() {
            match self.read_at(buf, off) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fills `buf` from `off` only if every byte is in the page cache:
    /// `Ok(false)` (and `buf` undefined) when the read would wait for the
    /// disk, or the kernel cannot tell (`preadv2` with `RWF_NOWAIT`). For
    /// an async worker that must not block: on `false` it hands the read
    /// to a thread that may. A simulated file is memory: always read.
    pub fn read_cached_at(&self, buf: &mut [u8], off: u64) -> io::Result<bool> {
        let f = match self {
            File::Real(f) => f,
            File::Sim(_) => return self.read_exact_at(buf, off).map(|()| true),
        };
        let Ok(off) = libc::off_t::try_from(off) else {
            return Ok(false);
        };
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `iov` points into `buf`, which outlives the call and is
        // writable for `iov_len` bytes; the fd is open for `f`'s lifetime.
        let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(
                    libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS | libc::EINTR,
                ) => Ok(false),
                _ => Err(e),
            };
        }
        // A short read: part of it was not cached, or the file ends there;
        // the waiting read tells which.
        Ok(n as usize == buf.len())
    }

    /// Writes all of `buf` at `off`. On an error some prefix may have been
    /// written.
    pub fn write_all_at(&self, mut buf: &[u8], mut off: u64) -> io::Result<()> {
        if let File::Real(f) = self {
            return f.write_all_at(buf, off);
        }
        while !buf.is_empty() {
            match self.write_at(buf, off) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `bufs` one after another from `off`, in as few system calls
    /// as the kernel allows (`pwritev`; one for a small needle's head,
    /// data and tail). On an error some prefix may have been written.
    pub fn write_all_vectored_at(&self, bufs: &[&[u8]], mut off: u64) -> io::Result<()> {
        let File::Real(f) = self else {
            for buf in bufs {
                self.write_all_at(buf, off)?;
                off += buf.len() as u64;
            }
            return Ok(());
        };
        let mut slices: Vec<io::IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| io::IoSlice::new(b))
            .collect();
        let mut rest = &mut slices[..];
        // Linux takes at most IOV_MAX (1024) pieces per call.
        while !rest.is_empty() {
            let n = rest.len().min(1024);
            let at = libc::off_t::try_from(off)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the first
            // `n` slices point into buffers borrowed for this call.
            let rc =
                unsafe { libc::pwritev(f.as_raw_fd(), rest.as_ptr().cast(), n as libc::c_int, at) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            off += rc as u64;
            io::IoSlice::advance_slices(&mut rest, rc as usize);
        }
        Ok(())
    }

    /// Writes `buf` at the current end of the file and returns where it
    /// went. Only for files with a single writer.
    pub fn append(&self, buf: &[u8]) -> io::Result<u64> {
        let at = self.len()?;
        self.write_all_at(buf, at)?;
        Ok(at)
    }

    pub fn len(&self) -> io::Result<u64> {
        match self {
            File::Real(f) => Ok(f.metadata()?.len()),
            File::Sim(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            File::Real(f) => f.set_len(len),
            File::Sim(f) => f.set_len(len),
        }
    }

    /// fdatasync.
    #[inline]
    pub fn sync_data(&self) -> io::Result<()> {
        match self {
            File::Real(f) => f.sync_data(),
            File::Sim(f) => f.sync_data(),
        }
    }

    /// Starts writing the file's dirty pages back without waiting for them
    /// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`): a hint that makes
    /// a later fdatasync shorter, never a durability guarantee. For a
    /// simulated or wrapped file it does nothing.
    pub fn start_writeback(&self, from: u64) -> io::Result<()> {
        match self {
            File::Real(f) => {
                let from = libc::off64_t::try_from(from)
                    .map_err(|_| io::Error::other("offset too large"))?;
                // SAFETY: sync_file_range on a file descriptor we own; no
                // memory is involved.
                let rc = unsafe {
                    libc::sync_file_range(f.as_raw_fd(), from, 0, libc::SYNC_FILE_RANGE_WRITE)
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            File::Sim(_) => Ok(()),
        }
    }

    /// fsync (data and metadata). In the simulated backends a file's
    /// length is part of its data, so this is `sync_data`.
    pub fn sync_all(&self) -> io::Result<()> {
        match self {
            File::Real(f) => f.sync_all(),
            File::Sim(f) => f.sync_data(),
        }
    }

    /// Allocates every byte up to `len` (fallocate), so later writes
    /// overwrite allocated blocks instead of filling holes.
    pub fn allocate(&self, len: u64) -> io::Result<()> {
        match self {
            File::Real(f) => {
                let len = i64::try_from(len).map_err(|_| io::Error::other("file too large"))?;
                // SAFETY: fallocate on a file descriptor we own; no memory
                // is involved.
                let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            File::Sim(f) => f.allocate(len),
        }
    }

    /// Takes an exclusive advisory lock (flock) without waiting; fails with
    /// `WouldBlock` if another open file description holds it.
    pub fn try_lock(&self) -> io::Result<()> {
        match self {
            File::Real(f) => {
                // SAFETY: flock on a file descriptor we own; no memory is
                // involved.
                let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            File::Sim(f) => f.try_lock(),
        }
    }

    /// A second handle on the same open file.
    pub fn try_clone(&self) -> io::Result<File> {
        match self {
            File::Real(f) => Ok(File::Real(f.try_clone()?)),
            File::Sim(f) => Ok(File::Sim(f.clone())),
        }
    }
}
