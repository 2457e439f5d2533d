//! Classification: addressing, decoding, every operation, every refusal.

use super::*;
use crate::etag::ETag;
use http::HeaderValue;

fn hm(list: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in list {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn go(method: &str, target: &str, headers: &[(&str, &str)]) -> S3Result<S3Op> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let mut list = vec![("host", "localhost:8333")];
    list.extend_from_slice(headers);
    let h = hm(&list);
    let a = Addressing {
        domains: vec!["s3.example.com".into()],
    };
    classify(
        &HttpRequest {
            method: &m,
            raw_path: path,
            raw_query: query,
            headers: &h,
        },
        &a,
    )
}

fn code(method: &str, target: &str, headers: &[(&str, &str)]) -> S3ErrorCode {
    go(method, target, headers).unwrap_err().code
}

const LEN: (&str, &str) = ("content-length", "3");

#[test]
fn path_style_and_decoding() {
    assert_eq!(go("GET", "/", &[]).unwrap(), S3Op::ListBuckets);
    let op = go("GET", "/b/a%20b/c+d%26e%25f/%E2%82%AC", &[]).unwrap();
    assert_eq!(op.bucket(), Some("b"));
    assert_eq!(op.key(), Some("a b/c+d&e%f/€"));
    assert_eq!(op.resource(), "/b/a b/c+d&e%f/€");
    // Decoded once: %2520 is a literal %20.
    assert_eq!(go("GET", "/b/x%2520y", &[]).unwrap().key(), Some("x%20y"));
    assert!(matches!(
        go("GET", "/b", &[]).unwrap(),
        S3Op::ListObjectsV1 { .. }
    ));
    assert!(matches!(
        go("GET", "/b/", &[]).unwrap(),
        S3Op::ListObjectsV1 { .. }
    ));
    assert_eq!(code("GET", "/b/%FF", &[]), S3ErrorCode::InvalidArgument);
    assert_eq!(
        code("GET", &format!("/b/{}", "k".repeat(1025)), &[]),
        S3ErrorCode::KeyTooLongError
    );
    assert_eq!(go("GET", "/b%2Fc/k", &[]).unwrap().key(), Some("c/k"));
}

#[test]
fn virtual_host_style() {
    let m = Method::GET;
    let a = Addressing {
        domains: vec!["s3.example.com".into()],
    };
    let run = |host: &str, path: &str| {
        let h = hm(&[("host", host)]);
        classify(
            &HttpRequest {
                method: &m,
                raw_path: path,
                raw_query: "",
                headers: &h,
            },
            &a,
        )
        .unwrap()
    };
    let op = run("my.bucket.s3.example.com:8333", "/dir/a%20b");
    assert_eq!(
        (op.bucket(), op.key()),
        (Some("my.bucket"), Some("dir/a b"))
    );
    assert!(
        matches!(run("B.S3.EXAMPLE.COM", "/"), S3Op::ListObjectsV1 { ref bucket, .. } if bucket == "b")
    );
    // The bare domain and other hosts are path style.
    assert_eq!(run("s3.example.com", "/"), S3Op::ListBuckets);
    assert_eq!(run("127.0.0.1:8333", "/x/y").bucket(), Some("x"));
    assert_eq!(run("[::1]:8333", "/x/y").key(), Some("y"));
    assert_eq!(run("evil-s3.example.com", "/x/y").bucket(), Some("x"));
}

#[test]
fn bucket_operations() {
    let b = || "b".to_owned();
    assert_eq!(
        go("PUT", "/b", &[]).unwrap(),
        S3Op::CreateBucket {
            bucket: b(),
            acl: None
        }
    );
    assert_eq!(
        go("PUT", "/b", &[("x-amz-acl", "public-read")]).unwrap(),
        S3Op::CreateBucket {
            bucket: b(),
            acl: Some(CannedAcl::PublicRead)
        }
    );
    assert_eq!(
        code("PUT", "/b", &[("x-amz-acl", "nope")]),
        S3ErrorCode::InvalidArgument
    );
    assert_eq!(
        go("DELETE", "/b", &[]).unwrap(),
        S3Op::DeleteBucket { bucket: b() }
    );
    assert_eq!(
        go("HEAD", "/b", &[]).unwrap(),
        S3Op::HeadBucket { bucket: b() }
    );
    assert_eq!(
        go("GET", "/b?location", &[]).unwrap(),
        S3Op::GetBucketLocation { bucket: b() }
    );
    assert_eq!(
        go("GET", "/b?versioning", &[]).unwrap(),
        S3Op::GetBucketVersioning { bucket: b() }
    );
    assert_eq!(
        go("PUT", "/b?versioning", &[]).unwrap(),
        S3Op::PutBucketVersioning { bucket: b() }
    );
    assert_eq!(
        go("GET", "/b?cors", &[]).unwrap(),
        S3Op::GetBucketCors { bucket: b() }
    );
    assert_eq!(
        go("PUT", "/b?cors", &[]).unwrap(),
        S3Op::PutBucketCors { bucket: b() }
    );
    assert_eq!(
        go("DELETE", "/b?cors", &[]).unwrap(),
        S3Op::DeleteBucketCors { bucket: b() }
    );
    assert_eq!(
        go("GET", "/b?tagging", &[]).unwrap(),
        S3Op::GetBucketTagging { bucket: b() }
    );
    assert_eq!(
        go("PUT", "/b?tagging", &[]).unwrap(),
        S3Op::PutBucketTagging { bucket: b() }
    );
    assert_eq!(
        go("DELETE", "/b?tagging", &[]).unwrap(),
        S3Op::DeleteBucketTagging { bucket: b() }
    );
    assert_eq!(
        go("GET", "/b?acl", &[]).unwrap(),
        S3Op::GetBucketAcl { bucket: b() }
    );
    assert_eq!(
        go("PUT", "/b?acl", &[("x-amz-acl", "private")]).unwrap(),
        S3Op::PutBucketAcl {
            bucket: b(),
            acl: Some(CannedAcl::Private)
        }
    );
    assert_eq!(
        go("POST", "/b?delete", &[]).unwrap(),
        S3Op::DeleteObjects { bucket: b() }
    );
    assert_eq!(
        go(
            "POST",
            "/b",
            &[("content-type", "multipart/form-data; boundary=x")]
        )
        .unwrap(),
        S3Op::PostObject { bucket: b() }
    );
    assert_eq!(code("POST", "/b", &[]), S3ErrorCode::InvalidRequest);
    assert_eq!(code("GET", "/b?policy", &[]), S3ErrorCode::NotImplemented);
    assert_eq!(
        code("PUT", "/b?lifecycle", &[]),
        S3ErrorCode::NotImplemented
    );
    assert_eq!(
        code("DELETE", "/b?versioning", &[]),
        S3ErrorCode::MethodNotAllowed
    );
    assert_eq!(code("PATCH", "/b", &[]), S3ErrorCode::MethodNotAllowed);
    assert_eq!(code("PUT", "/", &[]), S3ErrorCode::MethodNotAllowed);
}

#[test]
fn listings() {
    let S3Op::ListObjectsV1 { params, .. } = go(
        "GET",
        "/b?prefix=a+b%2F&delimiter=%2F&marker=m&max-keys=5000&encoding-type=url",
        &[],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        params,
        ListV1Params {
            prefix: "a b/".into(),
            delimiter: Some("/".into()),
            marker: "m".into(),
            max_keys: 1000,
            encoding_url: true
        }
    );
    let S3Op::ListObjectsV2 { params, .. } = go(
        "GET",
        "/b?list-type=2&continuation-token=t&start-after=s&fetch-owner=true&max-keys=0",
        &[],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        params,
        ListV2Params {
            prefix: "".into(),
            delimiter: None,
            continuation_token: Some("t".into()),
            start_after: Some("s".into()),
            fetch_owner: true,
            max_keys: 0,
            encoding_url: false
        }
    );
    let S3Op::ListObjectVersions { params, .. } =
        go("GET", "/b?versions&key-marker=k&version-id-marker=v", &[]).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            params.key_marker.as_str(),
            params.version_id_marker.as_str()
        ),
        ("k", "v")
    );
    let S3Op::ListMultipartUploads { params, .. } = go(
        "GET",
        "/b?uploads&max-uploads=7&upload-id-marker=u&key-marker=k",
        &[],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        (params.max_uploads, params.upload_id_marker.as_str()),
        (7, "u")
    );
    for bad in [
        "/b?max-keys=x",
        "/b?max-keys=-1",
        "/b?list-type=2&encoding-type=base64",
        "/b?list-type=3",
        "/b?list-type=2&fetch-owner=yes",
        "/b?versions&version-id-marker=v",
        "/b?list-type=2&continuation-token=",
    ] {
        assert_eq!(code("GET", bad, &[]), S3ErrorCode::InvalidArgument, "{bad}");
    }
}

#[test]
fn object_reads() {
    let S3Op::GetObject { args, .. } = go(
        "GET",
        "/b/k?versionId=v1&response-content-type=text%2Fplain&response-content-disposition=attachment",
        &[("range", "bytes=0-9"), ("if-match", "\"abc\""), ("if-modified-since", "Fri, 24 May 2013 00:00:00 GMT")],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(args.version_id.as_deref(), Some("v1"));
    assert_eq!(
        args.range,
        Some(ByteRange::FromTo {
            start: 0,
            end: Some(9)
        })
    );
    assert!(
        args.conditions
            .if_match
            .as_ref()
            .unwrap()
            .matches(&ETag::parse("abc"))
    );
    assert!(args.conditions.if_modified_since.is_some());
    assert_eq!(args.overrides.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        args.overrides.content_disposition.as_deref(),
        Some("attachment")
    );
    let S3Op::HeadObject { args, .. } = go("HEAD", "/b/k?partNumber=3", &[]).unwrap() else {
        panic!()
    };
    assert_eq!(args.part_number, Some(3));
    for bad in [
        "/b/k?partNumber=0",
        "/b/k?partNumber=10001",
        "/b/k?partNumber=x",
    ] {
        assert_eq!(code("GET", bad, &[]), S3ErrorCode::InvalidArgument);
    }
    assert_eq!(
        code("GET", "/b/k?partNumber=1", &[("range", "bytes=0-1")]),
        S3ErrorCode::InvalidRequest
    );
    assert_eq!(
        go("GET", "/b/k?acl", &[]).unwrap(),
        S3Op::GetObjectAcl {
            bucket: "b".into(),
            key: "k".into(),
            version_id: None
        }
    );
    assert_eq!(
        go("GET", "/b/k?tagging&versionId=v", &[]).unwrap(),
        S3Op::GetObjectTagging {
            bucket: "b".into(),
            key: "k".into(),
            version_id: Some("v".into())
        }
    );
    assert_eq!(
        code("GET", "/b/k?torrent", &[]),
        S3ErrorCode::NotImplemented
    );
}

#[test]
fn object_writes() {
    let S3Op::PutObject { meta, length, .. } = go(
        "PUT",
        "/b/k",
        &[
            LEN,
            ("content-type", "text/plain"),
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("x-amz-meta-Color", "blue"),
            ("x-amz-meta-a", "1"),
            ("x-amz-meta-a", "2"),
            ("x-amz-tagging", "k1=v%201&k2="),
            ("x-amz-storage-class", "GLACIER"),
            ("content-encoding", "aws-chunked,gzip"),
            ("cache-control", "no-cache"),
            ("x-amz-checksum-crc32", "AAAAAA=="),
        ],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(length.object_size(), Some(3));
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        meta.content_md5,
        Some(*ETag::of_body(b"").md5().as_ref().unwrap())
    );
    assert_eq!(
        meta.user_metadata,
        vec![("a".into(), "1,2".into()), ("color".into(), "blue".into())]
    );
    assert_eq!(meta.tagging.len(), 2);
    assert_eq!(meta.tagging[0].value, "v 1");
    assert_eq!(meta.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(meta.cache_control.as_deref(), Some("no-cache"));
    assert!(meta.checksum.is_some());
    let S3Op::PutObject { length, meta, .. } = go(
        "PUT",
        "/b/k",
        &[
            ("content-length", "300"),
            ("x-amz-decoded-content-length", "100"),
            ("content-encoding", "aws-chunked"),
        ],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(length.object_size(), Some(100));
    assert_eq!(meta.content_encoding, None);
    use S3ErrorCode::*;
    // No length and no Transfer-Encoding: an empty body, as HTTP/1.1 says.
    let Ok(S3Op::PutObject { length, .. }) = go("PUT", "/b/k", &[]) else {
        panic!()
    };
    assert_eq!(length.object_size(), Some(0));
    assert_eq!(
        code("PUT", "/b/k", &[("content-length", "6000000000")]),
        EntityTooLarge
    );
    assert_eq!(
        code("PUT", "/b/k", &[LEN, ("content-md5", "nope")]),
        InvalidDigest
    );
    assert_eq!(
        code("PUT", "/b/k", &[LEN, ("content-md5", "AAAA")]),
        InvalidDigest
    );
    assert_eq!(
        code("PUT", "/b/k", &[LEN, ("x-amz-meta-big", &"x".repeat(2046))]),
        MetadataTooLarge
    );
    let tags: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
    assert_eq!(
        code("PUT", "/b/k", &[LEN, ("x-amz-tagging", &tags.join("&"))]),
        InvalidTag
    );
    assert_eq!(
        code("PUT", "/b/k", &[LEN, ("x-amz-checksum-crc32", "AAAA")]),
        InvalidRequest
    );
    assert_eq!(code("POST", "/b/k", &[]), MethodNotAllowed);
}

#[test]
fn copies() {
    let S3Op::CopyObject { copy, .. } = go(
        "PUT",
        "/b/dst",
        &[
            ("x-amz-copy-source", "/src/a%20b%3Fc?versionId=v%2B1"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("x-amz-copy-source-if-none-match", "\"e\""),
            (
                "x-amz-copy-source-if-unmodified-since",
                "Fri, 24 May 2013 00:00:00 GMT",
            ),
        ],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        copy.source,
        CopySource {
            bucket: "src".into(),
            key: "a b?c".into(),
            version_id: Some("v+1".into())
        }
    );
    assert_eq!(copy.metadata_directive, Directive::Replace);
    assert_eq!(copy.tagging_directive, Directive::Copy);
    assert!(
        copy.source_conditions.if_none_match.is_some()
            && copy.source_conditions.if_unmodified_since.is_some()
    );
    let S3Op::CopyObject { copy, .. } =
        go("PUT", "/b/dst", &[("x-amz-copy-source", "src/k")]).unwrap()
    else {
        panic!()
    };
    assert_eq!(copy.source.key, "k");
    use S3ErrorCode::*;
    assert_eq!(
        code("PUT", "/b/k", &[("x-amz-copy-source", "b/k")]),
        InvalidRequest
    );
    assert!(
        go(
            "PUT",
            "/b/k",
            &[
                ("x-amz-copy-source", "b/k"),
                ("x-amz-metadata-directive", "REPLACE")
            ]
        )
        .is_ok()
    );
    for bad in ["nokey", "/b/", "/b", "b/k?versionId=", "b/k?other=1"] {
        assert_eq!(
            code("PUT", "/b/dst", &[("x-amz-copy-source", bad)]),
            InvalidArgument,
            "{bad}"
        );
    }
    assert_eq!(
        code(
            "PUT",
            "/b/dst",
            &[
                ("x-amz-copy-source", "s/k"),
                ("x-amz-metadata-directive", "MOVE")
            ]
        ),
        InvalidArgument
    );
}

#[test]
fn multipart() {
    let s = |x: &str| x.to_owned();
    assert_eq!(
        go("POST", "/b/k?uploads", &[]).unwrap(),
        S3Op::CreateMultipartUpload {
            bucket: s("b"),
            key: s("k"),
            meta: ObjectMeta::default()
        }
    );
    let S3Op::UploadPart {
        part_number,
        upload_id,
        ..
    } = go("PUT", "/b/k?partNumber=2&uploadId=u%2B1", &[LEN]).unwrap()
    else {
        panic!()
    };
    assert_eq!((part_number, upload_id.as_str()), (2, "u+1"));
    let S3Op::UploadPartCopy { range, copy, .. } = go(
        "PUT",
        "/b/k?partNumber=1&uploadId=u",
        &[
            ("x-amz-copy-source", "s/k"),
            ("x-amz-copy-source-range", "bytes=0-99"),
        ],
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        range,
        Some(ByteRange::FromTo {
            start: 0,
            end: Some(99)
        })
    );
    assert_eq!(copy.source.bucket, "s");
    assert_eq!(
        go("POST", "/b/k?uploadId=u", &[]).unwrap(),
        S3Op::CompleteMultipartUpload {
            bucket: s("b"),
            key: s("k"),
            upload_id: s("u")
        }
    );
    assert_eq!(
        go("DELETE", "/b/k?uploadId=u", &[]).unwrap(),
        S3Op::AbortMultipartUpload {
            bucket: s("b"),
            key: s("k"),
            upload_id: s("u")
        }
    );
    assert_eq!(
        go(
            "GET",
            "/b/k?uploadId=u&max-parts=5&part-number-marker=3",
            &[]
        )
        .unwrap(),
        S3Op::ListParts {
            bucket: s("b"),
            key: s("k"),
            upload_id: s("u"),
            max_parts: 5,
            part_number_marker: 3
        }
    );
    use S3ErrorCode::*;
    assert_eq!(
        code("PUT", "/b/k?partNumber=0&uploadId=u", &[LEN]),
        InvalidArgument
    );
    assert_eq!(
        code("PUT", "/b/k?partNumber=10001&uploadId=u", &[LEN]),
        InvalidArgument
    );
    assert_eq!(code("PUT", "/b/k?uploadId=u", &[LEN]), InvalidArgument);
    assert_eq!(
        code("PUT", "/b/k?partNumber=1&uploadId=", &[LEN]),
        NoSuchUpload
    );
    assert_eq!(
        code(
            "PUT",
            "/b/k?partNumber=1&uploadId=u",
            &[
                ("x-amz-copy-source", "s/k"),
                ("x-amz-copy-source-range", "bytes=5-")
            ]
        ),
        InvalidArgument
    );
    assert_eq!(
        code("GET", "/b/k?uploadId=u&max-parts=a", &[]),
        InvalidArgument
    );
}

#[test]
fn deletes_tagging_acl_preflight() {
    let s = |x: &str| x.to_owned();
    assert_eq!(
        go("DELETE", "/b/k?versionId=v", &[]).unwrap(),
        S3Op::DeleteObject {
            bucket: s("b"),
            key: s("k"),
            version_id: Some(s("v"))
        }
    );
    assert_eq!(
        go("PUT", "/b/k?tagging", &[]).unwrap(),
        S3Op::PutObjectTagging {
            bucket: s("b"),
            key: s("k"),
            version_id: None
        }
    );
    assert_eq!(
        go("DELETE", "/b/k?tagging", &[]).unwrap(),
        S3Op::DeleteObjectTagging {
            bucket: s("b"),
            key: s("k"),
            version_id: None
        }
    );
    assert_eq!(
        go(
            "PUT",
            "/b/k?acl",
            &[("x-amz-acl", "bucket-owner-full-control")]
        )
        .unwrap(),
        S3Op::PutObjectAcl {
            bucket: s("b"),
            key: s("k"),
            version_id: None,
            acl: Some(CannedAcl::BucketOwnerFullControl)
        }
    );
    let op = go(
        "OPTIONS",
        "/b/k",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "Content-Type, X-Amz-Date"),
        ],
    )
    .unwrap();
    assert_eq!(
        op,
        S3Op::Preflight {
            bucket: s("b"),
            key: Some(s("k")),
            preflight: Preflight {
                origin: s("https://app.example"),
                method: s("PUT"),
                headers: vec![s("content-type"), s("x-amz-date")]
            }
        }
    );
    assert_eq!(
        code("OPTIONS", "/b", &[("origin", "x")]),
        S3ErrorCode::InvalidRequest
    );
}
