//! Error types. `NeedleError` is what a codec returns for bytes it cannot
//! accept; `VolumeError` is what a volume operation returns. The volume
//! server maps each `VolumeError` variant to one HTTP status in one place.

use std::io;

/// A format error found while decoding bytes read from disk (or the fuzzer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedleError {
    #[error("{what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("unsupported needle version {0}")]
    UnsupportedVersion(u8),
    #[error("invalid CRC: stored {stored:08x}, data has {computed:08x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("malformed needle: {0}")]
    Malformed(&'static str),
    #[error("needle too large: {0}")]
    TooLarge(&'static str),
    #[error("offset {0} units does not fit the index offset width")]
    OffsetOverflow(u64),
    #[error("bad superblock: {0}")]
    SuperBlock(String),
    #[error("bad .vif: {0}")]
    Vif(String),
    #[error("bad checkpoint: {0}")]
    Checkpoint(String),
    #[error("bad replica digest or needle copy: {0}")]
    Replica(String),
}

/// Errors of volume operations.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("needle {key:x} not found")]
    NotFound { key: u64 },
    #[error("needle {key:x}: cookie mismatch (stored {stored:08x}, given {given:08x})")]
    CookieMismatch { key: u64, stored: u32, given: u32 },
    #[error("needle {key:x} at offset {offset} is corrupt: {reason}")]
    Corrupt {
        key: u64,
        offset: u64,
        reason: String,
    },
    #[error("volume is read-only")]
    ReadOnly,
    #[error("volume is full: {size} bytes would exceed the limit of {limit}")]
    Full { size: u64, limit: u64 },
    #[error("volume files already exist at {0}")]
    Exists(String),
    #[error("volume .dat file missing at {0}")]
    Missing(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(
        "fdatasync failed earlier ({0}); the volume refuses writes until it is reopened and recovered"
    )]
    SyncFailed(String),
    /// The disk is full (ENOSPC/EDQUOT): the write was not stored. The
    /// volume turns read-only until it is marked writable or reopened.
    #[error("no space left on device: {0}")]
    NoSpace(String),
    #[error("compaction: {0}")]
    Compaction(String),
    /// A test stopped an operation at a fault point (see `compaction.rs`).
    #[error("injected fault at {0}")]
    FaultInjected(&'static str),
    #[error("I/O error: {0}")]
    Io(io::Error),
    #[error(transparent)]
    Format(#[from] NeedleError),
}

/// ENOSPC becomes `NoSpace`, so every `?` on a file operation reports a
/// full disk as such (the volume server answers it with 507).
impl From<io::Error> for VolumeError {
    fn from(e: io::Error) -> Self {
        if kelp_storage::is_no_space(&e) {
            VolumeError::NoSpace(e.to_string())
        } else {
            VolumeError::Io(e)
        }
    }
}
