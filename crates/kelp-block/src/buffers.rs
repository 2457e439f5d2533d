//! Reading large payloads (block data over NBD, frames carrying block
//! data) into reused buffers from [`kelp_core::buffers`], without zeroing
//! them first and without reading past the payload.

use bytes::Bytes;
use kelp_core::buffers::{self, PooledBuf};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads from `r` until `buf` holds `len` bytes, never past them (the bytes
/// after belong to the next message), into its spare capacity. A stream
/// that ends first is `UnexpectedEof`.
pub async fn fill_from<R: AsyncRead + Unpin>(
    buf: &mut PooledBuf,
    r: &mut R,
    len: usize,
) -> std::io::Result<()> {
    let v = buf.vec_mut();
    v.reserve_exact(len.saturating_sub(v.len()));
    while v.len() < len {
        let want = (len - v.len()) as u64;
        let n = (&mut *r).take(want).read_buf(v).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Reads a payload of `len` bytes into a pooled buffer.
pub async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Bytes> {
    let mut buf = buffers::take(len);
    fill_from(&mut buf, r, len).await?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelp_core::buffers::LARGE;

    #[tokio::test]
    async fn a_payload_is_read_exactly_and_leaves_the_rest() {
        let len = LARGE * 3 + 17;
        let data: Vec<u8> = (0..len + 10).map(|i| (i * 7) as u8).collect();
        let (mut a, mut b) = tokio::io::duplex(4096);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&sent).await.unwrap();
        });
        let got = read_payload(&mut b, len).await.unwrap();
        assert_eq!(&got[..], &data[..len]);
        let mut rest = Vec::new();
        writer.await.unwrap();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest,
            data[len..],
            "bytes past the payload stay in the stream"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_unexpected_eof() {
        let (a, mut b) = tokio::io::duplex(4096);
        drop(a);
        let e = read_payload(&mut b, LARGE + 5).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
