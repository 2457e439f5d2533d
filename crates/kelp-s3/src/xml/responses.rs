//! Response bodies, one function per document.
//!
//! Timestamps are `2006-02-03T16:45:09.000Z`; ETags are quoted; with
//! `EncodingType=url` the keys, prefixes, markers and delimiter are
//! percent-encoded (SigV4 set, `/` kept) and `<EncodingType>url</EncodingType>`
//! is added.

use std::time::SystemTime;

use crate::etag::ETag;
use crate::request::CannedAcl;
use crate::time::format_iso8601;
use crate::uri::encode_path;
use crate::xml::Writer;
use crate::xml::requests::{Tag, VersioningStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub display_name: String,
}

fn owner(w: &mut Writer, tag: &str, o: &Owner) {
    w.open(tag)
        .elem("ID", &o.id)
        .elem("DisplayName", &o.display_name)
        .close(tag);
}

/// Encodes a listing value when `EncodingType=url` was asked for.
fn enc(url: bool, s: &str) -> String {
    if url { encode_path(s) } else { s.to_owned() }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

#[derive(Debug, Clone)]
pub struct BucketInfo {
    pub name: String,
    pub creation_date: SystemTime,
}

pub fn list_all_my_buckets(o: &Owner, buckets: &[BucketInfo]) -> String {
    let mut w = Writer::new("ListAllMyBucketsResult");
    owner(&mut w, "Owner", o);
    w.open("Buckets");
    for b in buckets {
        w.open("Bucket")
            .elem("Name", &b.name)
            .elem("CreationDate", &format_iso8601(b.creation_date))
            .close("Bucket");
    }
    w.close("Buckets");
    w.finish("ListAllMyBucketsResult")
}

/// One object in a listing.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub last_modified: SystemTime,
    pub etag: ETag,
    pub size: u64,
    pub storage_class: String,
    /// Present in V1 always, in V2 with `fetch-owner=true`.
    pub owner: Option<Owner>,
}

fn object(w: &mut Writer, url: bool, o: &ObjectInfo) {
    w.open("Contents")
        .elem("Key", &enc(url, &o.key))
        .elem("LastModified", &format_iso8601(o.last_modified))
        .elem("ETag", &o.etag.quoted())
        .elem("Size", &o.size.to_string());
    if let Some(ow) = &o.owner {
        owner(w, "Owner", ow);
    }
    w.elem("StorageClass", &o.storage_class).close("Contents");
}

fn common_prefixes(w: &mut Writer, url: bool, prefixes: &[String]) {
    for p in prefixes {
        w.open("CommonPrefixes")
            .elem("Prefix", &enc(url, p))
            .close("CommonPrefixes");
    }
}

/// What ListObjects V1 and V2 share.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: u32,
    pub is_truncated: bool,
    pub contents: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub encoding_url: bool,
}

fn listing_head(w: &mut Writer, l: &Listing) {
    w.elem("Name", &l.bucket)
        .elem("Prefix", &enc(l.encoding_url, &l.prefix));
}

fn listing_tail(w: &mut Writer, l: &Listing) {
    w.elem("MaxKeys", &l.max_keys.to_string());
    if let Some(d) = &l.delimiter {
        w.elem("Delimiter", &enc(l.encoding_url, d));
    }
    if l.encoding_url {
        w.elem("EncodingType", "url");
    }
    w.elem("IsTruncated", bool_str(l.is_truncated));
    for o in &l.contents {
        object(w, l.encoding_url, o);
    }
    common_prefixes(w, l.encoding_url, &l.common_prefixes);
}

pub fn list_objects_v1(l: &Listing, marker: &str, next_marker: Option<&str>) -> String {
    let mut w = Writer::new("ListBucketResult");
    listing_head(&mut w, l);
    w.elem("Marker", &enc(l.encoding_url, marker));
    if let Some(n) = next_marker {
        w.elem("NextMarker", &enc(l.encoding_url, n));
    }
    listing_tail(&mut w, l);
    w.finish("ListBucketResult")
}

pub fn list_objects_v2(
    l: &Listing,
    continuation_token: Option<&str>,
    next_continuation_token: Option<&str>,
    start_after: Option<&str>,
) -> String {
    let mut w = Writer::new("ListBucketResult");
    listing_head(&mut w, l);
    w.opt("ContinuationToken", continuation_token)
        .opt("NextContinuationToken", next_continuation_token);
    if let Some(s) = start_after {
        w.elem("StartAfter", &enc(l.encoding_url, s));
    }
    w.elem(
        "KeyCount",
        &(l.contents.len() + l.common_prefixes.len()).to_string(),
    );
    listing_tail(&mut w, l);
    w.finish("ListBucketResult")
}

/// A `<Version>` or `<DeleteMarker>` in ListObjectVersions.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub last_modified: SystemTime,
    pub owner: Owner,
    /// `None` for a delete marker; else (etag, size, storage class).
    pub object: Option<(ETag, u64, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct VersionListing {
    pub listing: Listing,
    pub key_marker: String,
    pub version_id_marker: String,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
    pub versions: Vec<VersionEntry>,
}

pub fn list_object_versions(v: &VersionListing) -> String {
    let l = &v.listing;
    let u = l.encoding_url;
    let mut w = Writer::new("ListVersionsResult");
    listing_head(&mut w, l);
    w.elem("KeyMarker", &enc(u, &v.key_marker))
        .elem("VersionIdMarker", &v.version_id_marker);
    if let Some(n) = &v.next_key_marker {
        w.elem("NextKeyMarker", &enc(u, n));
    }
    w.opt("NextVersionIdMarker", v.next_version_id_marker.as_deref());
    w.elem("MaxKeys", &l.max_keys.to_string());
    if let Some(d) = &l.delimiter {
        w.elem("Delimiter", &enc(u, d));
    }
    if u {
        w.elem("EncodingType", "url");
    }
    w.elem("IsTruncated", bool_str(l.is_truncated));
    for e in &v.versions {
        let tag = if e.object.is_some() {
            "Version"
        } else {
            "DeleteMarker"
        };
        w.open(tag)
            .elem("Key", &enc(u, &e.key))
            .elem("VersionId", &e.version_id)
            .elem("IsLatest", bool_str(e.is_latest))
            .elem("LastModified", &format_iso8601(e.last_modified));
        if let Some((etag, size, class)) = &e.object {
            w.elem("ETag", &etag.quoted())
                .elem("Size", &size.to_string())
                .elem("StorageClass", class);
        }
        owner(&mut w, "Owner", &e.owner);
        w.close(tag);
    }
    common_prefixes(&mut w, u, &l.common_prefixes);
    w.finish("ListVersionsResult")
}

pub fn initiate_multipart_upload(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut w = Writer::new("InitiateMultipartUploadResult");
    w.elem("Bucket", bucket)
        .elem("Key", key)
        .elem("UploadId", upload_id);
    w.finish("InitiateMultipartUploadResult")
}

pub fn complete_multipart_upload(location: &str, bucket: &str, key: &str, etag: &ETag) -> String {
    let mut w = Writer::new("CompleteMultipartUploadResult");
    w.elem("Location", location)
        .elem("Bucket", bucket)
        .elem("Key", key)
        .elem("ETag", &etag.quoted());
    w.finish("CompleteMultipartUploadResult")
}

#[derive(Debug, Clone)]
pub struct PartInfo {
    pub part_number: u32,
    pub last_modified: SystemTime,
    pub etag: ETag,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct PartListing {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub owner: Owner,
    pub storage_class: String,
    pub part_number_marker: u32,
    pub next_part_number_marker: Option<u32>,
    pub max_parts: u32,
    pub is_truncated: bool,
    pub parts: Vec<PartInfo>,
}

pub fn list_parts(p: &PartListing) -> String {
    let mut w = Writer::new("ListPartsResult");
    w.elem("Bucket", &p.bucket)
        .elem("Key", &p.key)
        .elem("UploadId", &p.upload_id);
    owner(&mut w, "Initiator", &p.owner);
    owner(&mut w, "Owner", &p.owner);
    w.elem("StorageClass", &p.storage_class)
        .elem("PartNumberMarker", &p.part_number_marker.to_string());
    if let Some(n) = p.next_part_number_marker {
        w.elem("NextPartNumberMarker", &n.to_string());
    }
    w.elem("MaxParts", &p.max_parts.to_string())
        .elem("IsTruncated", bool_str(p.is_truncated));
    for part in &p.parts {
        w.open("Part")
            .elem("PartNumber", &part.part_number.to_string())
            .elem("LastModified", &format_iso8601(part.last_modified))
            .elem("ETag", &part.etag.quoted())
            .elem("Size", &part.size.to_string())
            .close("Part");
    }
    w.finish("ListPartsResult")
}

#[derive(Debug, Clone)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

#[derive(Debug, Clone, Default)]
pub struct UploadListing {
    pub listing: Listing,
    pub owner: Option<Owner>,
    pub key_marker: String,
    pub upload_id_marker: String,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
    pub uploads: Vec<UploadInfo>,
}

pub fn list_multipart_uploads(u: &UploadListing) -> String {
    let l = &u.listing;
    let url = l.encoding_url;
    let mut w = Writer::new("ListMultipartUploadsResult");
    w.elem("Bucket", &l.bucket)
        .elem("KeyMarker", &enc(url, &u.key_marker))
        .elem("UploadIdMarker", &u.upload_id_marker);
    if let Some(n) = &u.next_key_marker {
        w.elem("NextKeyMarker", &enc(url, n));
    }
    w.opt("NextUploadIdMarker", u.next_upload_id_marker.as_deref())
        .elem("Prefix", &enc(url, &l.prefix));
    if let Some(d) = &l.delimiter {
        w.elem("Delimiter", &enc(url, d));
    }
    w.elem("MaxUploads", &l.max_keys.to_string());
    if url {
        w.elem("EncodingType", "url");
    }
    w.elem("IsTruncated", bool_str(l.is_truncated));
    for up in &u.uploads {
        w.open("Upload")
            .elem("Key", &enc(url, &up.key))
            .elem("UploadId", &up.upload_id);
        if let Some(o) = &u.owner {
            owner(&mut w, "Initiator", o);
            owner(&mut w, "Owner", o);
        }
        w.elem("StorageClass", "STANDARD")
            .elem("Initiated", &format_iso8601(up.initiated))
            .close("Upload");
    }
    common_prefixes(&mut w, url, &l.common_prefixes);
    w.finish("ListMultipartUploadsResult")
}

pub fn copy_object_result(etag: &ETag, last_modified: SystemTime) -> String {
    let mut w = Writer::new("CopyObjectResult");
    w.elem("LastModified", &format_iso8601(last_modified))
        .elem("ETag", &etag.quoted());
    w.finish("CopyObjectResult")
}

pub fn copy_part_result(etag: &ETag, last_modified: SystemTime) -> String {
    let mut w = Writer::new("CopyPartResult");
    w.elem("LastModified", &format_iso8601(last_modified))
        .elem("ETag", &etag.quoted());
    w.finish("CopyPartResult")
}

#[derive(Debug, Clone, Default)]
pub struct Deleted {
    pub key: String,
    pub version_id: Option<String>,
    pub delete_marker: bool,
    pub delete_marker_version_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeleteFailure {
    pub key: String,
    pub version_id: Option<String>,
    pub code: crate::error::S3ErrorCode,
    pub message: String,
}

/// With `quiet`, only the errors are listed.
pub fn delete_result(quiet: bool, deleted: &[Deleted], errors: &[DeleteFailure]) -> String {
    let mut w = Writer::new("DeleteResult");
    if !quiet {
        for d in deleted {
            w.open("Deleted")
                .elem("Key", &d.key)
                .opt("VersionId", d.version_id.as_deref());
            if d.delete_marker {
                w.elem("DeleteMarker", "true").opt(
                    "DeleteMarkerVersionId",
                    d.delete_marker_version_id.as_deref(),
                );
            }
            w.close("Deleted");
        }
    }
    for e in errors {
        w.open("Error")
            .elem("Key", &e.key)
            .opt("VersionId", e.version_id.as_deref())
            .elem("Code", e.code.as_str())
            .elem("Message", &e.message)
            .close("Error");
    }
    w.finish("DeleteResult")
}

pub fn tagging(tags: &[Tag]) -> String {
    let mut w = Writer::new("Tagging");
    w.open("TagSet");
    for t in tags {
        w.open("Tag")
            .elem("Key", &t.key)
            .elem("Value", &t.value)
            .close("Tag");
    }
    w.close("TagSet");
    w.finish("Tagging")
}

/// An unversioned bucket answers an empty configuration.
pub fn versioning(status: Option<VersioningStatus>) -> String {
    let mut w = Writer::new("VersioningConfiguration");
    match status {
        Some(VersioningStatus::Enabled) => w.elem("Status", "Enabled"),
        Some(VersioningStatus::Suspended) => w.elem("Status", "Suspended"),
        None => &mut w,
    };
    w.finish("VersioningConfiguration")
}

/// `us-east-1` is answered as an empty constraint, like S3.
pub fn location_constraint(region: &str) -> String {
    let mut w = Writer::new("LocationConstraint");
    if region != "us-east-1" {
        w.raw(&crate::xml::escape(region));
    }
    w.finish("LocationConstraint")
}

/// The owner with FULL_CONTROL, the only grant Kelp reports.
/// The owner's FULL_CONTROL, then the grants `acl` adds: READ (and WRITE
/// for public-read-write) to all users, or READ to authenticated users.
pub fn access_control_policy(o: &Owner, acl: Option<CannedAcl>) -> String {
    const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
    const AUTHENTICATED: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
    let groups: &[(&str, &str)] = match acl {
        Some(CannedAcl::PublicRead) => &[(ALL_USERS, "READ")],
        Some(CannedAcl::PublicReadWrite) => &[(ALL_USERS, "READ"), (ALL_USERS, "WRITE")],
        Some(CannedAcl::AuthenticatedRead) => &[(AUTHENTICATED, "READ")],
        _ => &[],
    };
    let mut w = Writer::new("AccessControlPolicy");
    owner(&mut w, "Owner", o);
    w.open("AccessControlList")
        .raw(r#"<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">"#)
        .elem("ID", &o.id)
        .elem("DisplayName", &o.display_name)
        .close("Grantee")
        .elem("Permission", "FULL_CONTROL")
        .close("Grant");
    for (uri, permission) in groups {
        w.raw(r#"<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">"#)
            .elem("URI", uri)
            .close("Grantee")
            .elem("Permission", permission)
            .close("Grant");
    }
    w.close("AccessControlList");
    w.finish("AccessControlPolicy")
}

/// The body of a browser POST answered with 201.
pub fn post_response(location: &str, bucket: &str, key: &str, etag: &ETag) -> String {
    let mut w = Writer::bare("PostResponse");
    w.elem("Location", location)
        .elem("Bucket", bucket)
        .elem("Key", key)
        .elem("ETag", &etag.quoted());
    w.finish("PostResponse")
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
