//! Kelp's replicated block volumes, in the manner of Oxide Crucible (the
//! protocol and formats are Kelp's own; see `docs/block.md`).
//!
//! Layers, bottom up:
//! - [`region`] / [`extent`] / [`context`]: one replica on disk, synchronous.
//! - [`frame`]: the downstairs wire protocol; [`auth`]: proving the
//!   volume's secret on it.
//! - [`downstairs`]: serves one region over TCP.
//! - [`upstairs`]: replicates to three downstairs, reconciles, repairs.
//! - [`nbd`]: exports an upstairs over NBD; [`control`]: its HTTP control
//!   API (status, replace).

pub mod auth;
pub mod codec;
pub mod context;
pub mod error;
pub mod extent;
pub mod region;
pub mod verify;

pub use context::BlockContext;
pub use error::{BlockError, Result};
pub use extent::{ExtentImage, ExtentVersion};
pub use region::{Region, RegionDef};
pub mod control;
pub mod downstairs;
pub mod frame;
pub mod fuzzing;
pub mod nbd;
pub mod transport;
pub mod upstairs;
