//! The S3 protocol layer: pure code between HTTP and the S3 handlers.
//!
//! stub
pub mod checksum;
pub mod chunked;
pub mod cors;
pub mod error;
pub mod etag;
mod hex;
pub mod names;
pub mod policy;
pub mod post_form;
pub mod request;
pub mod sigv4;
pub mod time;
pub mod uri;
pub mod xml;
