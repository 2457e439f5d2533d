//! The S3 protocol layer: pure code between HTTP and the S3 handlers. No
//! storage, no I/O of its own; every parser bounds its input and returns
//! an [`S3Error`] instead of panicking.
//!
//! What lives where, in the order a request meets it:
//!
//! - [`sigv4`]: verify the signature (header, presigned query, anonymous)
//!   with [`sigv4::verify`] → [`sigv4::Auth`] (identity, region, payload
//!   mode, signing context); [`sigv4::PayloadHasher`] checks a body against
//!   `x-amz-content-sha256`.
//! - [`request`]: [`request::classify`] turns method, path, query and
//!   headers into an [`S3Op`] with decoded bucket and key and parsed
//!   parameters, ranges, conditions, copy sources and object headers.
//! - [`chunked`]: [`chunked::AwsChunked`] decodes `aws-chunked` bodies
//!   (signed chunks, trailers, checksums) as a stream.
//! - [`checksum`]: `x-amz-checksum-*` (CRC32, CRC32C, SHA-1, SHA-256).
//! - [`post_form`] and [`policy`]: browser POST uploads: form, policy,
//!   policy signature, bounded file stream.
//! - [`xml::requests`] parses request bodies; [`xml::responses`] renders
//!   every response document; [`cors`] owns the CORS document and matching.
//! - [`error`]: [`S3Error`], codes, statuses and the `<Error>` body.
//! - [`names`], [`etag`], [`time`], [`uri`]: bucket/key rules, ETags and
//!   conditions, the three timestamp forms, percent-encoding.

pub mod checksum;
pub mod chunked;
pub mod cors;
pub mod error;
pub mod etag;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
mod hex;
pub mod names;
pub mod policy;
pub mod post_form;
pub mod request;
pub mod sigv4;
pub mod time;
pub mod uri;
pub mod xml;

pub use error::{S3Error, S3ErrorCode, S3Result};
pub use request::{S3Op, classify};
pub use sigv4::{Auth, Identity, verify};
