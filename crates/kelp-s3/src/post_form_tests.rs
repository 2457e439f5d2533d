use super::*;
use crate::policy::tests::{creds, signed_fields};
use futures::StreamExt;

const BOUNDARY: &str = "----kelpboundary";

fn form(
    fields: &[(String, String)],
    filename: &str,
    file: &[u8],
    after: &[(&str, &str)],
) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
    );
    b.extend_from_slice(file);
    b.extend_from_slice(b"\r\n");
    for (n, v) in after {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn now() -> SystemTime {
    crate::time::parse_iso8601("2029-12-31T00:10:00Z").unwrap()
}

/// Reads the form and the whole file, in 5-byte pieces.
fn run(body: Vec<u8>) -> S3Result<(PostUpload, Vec<u8>)> {
    let pieces: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(5)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::executor::block_on(async {
        let mut up = read_post_form(
            futures::stream::iter(pieces),
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            "b",
            now(),
            &creds,
        )
        .await?;
        let mut data = Vec::new();
        while let Some(c) = up.file.next().await {
            data.extend_from_slice(&c?);
        }
        Ok((up, data))
    })
}

#[test]
fn signed_upload() {
    let (up, data) = run(form(
        &signed_fields("user/${filename}"),
        "C:\\fakepath\\pic.png",
        b"PNGDATA",
        &[("ignored", "x")],
    ))
    .unwrap();
    assert_eq!(data, b"PNGDATA");
    assert_eq!(up.key, "user/pic.png");
    assert_eq!(
        up.identity,
        Identity::User {
            access_key: "AKIAIOSFODNN7EXAMPLE".into()
        }
    );
    assert_eq!(up.content_type.as_deref(), Some("image/png"));
    assert_eq!(up.user_metadata, vec![("tag".to_owned(), "t".to_owned())]);
    assert_eq!(up.success, SuccessAction::Status(201));
}

#[test]
fn length_range_is_enforced_while_streaming() {
    let e = run(form(&signed_fields("user/a"), "a", &[7u8; 101], &[]))
        .err()
        .unwrap();
    assert_eq!(e.code, S3ErrorCode::EntityTooLarge);
    let e = run(form(&signed_fields("user/a"), "a", b"", &[]))
        .err()
        .unwrap();
    assert_eq!(e.code, S3ErrorCode::EntityTooSmall);
    assert!(run(form(&signed_fields("user/a"), "a", &[7u8; 100], &[])).is_ok());
}

#[test]
fn refusals() {
    let code = |b: Vec<u8>| run(b).err().unwrap().code;
    assert_eq!(
        code(form(&signed_fields("elsewhere/a"), "a", b"x", &[])),
        S3ErrorCode::AccessDenied
    );
    let mut no_key = signed_fields("k");
    no_key.remove(0);
    assert_eq!(
        code(form(&no_key, "a", b"x", &[])),
        S3ErrorCode::InvalidArgument
    );
    // No file part.
    let mut b = Vec::new();
    b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--{BOUNDARY}--\r\n").as_bytes());
    assert_eq!(code(b), S3ErrorCode::InvalidArgument);
    // Garbage.
    assert_eq!(code(b"not a form".to_vec()), S3ErrorCode::InvalidRequest);
    // A huge field.
    let big = vec![("key".to_owned(), "k".repeat(MAX_FIELD + 1))];
    assert_eq!(
        code(form(&big, "a", b"x", &[])),
        S3ErrorCode::InvalidRequest
    );
    // Anonymous, no policy: allowed here (the bucket's ACL decides), redirect kept.
    let anon = vec![
        ("key".to_owned(), "k".to_owned()),
        (
            "success_action_redirect".to_owned(),
            "https://x/done".to_owned(),
        ),
    ];
    let (up, _) = run(form(&anon, "a", b"x", &[])).unwrap();
    assert_eq!(up.identity, Identity::Anonymous);
    assert_eq!(up.success, SuccessAction::Redirect("https://x/done".into()));
    assert_eq!(
        SuccessAction::redirect_location("https://x/done", "b", "a b", "\"e\""),
        "https://x/done?bucket=b&key=a%20b&etag=%22e%22"
    );
}
