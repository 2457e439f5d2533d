//! The filer: a namespace of directories and files over Kelp's blob store.
//!
//! - [`Filer`] (`filer.rs`): lookups, listings, writes (content as chunks
//!   on volume servers first, then the entry), mkdir, delete, rename,
//!   quotas, the change log and the garbage collector;
//! - [`store`]: the metadata store, one interface with an embedded redb
//!   backend (the default) and PostgreSQL;
//! - [`Entry`] (`entry.rs`) and its byte layout; [`FullPath`] (`path.rs`);
//! - `upload.rs` and `read.rs`: chunked, streamed content with optional
//!   zstd; `lease.rs`: file ids reserved in batches and reaped after a
//!   crash;
//! - [`http`]: the SeaweedFS-compatible HTTP API (`kelp filer`).
//!
//! See `docs/filer.md`.

mod entry;
mod error;
mod filer;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod lease;
mod path;
mod read;
pub mod store;
mod upload;

pub use entry::{Chunk, Entry, Kind, MODE_DIR};
pub use error::FilerError;
pub use filer::{Filer, FilerOptions, NewFile};
pub use path::FullPath;
pub use upload::Compress;
