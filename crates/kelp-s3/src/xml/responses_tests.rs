//! Responses read back with the request reader.

use super::*;
use crate::error::S3ErrorCode;
use crate::time::parse_iso8601;
use crate::xml::{Node, parse};

fn t0() -> SystemTime {
    parse_iso8601("2006-02-03T16:45:09.000Z").unwrap()
}

fn me() -> Owner {
    Owner {
        id: "id1".into(),
        display_name: "kelp".into(),
    }
}

fn read(s: &str) -> Node {
    assert!(
        s.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{s}"
    );
    parse(s.as_bytes(), 1 << 20).unwrap()
}

fn obj(key: &str) -> ObjectInfo {
    ObjectInfo {
        key: key.into(),
        last_modified: t0(),
        etag: ETag::of_body(b""),
        size: 7,
        storage_class: "STANDARD".into(),
        owner: None,
    }
}

#[test]
fn buckets() {
    let s = list_all_my_buckets(
        &me(),
        &[BucketInfo {
            name: "b1".into(),
            creation_date: t0(),
        }],
    );
    assert!(s.contains("xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""));
    let n = read(&s);
    assert_eq!(n.child("Owner").unwrap().text_of("ID"), Some("id1"));
    let b = n.child("Buckets").unwrap().child("Bucket").unwrap();
    assert_eq!(b.text_of("Name"), Some("b1"));
    assert_eq!(b.text_of("CreationDate"), Some("2006-02-03T16:45:09.000Z"));
}

#[test]
fn listings_with_url_encoding() {
    let l = Listing {
        bucket: "b".into(),
        prefix: "a b/".into(),
        delimiter: Some("/".into()),
        max_keys: 1000,
        is_truncated: true,
        contents: vec![obj("a b/c&d+é"), obj("plain")],
        common_prefixes: vec!["a b/x y/".into()],
        encoding_url: true,
    };
    let n = read(&list_objects_v2(&l, Some("tok"), Some("next"), Some("s a")));
    assert_eq!(n.text_of("Prefix"), Some("a%20b/"));
    assert_eq!(n.text_of("KeyCount"), Some("3"));
    assert_eq!(n.text_of("EncodingType"), Some("url"));
    assert_eq!(n.text_of("StartAfter"), Some("s%20a"));
    assert_eq!(n.text_of("NextContinuationToken"), Some("next"));
    assert_eq!(n.text_of("IsTruncated"), Some("true"));
    let c: Vec<&Node> = n.all("Contents").collect();
    assert_eq!(c[0].text_of("Key"), Some("a%20b/c%26d%2B%C3%A9"));
    assert_eq!(
        c[0].text_of("ETag"),
        Some("\"d41d8cd98f00b204e9800998ecf8427e\"")
    );
    assert_eq!(c[0].text_of("Size"), Some("7"));
    assert_eq!(
        n.child("CommonPrefixes").unwrap().text_of("Prefix"),
        Some("a%20b/x%20y/")
    );
    let plain = Listing {
        encoding_url: false,
        ..l.clone()
    };
    let n = read(&list_objects_v1(&plain, "m<", Some("a b/c&d+é")));
    assert_eq!(n.text_of("Marker"), Some("m<"));
    assert_eq!(n.text_of("NextMarker"), Some("a b/c&d+é"));
    assert_eq!(
        n.all("Contents").next().unwrap().text_of("Key"),
        Some("a b/c&d+é")
    );
    assert!(n.child("EncodingType").is_none());
}

#[test]
fn versions() {
    let v = VersionListing {
        listing: Listing {
            bucket: "b".into(),
            max_keys: 2,
            ..Listing::default()
        },
        versions: vec![
            VersionEntry {
                key: "k".into(),
                version_id: "v2".into(),
                is_latest: true,
                last_modified: t0(),
                owner: me(),
                object: None,
            },
            VersionEntry {
                key: "k".into(),
                version_id: "v1".into(),
                is_latest: false,
                last_modified: t0(),
                owner: me(),
                object: Some((ETag::of_body(b"x"), 1, "STANDARD".into())),
            },
        ],
        ..VersionListing::default()
    };
    let n = read(&list_object_versions(&v));
    assert_eq!(n.name, "ListVersionsResult");
    let dm = n.child("DeleteMarker").unwrap();
    assert_eq!(
        (dm.text_of("VersionId"), dm.text_of("IsLatest")),
        (Some("v2"), Some("true"))
    );
    assert!(dm.child("ETag").is_none());
    assert_eq!(n.child("Version").unwrap().text_of("Size"), Some("1"));
}

#[test]
fn multipart_documents() {
    let n = read(&initiate_multipart_upload("b", "k&", "u1"));
    assert_eq!(
        (n.text_of("Key"), n.text_of("UploadId")),
        (Some("k&"), Some("u1"))
    );
    let e = ETag::multipart(&[[0; 16]]);
    let n = read(&complete_multipart_upload("http://h/b/k", "b", "k", &e));
    assert_eq!(n.text_of("ETag"), Some(e.quoted().as_str()));
    let p = PartListing {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: "u".into(),
        owner: me(),
        storage_class: "STANDARD".into(),
        part_number_marker: 0,
        next_part_number_marker: Some(1),
        max_parts: 1,
        is_truncated: true,
        parts: vec![PartInfo {
            part_number: 1,
            last_modified: t0(),
            etag: ETag::of_body(b""),
            size: 5,
        }],
    };
    let n = read(&list_parts(&p));
    assert_eq!(n.text_of("NextPartNumberMarker"), Some("1"));
    assert_eq!(n.child("Part").unwrap().text_of("PartNumber"), Some("1"));
    let u = UploadListing {
        listing: Listing {
            bucket: "b".into(),
            max_keys: 1000,
            ..Listing::default()
        },
        owner: Some(me()),
        uploads: vec![UploadInfo {
            key: "k".into(),
            upload_id: "u".into(),
            initiated: t0(),
        }],
        ..UploadListing::default()
    };
    let n = read(&list_multipart_uploads(&u));
    assert_eq!(
        n.child("Upload").unwrap().text_of("Initiated"),
        Some("2006-02-03T16:45:09.000Z")
    );
    assert_eq!(n.text_of("MaxUploads"), Some("1000"));
}

#[test]
fn small_documents() {
    let e = ETag::of_body(b"");
    assert_eq!(
        read(&copy_object_result(&e, t0())).text_of("LastModified"),
        Some("2006-02-03T16:45:09.000Z")
    );
    assert_eq!(read(&copy_part_result(&e, t0())).name, "CopyPartResult");
    let d = delete_result(
        false,
        &[Deleted {
            key: "a".into(),
            delete_marker: true,
            delete_marker_version_id: Some("dm".into()),
            ..Deleted::default()
        }],
        &[DeleteFailure {
            key: "b".into(),
            version_id: None,
            code: S3ErrorCode::AccessDenied,
            message: "no".into(),
        }],
    );
    let n = read(&d);
    assert_eq!(
        n.child("Deleted").unwrap().text_of("DeleteMarkerVersionId"),
        Some("dm")
    );
    assert_eq!(
        n.child("Error").unwrap().text_of("Code"),
        Some("AccessDenied")
    );
    let q = read(&delete_result(
        true,
        &[Deleted {
            key: "a".into(),
            ..Deleted::default()
        }],
        &[],
    ));
    assert!(q.child("Deleted").is_none());
    let tags = vec![Tag {
        key: "k<".into(),
        value: "v".into(),
    }];
    assert_eq!(
        crate::xml::requests::parse_tagging(tagging(&tags).as_bytes(), 10).unwrap(),
        tags
    );
    for s in [
        Some(VersioningStatus::Enabled),
        Some(VersioningStatus::Suspended),
        None,
    ] {
        assert_eq!(
            crate::xml::requests::parse_versioning(versioning(s).as_bytes()).unwrap(),
            s
        );
    }
    assert_eq!(read(&location_constraint("us-east-1")).text, "");
    assert_eq!(read(&location_constraint("eu-west-1")).text, "eu-west-1");
    let acl = read(&access_control_policy(&me(), None));
    assert_eq!(
        acl.child("AccessControlList")
            .unwrap()
            .child("Grant")
            .unwrap()
            .text_of("Permission"),
        Some("FULL_CONTROL")
    );
    let public = access_control_policy(&me(), Some(CannedAcl::PublicRead));
    assert!(
        public.contains("<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission>"),
        "{public}"
    );
    assert_eq!(
        read(&public)
            .child("AccessControlList")
            .unwrap()
            .children
            .len(),
        2
    );
    let p = read(&post_response("http://h/b/k", "b", "k", &e));
    assert_eq!(p.name, "PostResponse");
    assert_eq!(p.text_of("Bucket"), Some("b"));
}
