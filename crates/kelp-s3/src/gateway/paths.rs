//! Where S3 things live in the filer's namespace:
//!
//! - bucket `b` is the directory `/buckets/b`; its settings (owner, ACL,
//!   versioning, CORS, tags) are extended attributes of that directory;
//! - object `k` of bucket `b` is the file `/buckets/b/k` (`/` in a key
//!   makes directories, as in SeaweedFS, so the filer and a mount see the
//!   same tree); a key ending in `/` is a "folder" object: the directory
//!   itself, marked with [`MARKER`];
//! - a multipart upload is the directory `/.s3/uploads/b/<upload id>`
//!   holding its parts (`00001`…), outside the bucket so that listings
//!   never see it;
//! - a versioned bucket's older versions live in
//!   `/.s3/versions/b/<key>/<version id>`.
//!
//! Keys with empty (`a//b`), `.` or `..` segments have no such path and
//! are refused (as MinIO does).

use kelp_filer::FullPath;

use crate::error::{S3Error, S3ErrorCode, S3Result};

pub const BUCKETS: &str = "/buckets";

/// Extended attributes of objects and buckets.
pub const ETAG: &str = "s3.etag";
pub const META_PREFIX: &str = "s3.meta.";
pub const TAGGING: &str = "s3.tagging";
pub const MARKER: &str = "s3.folder";
pub const VERSION_ID: &str = "s3.version-id";
pub const DELETE_MARKER: &str = "s3.delete-marker";
pub const OWNER: &str = "s3.owner";
pub const ACL: &str = "s3.acl";
pub const VERSIONING: &str = "s3.versioning";
pub const CORS: &str = "s3.cors";
/// Content headers kept as they were sent.
pub const CONTENT_HEADERS: [(&str, &str); 5] = [
    ("s3.content-disposition", "content-disposition"),
    ("s3.content-encoding", "content-encoding"),
    ("s3.content-language", "content-language"),
    ("s3.cache-control", "cache-control"),
    ("s3.expires", "expires"),
];
/// Multipart upload directories: the key and the request's metadata.
pub const UPLOAD_KEY: &str = "s3.upload-key";

pub fn bucket_dir(bucket: &str) -> FullPath {
    FullPath::parse(BUCKETS).expect("constant").child(bucket)
}

fn bad_key() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidArgument,
        "Kelp does not store keys with empty, `.` or `..` path segments",
    )
}

/// The path of object `key` (a folder object's directory for `x/`).
pub fn object_path(bucket: &str, key: &str) -> S3Result<FullPath> {
    let body = key.strip_suffix('/').unwrap_or(key);
    if body.is_empty()
        || body
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad_key());
    }
    FullPath::parse(&format!("{BUCKETS}/{bucket}/{body}")).map_err(|_| bad_key())
}

/// The key of the object at `path` below `bucket`'s directory (`dir`
/// says whether it is a folder object).
pub fn key_of(bucket_dir: &FullPath, path: &FullPath, dir: bool) -> String {
    let rest = &path.as_str()[bucket_dir.as_str().len() + 1..];
    if dir {
        format!("{rest}/")
    } else {
        rest.to_string()
    }
}

pub fn uploads_dir(bucket: &str) -> FullPath {
    FullPath::parse(&format!("/.s3/uploads/{bucket}")).expect("checked bucket name")
}

pub fn upload_dir(bucket: &str, upload_id: &str) -> S3Result<FullPath> {
    if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(S3Error::new(S3ErrorCode::NoSuchUpload));
    }
    Ok(uploads_dir(bucket).child(upload_id))
}

pub fn part_name(n: u32) -> String {
    format!("{n:05}")
}

pub fn versions_dir_of_bucket(bucket: &str) -> FullPath {
    FullPath::parse(&format!("/.s3/versions/{bucket}")).expect("checked bucket name")
}

pub fn versions_dir(bucket: &str, key: &str) -> S3Result<FullPath> {
    let p = object_path(bucket, key)?;
    let rest = &p.as_str()[BUCKETS.len()..];
    FullPath::parse(&format!("/.s3/versions{rest}")).map_err(|_| bad_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_paths_and_back() {
        let p = object_path("b", "a b/é&+%.txt").unwrap();
        assert_eq!(p.as_str(), "/buckets/b/a b/é&+%.txt");
        assert_eq!(key_of(&bucket_dir("b"), &p, false), "a b/é&+%.txt");
        let d = object_path("b", "dir/").unwrap();
        assert_eq!(d.as_str(), "/buckets/b/dir");
        assert_eq!(key_of(&bucket_dir("b"), &d, true), "dir/");
        for bad in ["a//b", "./a", "a/../b", "/a", "/", "a/./"] {
            assert!(object_path("b", bad).is_err(), "{bad}");
        }
        assert!(upload_dir("b", "../x").is_err());
        assert_eq!(
            versions_dir("b", "x/y").unwrap().as_str(),
            "/.s3/versions/b/x/y"
        );
    }
}
