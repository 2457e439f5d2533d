use super::*;

#[test]
fn ranges() {
    let r = |s: &str| ByteRange::parse(s);
    assert_eq!(
        r("bytes=0-9"),
        Some(ByteRange::FromTo {
            start: 0,
            end: Some(9)
        })
    );
    assert_eq!(
        r("bytes=5-"),
        Some(ByteRange::FromTo {
            start: 5,
            end: None
        })
    );
    assert_eq!(r("bytes=-3"), Some(ByteRange::Suffix(3)));
    for ignored in [
        "bytes=9-0",
        "bytes=0-1,3-4",
        "items=0-1",
        "bytes=a-b",
        "bytes=-",
        "bytes=1",
        "bytes=+1-2",
        "bytes=99999999999999999999-",
    ] {
        assert_eq!(r(ignored), None, "{ignored}");
    }
    assert_eq!(r("bytes=0-9").unwrap().resolve(5).unwrap(), (0, 4));
    assert_eq!(r("bytes=2-").unwrap().resolve(5).unwrap(), (2, 4));
    assert_eq!(r("bytes=-2").unwrap().resolve(5).unwrap(), (3, 4));
    assert_eq!(r("bytes=-20").unwrap().resolve(5).unwrap(), (0, 4));
    assert_eq!(
        r("bytes=5-").unwrap().resolve(5).unwrap_err().code,
        S3ErrorCode::InvalidRange
    );
    assert_eq!(
        r("bytes=-0").unwrap().resolve(5).unwrap_err().code,
        S3ErrorCode::InvalidRange
    );
    assert_eq!(
        r("bytes=0-").unwrap().resolve(0).unwrap_err().code,
        S3ErrorCode::InvalidRange
    );
    assert!(ByteRange::parse_copy_range("bytes=0-").is_err());
    assert!(ByteRange::parse_copy_range("bytes=-5").is_err());
    assert!(ByteRange::parse_copy_range("bytes=0-5").is_ok());
}

#[test]
fn conditions() {
    let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let e = ETag::parse("abc");
    let c = |im: Option<&str>, inm: Option<&str>, ims: Option<u64>, ius: Option<u64>| Conditions {
        if_match: im.and_then(ETagCondition::parse),
        if_none_match: inm.and_then(ETagCondition::parse),
        if_modified_since: ims.map(t),
        if_unmodified_since: ius.map(t),
    };
    let lm = UNIX_EPOCH + Duration::from_millis(100_500);
    use S3ErrorCode::*;
    let code = |c: Conditions, read: bool| c.evaluate(&e, lm, read).err().map(|e| e.code);
    assert_eq!(code(c(None, None, None, None), true), None);
    assert_eq!(code(c(Some("\"abc\""), None, None, None), true), None);
    assert_eq!(code(c(Some("*"), None, None, None), true), None);
    assert_eq!(
        code(c(Some("x"), None, None, None), true),
        Some(PreconditionFailed)
    );
    assert_eq!(
        code(c(None, Some("abc"), None, None), true),
        Some(NotModified)
    );
    assert_eq!(
        code(c(None, Some("abc"), None, None), false),
        Some(PreconditionFailed)
    );
    assert_eq!(code(c(None, Some("x"), None, None), true), None);
    // Second precision: modified at 100.5 s is not after 100 s.
    assert_eq!(
        code(c(None, None, Some(100), None), true),
        Some(NotModified)
    );
    assert_eq!(code(c(None, None, Some(99), None), true), None);
    assert_eq!(code(c(None, None, None, Some(100)), true), None);
    assert_eq!(
        code(c(None, None, None, Some(99)), true),
        Some(PreconditionFailed)
    );
    // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
    assert_eq!(code(c(Some("abc"), None, None, Some(99)), true), None);
    assert_eq!(code(c(None, Some("x"), Some(100), None), true), None);
    assert_eq!(
        c(None, Some("abc"), None, None)
            .evaluate_copy_source(&e, lm)
            .unwrap_err()
            .code,
        PreconditionFailed
    );
}
