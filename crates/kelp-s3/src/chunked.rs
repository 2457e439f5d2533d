//! The `aws-chunked` body decoder.
//!
//! Signed (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`):
//!
//! ```text
//! <hex size>;chunk-signature=<64 hex>\r\n <size bytes> \r\n   (repeated)
//! 0;chunk-signature=<64 hex>\r\n
//! [x-amz-checksum-crc32c:<base64>\r\n x-amz-trailer-signature:<64 hex>\r\n]   (-TRAILER only)
//! \r\n
//! ```
//!
//! Each chunk signature is HMAC(signing key, `AWS4-HMAC-SHA256-PAYLOAD\n
//! <amz date>\n<scope>\n<previous signature>\n<sha256("")>\n<sha256(chunk)>`),
//! chained from the request's seed signature. The trailer signature is
//! HMAC(`AWS4-HMAC-SHA256-TRAILER\n<date>\n<scope>\n<last chunk sig>\n
//! <sha256 of the trailer lines as name:value\n>`).
//!
//! Unsigned (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`): `<hex size>\r\n<data>\r\n`
//! … `0\r\n`, trailer lines, `\r\n`.
//!
//! Data is yielded as it arrives, before its chunk's signature is checked:
//! a handler commits only once the stream has ended without an error.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use ring::digest;

use crate::checksum::{Checksum, ChecksumAlgorithm, Checksummer};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::hex;
use crate::sigv4::{PayloadMode, SigningContext, constant_time_eq};

/// Longest chunk header or trailer line.
pub const MAX_LINE: usize = 256;
/// Largest chunk accepted.
pub const MAX_CHUNK: usize = 16 << 20;
/// Most trailer lines.
pub const MAX_TRAILERS: usize = 8;

/// How to decode one body.
#[derive(Debug, Clone)]
pub struct ChunkedConfig {
    pub mode: PayloadMode,
    /// Required for the signed modes.
    pub signing: Option<SigningContext>,
    /// `x-amz-decoded-content-length`.
    pub decoded_length: Option<u64>,
    /// The checksum `x-amz-trailer` promises; checked when computed here.
    pub trailer: Option<ChecksumAlgorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Data { remaining: usize },
    DataEnd,
    Trailer,
    Done,
}

/// The push decoder under [`AwsChunked`]: feed input with `push`, take
/// decoded data with `decode_next`.
pub struct ChunkedDecoder {
    signing: Option<SigningContext>,
    prev_sig: String,
    trailers_allowed: bool,
    trailer_alg: Option<ChecksumAlgorithm>,
    declared: Option<u64>,
    state: State,
    buf: BytesMut,
    chunk_hash: Option<digest::Context>,
    chunk_sig: String,
    checksum: Option<Checksummer>,
    decoded: u64,
    trailers: Vec<(String, String)>,
}

fn bad(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidRequest, format!("aws-chunked: {m}"))
}

impl ChunkedDecoder {
    pub fn new(cfg: ChunkedConfig) -> S3Result<Self> {
        let signed = matches!(
            cfg.mode,
            PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer
        );
        if !cfg.mode.is_chunked() {
            return Err(bad("payload mode is not a streaming one"));
        }
        let signing = if signed {
            Some(
                cfg.signing
                    .ok_or_else(|| bad("a signed stream needs a signing context"))?,
            )
        } else {
            None
        };
        let trailers_allowed = matches!(
            cfg.mode,
            PayloadMode::StreamingSignedTrailer | PayloadMode::StreamingUnsignedTrailer
        );
        Ok(ChunkedDecoder {
            prev_sig: signing
                .as_ref()
                .map(|s| s.seed_signature.clone())
                .unwrap_or_default(),
            signing,
            trailers_allowed,
            trailer_alg: cfg.trailer,
            declared: cfg.decoded_length,
            state: State::Header,
            buf: BytesMut::new(),
            chunk_hash: None,
            chunk_sig: String::new(),
            checksum: cfg.trailer.map(Checksummer::new),
            decoded: 0,
            trailers: Vec::new(),
        })
    }

    /// Adds input. Call only when `decode_next` returned `Ok(None)`.
    pub fn push(&mut self, input: &[u8]) {
        self.buf.extend_from_slice(input);
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The decoded length so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// The trailer lines (`name`, `value`) once done.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// The next decoded data, `Ok(None)` when more input is needed or the
    /// body is done (see `is_done`).
    pub fn decode_next(&mut self) -> S3Result<Option<Bytes>> {
        loop {
            match self.state {
                State::Header => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    self.on_header(&line)?;
                }
                State::Data { remaining } => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(self.buf.len());
                    let data = self.buf.split_to(n).freeze();
                    if let Some(h) = &mut self.chunk_hash {
                        h.update(&data);
                    }
                    if let Some(c) = &mut self.checksum {
                        c.update(&data);
                    }
                    self.decoded += n as u64;
                    if self.declared.is_some_and(|d| self.decoded > d) {
                        return Err(S3Error::with_message(
                            S3ErrorCode::IncompleteBody,
                            "body is longer than x-amz-decoded-content-length",
                        ));
                    }
                    self.state = if n == remaining {
                        State::DataEnd
                    } else {
                        State::Data {
                            remaining: remaining - n,
                        }
                    };
                    return Ok(Some(data));
                }
                State::DataEnd => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(bad("chunk data is not followed by CRLF"));
                    }
                    let _ = self.buf.split_to(2);
                    self.end_chunk()?;
                    self.state = State::Header;
                }
                State::Trailer => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.finish_trailers()?;
                        self.state = State::Done;
                    } else {
                        self.on_trailer(&line)?;
                    }
                }
                State::Done => return Ok(None),
            }
        }
    }

    /// Call when the input has ended: `IncompleteBody` unless done.
    pub fn finish(&self) -> S3Result<()> {
        if self.state != State::Done {
            return Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                "aws-chunked body ended early",
            ));
        }
        Ok(())
    }

    fn take_line(&mut self) -> S3Result<Option<String>> {
        let limit = self.buf.len().min(MAX_LINE + 2);
        match self.buf[..limit].windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let line = self.buf.split_to(i + 2);
                let s =
                    std::str::from_utf8(&line[..i]).map_err(|_| bad("header line is not UTF-8"))?;
                Ok(Some(s.to_owned()))
            }
            None if self.buf.len() > MAX_LINE + 1 => Err(bad("header line too long")),
            None => Ok(None),
        }
    }

    fn on_header(&mut self, line: &str) -> S3Result<()> {
        let (size_hex, ext) = match line.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (line, None),
        };
        if size_hex.is_empty()
            || size_hex.len() > 8
            || !size_hex.bytes().all(|c| c.is_ascii_hexdigit())
        {
            return Err(bad("chunk size is not hex"));
        }
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("chunk size is not hex"))?;
        if size > MAX_CHUNK {
            return Err(bad("chunk too large"));
        }
        if self.signing.is_some() {
            let sig = ext
                .and_then(|e| e.strip_prefix("chunk-signature="))
                .filter(|s| s.len() == 64)
                .ok_or_else(|| bad("chunk header lacks chunk-signature"))?;
            self.chunk_sig = sig.to_ascii_lowercase();
            self.chunk_hash = Some(digest::Context::new(&digest::SHA256));
        }
        if size == 0 {
            self.end_chunk()?;
            self.state = State::Trailer;
        } else {
            self.state = State::Data { remaining: size };
        }
        Ok(())
    }

    /// Checks the chunk signature just read (signed modes).
    fn end_chunk(&mut self) -> S3Result<()> {
        let Some(ctx) = &self.signing else {
            return Ok(());
        };
        let h = self
            .chunk_hash
            .take()
            .ok_or_else(|| bad("no chunk in progress"))?;
        let want = ctx.chunk_signature(&self.prev_sig, &hex::encode(h.finish().as_ref()));
        if !constant_time_eq(want.as_bytes(), self.chunk_sig.as_bytes()) {
            return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
        }
        self.prev_sig = want;
        Ok(())
    }

    fn on_trailer(&mut self, line: &str) -> S3Result<()> {
        if !self.trailers_allowed {
            return Err(bad("trailer in a stream without trailers"));
        }
        if self.trailers.len() >= MAX_TRAILERS {
            return Err(bad("too many trailer lines"));
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad("trailer line is not name:value"))?;
        self.trailers
            .push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        Ok(())
    }

    fn finish_trailers(&mut self) -> S3Result<()> {
        if let Some(ctx) = &self.signing
            && self.trailers_allowed
        {
            let mut canon = Vec::new();
            let mut sig = None;
            for (n, v) in &self.trailers {
                if n == "x-amz-trailer-signature" {
                    sig = Some(v.to_ascii_lowercase());
                } else if sig.is_none() {
                    canon.extend_from_slice(format!("{n}:{v}\n").as_bytes());
                }
            }
            let sig = sig.ok_or_else(|| bad("signed trailer lacks x-amz-trailer-signature"))?;
            let want = ctx.trailer_signature(&self.prev_sig, &canon);
            if !constant_time_eq(want.as_bytes(), sig.as_bytes()) {
                return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
            }
        }
        if let Some(alg) = self.trailer_alg {
            let (_, v) = self
                .trailers
                .iter()
                .find(|(n, _)| n == alg.header_name())
                .ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        format!("missing trailer {}", alg.header_name()),
                    )
                })?;
            let want = Checksum::parse(alg, v)?;
            if let Some(c) = self.checksum.take() {
                c.verify(&want)?;
            }
        }
        if let Some(d) = self.declared
            && d != self.decoded
        {
            return Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                "body is shorter than x-amz-decoded-content-length",
            ));
        }
        Ok(())
    }
}

/// Decodes an aws-chunked body stream into its data.
pub struct AwsChunked<S> {
    inner: S,
    dec: ChunkedDecoder,
    inner_done: bool,
    failed: bool,
}

impl<S> AwsChunked<S> {
    pub fn new(inner: S, cfg: ChunkedConfig) -> S3Result<Self> {
        Ok(AwsChunked {
            inner,
            dec: ChunkedDecoder::new(cfg)?,
            inner_done: false,
            failed: false,
        })
    }

    /// Trailer lines, once the stream has ended.
    pub fn trailers(&self) -> &[(String, String)] {
        self.dec.trailers()
    }
}

impl<S> Stream for AwsChunked<S>
where
    S: Stream<Item = Result<Bytes, S3Error>> + Unpin,
{
    type Item = Result<Bytes, S3Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.failed {
                return Poll::Ready(None);
            }
            let step = match this.dec.decode_next() {
                Ok(Some(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(None) if this.dec.is_done() => return Poll::Ready(None),
                Ok(None) if this.inner_done => this.dec.finish().map(|_| ()),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                this.failed = true;
                return Poll::Ready(Some(Err(e)));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(b)) => this.dec.push(&b),
                Some(Err(e)) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.inner_done = true,
            }
        }
    }
}

/// Encodes `chunks` as an aws-chunked body the way clients do: signed
/// when `signing` is given (chained from its seed), with an optional
/// trailer line (signed too in the signed mode). For tests and fuzzing.
pub fn encode(
    chunks: &[&[u8]],
    signing: Option<&SigningContext>,
    trailer: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = signing
        .map(|s| s.seed_signature.clone())
        .unwrap_or_default();
    for c in chunks
        .iter()
        .copied()
        .filter(|c| !c.is_empty())
        .chain(std::iter::once(&b""[..]))
    {
        match signing {
            Some(s) => {
                prev = s.chunk_signature(&prev, &crate::sigv4::sha256_hex(c));
                out.extend_from_slice(
                    format!("{:x};chunk-signature={prev}\r\n", c.len()).as_bytes(),
                );
            }
            None => out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes()),
        }
        if !c.is_empty() {
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some((n, v)) = trailer {
        out.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
        if let Some(s) = signing {
            let sig = s.trailer_signature(&prev, format!("{n}:{v}\n").as_bytes());
            out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
