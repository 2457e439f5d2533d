//! The Kelp blob store client: the one way Kelp's own tools (the
//! benchmark, tests, the filer) talk to masters and volume servers over
//! the SeaweedFS HTTP API.
//!
//! - [`Client::assign`] reserves file ids (`/dir/assign`);
//! - [`Client::lookup`] locates volumes through a location map cached for
//!   [`ClientOptions::location_ttl`] and dropped when a location fails;
//! - [`Client::upload`] stores bytes or a stream (multipart POST);
//! - [`Client::read`], [`Client::read_range`] and [`Client::read_stream`]
//!   fail over between replicas (no answer or 5xx moves on, 404 is an
//!   answer) and fetch a read token from the master on 401;
//! - [`Client::delete`] deletes on every replica, with a fresh write token
//!   when the cluster signs writes;
//! - [`Client::upload_chunked`] stores a large stream as chunks plus a
//!   chunk manifest.
//!
//! Every error is a [`ClientError`] naming the operation, the server and
//! the cause. See `docs/client.md`.

mod chunked;
mod client;
mod error;
mod locations;
mod master;
mod reply;
mod volume;

pub use chunked::{ChunkedOptions, ChunkedUpload};
pub use client::{Client, ClientOptions, ReadStream, UploadTarget};
pub use error::{ClientError, Op, Server};
pub use master::{AssignRequest, Assignment, Location};
pub use volume::{UploadBody, UploadOptions, UploadResult};
