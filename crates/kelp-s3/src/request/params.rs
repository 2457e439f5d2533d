//! Query parameters and the request headers that are not object metadata:
//! listings, ranges, conditions, copy sources.
//!
//! - `Range: bytes=a-b | bytes=a- | bytes=-n` (one range; anything else is
//!   ignored, as S3 does, and the whole object is answered).
//! - `x-amz-copy-source-range: bytes=a-b` (both ends required).
//! - `x-amz-copy-source: [/]bucket/key[?versionId=v]`, URL-encoded.
//! - Conditions: `If-Match`, `If-None-Match`, `If-Modified-Since`,
//!   `If-Unmodified-Since` and their `x-amz-copy-source-if-*` forms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{S3Error, S3ErrorCode, S3Result, err};
use crate::etag::{ETag, ETagCondition};
use crate::time::parse_http_date;
use crate::uri::decode_path;

/// Query parameters by name (first value wins).
pub(crate) struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// A non-negative count capped at `cap` (S3 caps silently).
    pub fn count(&self, name: &str, default: u32, cap: u32) -> S3Result<u32> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n.min(cap as i64) as u32),
                _ => err(
                    S3ErrorCode::InvalidArgument,
                    format!("Provided {name} not an integer or within integer range"),
                ),
            },
        }
    }

    pub fn encoding_url(&self) -> S3Result<bool> {
        match self.get("encoding-type") {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("url") => Ok(true),
            Some(_) => err(
                S3ErrorCode::InvalidArgument,
                "Invalid Encoding Method specified in Request",
            ),
        }
    }

    /// `partNumber`: 1..=10000.
    pub fn part_number(&self) -> S3Result<Option<u32>> {
        match self.get("partNumber") {
            None => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=10_000).contains(&n) => Ok(Some(n)),
                _ => err(
                    S3ErrorCode::InvalidArgument,
                    "Part number must be an integer between 1 and 10000, inclusive",
                ),
            },
        }
    }
}

/// ListObjects (V1) parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListV1Params {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: String,
    pub max_keys: u32,
    pub encoding_url: bool,
}

/// ListObjectsV2 parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListV2Params {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub continuation_token: Option<String>,
    pub start_after: Option<String>,
    pub fetch_owner: bool,
    pub max_keys: u32,
    pub encoding_url: bool,
}

/// ListObjectVersions parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListVersionsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: String,
    pub version_id_marker: String,
    pub max_keys: u32,
    pub encoding_url: bool,
}

/// ListMultipartUploads parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUploadsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: String,
    pub upload_id_marker: String,
    pub max_uploads: u32,
    pub encoding_url: bool,
}

/// The most keys one listing answers.
pub const MAX_LIST_KEYS: u32 = 1000;

fn delimiter(q: &Query) -> Option<String> {
    q.string("delimiter").filter(|d| !d.is_empty())
}

impl ListV1Params {
    pub(crate) fn from_query(q: &Query) -> S3Result<Self> {
        Ok(ListV1Params {
            prefix: q.string("prefix").unwrap_or_default(),
            delimiter: delimiter(q),
            marker: q.string("marker").unwrap_or_default(),
            max_keys: q.count("max-keys", MAX_LIST_KEYS, MAX_LIST_KEYS)?,
            encoding_url: q.encoding_url()?,
        })
    }
}

impl ListV2Params {
    pub(crate) fn from_query(q: &Query) -> S3Result<Self> {
        let fetch_owner = match q.get("fetch-owner") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return err(
                    S3ErrorCode::InvalidArgument,
                    "fetch-owner must be true or false",
                );
            }
        };
        if q.get("continuation-token") == Some("") {
            return err(
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect",
            );
        }
        Ok(ListV2Params {
            prefix: q.string("prefix").unwrap_or_default(),
            delimiter: delimiter(q),
            continuation_token: q.string("continuation-token"),
            start_after: q.string("start-after").filter(|s| !s.is_empty()),
            fetch_owner,
            max_keys: q.count("max-keys", MAX_LIST_KEYS, MAX_LIST_KEYS)?,
            encoding_url: q.encoding_url()?,
        })
    }
}

impl ListVersionsParams {
    pub(crate) fn from_query(q: &Query) -> S3Result<Self> {
        let p = ListVersionsParams {
            prefix: q.string("prefix").unwrap_or_default(),
            delimiter: delimiter(q),
            key_marker: q.string("key-marker").unwrap_or_default(),
            version_id_marker: q.string("version-id-marker").unwrap_or_default(),
            max_keys: q.count("max-keys", MAX_LIST_KEYS, MAX_LIST_KEYS)?,
            encoding_url: q.encoding_url()?,
        };
        if p.key_marker.is_empty() && !p.version_id_marker.is_empty() {
            return err(
                S3ErrorCode::InvalidArgument,
                "A version-id marker cannot be specified without a key marker.",
            );
        }
        Ok(p)
    }
}

impl ListUploadsParams {
    pub(crate) fn from_query(q: &Query) -> S3Result<Self> {
        Ok(ListUploadsParams {
            prefix: q.string("prefix").unwrap_or_default(),
            delimiter: delimiter(q),
            key_marker: q.string("key-marker").unwrap_or_default(),
            upload_id_marker: q.string("upload-id-marker").unwrap_or_default(),
            max_uploads: q.count("max-uploads", MAX_LIST_KEYS, MAX_LIST_KEYS)?,
            encoding_url: q.encoding_url()?,
        })
    }
}

/// One byte range as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive) or `bytes=a-` (`end: None`).
    FromTo { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a `Range` header; `None` for anything S3 would ignore
    /// (syntax errors, several ranges, other units).
    pub fn parse(v: &str) -> Option<Self> {
        let spec = v.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        match (a.trim(), b.trim()) {
            ("", n) => Some(ByteRange::Suffix(num(n)?)),
            (s, "") => Some(ByteRange::FromTo {
                start: num(s)?,
                end: None,
            }),
            (s, e) => {
                let (start, end) = (num(s)?, num(e)?);
                (start <= end).then_some(ByteRange::FromTo {
                    start,
                    end: Some(end),
                })
            }
        }
    }

    /// The inclusive byte span in an object of `size` bytes, or
    /// `InvalidRange` (416) if none of it exists.
    pub fn resolve(self, size: u64) -> S3Result<(u64, u64)> {
        let bad = || S3Error::new(S3ErrorCode::InvalidRange);
        match self {
            ByteRange::FromTo { start, end } => {
                if start >= size {
                    return Err(bad());
                }
                Ok((start, end.unwrap_or(u64::MAX).min(size - 1)))
            }
            ByteRange::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(bad());
                }
                Ok((size - n.min(size), size - 1))
            }
        }
    }

    /// `x-amz-copy-source-range: bytes=a-b`; `InvalidArgument` otherwise.
    pub fn parse_copy_range(v: &str) -> S3Result<Self> {
        match Self::parse(v) {
            Some(r @ ByteRange::FromTo { end: Some(_), .. }) => Ok(r),
            _ => err(
                S3ErrorCode::InvalidArgument,
                "The x-amz-copy-source-range value must be of the form bytes=first-last",
            ),
        }
    }
}

/// Conditional request headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<SystemTime>,
    pub if_unmodified_since: Option<SystemTime>,
}

fn seconds(t: SystemTime) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(s)
}

impl Conditions {
    /// From headers named `{prefix}if-match` etc.; bad dates are ignored.
    pub(crate) fn from_headers(h: &http::HeaderMap, prefix: &str) -> Self {
        let get = |n: &str| {
            h.get(format!("{prefix}{n}").as_str())
                .and_then(|v| v.to_str().ok())
        };
        Conditions {
            if_match: get("if-match").and_then(ETagCondition::parse),
            if_none_match: get("if-none-match").and_then(ETagCondition::parse),
            if_modified_since: get("if-modified-since").and_then(parse_http_date),
            if_unmodified_since: get("if-unmodified-since").and_then(parse_http_date),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// RFC 7232 order for GET/HEAD: 412 `PreconditionFailed`, or 304
    /// `NotModified`. (`read == false` for writes: 412 in both cases.)
    pub fn evaluate(&self, etag: &ETag, last_modified: SystemTime, read: bool) -> S3Result<()> {
        let lm = seconds(last_modified);
        let failed = || Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        let not_modified = || {
            Err(S3Error::new(if read {
                S3ErrorCode::NotModified
            } else {
                S3ErrorCode::PreconditionFailed
            }))
        };
        match &self.if_match {
            Some(c) if !c.matches(etag) => return failed(),
            None if self.if_unmodified_since.is_some_and(|t| lm > t) => return failed(),
            _ => {}
        }
        match &self.if_none_match {
            Some(c) if c.matches(etag) => return not_modified(),
            None if self.if_modified_since.is_some_and(|t| lm <= t) => return not_modified(),
            _ => {}
        }
        Ok(())
    }

    /// The copy-source conditions: every failure is 412.
    pub fn evaluate_copy_source(&self, etag: &ETag, last_modified: SystemTime) -> S3Result<()> {
        self.evaluate(etag, last_modified, false)
    }
}

/// `x-amz-copy-source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

impl CopySource {
    pub fn parse(v: &str) -> S3Result<Self> {
        let bad = || {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            )
        };
        let (path, query) = match v.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (v, None),
        };
        let version_id = match query {
            None => None,
            Some(q) => {
                let pairs = crate::uri::parse_query(q).ok_or_else(bad)?;
                match pairs.iter().find(|(n, _)| n == "versionId") {
                    Some((_, id)) if !id.is_empty() => Some(id.clone()),
                    _ => return Err(bad()),
                }
            }
        };
        let path = decode_path(path).ok_or_else(bad)?;
        let path = path.strip_prefix('/').unwrap_or(&path);
        let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
        if bucket.is_empty() || key.is_empty() {
            return Err(bad());
        }
        crate::names::validate_key(key)?;
        Ok(CopySource {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id,
        })
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
