//! Classifying an HTTP request into an [`S3Op`].
//!
//! Addressing: path style `/bucket/key` always; virtual-host style
//! `bucket.<domain>/key` when the Host (port dropped) ends with one of the
//! configured domains. The path is percent-decoded exactly once (`+` stays
//! a plus); the query decodes `+` as a space.
//!
//! The operation is chosen by method, whether a bucket and key are
//! present, and the sub-resource in the query (`?acl`, `?uploads`, …).
//! Sub-resources S3 has but Kelp does not serve are `NotImplemented`.

pub mod headers;
pub mod params;
mod route;

use http::{HeaderMap, Method};

pub use headers::{CannedAcl, ObjectMeta, ResponseOverrides};
pub use params::{
    ByteRange, Conditions, CopySource, ListUploadsParams, ListV1Params, ListV2Params,
    ListVersionsParams,
};

use crate::error::{S3Error, S3ErrorCode, S3Result, err};

/// How to find the bucket in a request.
#[derive(Debug, Clone, Default)]
pub struct Addressing {
    /// Domains for virtual-host style, e.g. `s3.example.com`.
    pub domains: Vec<String>,
}

/// `COPY` keeps the source's metadata (or tags); `REPLACE` takes the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Directive {
    #[default]
    Copy,
    Replace,
}

impl Directive {
    fn parse(v: Option<&str>, what: &str) -> S3Result<Self> {
        match v.map(str::trim) {
            None | Some("COPY") => Ok(Directive::Copy),
            Some("REPLACE") => Ok(Directive::Replace),
            Some(_) => err(
                S3ErrorCode::InvalidArgument,
                format!("Unknown {what} directive."),
            ),
        }
    }
}

/// GetObject / HeadObject arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetArgs {
    pub version_id: Option<String>,
    pub part_number: Option<u32>,
    pub range: Option<ByteRange>,
    pub conditions: Conditions,
    pub overrides: ResponseOverrides,
}

/// A copy: source, its conditions, and what to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    pub source: CopySource,
    pub source_conditions: Conditions,
    pub metadata_directive: Directive,
    pub tagging_directive: Directive,
}

/// A body-carrying write's length facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyLength {
    /// `Content-Length` (the encoded length for aws-chunked).
    pub content_length: Option<u64>,
    /// `x-amz-decoded-content-length` (aws-chunked).
    pub decoded_length: Option<u64>,
}

impl BodyLength {
    /// The object's size when known.
    pub fn object_size(&self) -> Option<u64> {
        self.decoded_length.or(self.content_length)
    }
}

/// A CORS preflight (`OPTIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub origin: String,
    pub method: String,
    /// `Access-Control-Request-Headers`, lowercase.
    pub headers: Vec<String>,
}

/// Every operation the gateway serves. Buckets and keys are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Op {
    ListBuckets,
    CreateBucket {
        bucket: String,
        acl: Option<CannedAcl>,
    },
    DeleteBucket {
        bucket: String,
    },
    HeadBucket {
        bucket: String,
    },
    GetBucketLocation {
        bucket: String,
    },
    ListObjectsV1 {
        bucket: String,
        params: ListV1Params,
    },
    ListObjectsV2 {
        bucket: String,
        params: ListV2Params,
    },
    ListObjectVersions {
        bucket: String,
        params: ListVersionsParams,
    },
    GetBucketVersioning {
        bucket: String,
    },
    PutBucketVersioning {
        bucket: String,
    },
    GetBucketCors {
        bucket: String,
    },
    PutBucketCors {
        bucket: String,
    },
    DeleteBucketCors {
        bucket: String,
    },
    GetBucketTagging {
        bucket: String,
    },
    PutBucketTagging {
        bucket: String,
    },
    DeleteBucketTagging {
        bucket: String,
    },
    GetBucketAcl {
        bucket: String,
    },
    PutBucketAcl {
        bucket: String,
        acl: Option<CannedAcl>,
    },
    ListMultipartUploads {
        bucket: String,
        params: ListUploadsParams,
    },
    DeleteObjects {
        bucket: String,
    },
    /// Browser upload: the body is `multipart/form-data` (see [`crate::policy`]).
    PostObject {
        bucket: String,
    },
    PutObject {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        length: BodyLength,
    },
    CopyObject {
        bucket: String,
        key: String,
        meta: ObjectMeta,
        copy: CopyArgs,
    },
    GetObject {
        bucket: String,
        key: String,
        args: GetArgs,
    },
    HeadObject {
        bucket: String,
        key: String,
        args: GetArgs,
    },
    DeleteObject {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    GetObjectAcl {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    PutObjectAcl {
        bucket: String,
        key: String,
        version_id: Option<String>,
        acl: Option<CannedAcl>,
    },
    GetObjectTagging {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    PutObjectTagging {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    DeleteObjectTagging {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    CreateMultipartUpload {
        bucket: String,
        key: String,
        meta: ObjectMeta,
    },
    UploadPart {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        content_md5: Option<[u8; 16]>,
        length: BodyLength,
    },
    UploadPartCopy {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        copy: CopyArgs,
        range: Option<ByteRange>,
    },
    CompleteMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    AbortMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    ListParts {
        bucket: String,
        key: String,
        upload_id: String,
        max_parts: u32,
        part_number_marker: u32,
    },
    Preflight {
        bucket: String,
        key: Option<String>,
        preflight: Preflight,
    },
}

impl S3Op {
    /// The bucket addressed, if any.
    pub fn bucket(&self) -> Option<&str> {
        route::bucket_of(self)
    }

    /// The key addressed, if any.
    pub fn key(&self) -> Option<&str> {
        route::key_of(self)
    }

    /// `/bucket/key` for error `<Resource>`s.
    pub fn resource(&self) -> String {
        match (self.bucket(), self.key()) {
            (Some(b), Some(k)) => format!("/{b}/{k}"),
            (Some(b), None) => format!("/{b}"),
            _ => "/".to_owned(),
        }
    }
}

/// The parts of an HTTP request classification reads.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a Method,
    /// The path as sent, percent-encoded.
    pub raw_path: &'a str,
    /// The query as sent, without `?`.
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
}

/// Most query parameters read from one request.
pub const MAX_QUERY_PARAMS: usize = 64;

/// Classifies a request; the error carries the resource when known.
pub fn classify(req: &HttpRequest<'_>, addressing: &Addressing) -> S3Result<S3Op> {
    let (bucket, key) = locate(req, addressing)?;
    let resource = match (&bucket, &key) {
        (Some(b), Some(k)) => format!("/{b}/{k}"),
        (Some(b), None) => format!("/{b}"),
        _ => "/".to_owned(),
    };
    route::route(req, bucket, key).map_err(|e| {
        if e.resource.is_none() {
            e.with_resource(resource)
        } else {
            e
        }
    })
}

fn host_of(h: &HeaderMap) -> Option<String> {
    let host = h.get(http::header::HOST)?.to_str().ok()?.trim();
    // Drop a port; keep IPv6 literals whole.
    let host = if host.starts_with('[') {
        host.split_once(']')
            .map(|(a, _)| &host[..=a.len()])
            .unwrap_or(host)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    Some(host.to_ascii_lowercase())
}

/// Finds (bucket, key) from Host and path.
fn locate(req: &HttpRequest<'_>, a: &Addressing) -> S3Result<(Option<String>, Option<String>)> {
    let path = crate::uri::decode_path(if req.raw_path.is_empty() {
        "/"
    } else {
        req.raw_path
    })
    .ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "The path is not UTF-8 after decoding",
        )
    })?;
    let path = path.strip_prefix('/').ok_or_else(|| {
        S3Error::with_message(S3ErrorCode::InvalidArgument, "The path must start with /")
    })?;
    let vhost_bucket = host_of(req.headers).and_then(|host| {
        a.domains.iter().find_map(|d| {
            let d = d.trim_matches('.').to_ascii_lowercase();
            host.strip_suffix(d.as_str())?
                .strip_suffix('.')
                .filter(|b| !b.is_empty())
                .map(str::to_owned)
        })
    });
    let (bucket, key) = match vhost_bucket {
        Some(b) => (Some(b), (!path.is_empty()).then(|| path.to_owned())),
        None => match path.split_once('/') {
            None if path.is_empty() => (None, None),
            None => (Some(path.to_owned()), None),
            Some((b, k)) => (Some(b.to_owned()), (!k.is_empty()).then(|| k.to_owned())),
        },
    };
    if let Some(b) = &bucket
        && !crate::names::is_addressable_bucket_name(b)
    {
        return err(
            S3ErrorCode::InvalidBucketName,
            "The specified bucket is not valid.",
        );
    }
    if let Some(k) = &key {
        crate::names::validate_key(k)?;
    }
    Ok((bucket, key))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
