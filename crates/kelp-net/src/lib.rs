//! The network edge every Kelp daemon shares:
//!
//! - [`guard`]: who may call what. Each HTTP route and gRPC method has an
//!   [`Access`] class; the white list and the peer credential are checked
//!   here, file tokens in the handlers that know the file id.
//! - [`serve`]: HTTP or HTTPS for an axum router, gRPC with or without
//!   mutual TLS, each with graceful shutdown.
//! - [`client`]: the HTTP and gRPC clients peers use to reach each other,
//!   with the same TLS settings and the peer credential attached.

pub mod client;
pub mod guard;
pub mod serve;
#[cfg(feature = "test-pki")]
pub mod test_pki;

pub use guard::Access;
