//! Identifiers and small value types shared by every Kelp crate.
//!
//! These are the SeaweedFS-compatible names for things: a file id
//! (`3,01637037d6`), a replica placement (`001`) and a TTL (`3d`). They
//! parse input from the network, so every parser returns an error instead
//! of panicking.

pub mod buffers;
pub mod file_id;
pub mod fuzzing;
pub mod jwt;
pub mod replica;
pub mod security;
pub mod telemetry;
pub mod tls;
pub mod ttl;
pub mod white_list;

pub use file_id::{FileId, FileIdError};
pub use jwt::{JwtError, JwtKey};
pub use replica::{ReplicaPlacement, ReplicaPlacementError};
pub use security::{GrpcRole, SecurityConfig, TlsFiles};
pub use ttl::{Ttl, TtlError, TtlUnit};
pub use white_list::WhiteList;

/// Volume id as SeaweedFS numbers them (u32, starting at 1).
pub type VolumeId = u32;
/// Needle key, handed out by the master's sequencer.
pub type NeedleId = u64;
/// Random per-file secret that must accompany every read and delete.
pub type Cookie = u32;
