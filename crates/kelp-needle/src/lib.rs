//! SeaweedFS-compatible volume files: superblock, needles, `.idx`, `.vif`,
//! the in-memory needle map, checkpoints, and crash recovery at open.
//!
//! Everything here is synchronous; the volume server calls it from
//! blocking threads. `Volume` is `Send + Sync`.

pub mod checkpoint;
pub mod compaction;
mod data_stream;
pub mod digest;
pub mod dir;
pub mod error;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod group_commit;
pub mod idx;
pub mod needle;
pub mod needle_map;
mod prefill;
mod recovery;
pub mod superblock;
mod syncer;
pub mod vif;
pub mod volume;
mod volume_ops;
pub mod watermark;

pub use compaction::{CommitReport, CompactionReport};
pub use data_stream::{DataStream, Piece};
pub use dir::scan_dir;
pub use error::{NeedleError, VolumeError};
pub use idx::{IdxEntry, OffsetWidth};
pub use needle::Needle;
pub use needle_map::{MapCounters, NeedleMap, NeedleValue};
pub use superblock::SuperBlock;
pub use syncer::Durable;
pub use vif::VolumeInfoFile;
pub use volume::{
    DeleteOutcome, OpenOptions, OpenReport, SyncMode, SyncStats, Volume, VolumeOptions,
    VolumeStats, WriteOutcome,
};

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn volume_is_send_sync() {
        assert_send_sync::<crate::Volume>();
    }
}
