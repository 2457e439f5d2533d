//! `GET` and `HEAD`: files with ranges and conditions, directory listings,
//! entry metadata.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Params, json};
use crate::entry::Entry;
use crate::error::FilerError;
use crate::filer::Filer;
use crate::path::FullPath;

/// Entries per listing page when `limit` is not given, and at most.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

pub async fn get(
    filer: &Filer,
    path: &FullPath,
    p: &Params,
    h: &HeaderMap,
    head: bool,
) -> Result<Response, FilerError> {
    let entry = filer
        .lookup(path)
        .await?
        .ok_or_else(|| FilerError::NotFound(path.to_string()))?;
    if p.get("metadata").is_some_and(|v| v == "true") {
        return Ok(axum::Json(json::entry(path, &entry)).into_response());
    }
    if entry.is_dir() {
        return list(filer, path, p, h).await;
    }
    file(filer, path, &entry, h, head)
}

async fn list(
    filer: &Filer,
    dir: &FullPath,
    p: &Params,
    h: &HeaderMap,
) -> Result<Response, FilerError> {
    let limit = match p.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| FilerError::BadRequest(format!("limit {v:?} is not a number")))?
            .clamp(1, MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let after = p.get("lastFileName").map(String::as_str).unwrap_or("");
    let prefix = p
        .get("prefix")
        .or_else(|| p.get("namePattern"))
        .map(String::as_str)
        .unwrap_or("");
    // One more than asked tells whether there is more.
    let mut entries = filer.list(dir, after, prefix, limit + 1).await?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let wants_json = p.contains_key("json")
        || h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
    let last = entries.last().map(|e| e.name.clone()).unwrap_or_default();
    if !wants_json {
        let mut text = String::new();
        for e in &entries {
            text.push_str(&e.name);
            if e.is_dir() {
                text.push('/');
            }
            text.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let items: Vec<_> = entries
        .iter()
        .map(|e| json::entry(&dir.child(&e.name), e))
        .collect();
    Ok(axum::Json(serde_json::json!({
        "Path": dir.as_str(),
        "Entries": if items.is_empty() { serde_json::Value::Null } else { serde_json::Value::Array(items) },
        "Limit": limit,
        "LastFileName": last,
        "ShouldDisplayLoadMore": more,
        "EmptyFolder": entries.is_empty() && after.is_empty(),
    }))
    .into_response())
}

pub fn etag(e: &Entry) -> String {
    match e.md5 {
        Some(m) => format!(
            "\"{}\"",
            m.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        None => format!("\"{:x}-{:x}\"", e.size, e.mtime_ns),
    }
}

fn mtime(e: &Entry) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs((e.mtime_ns.max(0) / 1_000_000_000) as u64)
}

fn header_time(h: &HeaderMap, name: header::HeaderName) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(h.get(name)?.to_str().ok()?).ok()
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn file(
    filer: &Filer,
    path: &FullPath,
    e: &Entry,
    h: &HeaderMap,
    head: bool,
) -> Result<Response, FilerError> {
    let tag = etag(e);
    let modified = mtime(e);
    let mut out = HeaderMap::new();
    let put = |out: &mut HeaderMap, k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.insert(k, v);
        }
    };
    put(&mut out, header::ETAG, tag.clone());
    put(
        &mut out,
        header::LAST_MODIFIED,
        httpdate::fmt_http_date(modified),
    );
    put(&mut out, header::ACCEPT_RANGES, "bytes".into());
    let mime = if e.mime.is_empty() {
        mime_guess::from_path(e.name.as_str())
            .first_or_octet_stream()
            .to_string()
    } else {
        e.mime.clone()
    };
    put(&mut out, header::CONTENT_TYPE, mime);
    let quoted = e.name.replace(['"', '\\'], "_");
    put(
        &mut out,
        header::CONTENT_DISPOSITION,
        format!("inline; filename=\"{quoted}\""),
    );
    for (k, v) in &e.xattrs {
        if k.starts_with("Seaweed-")
            && let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(v),
            )
        {
            out.insert(name, value);
        }
    }
    // Conditions, in RFC 9110's order.
    if let Some(v) = h.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if !etag_matches(v, &tag) {
            return Ok((StatusCode::PRECONDITION_FAILED, out).into_response());
        }
    } else if let Some(t) = header_time(h, header::IF_UNMODIFIED_SINCE)
        && modified > t
    {
        return Ok((StatusCode::PRECONDITION_FAILED, out).into_response());
    }
    if let Some(v) = h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if etag_matches(v, &tag) {
            return Ok((StatusCode::NOT_MODIFIED, out).into_response());
        }
    } else if let Some(t) = header_time(h, header::IF_MODIFIED_SINCE)
        && modified <= t
    {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let size = e.size;
    let (status, range) = match h.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => match parse_range(r, size) {
            Ok(Some(range)) => {
                put(
                    &mut out,
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{size}", range.start, range.end - 1),
                );
                (StatusCode::PARTIAL_CONTENT, range)
            }
            Ok(None) => (StatusCode::OK, 0..size),
            Err(()) => {
                put(&mut out, header::CONTENT_RANGE, format!("bytes */{size}"));
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
            }
        },
        None => (StatusCode::OK, 0..size),
    };
    put(
        &mut out,
        header::CONTENT_LENGTH,
        (range.end - range.start).to_string(),
    );
    if head {
        return Ok((status, out).into_response());
    }
    let _ = path;
    let body = Body::from_stream(filer.read(e, range));
    Ok((status, out, body).into_response())
}

/// One range of a `Range: bytes=` header: `Ok(None)` for a header to
/// ignore (not bytes, or several ranges), `Err` when unsatisfiable.
pub fn parse_range(v: &str, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        if start >= size || end <= start {
            return Err(());
        }
        start..end
    };
    if range.start >= range.end {
        return Err(());
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=1-", 3), Ok(Some(1..3)));
        assert_eq!(parse_range("bytes=0-0", 3), Ok(Some(0..1)));
        assert_eq!(parse_range("bytes=-2", 3), Ok(Some(1..3)));
        assert_eq!(parse_range("bytes=-9", 3), Ok(Some(0..3)));
        assert_eq!(parse_range("bytes=1-99", 3), Ok(Some(1..3)));
        assert_eq!(parse_range("bytes=3-", 3), Err(()));
        assert_eq!(parse_range("bytes=0-", 0), Err(()));
        assert_eq!(parse_range("bytes=0-1,2-3", 9), Ok(None));
        assert_eq!(parse_range("items=0-1", 9), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 9), Err(()));
    }
}
