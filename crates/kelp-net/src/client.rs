//! Clients for peer calls: reqwest for HTTP(S), tonic channels for gRPC,
//! both following the TLS sections of `security.toml` and both carrying
//! the peer credential ([`SecurityConfig::peer_token`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use kelp_core::tls::TlsError;
use kelp_core::{GrpcRole, SecurityConfig};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use kelp_core::tls::read;

/// `https` when `[https.client]` is enabled, else `http`.
pub fn http_scheme(sec: &SecurityConfig) -> &'static str {
    if sec.tls.https_client.is_some() {
        "https"
    } else {
        "http"
    }
}

/// A reqwest builder that speaks HTTPS as `[https.client]` says (verifying
/// servers against its CA, presenting its cert when asked).
pub fn http_builder(sec: &SecurityConfig) -> Result<reqwest::ClientBuilder, TlsError> {
    let builder = reqwest::Client::builder().no_proxy();
    let Some(c) = &sec.tls.https_client else {
        return Ok(builder);
    };
    let identity = c.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let config = kelp_core::tls::client_config(&c.ca, identity)?;
    Ok(builder.use_preconfigured_tls((*config).clone()))
}

/// The `Authorization` header value of a fresh peer token, if peers are
/// authenticated.
pub fn peer_header(sec: &SecurityConfig) -> Option<HeaderValue> {
    let token = sec.peer_token()?;
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// Adds the peer credential to a reqwest request.
pub fn with_peer(req: reqwest::RequestBuilder, sec: &SecurityConfig) -> reqwest::RequestBuilder {
    match peer_header(sec) {
        Some(v) => req.header(header::AUTHORIZATION, v),
        None => req,
    }
}

/// A lazily connecting gRPC channel from `role` to `addr` (`host:port`),
/// over mutual TLS when `role` has gRPC TLS files
/// ([`kelp_core::security::TlsSettings::grpc_dial`]), that sends the peer
/// credential with every call.
pub fn grpc_channel(
    sec: &Arc<SecurityConfig>,
    role: GrpcRole,
    addr: &str,
    connect_timeout: Duration,
) -> Result<PeerChannel, TlsError> {
    let tls = sec.tls.grpc_dial(role);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| TlsError::Config(format!("gRPC address {addr:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(files) = tls {
        let ca = files
            .ca
            .as_deref()
            .ok_or_else(|| TlsError::Config("gRPC TLS needs a CA ([grpc] ca)".to_string()))?;
        let (cert, key) = files.dial_identity();
        // As on the server side: name the file when its PEM is bad.
        kelp_core::tls::client_config(ca, Some((cert, key)))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .identity(Identity::from_pem(read(cert)?, read(key)?));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| TlsError::Config(format!("gRPC TLS for {addr}: {e}")))?;
    }
    Ok(PeerChannel {
        inner: endpoint.connect_lazy(),
        security: sec.clone(),
    })
}

/// A tonic channel that adds the peer token to each request.
#[derive(Clone)]
pub struct PeerChannel {
    inner: Channel,
    security: Arc<SecurityConfig>,
}

impl tower::Service<axum::http::Request<tonic::body::Body>> for PeerChannel {
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower::Service<axum::http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(v) = peer_header(&self.security) {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        tower::Service::call(&mut self.inner, req)
    }
}
