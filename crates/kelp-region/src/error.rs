//! Errors of the block layer. `BlockError` is what region, extent, frame and
//! NBD code return. It is turned into a wire error code in exactly one place
//! (`frame::ErrorCode::from(&BlockError)`) and into an NBD errno in exactly
//! one place (`nbd::errno`).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The disk is full (ENOSPC/EDQUOT). The guest gets NBD's ENOSPC.
    #[error("no space left on device: {0}")]
    NoSpace(String),
    /// A write or fdatasync of the region failed earlier; after a failed
    /// writeback nothing unsynced can be trusted, so the region refuses
    /// writes and flushes until the downstairs reopens it.
    #[error(
        "an earlier write or fdatasync failed ({0}); the region refuses writes until it is reopened"
    )]
    StorageFailed(String),
    #[error("bad region options: {0}")]
    BadOptions(String),
    #[error("a region already exists in {0}")]
    RegionExists(String),
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("unsupported format version {version} of {what}")]
    UnsupportedVersion { what: &'static str, version: u32 },
    #[error("blocks {start}..{end} are outside the region ({total} blocks)")]
    OutOfRange { start: u64, end: u64, total: u64 },
    #[error("extent {0} does not exist")]
    NoSuchExtent(u32),
    #[error("block {block}: data checksum {computed:08x} does not match context {stored:08x}")]
    ChecksumMismatch {
        block: u64,
        stored: u32,
        computed: u32,
    },
    #[error("data length {len} is not {blocks} blocks of {block_size} bytes")]
    BadLength {
        len: usize,
        blocks: u64,
        block_size: u32,
    },
    #[error("the region is open read-only")]
    ReadOnly,
    #[error("generation {offered} is lower than generation {current} already seen")]
    GenerationTooLow { offered: u64, current: u64 },
    #[error("fenced: an upstairs with generation {0} took over")]
    Fenced(u64),
    #[error("not active: activate before sending IO")]
    NotActive,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("region mismatch: {0}")]
    RegionMismatch(String),
    #[error("peer reported error {code}: {message}")]
    Remote { code: u16, message: String },
    #[error("not enough healthy downstairs: {0}")]
    NoQuorum(String),
    #[error("the volume is shutting down")]
    Shutdown,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Tls(String),
    #[error("a snapshot named {0:?} already exists")]
    SnapshotExists(String),
    #[error("no snapshot named {0:?}")]
    NoSuchSnapshot(String),
    /// A snapshot operation that the region's state forbids (a rollback
    /// past later snapshots, a receive onto a changed target, ...).
    #[error("{0}")]
    SnapshotConflict(String),
    /// A request that makes no sense as given (a bad snapshot name, a
    /// resume token that does not parse, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Stream(#[from] crate::stream::StreamError),
    #[error(
        "protocol version mismatch: this side speaks version {ours}, the peer version {theirs}; \
         run the same Kelp release on the upstairs and its downstairs"
    )]
    VersionMismatch { ours: u8, theirs: u8 },
}

impl BlockError {
    /// An IO error on `what`; a full disk becomes `NoSpace`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        if kelp_storage::is_no_space(&source) {
            return BlockError::NoSpace(format!("{}: {source}", what.into()));
        }
        BlockError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        BlockError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub fn protocol(msg: impl Into<String>) -> Self {
        BlockError::Protocol(msg.into())
    }
}

pub type Result<T, E = BlockError> = std::result::Result<T, E>;

/// The wire codes (kelp-block `frame::ErrorCode`) of the two errors that
/// mean a newer upstairs owns the region.
pub mod fencing_code {
    pub const GENERATION_TOO_LOW: u16 = 7;
    pub const FENCED: u16 = 8;
}

impl BlockError {
    /// True for errors that mean a newer upstairs owns the region, also
    /// when they arrive from a downstairs as a wire error code.
    pub fn is_fenced(&self) -> bool {
        match self {
            BlockError::Fenced(_) | BlockError::GenerationTooLow { .. } => true,
            BlockError::Remote { code, .. } => {
                *code == fencing_code::FENCED || *code == fencing_code::GENERATION_TOO_LOW
            }
            _ => false,
        }
    }
}
