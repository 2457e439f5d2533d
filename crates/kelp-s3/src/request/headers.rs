//! Object headers a write carries: standard entity headers, `Content-MD5`,
//! `x-amz-meta-*`, `x-amz-tagging`, `x-amz-acl`, `x-amz-checksum-*`.
//!
//! - `Content-MD5`: base64 of the 16-byte MD5, else `InvalidDigest`.
//! - `x-amz-meta-<name>`: names case-folded to lowercase; names plus values
//!   at most 2 KiB in UTF-8 bytes (`MetadataTooLarge`).
//! - `x-amz-tagging`: `k1=v1&k2=v2`, URL-encoded, at most 10 tags.
//! - `Content-Encoding`: `aws-chunked` is the transfer framing, dropped.
//! - `x-amz-storage-class` is ignored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;

use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::error::{S3ErrorCode, S3Result, err};
use crate::xml::requests::{MAX_OBJECT_TAGS, Tag, validate_tags};

/// S3's limit on user metadata (names and values, bytes).
pub const MAX_USER_METADATA: usize = 2048;

/// A canned ACL (`x-amz-acl`); Kelp records it, grants are owner-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CannedAcl {
    Private,
    PublicRead,
    PublicReadWrite,
    AuthenticatedRead,
    AwsExecRead,
    BucketOwnerRead,
    BucketOwnerFullControl,
    LogDeliveryWrite,
}

impl CannedAcl {
    pub fn parse(v: &str) -> S3Result<Self> {
        Ok(match v.trim() {
            "private" => Self::Private,
            "public-read" => Self::PublicRead,
            "public-read-write" => Self::PublicReadWrite,
            "authenticated-read" => Self::AuthenticatedRead,
            "aws-exec-read" => Self::AwsExecRead,
            "bucket-owner-read" => Self::BucketOwnerRead,
            "bucket-owner-full-control" => Self::BucketOwnerFullControl,
            "log-delivery-write" => Self::LogDeliveryWrite,
            _ => return err(S3ErrorCode::InvalidArgument, "Invalid canned ACL"),
        })
    }

    /// The header value, as [`CannedAcl::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::PublicRead => "public-read",
            Self::PublicReadWrite => "public-read-write",
            Self::AuthenticatedRead => "authenticated-read",
            Self::AwsExecRead => "aws-exec-read",
            Self::BucketOwnerRead => "bucket-owner-read",
            Self::BucketOwnerFullControl => "bucket-owner-full-control",
            Self::LogDeliveryWrite => "log-delivery-write",
        }
    }

    pub(crate) fn from_headers(h: &HeaderMap) -> S3Result<Option<Self>> {
        header(h, "x-amz-acl").map(Self::parse).transpose()
    }
}

/// What a write says about the object it makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub content_md5: Option<[u8; 16]>,
    /// `x-amz-meta-*` names without the prefix, lowercase, sorted.
    pub user_metadata: Vec<(String, String)>,
    pub tagging: Vec<Tag>,
    pub acl: Option<CannedAcl>,
    /// An `x-amz-checksum-*` header sent with the body.
    pub checksum: Option<Checksum>,
}

pub(crate) fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn owned(h: &HeaderMap, name: &str) -> Option<String> {
    header(h, name).map(str::to_owned)
}

/// `Content-MD5`.
pub fn parse_content_md5(h: &HeaderMap) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = h.get("content-md5") else {
        return Ok(None);
    };
    let bytes = v.to_str().ok().and_then(|s| B64.decode(s.trim()).ok());
    match bytes.and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        Some(m) => Ok(Some(m)),
        None => err(
            S3ErrorCode::InvalidDigest,
            "The Content-MD5 you specified is not valid.",
        ),
    }
}

/// The one `x-amz-checksum-<alg>` header, if any.
pub fn parse_checksum_header(h: &HeaderMap) -> S3Result<Option<Checksum>> {
    let mut found = None;
    for (name, v) in h {
        if let Some(a) = ChecksumAlgorithm::from_header_name(name.as_str()) {
            if found.is_some() {
                return err(
                    S3ErrorCode::InvalidRequest,
                    "Expecting a single x-amz-checksum- header",
                );
            }
            let v = v
                .to_str()
                .map_err(|_| crate::error::S3Error::new(S3ErrorCode::InvalidRequest))?;
            found = Some(Checksum::parse(a, v)?);
        }
    }
    Ok(found)
}

/// `x-amz-tagging`.
pub fn parse_tagging_header(v: &str) -> S3Result<Vec<Tag>> {
    let pairs = crate::uri::parse_query(v).ok_or_else(|| {
        crate::error::S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "x-amz-tagging is not URL-encoded UTF-8",
        )
    })?;
    if pairs.len() > MAX_OBJECT_TAGS {
        return err(
            S3ErrorCode::InvalidTag,
            "Object tags cannot be greater than 10",
        );
    }
    let tags: Vec<Tag> = pairs
        .into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect();
    validate_tags(&tags, MAX_OBJECT_TAGS)?;
    Ok(tags)
}

impl ObjectMeta {
    pub fn from_headers(h: &HeaderMap) -> S3Result<Self> {
        let mut user = Vec::new();
        let mut total = 0usize;
        for (name, v) in h {
            if let Some(n) = name.as_str().strip_prefix("x-amz-meta-") {
                let v = v.to_str().map_err(|_| {
                    crate::error::S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        "metadata values must be ASCII; use RFC 2047 for others",
                    )
                })?;
                total += n.len() + v.len();
                if total > MAX_USER_METADATA {
                    return err(
                        S3ErrorCode::MetadataTooLarge,
                        "Your metadata headers exceed the maximum allowed metadata size.",
                    );
                }
                user.push((n.to_owned(), v.trim().to_owned()));
            }
        }
        user.sort();
        // Several headers of one name join with ',' like HTTP does.
        user.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 = format!("{},{}", a.1, b.1);
                true
            } else {
                false
            }
        });
        let content_encoding = header(h, "content-encoding").and_then(|v| {
            let rest: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            (!rest.is_empty()).then(|| rest.join(","))
        });
        Ok(ObjectMeta {
            content_type: owned(h, "content-type"),
            content_disposition: owned(h, "content-disposition"),
            content_encoding,
            content_language: owned(h, "content-language"),
            cache_control: owned(h, "cache-control"),
            expires: owned(h, "expires"),
            content_md5: parse_content_md5(h)?,
            user_metadata: user,
            tagging: header(h, "x-amz-tagging")
                .map(parse_tagging_header)
                .transpose()?
                .unwrap_or_default(),
            acl: CannedAcl::from_headers(h)?,
            checksum: parse_checksum_header(h)?,
        })
    }
}

/// `response-*` query overrides for GetObject/HeadObject (S3 allows them
/// on signed requests only; the handler checks the identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseOverrides {
    pub content_type: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
}

impl ResponseOverrides {
    pub(crate) fn from_query(q: &super::params::Query) -> Self {
        ResponseOverrides {
            content_type: q.string("response-content-type"),
            content_language: q.string("response-content-language"),
            expires: q.string("response-expires"),
            cache_control: q.string("response-cache-control"),
            content_disposition: q.string("response-content-disposition"),
            content_encoding: q.string("response-content-encoding"),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ResponseOverrides::default()
    }
}
