//! The byte streams the downstairs protocol runs over: a plain TCP
//! connection, or (later) TLS on it, split into a read half and a write
//! half behind one type each, so the rest of the code does not care which.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The read half of a downstairs connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a downstairs connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits a plain TCP connection (the halves are independent, no lock).
pub fn split_tcp(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (rd, wr) = stream.into_split();
    (Box::new(rd), Box::new(wr))
}
