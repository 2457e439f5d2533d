//! On-disk block regions, the storage under each block-volume downstairs:
//! the region file, extents with per-block contexts (checksums), versions
//! and births, snapshots (`catalog`, `saved`, and the region's snapshot
//! operations in `snapshot`), `verify` across replicas, and the send
//! stream that carries snapshots between hosts (`stream`). Synchronous code over
//! kelp-storage, with no async runtime; the network ends (downstairs,
//! upstairs, NBD) are in kelp-block, which re-exports these modules.

pub mod catalog;
pub mod codec;
pub mod context;
pub mod error;
pub mod extent;
pub mod link;
pub mod region;
pub mod saved;
pub mod snapshot;
pub mod stream;
pub mod transfer;
pub mod verify;
mod writeback;

pub use catalog::{Catalog, Snapshot};
pub use context::BlockContext;
pub use error::{BlockError, Result};
pub use extent::{ExtentImage, ExtentVersion};
pub use region::{Region, RegionDef};
