//! Access classes and their checks, for HTTP routes and gRPC methods.
//!
//! | class | white list | peer credential |
//! |---|---|---|
//! | [`Access::Open`] (health checks) | no | no |
//! | [`Access::PublicReads`] (`/<fid>` on volume servers) | writes only | no |
//! | [`Access::Client`] (assign, lookup, status) | yes | no |
//! | [`Access::Peer`] (admin routes, peer RPCs) | yes | yes |
//!
//! A peer credential is a peer token (`Authorization: Bearer <t>`, minted
//! with the cluster key, see kelp-core `security.rs`) or, on gRPC, a client
//! certificate verified by mutual TLS. File data behind `Client` and
//! `PublicReads` routes is further guarded by file tokens, checked where
//! the file id is known.
//!
//! Refusals: HTTP 403 `{"error": ...}` for an address off the white list,
//! 401 for a missing or bad peer credential; gRPC `PERMISSION_DENIED` for
//! both.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kelp_core::SecurityConfig;

/// Who may call a route or method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: liveness and readiness checks.
    Open,
    /// GET and HEAD from anyone (file read tokens still apply); other
    /// methods as [`Access::Client`]. SeaweedFS's volume server does this.
    PublicReads,
    /// Addresses on the white list.
    Client,
    /// Addresses on the white list that prove they are peers.
    Peer,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotWhiteListed(Option<IpAddr>),
    NotAPeer,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotWhiteListed(Some(ip)) => write!(f, "{ip} is not on the white list"),
            Refusal::NotWhiteListed(None) => write!(f, "caller address unknown; white list on"),
            Refusal::NotAPeer => f.write_str("peer credential required"),
        }
    }
}

/// The check itself. `peer_proven` is true when the transport already
/// proved a peer (a verified client certificate).
pub fn check(
    sec: &SecurityConfig,
    access: Access,
    method_is_read: bool,
    addr: Option<IpAddr>,
    bearer: Option<&str>,
    peer_proven: bool,
) -> Result<(), Refusal> {
    let listed = |sec: &SecurityConfig| match addr {
        _ if sec.white_list.is_empty() => Ok(()),
        Some(ip) if sec.white_list.allows(ip) => Ok(()),
        other => Err(Refusal::NotWhiteListed(other)),
    };
    match access {
        Access::Open => Ok(()),
        Access::PublicReads if method_is_read => Ok(()),
        Access::PublicReads | Access::Client => listed(sec),
        Access::Peer => {
            listed(sec)?;
            if peer_proven || sec.is_peer(bearer) {
                Ok(())
            } else {
                Err(Refusal::NotAPeer)
            }
        }
    }
}

/// `Bearer <token>` with the scheme in any case.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// axum middleware state: the settings and the class of the routes it
/// wraps. Use with `axum::middleware::from_fn_with_state`.
#[derive(Clone)]
pub struct HttpGuard {
    pub security: Arc<SecurityConfig>,
    pub access: Access,
}

/// The axum middleware: refuses with 401/403 JSON, or runs the route.
pub async fn http(
    axum::extract::State(g): axum::extract::State<HttpGuard>,
    req: Request,
    next: Next,
) -> Response {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
    match check(&g.security, g.access, is_read, addr, token, false) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::info!(path = req.uri().path(), method = %req.method(), caller = ?addr,
                reason = %refusal, "refused");
            let status = match refusal {
                Refusal::NotWhiteListed(_) => StatusCode::FORBIDDEN,
                Refusal::NotAPeer => StatusCode::UNAUTHORIZED,
            };
            (
                status,
                axum::Json(serde_json::json!({"error": refusal.to_string()})),
            )
                .into_response()
        }
    }
}

/// A tower layer for a tonic server: each call's method path is classed by
/// `classify` (unknown methods should be [`Access::Peer`]) and checked.
#[derive(Clone)]
pub struct GrpcGuardLayer {
    security: Arc<SecurityConfig>,
    classify: fn(&str) -> Access,
}

impl GrpcGuardLayer {
    pub fn new(security: Arc<SecurityConfig>, classify: fn(&str) -> Access) -> Self {
        Self { security, classify }
    }
}

impl<S> tower::Layer<S> for GrpcGuardLayer {
    type Service = GrpcGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcGuard {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcGuard<S> {
    inner: S,
    layer: GrpcGuardLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<axum::http::Request<B>> for GrpcGuard<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = axum::http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let access = (self.layer.classify)(path);
        let (addr, certs) = transport_info(req.extensions());
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match check(&self.layer.security, access, false, addr, token, certs) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(refusal) => {
                tracing::info!(method = path, caller = ?addr, reason = %refusal, "refused");
                let status = tonic::Status::permission_denied(refusal.to_string());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The caller's address and whether it showed a verified client
/// certificate, from what tonic records for each connection.
fn transport_info(ext: &axum::http::Extensions) -> (Option<IpAddr>, bool) {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let certs = tls.peer_certs().is_some_and(|c| !c.is_empty());
        return (tls.get_ref().remote_addr().map(|a| a.ip()), certs);
    }
    let addr = ext
        .get::<TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .map(|a| a.ip());
    (addr, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(white: &str, write_key: &str) -> SecurityConfig {
        let mut s = SecurityConfig {
            white_list: white.parse().unwrap(),
            ..SecurityConfig::default()
        };
        s.signing.key = write_key.into();
        s
    }

    #[test]
    fn classes() {
        let ip = Some("10.0.0.5".parse().unwrap());
        let off = Some("10.9.0.5".parse().unwrap());
        let s = sec("10.0.0.0/24", "w");
        let t = s.peer_token().unwrap();
        assert_eq!(check(&s, Access::Open, false, off, None, false), Ok(()));
        assert_eq!(
            check(&s, Access::PublicReads, true, off, None, false),
            Ok(())
        );
        assert_eq!(
            check(&s, Access::PublicReads, false, off, None, false),
            Err(Refusal::NotWhiteListed(off))
        );
        assert_eq!(check(&s, Access::Client, false, ip, None, false), Ok(()));
        assert_eq!(
            check(&s, Access::Client, false, None, None, false),
            Err(Refusal::NotWhiteListed(None))
        );
        assert_eq!(
            check(&s, Access::Peer, false, ip, None, false),
            Err(Refusal::NotAPeer)
        );
        assert_eq!(check(&s, Access::Peer, false, ip, Some(&t), false), Ok(()));
        assert_eq!(check(&s, Access::Peer, false, ip, None, true), Ok(()));
        assert_eq!(
            check(&s, Access::Peer, false, off, Some(&t), true),
            Err(Refusal::NotWhiteListed(off))
        );
        // Nothing configured: everything open.
        let s = sec("", "");
        assert_eq!(check(&s, Access::Peer, false, None, None, false), Ok(()));
    }

    #[test]
    fn bearer_forms() {
        assert_eq!(bearer("Bearer t"), Some("t"));
        assert_eq!(bearer("bearer  t "), Some("t"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Token t"), None);
    }
}
