//! The file-system boundary of Kelp's storage code.
//!
//! Needle volumes and block regions do all their file IO through a
//! [`Storage`] (a directory-level [`Backend`]: open, rename, remove, list,
//! directory sync) and the [`File`] handles it opens (pread, pwrite,
//! append, len, set_len, fdatasync). Three backends exist:
//!
//! * [`Real`]: `std::fs`, what runs in production.
//! * [`Memory`]: a model of the page cache. Every file has a durable image
//!   and the ordered writes made since its last fdatasync; creates, renames
//!   and removes are durable only once their directory is synced.
//!   [`Memory::crash`] keeps all synced state plus a seeded random subset of
//!   the rest, each kept write possibly torn at 512-byte sector boundaries.
//! * [`Fault`]: wraps any backend and fails the Nth write, fdatasync or
//!   rename with EIO or ENOSPC (a write may stop halfway for ENOSPC).
//! * [`Unsynced`]: the real file system with every sync skipped (the
//!   downstairs' `--sync=none`, for throwaway data and power-cut controls).
//!
//! # Dispatch, and why the real backend costs nothing
//!
//! The per-write path is [`File`], an enum: its `Real` arm calls
//! `std::os::unix::fs::FileExt` directly (a predictable branch, inlined),
//! only simulated files go through a `dyn FileOps`. The directory-level
//! operations (open, rename, remove, list, directory sync) run once per
//! file or per compaction, never per write, so [`Storage`] is a thin
//! `Arc<dyn Backend>`: no generic parameter spreads into `Volume`,
//! `Region` and every crate that names them.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

mod fault;
mod file;
mod helpers;
mod memory;
mod real;
mod seeds;
mod unsynced;

pub use fault::{Fault, FaultKind, FaultOp};
pub use file::{File, FileOps};
pub use helpers::{FileReader, Sink};
pub use memory::Memory;
pub use real::Real;
pub use seeds::for_each_seed;
pub use unsynced::Unsynced;

/// Linux errno values the fault backend returns.
pub const EIO: i32 = 5;
pub const ENOSPC: i32 = 28;

/// How to open a file (a subset of `std::fs::OpenOptions`). Every open
/// file can be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Open {
    pub write: bool,
    /// Create the file if it is missing.
    pub create: bool,
    /// Fail if the file exists (implies `create`).
    pub create_new: bool,
    /// Cut the file to zero bytes.
    pub truncate: bool,
}

impl Open {
    pub const READ: Open = Open {
        write: false,
        create: false,
        create_new: false,
        truncate: false,
    };
    pub const WRITE: Open = Open {
        write: true,
        ..Open::READ
    };
    /// Read-write, created if missing, contents kept.
    pub const CREATE: Open = Open {
        create: true,
        ..Open::WRITE
    };
    /// Read-write, must not exist yet.
    pub const CREATE_NEW: Open = Open {
        create_new: true,
        ..Open::WRITE
    };
    /// Read-write, created if missing, cut to zero bytes.
    pub const REPLACE: Open = Open {
        truncate: true,
        ..Open::CREATE
    };
}

/// A directory-level storage backend.
pub trait Backend: Send + Sync + fmt::Debug {
    fn open(&self, path: &Path, how: Open) -> io::Result<File>;
    /// Atomically replaces `to` with `from` (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Unlinks a file (durable after `sync_dir`). Open handles stay usable.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Makes the creates, renames and removes in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Last modification time of a file.
    fn modified(&self, path: &Path) -> io::Result<SystemTime>;
    /// Paths name real files, which other tools (a reflink) may use.
    fn is_real(&self) -> bool {
        false
    }
}

/// A shared handle on a backend; the default is the real file system.
#[derive(Clone, Debug)]
pub struct Storage(Arc<dyn Backend>);

impl Storage {
    pub fn new(backend: impl Backend + 'static) -> Storage {
        Storage(Arc::new(backend))
    }

    /// The real file system.
    pub fn real() -> Storage {
        Storage::new(Real)
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage::real()
    }
}

impl std::ops::Deref for Storage {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Whether an IO error means the device is full (ENOSPC or EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(ENOSPC)
}
