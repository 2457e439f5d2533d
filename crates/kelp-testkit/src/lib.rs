//! What Kelp's integration tests share, so each harness does not grow its
//! own: real processes started with a ready file on port 0 ([`daemon`]),
//! polling with a deadline instead of fixed sleeps ([`wait`]), checks for
//! external tools that skip loudly and fail under CI ([`tools`]), free
//! ports ([`ports`]), a real PostgreSQL server ([`postgres`]) and
//! reproducible test data ([`data`]); with the `cluster` feature, an
//! in-process master and volume servers (`cluster`).

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod daemon;
pub mod data;
pub mod ports;
pub mod postgres;
pub mod tools;
pub mod wait;

pub use daemon::{Daemon, Proc, Spawn};
pub use data::blob;
pub use postgres::Postgres;
pub use tools::{is_root, require_tool, skip, which};
pub use wait::{DEADLINE, until, until_async};
