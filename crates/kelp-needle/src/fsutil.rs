//! The file-system recipes (atomic replace, directory fsync, remove if
//! present) live on `kelp_storage::Storage`; these wrappers run them on
//! the real file system for callers outside the storage code.

use std::io;
use std::path::Path;

use kelp_storage::Storage;

/// `Storage::write_atomic` on the real file system.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    Storage::real().write_atomic(path, bytes)
}

/// `Storage::sync_parent` on the real file system.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    Storage::real().sync_parent(path)
}

/// `Storage::remove_if_exists` on the real file system.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    Storage::real().remove_if_exists(path)
}
