//! Kelp's replicated block volumes, in the manner of Oxide Crucible (the
//! protocol and formats are Kelp's own; see `docs/block.md`).
//!
//! Layers, bottom up:
//! - [`region`] / [`extent`] / [`context`] / [`verify`]: one replica on
//!   disk, synchronous; they live in the `kelp-region` crate (no async
//!   runtime) and are re-exported here.
//! - [`frame`]: the downstairs wire protocol ([`buffers`]: its large
//!   frames and NBD writes read into reused buffers); [`auth`]: proving the
//!   volume's secret on it.
//! - [`downstairs`]: serves one region over TCP.
//! - [`upstairs`]: replicates to three downstairs, reconciles, repairs.
//! - [`nbd`]: exports an upstairs over NBD; [`control`]: its HTTP control
//!   API (status, replace).

pub use kelp_region::{
    BlockContext, BlockError, ExtentImage, ExtentVersion, Region, RegionDef, Result,
};
pub use kelp_region::{
    catalog, codec, context, error, extent, link, region, saved, snapshot, transfer, verify,
};

pub mod auth;
pub mod buffers;
pub mod control;
pub mod downstairs;
pub mod frame;
pub mod fuzzing;
pub mod nbd;
pub mod transport;
pub mod upstairs;
