//! The byte streams the downstairs protocol runs over: a plain TCP
//! connection, or TLS on it, split into a read half and a write half behind
//! one type each, so the rest of the code does not care which.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{BlockError, Result};

/// How long a peer may take over the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The read half of a downstairs connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a downstairs connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits a plain TCP connection (the halves are independent, no lock).
pub fn split_tcp(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (rd, wr) = stream.into_split();
    (Box::new(rd), Box::new(wr))
}

fn split_any<S: AsyncRead + AsyncWrite + Send + 'static>(s: S) -> (ReadHalf, WriteHalf) {
    let (rd, wr) = tokio::io::split(s);
    (Box::new(rd), Box::new(wr))
}

/// The name a client checks the server's certificate against: the host of
/// `addr` (`host:port`, `[v6]:port`); an IP address is checked against the
/// certificate's IP addresses.
pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| BlockError::BadOptions(format!("{addr}: not a host name for TLS: {e}")))
}

/// TLS as a client on `stream`, verifying the server as `addr`'s host.
pub async fn connect_tls(
    stream: TcpStream,
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(ReadHalf, WriteHalf)> {
    let name = server_name(addr)?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(split_any(s)),
        Ok(Err(e)) => Err(BlockError::Tls(format!(
            "TLS handshake with downstairs {addr} failed: {e} (does it run with --tls-cert, \
             signed by the --tls-ca given here?)"
        ))),
        Err(_) => Err(BlockError::Tls(format!(
            "TLS handshake with downstairs {addr} timed out"
        ))),
    }
}

/// TLS as a server on `stream`.
pub async fn accept_tls(
    stream: TcpStream,
    config: &Arc<rustls::ServerConfig>,
) -> Result<(ReadHalf, WriteHalf)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Ok(split_any(s)),
        Ok(Err(e)) => Err(BlockError::Tls(format!(
            "TLS handshake with the upstairs failed: {e}"
        ))),
        Err(_) => Err(BlockError::Tls("TLS handshake timed out".into())),
    }
}

/// Whether the first bytes a client sent look like a TLS handshake record
/// (content type 22, version 3.x) rather than a Kelp frame.
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.len() >= 2 && first[0] == 0x16 && first[1] == 0x03
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(
            format!("{:?}", server_name("127.0.0.1:3810").unwrap()),
            format!("{:?}", ServerName::try_from("127.0.0.1").unwrap())
        );
        assert!(matches!(
            server_name("[::1]:3810").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("ds0.example:3810").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad name:1").is_err());
    }
}
