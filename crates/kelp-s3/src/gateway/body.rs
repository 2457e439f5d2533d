//! A request body as the gateway stores it: aws-chunked bodies decoded
//! (chunk signatures and trailer checksums checked), and every promise
//! about the body checked at its end — `x-amz-content-sha256`,
//! `Content-MD5`, an `x-amz-checksum-*` header, the length — so that a
//! body that breaks one ends with an error and nothing is committed.
//!
//! The filer sees a failing body as a body error; the S3 error that
//! caused it is kept in a [`Failure`] slot for the answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};

use crate::checksum::{Checksum, ChecksumAlgorithm, Checksummer};
use crate::chunked::{AwsChunked, ChunkedConfig};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::BodyLength;
use crate::sigv4::{Auth, PayloadHasher, PayloadMode};

/// The S3 error a body ended with, if any.
#[derive(Clone, Default)]
pub struct Failure(Arc<Mutex<Option<S3Error>>>);

impl Failure {
    fn set(&self, e: &S3Error) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e.clone());
        }
    }

    pub fn take(&self) -> Option<S3Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What to check of a body.
pub struct Promises {
    pub length: BodyLength,
    pub content_md5: Option<[u8; 16]>,
    pub checksum: Option<Checksum>,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, S3Error>> + Send>>;

/// The decoded, checked body of a request.
pub fn decode(
    body: axum::body::Body,
    auth: &Auth,
    headers: &http::HeaderMap,
    promises: Promises,
    failure: Failure,
) -> S3Result<Checked> {
    let raw = body
        .into_data_stream()
        .map(|r| r.map_err(|e| S3Error::with_message(S3ErrorCode::IncompleteBody, e.to_string())));
    let inner: BodyStream = if auth.payload.is_chunked() {
        let trailer = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .and_then(ChecksumAlgorithm::from_header_name);
        let cfg = ChunkedConfig {
            mode: auth.payload,
            signing: auth.signing.clone(),
            decoded_length: promises.length.decoded_length,
            trailer,
        };
        Box::pin(AwsChunked::new(raw, cfg)?)
    } else {
        Box::pin(raw)
    };
    let expected_len = if auth.payload.is_chunked() {
        promises.length.decoded_length
    } else {
        promises.length.content_length
    };
    Ok(Checked {
        inner,
        sha256: match auth.payload {
            PayloadMode::Sha256(h) => Some(PayloadHasher::new(h)),
            _ => None,
        },
        md5: promises.content_md5.map(|m| (Md5::new(), m)),
        checksum: promises
            .checksum
            .map(|c| (Checksummer::new(c.algorithm), c)),
        expected_len,
        seen: 0,
        failure,
        done: false,
    })
}

pub struct Checked {
    inner: BodyStream,
    sha256: Option<PayloadHasher>,
    md5: Option<(Md5, [u8; 16])>,
    checksum: Option<(Checksummer, Checksum)>,
    expected_len: Option<u64>,
    seen: u64,
    failure: Failure,
    done: bool,
}

impl Checked {
    fn finish(&mut self) -> S3Result<()> {
        if let Some(n) = self.expected_len
            && n != self.seen
        {
            return Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("The body had {} bytes; {n} were promised.", self.seen),
            ));
        }
        if let Some(h) = self.sha256.take() {
            h.finish()?;
        }
        if let Some((h, want)) = self.md5.take() {
            let got: [u8; 16] = h.finalize().into();
            if got != want {
                return Err(S3Error::new(S3ErrorCode::BadDigest));
            }
        }
        if let Some((c, want)) = self.checksum.take() {
            c.verify(&want)?;
        }
        Ok(())
    }
}

impl Stream for Checked {
    type Item = Result<Bytes, S3Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let r = match self.inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                if let Some(h) = self.sha256.as_mut() {
                    h.update(&b);
                }
                if let Some((h, _)) = self.md5.as_mut() {
                    h.update(&b);
                }
                if let Some((c, _)) = self.checksum.as_mut() {
                    c.update(&b);
                }
                if self.expected_len.is_some_and(|n| self.seen > n) {
                    Err(S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        "The body is longer than promised.",
                    ))
                } else {
                    Ok(b)
                }
            }
            Poll::Ready(Some(Err(e))) => Err(e),
            Poll::Ready(None) => match self.finish() {
                Ok(()) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = &r {
            self.failure.set(e);
            self.done = true;
        }
        Poll::Ready(Some(r))
    }
}

/// A whole small body (XML documents), bounded.
pub async fn collect(mut body: Checked, limit: usize) -> S3Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = body.next().await {
        let b = b?;
        if out.len() + b.len() > limit {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                format!("The request body is larger than {limit} bytes."),
            ));
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}
