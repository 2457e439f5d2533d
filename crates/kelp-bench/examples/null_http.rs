//! A trivial HTTP/1.1 server that reads each request (headers and a
//! `Content-Length` body) and answers `200` with an empty body: the far
//! end for measuring the load generator's own CPU (`kelp benchmark -s3
//! -writeOnly -endpoint=http://127.0.0.1:PORT` against it).
//!
//!     cargo run --release -p kelp-bench --example null_http -- 127.0.0.1:0

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (conn, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(conn).await {
                eprintln!("{e}");
            }
        });
    }
}

async fn serve(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        // Headers.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // Body: drop what arrived with the headers, then read the rest.
        let mut left = len;
        let have = (buf.len() - end).min(left);
        left -= have;
        buf.drain(..end + have);
        while left > 0 {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            let used = n.min(left);
            left -= used;
            buf.extend_from_slice(&chunk[used..n]);
        }
        conn.write_all(ANSWER).await?;
    }
}
