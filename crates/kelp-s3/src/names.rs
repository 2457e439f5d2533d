//! Bucket and object key names.
//!
//! Bucket rules (S3 general purpose buckets): 3–63 characters of `a-z`,
//! `0-9`, `.` and `-`; first and last a letter or digit; no `..`; not an
//! IPv4 address; no `xn--` prefix; no `-s3alias` / `--ol-s3` suffix.
//! Keys: non-empty, at most 1024 bytes of UTF-8.

use crate::error::{S3ErrorCode, S3Result, err};

/// The longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a bucket name; `InvalidBucketName` if S3 would refuse it.
pub fn validate_bucket_name(name: &str) -> S3Result<()> {
    if !is_valid_bucket_name(name) {
        return err(
            S3ErrorCode::InvalidBucketName,
            format!("The specified bucket is not valid: {name:?}"),
        )
        .map_err(|e| e.with_resource(format!("/{name}")));
    }
    Ok(())
}

/// Whether `name` follows the S3 bucket naming rules.
pub fn is_valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return false;
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-';
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|&c| ok_char(c)) || !edge(b[0]) || !edge(b[b.len() - 1]) {
        return false;
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return false;
    }
    if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return false;
    }
    !looks_like_ipv4(name)
}

fn looks_like_ipv4(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// Whether a bucket name is safe to address (any existing bucket, also
/// ones made before the strict rules): 1–255 bytes, no `/`, not `.` or
/// `..`, no control characters. Strict rules apply at CreateBucket.
pub fn is_addressable_bucket_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// Checks an object key: non-empty and at most [`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return err(
            S3ErrorCode::InvalidArgument,
            "The object key must not be empty",
        );
    }
    if key.len() > MAX_KEY_LEN {
        return err(S3ErrorCode::KeyTooLongError, "Your key is too long");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        for ok in [
            "abc",
            "my-bucket",
            "my.bucket.1",
            "a1b",
            "0ab",
            &"a".repeat(63),
            "1.2.3.4a",
            "192.168.5",
        ] {
            assert!(is_valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Abc",
            "-abc",
            "abc-",
            ".abc",
            "abc.",
            "a..b",
            "a_b",
            "192.168.5.4",
            "xn--abc",
            "abc-s3alias",
            "abc--ol-s3",
            "a b",
            "ab\u{e9}",
            "a.-b",
            "a-.b",
            "",
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad}");
            assert_eq!(
                validate_bucket_name(bad).unwrap_err().code,
                S3ErrorCode::InvalidBucketName
            );
        }
    }

    #[test]
    fn keys() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(validate_key(&"é".repeat(512)).is_ok());
        assert_eq!(
            validate_key(&"é".repeat(513)).unwrap_err().code,
            S3ErrorCode::KeyTooLongError
        );
        assert_eq!(
            validate_key(&"k".repeat(1025)).unwrap_err().code,
            S3ErrorCode::KeyTooLongError
        );
        assert_eq!(
            validate_key("").unwrap_err().code,
            S3ErrorCode::InvalidArgument
        );
    }
}
