use super::*;
use crate::sigv4::SecretKey;
use crate::time::parse_iso8601;

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

pub(crate) fn creds(ak: &str) -> Option<SecretKey> {
    (ak == AK).then(|| SecretKey(SK.into()))
}

pub(crate) const POLICY: &str = r#"{"expiration": "2030-01-01T12:00:00.000Z",
  "conditions": [{"bucket": "b"}, ["starts-with", "$key", "user/"], {"success_action_status": "201"},
    ["starts-with", "$Content-Type", "image/"], ["content-length-range", 1, 100], ["eq", "$x-amz-meta-tag", "t"],
    {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, {"x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20291231/us-east-1/s3/aws4_request"},
    {"x-amz-date": "20291231T000000Z"}]}"#;

/// The signed form fields for `POLICY` (what a browser would send).
pub(crate) fn signed_fields(key: &str) -> Vec<(String, String)> {
    let b64 = B64.encode(POLICY);
    let sig = SigningContext::new(SK, "20291231T000000Z", "us-east-1", "").sign(&b64);
    [
        ("key", key),
        ("success_action_status", "201"),
        ("content-type", "image/png"),
        ("x-amz-meta-tag", "t"),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        (
            "x-amz-credential",
            "AKIAIOSFODNN7EXAMPLE/20291231/us-east-1/s3/aws4_request",
        ),
        ("x-amz-date", "20291231T000000Z"),
        ("policy", &b64),
        ("x-amz-signature", &sig),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

fn with_bucket(mut f: Vec<(String, String)>) -> Vec<(String, String)> {
    f.push(("bucket".into(), "b".into()));
    f
}

fn now() -> SystemTime {
    parse_iso8601("2029-12-31T00:10:00Z").unwrap()
}

#[test]
fn parses_conditions() {
    let p = PostPolicy::parse_json(POLICY.as_bytes()).unwrap();
    assert_eq!(p.conditions[0], Condition::Eq("bucket".into(), "b".into()));
    assert_eq!(
        p.conditions[1],
        Condition::StartsWith("key".into(), "user/".into())
    );
    assert_eq!(p.conditions[4], Condition::ContentLengthRange(1, 100));
    for bad in [
        "{}",
        "[]",
        r#"{"expiration": "soon", "conditions": []}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z"}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [["eq", "key", "x"]]}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [["content-length-range", 5, 1]]}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [["in", "$key", "x"]]}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [{"a": "1", "b": "2"}]}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [{"a": 1}]}"#,
        r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [7]}"#,
    ] {
        assert_eq!(
            PostPolicy::parse_json(bad.as_bytes()).unwrap_err().code,
            S3ErrorCode::InvalidArgument,
            "{bad}"
        );
    }
    assert!(PostPolicy::parse_base64("!!!").is_err());
}

#[test]
fn checks_fields() {
    let p = PostPolicy::parse_json(POLICY.as_bytes()).unwrap();
    let f = with_bucket(signed_fields("user/a.png"));
    assert_eq!(p.check(&f, now()).unwrap(), Some((1, 100)));
    let code = |f: Vec<(String, String)>| p.check(&f, now()).unwrap_err().code;
    assert_eq!(
        code(with_bucket(signed_fields("other/a.png"))),
        S3ErrorCode::AccessDenied
    );
    let mut extra = f.clone();
    extra.push(("x-amz-meta-other".into(), "1".into()));
    assert_eq!(code(extra), S3ErrorCode::AccessDenied);
    let mut ignored = f.clone();
    ignored.push(("x-ignore-me".into(), "1".into()));
    assert!(p.check(&ignored, now()).is_ok());
    let mut wrong_bucket = signed_fields("user/a");
    wrong_bucket.push(("bucket".into(), "c".into()));
    assert_eq!(code(wrong_bucket), S3ErrorCode::AccessDenied);
    let e = p
        .check(&f, parse_iso8601("2030-01-01T12:00:01Z").unwrap())
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            S3ErrorCode::AccessDenied,
            "Invalid according to Policy: Policy expired."
        )
    );
}

#[test]
fn signature() {
    let f = signed_fields("user/a.png");
    let (id, p) = verify_post_signature(&f, &creds).unwrap();
    assert_eq!(
        id,
        Identity::User {
            access_key: AK.into()
        }
    );
    assert!(p.is_some());
    let mut bad = f.clone();
    bad.last_mut().unwrap().1 = "0".repeat(64);
    assert_eq!(
        verify_post_signature(&bad, &creds).unwrap_err().code,
        S3ErrorCode::SignatureDoesNotMatch
    );
    let other = |ak: &str| (ak == AK).then(|| SecretKey("wrong".into()));
    assert_eq!(
        verify_post_signature(&f, &other).unwrap_err().code,
        S3ErrorCode::SignatureDoesNotMatch
    );
    let mut unknown = f.clone();
    unknown[5].1 = "NOPE/20291231/us-east-1/s3/aws4_request".into();
    assert_eq!(
        verify_post_signature(&unknown, &creds).unwrap_err().code,
        S3ErrorCode::InvalidAccessKeyId
    );
    let mut bad_date = f.clone();
    bad_date[6].1 = "20300101T000000Z".into();
    assert_eq!(
        verify_post_signature(&bad_date, &creds).unwrap_err().code,
        S3ErrorCode::InvalidArgument
    );
    let anon: Vec<(String, String)> = vec![("key".into(), "k".into())];
    assert_eq!(
        verify_post_signature(&anon, &creds).unwrap().0,
        Identity::Anonymous
    );
    let v2: Vec<(String, String)> = vec![("awsaccesskeyid".into(), "k".into())];
    assert_eq!(
        verify_post_signature(&v2, &creds).unwrap_err().code,
        S3ErrorCode::NotImplemented
    );
}
