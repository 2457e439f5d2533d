//! Serving: an axum router over HTTP or HTTPS, and the tonic server
//! builder with or without mutual TLS. Every connection's peer address is
//! recorded (`ConnectInfo<SocketAddr>` for axum, tonic's own connect info
//! for gRPC) so the white list can be checked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kelp_core::TlsFiles;
use kelp_core::tls::{TlsError, read};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight HTTPS requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a daemon's HTTP or gRPC serving could not start or ended with an
/// error; each daemon's own start-up error wraps it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listener: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(tonic::transport::Error),
}

/// The rustls settings for an HTTPS listener (h2 and http/1.1 offered).
pub fn https_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    Ok(kelp_core::tls::server_config(
        &files.cert,
        &files.key,
        files.ca.as_deref(),
        &[b"h2", b"http/1.1"],
    )?)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish. With `tls` every connection is HTTPS.
pub async fn http(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        // No Nagle: a streamed answer goes out as headers, then body
        // pieces, and Nagle held each small piece for the client's delayed
        // ACK (40 ms per small S3 GET).
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        return axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, builder) = (acceptor.clone(), router.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(addr));
                    router.clone().oneshot(req)
                },
            );
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %addr, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTPS requests still running after the drain timeout; closing them");
    }
    Ok(())
}

/// A tonic server builder: with `tls`, mutual TLS (the CA is required).
pub fn grpc(tls: Option<&TlsFiles>) -> Result<tonic::transport::Server, ServeError> {
    let builder = tonic::transport::Server::builder();
    let Some(files) = tls else {
        return Ok(builder);
    };
    let ca = files
        .ca
        .as_deref()
        .ok_or_else(|| TlsError::Config("gRPC TLS needs a CA ([grpc] ca)".to_string()))?;
    // tonic reports bad PEM only as "transport error": check the files
    // here first, so the error names the file and what is wrong with it.
    kelp_core::tls::server_config(&files.cert, &files.key, Some(ca), &[])?;
    let (cert, key) = (read(&files.cert)?, read(&files.key)?);
    let config = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    Ok(builder
        .tls_config(config)
        .map_err(|e| TlsError::Config(format!("gRPC TLS: {e}")))?)
}
