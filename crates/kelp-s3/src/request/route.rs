//! The operation table: method × (service | bucket | object) × sub-resource.

use http::Method;

use super::headers::{CannedAcl, ObjectMeta, ResponseOverrides, header, parse_content_md5};
use super::params::{
    ByteRange, Conditions, CopySource, ListUploadsParams, ListV1Params, ListV2Params,
    ListVersionsParams, Query,
};
use super::{
    BodyLength, CopyArgs, Directive, GetArgs, HttpRequest, MAX_QUERY_PARAMS, Preflight, S3Op,
};
use crate::error::{S3Error, S3ErrorCode, S3Result, err};

/// Sub-resources S3 has that Kelp does not serve.
const UNSUPPORTED: &[&str] = &[
    "policy",
    "policyStatus",
    "lifecycle",
    "website",
    "logging",
    "notification",
    "replication",
    "encryption",
    "object-lock",
    "legal-hold",
    "retention",
    "restore",
    "select",
    "torrent",
    "accelerate",
    "requestPayment",
    "analytics",
    "inventory",
    "metrics",
    "intelligent-tiering",
    "ownershipControls",
    "publicAccessBlock",
    "attributes",
];

/// The largest single PUT (5 GiB), as S3.
pub const MAX_PUT_SIZE: u64 = 5 << 30;

fn not_implemented(what: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        format!("{what} is not implemented"),
    )
}

fn method_not_allowed() -> S3Error {
    S3Error::new(S3ErrorCode::MethodNotAllowed)
}

pub(super) fn route(
    req: &HttpRequest<'_>,
    bucket: Option<String>,
    key: Option<String>,
) -> S3Result<S3Op> {
    let pairs = crate::uri::parse_query(req.raw_query).ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "The query is not UTF-8 after decoding",
        )
    })?;
    if pairs.len() > MAX_QUERY_PARAMS {
        return err(S3ErrorCode::InvalidArgument, "Too many query parameters");
    }
    let q = Query(pairs);
    if let Some(s) = UNSUPPORTED.iter().find(|s| q.has(s)) {
        return Err(not_implemented(&format!("The ?{s} sub-resource")));
    }
    let Some(bucket) = bucket else {
        return match *req.method {
            Method::GET => Ok(S3Op::ListBuckets),
            _ => Err(method_not_allowed()),
        };
    };
    if *req.method == Method::OPTIONS {
        return Ok(S3Op::Preflight {
            bucket,
            key,
            preflight: preflight(req)?,
        });
    }
    match key {
        None => bucket_op(req, &q, bucket),
        Some(key) => object_op(req, &q, bucket, key),
    }
}

fn preflight(req: &HttpRequest<'_>) -> S3Result<Preflight> {
    let h = req.headers;
    let origin = header(h, "origin").filter(|o| !o.is_empty());
    let method = header(h, "access-control-request-method").filter(|m| !m.is_empty());
    let (Some(origin), Some(method)) = (origin, method) else {
        return err(
            S3ErrorCode::InvalidRequest,
            "Insufficient information. Origin and Access-Control-Request-Method request headers needed.",
        );
    };
    let headers = header(h, "access-control-request-headers")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .take(64)
                .collect()
        })
        .unwrap_or_default();
    Ok(Preflight {
        origin: origin.trim().to_owned(),
        method: method.trim().to_owned(),
        headers,
    })
}

fn bucket_op(req: &HttpRequest<'_>, q: &Query, bucket: String) -> S3Result<S3Op> {
    let h = req.headers;
    Ok(match *req.method {
        Method::GET if q.has("location") => S3Op::GetBucketLocation { bucket },
        Method::GET if q.has("versioning") => S3Op::GetBucketVersioning { bucket },
        Method::GET if q.has("cors") => S3Op::GetBucketCors { bucket },
        Method::GET if q.has("tagging") => S3Op::GetBucketTagging { bucket },
        Method::GET if q.has("acl") => S3Op::GetBucketAcl { bucket },
        Method::GET if q.has("versions") => S3Op::ListObjectVersions {
            bucket,
            params: ListVersionsParams::from_query(q)?,
        },
        Method::GET if q.has("uploads") => S3Op::ListMultipartUploads {
            bucket,
            params: ListUploadsParams::from_query(q)?,
        },
        Method::GET => match q.get("list-type") {
            Some("2") => S3Op::ListObjectsV2 {
                bucket,
                params: ListV2Params::from_query(q)?,
            },
            None | Some("1") => S3Op::ListObjectsV1 {
                bucket,
                params: ListV1Params::from_query(q)?,
            },
            Some(_) => return err(S3ErrorCode::InvalidArgument, "Invalid list-type"),
        },
        Method::HEAD => S3Op::HeadBucket { bucket },
        Method::PUT if q.has("versioning") => S3Op::PutBucketVersioning { bucket },
        Method::PUT if q.has("cors") => S3Op::PutBucketCors { bucket },
        Method::PUT if q.has("tagging") => S3Op::PutBucketTagging { bucket },
        Method::PUT if q.has("acl") => S3Op::PutBucketAcl {
            bucket,
            acl: CannedAcl::from_headers(h)?,
        },
        Method::PUT => S3Op::CreateBucket {
            bucket,
            acl: CannedAcl::from_headers(h)?,
        },
        Method::DELETE if q.has("cors") => S3Op::DeleteBucketCors { bucket },
        Method::DELETE if q.has("tagging") => S3Op::DeleteBucketTagging { bucket },
        Method::DELETE if q.has("versioning") || q.has("acl") => return Err(method_not_allowed()),
        Method::DELETE => S3Op::DeleteBucket { bucket },
        Method::POST if q.has("delete") => S3Op::DeleteObjects { bucket },
        Method::POST if is_form_upload(req) => S3Op::PostObject { bucket },
        Method::POST => {
            return err(
                S3ErrorCode::InvalidRequest,
                "POST to a bucket must be a multipart/form-data upload or ?delete",
            );
        }
        _ => return Err(method_not_allowed()),
    })
}

fn is_form_upload(req: &HttpRequest<'_>) -> bool {
    header(req.headers, "content-type").is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    })
}

fn version_id(q: &Query) -> Option<String> {
    q.string("versionId").filter(|v| !v.is_empty())
}

fn upload_id(q: &Query) -> S3Result<String> {
    match q.get("uploadId") {
        Some(u) if !u.is_empty() => Ok(u.to_owned()),
        _ => Err(S3Error::new(S3ErrorCode::NoSuchUpload)),
    }
}

fn body_length(req: &HttpRequest<'_>) -> S3Result<BodyLength> {
    let num = |name: &str| -> S3Result<Option<u64>> {
        match header(req.headers, name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("{name} is not a number"),
                )
            }),
        }
    };
    let mut l = BodyLength {
        content_length: num("content-length")?,
        decoded_length: num("x-amz-decoded-content-length")?,
    };
    // Without Content-Length or Transfer-Encoding an HTTP/1.1 request has
    // no body; with `Transfer-Encoding: chunked` the length is learnt at
    // its end (the store streams it either way).
    if l.object_size().is_none() && header(req.headers, "transfer-encoding").is_none() {
        l.content_length = Some(0);
    }
    match l.object_size() {
        Some(n) if n > MAX_PUT_SIZE => Err(S3Error::new(S3ErrorCode::EntityTooLarge)),
        _ => Ok(l),
    }
}

fn copy_args(req: &HttpRequest<'_>, src: &str) -> S3Result<CopyArgs> {
    let h = req.headers;
    Ok(CopyArgs {
        source: CopySource::parse(src)?,
        source_conditions: Conditions::from_headers(h, "x-amz-copy-source-"),
        metadata_directive: Directive::parse(header(h, "x-amz-metadata-directive"), "metadata")?,
        tagging_directive: Directive::parse(header(h, "x-amz-tagging-directive"), "tagging")?,
    })
}

fn get_args(req: &HttpRequest<'_>, q: &Query) -> S3Result<GetArgs> {
    let part_number = q.part_number()?;
    let range = header(req.headers, "range").and_then(ByteRange::parse);
    if part_number.is_some() && range.is_some() {
        return err(
            S3ErrorCode::InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter",
        );
    }
    Ok(GetArgs {
        version_id: version_id(q),
        part_number,
        range,
        conditions: Conditions::from_headers(req.headers, ""),
        overrides: ResponseOverrides::from_query(q),
    })
}

fn object_op(req: &HttpRequest<'_>, q: &Query, bucket: String, key: String) -> S3Result<S3Op> {
    let h = req.headers;
    let copy_src = header(h, "x-amz-copy-source");
    Ok(match *req.method {
        Method::GET if q.has("acl") => S3Op::GetObjectAcl {
            bucket,
            key,
            version_id: version_id(q),
        },
        Method::GET if q.has("tagging") => S3Op::GetObjectTagging {
            bucket,
            key,
            version_id: version_id(q),
        },
        Method::GET if q.has("uploadId") => S3Op::ListParts {
            upload_id: upload_id(q)?,
            max_parts: q.count("max-parts", 1000, 1000)?,
            part_number_marker: q.count("part-number-marker", 0, 10_000)?,
            bucket,
            key,
        },
        Method::GET => S3Op::GetObject {
            args: get_args(req, q)?,
            bucket,
            key,
        },
        Method::HEAD => S3Op::HeadObject {
            args: get_args(req, q)?,
            bucket,
            key,
        },
        Method::PUT if q.has("uploadId") || q.has("partNumber") => {
            let upload_id = upload_id(q)?;
            let part_number = q.part_number()?.ok_or_else(|| {
                S3Error::with_message(S3ErrorCode::InvalidArgument, "UploadPart needs partNumber")
            })?;
            match copy_src {
                Some(src) => S3Op::UploadPartCopy {
                    range: header(h, "x-amz-copy-source-range")
                        .map(ByteRange::parse_copy_range)
                        .transpose()?,
                    copy: copy_args(req, src)?,
                    bucket,
                    key,
                    upload_id,
                    part_number,
                },
                None => S3Op::UploadPart {
                    content_md5: parse_content_md5(h)?,
                    length: body_length(req)?,
                    bucket,
                    key,
                    upload_id,
                    part_number,
                },
            }
        }
        Method::PUT if q.has("tagging") => S3Op::PutObjectTagging {
            bucket,
            key,
            version_id: version_id(q),
        },
        Method::PUT if q.has("acl") => S3Op::PutObjectAcl {
            bucket,
            key,
            version_id: version_id(q),
            acl: CannedAcl::from_headers(h)?,
        },
        Method::PUT => match copy_src {
            Some(src) => {
                let copy = copy_args(req, src)?;
                if copy.source.bucket == bucket
                    && copy.source.key == key
                    && copy.source.version_id.is_none()
                    && copy.metadata_directive == Directive::Copy
                {
                    return err(
                        S3ErrorCode::InvalidRequest,
                        "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
                    );
                }
                S3Op::CopyObject {
                    meta: ObjectMeta::from_headers(h)?,
                    copy,
                    bucket,
                    key,
                }
            }
            None => S3Op::PutObject {
                meta: ObjectMeta::from_headers(h)?,
                length: body_length(req)?,
                bucket,
                key,
            },
        },
        Method::DELETE if q.has("uploadId") => S3Op::AbortMultipartUpload {
            upload_id: upload_id(q)?,
            bucket,
            key,
        },
        Method::DELETE if q.has("tagging") => S3Op::DeleteObjectTagging {
            bucket,
            key,
            version_id: version_id(q),
        },
        Method::DELETE => S3Op::DeleteObject {
            bucket,
            key,
            version_id: version_id(q),
        },
        Method::POST if q.has("uploads") => S3Op::CreateMultipartUpload {
            meta: ObjectMeta::from_headers(h)?,
            bucket,
            key,
        },
        Method::POST if q.has("uploadId") => S3Op::CompleteMultipartUpload {
            upload_id: upload_id(q)?,
            bucket,
            key,
        },
        _ => return Err(method_not_allowed()),
    })
}

pub(super) fn bucket_of(op: &S3Op) -> Option<&str> {
    use S3Op::*;
    match op {
        ListBuckets => None,
        CreateBucket { bucket, .. }
        | DeleteBucket { bucket }
        | HeadBucket { bucket }
        | GetBucketLocation { bucket }
        | ListObjectsV1 { bucket, .. }
        | ListObjectsV2 { bucket, .. }
        | ListObjectVersions { bucket, .. }
        | GetBucketVersioning { bucket }
        | PutBucketVersioning { bucket }
        | GetBucketCors { bucket }
        | PutBucketCors { bucket }
        | DeleteBucketCors { bucket }
        | GetBucketTagging { bucket }
        | PutBucketTagging { bucket }
        | DeleteBucketTagging { bucket }
        | GetBucketAcl { bucket }
        | PutBucketAcl { bucket, .. }
        | ListMultipartUploads { bucket, .. }
        | DeleteObjects { bucket }
        | PostObject { bucket }
        | PutObject { bucket, .. }
        | CopyObject { bucket, .. }
        | GetObject { bucket, .. }
        | HeadObject { bucket, .. }
        | DeleteObject { bucket, .. }
        | GetObjectAcl { bucket, .. }
        | PutObjectAcl { bucket, .. }
        | GetObjectTagging { bucket, .. }
        | PutObjectTagging { bucket, .. }
        | DeleteObjectTagging { bucket, .. }
        | CreateMultipartUpload { bucket, .. }
        | UploadPart { bucket, .. }
        | UploadPartCopy { bucket, .. }
        | CompleteMultipartUpload { bucket, .. }
        | AbortMultipartUpload { bucket, .. }
        | ListParts { bucket, .. }
        | Preflight { bucket, .. } => Some(bucket),
    }
}

pub(super) fn key_of(op: &S3Op) -> Option<&str> {
    use S3Op::*;
    match op {
        PutObject { key, .. }
        | CopyObject { key, .. }
        | GetObject { key, .. }
        | HeadObject { key, .. }
        | DeleteObject { key, .. }
        | GetObjectAcl { key, .. }
        | PutObjectAcl { key, .. }
        | GetObjectTagging { key, .. }
        | PutObjectTagging { key, .. }
        | DeleteObjectTagging { key, .. }
        | CreateMultipartUpload { key, .. }
        | UploadPart { key, .. }
        | UploadPartCopy { key, .. }
        | CompleteMultipartUpload { key, .. }
        | AbortMultipartUpload { key, .. }
        | ListParts { key, .. } => Some(key),
        Preflight { key, .. } => key.as_deref(),
        _ => None,
    }
}
