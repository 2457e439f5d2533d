//! Parsing an upload request into the bytes and metadata of one needle.
//!
//! The body is streamed into a single buffer and the size limit is enforced
//! while streaming, so an oversized upload is refused as soon as the limit
//! is passed and never held twice. Two body shapes are accepted, as in
//! SeaweedFS:
//!
//! - multipart (`POST` with a `form-data` content type): the first part, or,
//!   when it has no file name, the first later part that has one;
//! - raw: the whole body; the name comes from `Content-Disposition`, else
//!   the last path segment, and the mime from `Content-Type`.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, Method, header};
use bytes::Bytes;
use futures::StreamExt;
use kelp_core::Ttl;
use kelp_core::buffers;

use super::UploadBudget;
use crate::error::ApiError;
use base64::Engine as _;
use md5::{Digest, Md5};
use tokio::sync::OwnedSemaphorePermit;

/// Longest name and mime a needle can hold (one length byte each).
const MAX_NAME: usize = 255;
/// Pairs are stored behind a u16 length.
const MAX_PAIRS: usize = 64 * 1024 - 1;
/// Multipart framing allowed on top of the file size limit.
const MULTIPART_SLACK: u64 = 1024 * 1024;
/// A gzip-compressed upload is inflated only to learn its original size and
/// check its MD5; stop counting past this much output.
const MAX_INFLATE: u64 = 4 << 30;

/// An upload, ready to become a needle.
#[derive(Debug, Default)]
pub struct Upload {
    /// Bytes to store, exactly as received (gzip-compressed if `gzipped`),
    /// in a reused buffer when large (`kelp_core::buffers`).
    pub data: Bytes,
    pub name: String,
    pub mime: String,
    pub gzipped: bool,
    /// JSON object of `Seaweed-*` headers (prefix stripped); empty if none.
    pub pairs: Vec<u8>,
    /// Length of the uncompressed content, reported back as `size`.
    pub original_size: u64,
    /// The verified `Content-MD5`, echoed back.
    pub content_md5: Option<String>,
    /// Room in the upload budget for the body; given back when the upload
    /// is dropped, after it is answered.
    pub reservation: Option<OwnedSemaphorePermit>,
}

/// Query parameters of an upload.
#[derive(Debug, Default, Clone)]
pub struct UploadParams {
    /// Last-modified seconds (`ts`), default now.
    pub ts: Option<u64>,
    pub ttl: Ttl,
    /// `cm=true`: the data is a chunk manifest.
    pub chunk_manifest: bool,
    /// `fsync=true`: sync before answering even on a non-durable server.
    pub fsync: bool,
    /// `type=replicate`: a replica write from a peer.
    pub replicate: bool,
}

impl UploadParams {
    pub fn from_query(query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (k, v) in query {
            match k.as_str() {
                "ts" if !v.is_empty() => {
                    p.ts = Some(
                        v.parse()
                            .map_err(|_| ApiError::BadRequest(format!("invalid ts {v:?}")))?,
                    )
                }
                "ttl" => {
                    p.ttl = v
                        .parse()
                        .map_err(|e| ApiError::BadRequest(format!("{e}")))?
                }
                "cm" => p.chunk_manifest = is_true(v),
                "fsync" => p.fsync = is_true(v),
                "type" => p.replicate = v == "replicate",
                _ => {}
            }
        }
        Ok(p)
    }
}

fn is_true(v: &str) -> bool {
    matches!(v, "true" | "1" | "yes" | "TRUE" | "True")
}

/// Reads and parses the body of an upload to `path` (used for the default
/// name of a raw body). With a `budget`, the body's room is reserved
/// before it is read (a body refused for its Content-Length reserves
/// nothing) and held by the returned `Upload`.
pub async fn parse_upload(
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: Body,
    limit: u64,
    budget: Option<&UploadBudget>,
) -> Result<Upload, ApiError> {
    let content_type = header_str(headers, header::CONTENT_TYPE).unwrap_or("");
    let content_length = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let multipart = *method == Method::POST && content_type.contains("form-data");
    let max_length = if multipart {
        limit.saturating_add(MULTIPART_SLACK)
    } else {
        limit
    };
    if content_length.is_some_and(|n: u64| n > max_length) {
        return Err(ApiError::TooLarge { limit });
    }
    let reservation = match budget {
        Some(b) => Some(b.reserve(content_length.unwrap_or(max_length)).await?),
        None => None,
    };
    let mut up = if multipart {
        parse_multipart(content_type, body, limit, content_length).await?
    } else {
        let data = collect_limited(body, limit, content_length).await?;
        let name = header_str(headers, header::CONTENT_DISPOSITION)
            .and_then(disposition_filename)
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or("").to_string());
        Upload {
            data,
            name,
            mime: content_type.to_string(),
            gzipped: header_str(headers, header::CONTENT_ENCODING)
                .is_some_and(|v| v.eq_ignore_ascii_case("gzip")),
            content_md5: header_str(headers, "content-md5").map(str::to_string),
            ..Upload::default()
        }
    };
    up.reservation = reservation;
    if up.content_md5.is_none() {
        up.content_md5 = header_str(headers, "content-md5").map(str::to_string);
    }
    up.name = truncate(base_name(&up.name), MAX_NAME);
    up.mime = truncate(&up.mime, MAX_NAME);
    up.pairs = pairs_json(headers)?;
    Ok(up)
}

/// Learns the original size and verifies `Content-MD5` (computed over the
/// uncompressed content). CPU-bound: run it on a blocking thread for large
/// bodies.
pub fn finish_upload(up: &mut Upload) -> Result<(), ApiError> {
    let want_md5 = up.content_md5.is_some();
    let mut md5 = Md5::new();
    if up.gzipped {
        let mut dec = flate2::read::GzDecoder::new(&up.data[..]);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = dec
                .read(&mut buf)
                .map_err(|e| ApiError::BadRequest(format!("invalid gzip data: {e}")))?;
            if n == 0 {
                break;
            }
            if want_md5 {
                md5.update(&buf[..n]);
            }
            total += n as u64;
            if total > MAX_INFLATE {
                return Err(ApiError::BadRequest(
                    "gzip data inflates beyond 4 GiB".to_string(),
                ));
            }
        }
        up.original_size = total;
    } else {
        if want_md5 {
            md5.update(&up.data);
        }
        up.original_size = up.data.len() as u64;
    }
    if let Some(given) = &up.content_md5 {
        let computed = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
        if given.trim() != computed {
            return Err(ApiError::Md5Mismatch {
                given: given.clone(),
                computed,
            });
        }
    }
    Ok(())
}

/// Streams a body into one buffer, failing as soon as it passes `limit`.
async fn collect_limited(
    body: Body,
    limit: u64,
    size_hint: Option<u64>,
) -> Result<Bytes, ApiError> {
    let mut buf = buffers::take(prealloc(size_hint, limit));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(ApiError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Capacity to take for a body of `size_hint` bytes (Content-Length,
/// which is client input) under `limit`. The upload budget already
/// reserved the hint; a large body gets a reused buffer whose pages are
/// mapped already (`kelp_core::buffers`), a fresh one only address space
/// until bytes arrive. Growing by doubling instead would copy a 64 MiB
/// body about twice over and leave up to half its capacity unused.
fn prealloc(size_hint: Option<u64>, limit: u64) -> usize {
    usize::try_from(size_hint.unwrap_or(0).min(limit)).unwrap_or(0)
}

async fn parse_multipart(
    content_type: &str,
    body: Body,
    limit: u64,
    size_hint: Option<u64>,
) -> Result<Upload, ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::BadRequest(format!("multipart: {e}")))?;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit.saturating_add(MULTIPART_SLACK))
            .per_field(limit),
    );
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let first = mp
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
        .ok_or_else(|| ApiError::BadRequest("multipart body has no parts".to_string()))?;
    let mut chosen = read_part(first, limit, size_hint).await?;
    if chosen.name.is_empty() {
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| multipart_error(e, limit))?
        {
            if field.file_name().is_some_and(|n| !n.is_empty()) {
                chosen = read_part(field, limit, size_hint).await?;
                break;
            }
        }
    }
    Ok(chosen)
}

async fn read_part(
    mut field: multer::Field<'_>,
    limit: u64,
    size_hint: Option<u64>,
) -> Result<Upload, ApiError> {
    let name = field.file_name().unwrap_or("").to_string();
    let mime = field
        .content_type()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let gzipped = field
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let content_md5 = field
        .headers()
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The part is nearly all of the body (Content-Length).
    let mut data = buffers::take(prealloc(size_hint, limit));
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if data.len() as u64 + chunk.len() as u64 > limit {
            return Err(ApiError::TooLarge { limit });
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Upload {
        data: data.freeze(),
        name,
        mime,
        gzipped,
        content_md5,
        ..Upload::default()
    })
}

fn multipart_error(e: multer::Error, limit: u64) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            ApiError::TooLarge { limit }
        }
        other => ApiError::BadRequest(format!("multipart: {other}")),
    }
}

fn header_str<K: header::AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `filename=` (else `name=`) from a Content-Disposition value.
fn disposition_filename(v: &str) -> Option<String> {
    let mut name = None;
    for param in v.split(';').skip(1) {
        let Some((k, val)) = param.trim().split_once('=') else {
            continue;
        };
        let val = val.trim().trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "filename" if !val.is_empty() => return Some(val),
            "name" if !val.is_empty() => name = Some(val),
            _ => {}
        }
    }
    name
}

/// The last component of a client-supplied file name (browsers on Windows
/// send full paths).
fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `Seaweed-<Name>: v` headers as a JSON object `{"<Name>": "v"}`, names in
/// canonical MIME form (`Seaweed-my-key` → `My-Key`) like Go servers store.
fn pairs_json(headers: &HeaderMap) -> Result<Vec<u8>, ApiError> {
    let mut map = serde_json::Map::new();
    for (k, v) in headers {
        let Some(rest) = k.as_str().strip_prefix("seaweed-") else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let Ok(v) = v.to_str() else { continue };
        map.insert(canonical_header(rest), serde_json::Value::from(v));
    }
    if map.is_empty() {
        return Ok(Vec::new());
    }
    let json = serde_json::to_vec(&map).map_err(|e| ApiError::Internal(e.to_string()))?;
    if json.len() > MAX_PAIRS {
        return Err(ApiError::BadRequest(
            "Seaweed-* headers exceed 64 KiB".to_string(),
        ));
    }
    Ok(json)
}

/// `my-key` → `My-Key`.
pub fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// A POST of `body` to `path` with no upload budget.
    async fn post(h: &HeaderMap, path: &str, body: Body, limit: u64) -> Result<Upload, ApiError> {
        parse_upload(&Method::POST, h, path, body, limit, None).await
    }

    #[tokio::test]
    async fn raw_upload_with_disposition_and_md5() {
        let h = hm(&[
            ("content-type", "text/plain"),
            ("content-disposition", "attachment; filename=\"a.txt\""),
            ("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="),
            ("seaweed-my-key", "v1"),
        ]);
        let mut up = parse_upload(
            &Method::PUT,
            &h,
            "/3,01637037d6",
            Body::from("hello"),
            100,
            None,
        )
        .await
        .unwrap();
        finish_upload(&mut up).unwrap();
        assert_eq!(&up.data[..], b"hello");
        assert_eq!(up.name, "a.txt");
        assert_eq!(up.mime, "text/plain");
        assert_eq!(up.original_size, 5);
        assert_eq!(up.pairs, br#"{"My-Key":"v1"}"#);
    }

    /// A body refused for its Content-Length does not wait for the upload
    /// budget; one that is taken holds its room until it is dropped.
    #[tokio::test]
    async fn budget_reserved_only_for_bodies_that_are_read() {
        let budget = UploadBudget::new(4096).unwrap();
        let full = budget.reserve(4096).await.unwrap();
        let h = hm(&[("content-length", "10")]);
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            parse_upload(
                &Method::PUT,
                &h,
                "/3,01",
                Body::from("0123456789"),
                5,
                Some(&budget),
            ),
        )
        .await
        .expect("a refused body waited for the budget");
        assert!(matches!(refused, Err(ApiError::TooLarge { .. })));
        drop(full);
        let up = parse_upload(
            &Method::PUT,
            &h,
            "/3,01",
            Body::from("0123456789"),
            100,
            Some(&budget),
        )
        .await
        .unwrap();
        assert_eq!(up.reservation.as_ref().map(|r| r.num_permits()), Some(1));
        assert_eq!(&up.data[..], b"0123456789");
    }

    #[tokio::test]
    async fn raw_upload_defaults_and_limits() {
        let up = parse_upload(
            &Method::POST,
            &HeaderMap::new(),
            "/3/01/x.bin",
            Body::from("x"),
            1,
            None,
        )
        .await
        .unwrap();
        assert_eq!(up.name, "x.bin");
        let err = parse_upload(
            &Method::PUT,
            &HeaderMap::new(),
            "/3,01",
            Body::from("xy"),
            1,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::TooLarge { .. }));
        let mut up = parse_upload(
            &Method::PUT,
            &hm(&[("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")]),
            "/3,01",
            Body::from("x"),
            10,
            None,
        )
        .await
        .unwrap();
        assert!(matches!(
            finish_upload(&mut up),
            Err(ApiError::Md5Mismatch { .. })
        ));
    }

    fn multipart(parts: &[(&str, Option<&str>, &str)]) -> String {
        let mut s = String::new();
        for (field, file, data) in parts {
            s.push_str("--XyZ\r\n");
            match file {
                Some(f) => s.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n"
                )),
                None => s.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{field}\"\r\n\r\n"
                )),
            }
            s.push_str(data);
            s.push_str("\r\n");
        }
        s.push_str("--XyZ--\r\n");
        s
    }

    #[tokio::test]
    async fn multipart_picks_first_part_with_filename() {
        let h = hm(&[("content-type", "multipart/form-data; boundary=XyZ")]);
        let body = multipart(&[
            ("a", None, "meta"),
            ("file", Some("C:\\p\\pic.png"), "PNGDATA"),
        ]);
        let up = post(&h, "/1,0101020304", Body::from(body), 100)
            .await
            .unwrap();
        assert_eq!(&up.data[..], b"PNGDATA");
        assert_eq!(up.name, "pic.png");
        assert_eq!(up.mime, "image/png");

        let body = multipart(&[("a", None, "only")]);
        let up = post(&h, "/1,0101020304", Body::from(body), 100)
            .await
            .unwrap();
        assert_eq!(&up.data[..], b"only");
        assert_eq!(up.name, "");
    }

    #[tokio::test]
    async fn multipart_errors() {
        let h = hm(&[("content-type", "multipart/form-data; boundary=XyZ")]);
        let body = multipart(&[("file", Some("f"), "0123456789")]);
        let truncated = body[..body.len() - 20].to_string();
        let err = post(&h, "/1,01", Body::from(truncated), 100)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
        let err = post(&h, "/1,01", Body::from(body), 5).await.unwrap_err();
        assert!(matches!(err, ApiError::TooLarge { .. }), "{err}");
        let no_boundary = hm(&[("content-type", "multipart/form-data")]);
        let err = parse_upload(
            &Method::POST,
            &no_boundary,
            "/1,01",
            Body::from("x"),
            5,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
    }

    #[test]
    fn gzip_size_and_md5() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hello").unwrap();
        let gz = enc.finish().unwrap();
        let mut up = Upload {
            data: gz.into(),
            gzipped: true,
            content_md5: Some("XUFAKrxLKna5cZ2REBfFkg==".into()),
            ..Upload::default()
        };
        finish_upload(&mut up).unwrap();
        assert_eq!(up.original_size, 5);
        let mut bad = Upload {
            data: Bytes::from_static(b"not gzip"),
            gzipped: true,
            ..Upload::default()
        };
        assert!(finish_upload(&mut bad).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(canonical_header("my-key"), "My-Key");
        assert_eq!(disposition_filename("inline; name=\"x\""), Some("x".into()));
        assert_eq!(
            disposition_filename("attachment; name=x; filename=y.txt"),
            Some("y.txt".into())
        );
        assert_eq!(disposition_filename("inline"), None);
        assert_eq!(truncate("ééé", 3), "é");
    }
}
