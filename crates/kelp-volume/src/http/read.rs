//! Building the response to `GET`/`HEAD /<fid>` from a stored needle:
//! headers, conditional requests, ranges and gzip negotiation.

use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use kelp_needle::{DataStream, Needle, Piece};

use super::fid::FidPath;
use super::range::{RangeRequest, parse_range};
use crate::error::ApiError;
use crate::store::STREAM_PIECE_BYTES;

/// Stored gzip data is inflated for clients that do not accept gzip; refuse
/// to inflate past this (the needle was a gzip bomb, not a file).
const MAX_INFLATED: u64 = 4 << 30;

/// What the handler knows about the request besides the needle.
pub struct ReadContext<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub path: &'a FidPath,
    /// `?dl=true`: download (attachment) instead of inline.
    pub download: bool,
}

/// The needle's ETag: the raw CRC as 8 hex digits, quoted.
pub fn etag(checksum: u32) -> String {
    format!("\"{checksum:08x}\"")
}

/// Builds the full response. CPU-bound when the needle must be inflated, so
/// callers run it on a blocking thread.
pub fn needle_response(n: Needle, ctx: &ReadContext<'_>) -> Result<Response, ApiError> {
    let (mut headers, content_type) = match needle_headers(&n, ctx) {
        Ok(h) => h,
        Err(not_modified) => return Ok(respond_not_modified(not_modified)),
    };
    let mut data = n.data;
    if n.compressed {
        if accepts_gzip(ctx.headers) {
            set(&mut headers, header::CONTENT_ENCODING, "gzip");
        } else {
            data = Bytes::from(inflate(&data)?);
        }
        set(&mut headers, header::VARY, "Accept-Encoding");
    }

    let head = ctx.method == Method::HEAD;
    let range_header = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let len = data.len() as u64;
    match parse_range(range_header, len) {
        RangeRequest::Full => Ok(respond(StatusCode::OK, headers, data, head)),
        RangeRequest::Unsatisfiable => Err(ApiError::RangeNotSatisfiable { len }),
        RangeRequest::Ranges(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            set(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{len}", r.start, r.end - 1),
            );
            let part = data.slice(r.start as usize..r.end as usize);
            Ok(respond(StatusCode::PARTIAL_CONTENT, headers, part, head))
        }
        RangeRequest::Ranges(ranges) => {
            let boundary = format!("{:016x}", rand::random::<u64>());
            let mut body = Vec::new();
            for r in &ranges {
                body.extend_from_slice(
                    format!(
                        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                        r.start,
                        r.end - 1
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(&data[r.start as usize..r.end as usize]);
            }
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            set(
                &mut headers,
                header::CONTENT_TYPE,
                &format!("multipart/byteranges; boundary={boundary}"),
            );
            Ok(respond(
                StatusCode::PARTIAL_CONTENT,
                headers,
                Bytes::from(body),
                head,
            ))
        }
    }
}

/// The headers every answer for a needle carries (ETag, Last-Modified,
/// Accept-Ranges, Content-Type, Content-Disposition, the stored pairs) and
/// the content type; or, as the error, the headers of the 304 answer to a
/// conditional request it satisfies.
fn needle_headers(n: &Needle, ctx: &ReadContext<'_>) -> Result<(HeaderMap, String), HeaderMap> {
    let etag = etag(n.checksum);
    let last_modified =
        (n.last_modified != 0).then(|| UNIX_EPOCH + Duration::from_secs(n.last_modified));

    let mut headers = HeaderMap::new();
    set(&mut headers, header::ETAG, &etag);
    if let Some(lm) = last_modified {
        set(
            &mut headers,
            header::LAST_MODIFIED,
            &httpdate::fmt_http_date(lm),
        );
    }
    if not_modified(ctx.headers, &etag, n.last_modified) {
        return Err(headers);
    }

    set(&mut headers, header::ACCEPT_RANGES, "bytes");
    let name = String::from_utf8_lossy(&n.name).into_owned();
    let content_type = content_type(&n.mime, ctx.path, &name);
    set(&mut headers, header::CONTENT_TYPE, &content_type);
    let display_name = ctx.path.filename.clone().unwrap_or(name);
    if let Some(v) = content_disposition(&display_name, ctx.download) {
        set(&mut headers, header::CONTENT_DISPOSITION, &v);
    }
    add_pairs(&mut headers, &n.pairs);
    Ok((headers, content_type))
}

fn respond_not_modified(headers: HeaderMap) -> Response {
    respond(StatusCode::NOT_MODIFIED, headers, Bytes::new(), false)
}

/// Whether a large needle's answer can be sent from a `DataStream`: the
/// whole stored data as it is (no range, no inflating, no manifest to
/// expand); other answers need the data in memory.
pub fn streamable(n: &Needle, ctx: &ReadContext<'_>) -> bool {
    !n.compressed && !n.chunk_manifest && !ctx.headers.contains_key(header::RANGE)
}

/// The answer for a large needle whose data is sent piece by piece as it
/// is read (`streamable` said so). The piece that completes the data is
/// sent only if the data's checksum matches; on a mismatch the connection
/// is cut short of Content-Length, so no client takes a corrupt body for
/// a whole one.
pub fn streamed_response(n: Needle, data: DataStream, ctx: &ReadContext<'_>) -> Response {
    let (mut headers, _) = match needle_headers(&n, ctx) {
        Ok(h) => h,
        Err(not_modified) => return respond_not_modified(not_modified),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
    let body = if ctx.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(pieces(data, ctx.path.fid.to_string()))
    };
    let mut resp = Response::new(body);
    *resp.headers_mut() = headers;
    resp
}

/// The pieces of `data`: read on this worker when they are in the page
/// cache (the usual case for a blob read again; no hand-off), else on the
/// blocking pool.
fn pieces(
    data: DataStream,
    fid: String,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(Some(data), move |state| {
        let fid = fid.clone();
        async move {
            match next_piece(state?, &fid).await {
                Ok(Some((piece, data))) => Some((Ok(piece), Some(data))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}

/// The next piece of `data` and `data` itself, `None` at the end. A read
/// or checksum failure is logged and counted here.
async fn next_piece(
    mut data: DataStream,
    fid: &str,
) -> Result<Option<(Bytes, DataStream)>, std::io::Error> {
    let (data, piece) = match data.next_cached_piece(STREAM_PIECE_BYTES) {
        Ok(Piece::Data(piece)) => (data, Ok(Some(piece))),
        Ok(Piece::End) => (data, Ok(None)),
        Err(e) => (data, Err(e)),
        Ok(Piece::NotCached) => tokio::task::spawn_blocking(move || {
            let piece = data.next_piece(STREAM_PIECE_BYTES);
            (data, piece)
        })
        .await
        .map_err(std::io::Error::other)?,
    };
    piece
        .map(|p| p.map(|p| (p, data)))
        .map_err(|e| {
            tracing::error!(fid = %fid, error = %e, "needle failed (checksum or read) while it was sent; the answer is cut short");
            metrics::counter!(crate::metrics::CORRUPT_READS).increment(1);
            std::io::Error::other(e)
        })
}

fn respond(status: StatusCode, mut headers: HeaderMap, body: Bytes, head: bool) -> Response {
    if status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

pub(super) fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `If-None-Match` wins over `If-Modified-Since` when both are present
/// (RFC 9110 §13.2.2).
pub(super) fn not_modified(req: &HeaderMap, etag: &str, last_modified: u64) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return inm.split(',').map(str::trim).any(|t| {
            t == "*"
                || t == etag
                || t.strip_prefix("W/") == Some(etag)
                || t == etag.trim_matches('"')
        });
    }
    if last_modified == 0 {
        return false;
    }
    req.get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|since| since.as_secs() >= last_modified)
}

/// Stored mime unless empty or the generic octet-stream, else a guess from
/// the URL extension or the stored name, else octet-stream.
fn content_type(mime: &[u8], path: &FidPath, name: &str) -> String {
    content_type_for(&String::from_utf8_lossy(mime), path, name, false)
}

/// `mime` unless it is empty or generic (`application/octet-stream`, or
/// with `prefix` anything starting with it, such as a charset variant),
/// else a guess from the URL extension or `name`, else octet-stream.
pub(super) fn content_type_for(mime: &str, path: &FidPath, name: &str, prefix: bool) -> String {
    const GENERIC: &str = "application/octet-stream";
    let generic = if prefix {
        mime.starts_with(GENERIC)
    } else {
        mime == GENERIC
    };
    if !mime.is_empty() && !generic {
        return mime.to_string();
    }
    let ext = path
        .ext
        .as_deref()
        .map(|e| e.trim_start_matches('.').to_string())
        .or_else(|| name.rsplit_once('.').map(|(_, e)| e.to_string()));
    ext.and_then(|e| mime_guess::from_ext(&e).first_raw())
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// `inline; filename="name"` (`attachment` for downloads); none without a
/// name.
pub(super) fn content_disposition(name: &str, download: bool) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let kind = if download { "attachment" } else { "inline" };
    let escaped = name.replace(['"', '\\'], "_");
    Some(format!("{kind}; filename=\"{escaped}\""))
}

/// Stored `Seaweed-*` pairs come back as plain headers.
pub(super) fn add_pairs(headers: &mut HeaderMap, pairs: &[u8]) {
    if pairs.is_empty() {
        return;
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(pairs) else {
        tracing::debug!("ignoring unparsable needle pairs");
        return;
    };
    for (k, v) in map {
        let v = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            headers.insert(name, value);
        }
    }
}

fn accepts_gzip(req: &HeaderMap) -> bool {
    req.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

pub(super) fn inflate(data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(2));
    flate2::read::GzDecoder::new(data)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::Corrupt(format!("stored gzip data does not inflate: {e}")))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(ApiError::Internal(
            "stored gzip data inflates beyond 4 GiB".to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kelp_core::FileId;

    fn path() -> FidPath {
        FidPath {
            fid: FileId::new(1, 1, 1),
            ext: None,
            filename: None,
            claim: "1,0100000001".into(),
        }
    }

    #[test]
    fn conditional() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"0000abcd\""),
        );
        assert!(not_modified(&h, "\"0000abcd\"", 0));
        assert!(!not_modified(&h, "\"0000abce\"", 0));
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert!(not_modified(&h, "x", 784111777));
        assert!(!not_modified(&h, "x", 784111778));
        assert!(!not_modified(&h, "x", 0));
    }

    #[test]
    fn content_types() {
        let p = path();
        assert_eq!(content_type(b"text/plain", &p, ""), "text/plain");
        assert_eq!(content_type(b"", &p, "a.png"), "image/png");
        assert_eq!(
            content_type(b"application/octet-stream", &p, "a.json"),
            "application/json"
        );
        assert_eq!(content_type(b"", &p, "noext"), "application/octet-stream");
        let mut p = path();
        p.ext = Some(".html".into());
        assert_eq!(content_type(b"", &p, "a.png"), "text/html");
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
    }
}
