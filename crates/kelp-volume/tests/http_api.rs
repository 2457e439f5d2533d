//! The volume HTTP API over real sockets, with reqwest.

mod common;

use std::io::Write;

use common::{Server, client};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

const FID: &str = "1,01637037d6";

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn upload_read_range_conditional_delete() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |_| {}).await;
    srv.allocate(1, "").await;
    let c = client();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();

    // Multipart upload, with a pair header.
    let form = Form::new().part(
        "file",
        Part::bytes(data.clone())
            .file_name("hello.txt")
            .mime_str("text/plain")
            .unwrap(),
    );
    let resp = c
        .post(srv.url(&format!("/{FID}?ts=1700000000")))
        .header("Seaweed-My-Key", "v1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let etag = header(resp.headers(), "etag").to_string();
    let body = json(resp).await;
    assert_eq!(body["name"], "hello.txt");
    assert_eq!(body["size"], 1000);
    assert_eq!(body["mime"], "text/plain");
    let crc = format!("{:08x}", crc32c::crc32c(&data));
    assert_eq!(body["eTag"], crc.as_str());
    assert_eq!(etag, format!("\"{crc}\""));

    // Read back byte-identical with all headers.
    let resp = c.get(srv.url(&format!("/{FID}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(header(&h, "etag"), etag);
    assert_eq!(header(&h, "content-type"), "text/plain");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert_eq!(header(&h, "last-modified"), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(
        header(&h, "content-disposition"),
        "inline; filename=\"hello.txt\""
    );
    assert_eq!(header(&h, "my-key"), "v1");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    // Other path forms address the same needle.
    for path in [
        "/1/01637037d6",
        "/1,01637037d6.txt",
        "/1/01637037d6/other.bin",
    ] {
        let resp = c.get(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.bytes().await.unwrap().len(), 1000);
    }
    let resp = c
        .get(srv.url("/1/01637037d6/other.bin?dl=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(resp.headers(), "content-disposition"),
        "attachment; filename=\"other.bin\""
    );

    // HEAD: same headers, no body.
    let resp = c.head(srv.url(&format!("/{FID}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), "content-length"), "1000");
    assert_eq!(header(resp.headers(), "etag"), etag);
    assert!(resp.bytes().await.unwrap().is_empty());

    // Identical re-upload: 204.
    let form = Form::new().part(
        "file",
        Part::bytes(data.clone())
            .file_name("hello.txt")
            .mime_str("text/plain")
            .unwrap(),
    );
    let resp = c
        .post(srv.url(&format!("/{FID}")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // Ranges.
    let get_range = |r: &'static str| {
        c.get(srv.url(&format!("/{FID}")))
            .header(header::RANGE, r)
            .send()
    };
    let resp = get_range("bytes=10-19").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(resp.headers(), "content-range"), "bytes 10-19/1000");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[10..20]);
    let resp = get_range("bytes=-5").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[995..]);
    let resp = get_range("bytes=0-1,100-102").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let ct = header(resp.headers(), "content-type").to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap()
        .to_string();
    let body = resp.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Content-Range: bytes 0-1/1000"));
    assert!(text.contains("Content-Range: bytes 100-102/1000"));
    assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    let needle = [&b"\r\n\r\n"[..], &data[100..103]].concat();
    assert!(body.windows(needle.len()).any(|w| w == needle.as_slice()));
    for bad in ["bytes=2000-3000", "bytes=abc", "bytes=5-1"] {
        let resp = get_range(bad).await.unwrap();
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        assert_eq!(header(resp.headers(), "content-range"), "bytes */1000");
    }

    // Conditional requests.
    let resp = c
        .get(srv.url(&format!("/{FID}")))
        .header(header::IF_NONE_MATCH, etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let resp = c
        .get(srv.url(&format!("/{FID}")))
        .header(header::IF_MODIFIED_SINCE, "Tue, 14 Nov 2023 22:13:20 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let resp = c
        .get(srv.url(&format!("/{FID}")))
        .header(header::IF_MODIFIED_SINCE, "Tue, 14 Nov 2023 22:13:19 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Cookie mismatch on GET is a plain 404; on DELETE 400.
    let resp = c.get(srv.url("/1,01637037d7")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = c.delete(srv.url("/1,01637037d7")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(resp).await["error"],
        "File Random Cookie does not match."
    );
    // A write with another cookie is refused.
    let resp = c
        .put(srv.url("/1,01637037d7"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        json(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("mismatching cookie")
    );

    // DELETE: 202 with the Size field, then 404.
    let resp = c.delete(srv.url(&format!("/{FID}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(json(resp).await["size"].as_u64().unwrap() > 1000);
    let resp = c.delete(srv.url(&format!("/{FID}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(resp).await["size"], 0);
    let resp = c.get(srv.url(&format!("/{FID}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    srv.stop().await;
}

#[tokio::test]
async fn raw_upload_gzip_and_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |_| {}).await;
    srv.allocate(2, "pics").await;
    let c = client();

    // Raw PUT: name from Content-Disposition, mime from Content-Type.
    let resp = c
        .put(srv.url("/2,0a00000001"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"d.json\"",
        )
        .header("Content-MD5", "XUFAKrxLKna5cZ2REBfFkg==")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = json(resp).await;
    assert_eq!(body["name"], "d.json");
    assert_eq!(body["mime"], "application/json");
    let resp = c.get(srv.url("/2,0a00000001")).send().await.unwrap();
    assert_eq!(header(resp.headers(), "content-type"), "application/json");
    assert_eq!(resp.text().await.unwrap(), "hello");

    // Raw body without a name: the last path segment; mime from extension.
    let resp = c
        .post(srv.url("/2/0b00000001/pic.png"))
        .body(vec![1u8, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(json(resp).await["name"], "pic.png");
    let resp = c.get(srv.url("/2,0b00000001")).send().await.unwrap();
    assert_eq!(header(resp.headers(), "content-type"), "image/png");

    // Wrong Content-MD5: 400, nothing stored.
    let resp = c
        .put(srv.url("/2,0c00000001"))
        .header("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = c.get(srv.url("/2,0c00000001")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // A gzip part is stored compressed, served as-is to gzip clients and
    // inflated for the others.
    let plain = b"compressible ".repeat(200);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&plain).unwrap();
    let gz = enc.finish().unwrap();
    let mut part_headers = HeaderMap::new();
    part_headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let form = Form::new().part(
        "file",
        Part::bytes(gz.clone())
            .file_name("t.txt")
            .headers(part_headers),
    );
    let resp = c
        .post(srv.url("/2,0d00000001"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(json(resp).await["size"], plain.len());
    let resp = c
        .get(srv.url("/2,0d00000001"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(resp.headers(), "content-encoding"), "gzip");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), gz.as_slice());
    let resp = c.get(srv.url("/2,0d00000001")).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), plain.as_slice());

    // Empty upload: stored, read back empty.
    let resp = c
        .put(srv.url("/2,0e00000001"))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = c.get(srv.url("/2,0e00000001")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());

    // A TTL counts from the write (AppendAtNs), not from `ts`.
    let resp = c
        .put(srv.url("/2,0f00000001?ttl=1m&ts=1000"))
        .body("old")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = c.get(srv.url("/2,0f00000001")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "appendAtNs is now, so not expired yet"
    );

    srv.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |c| {
        c.file_size_limit = 64 * 1024;
    })
    .await;
    srv.allocate(3, "").await;
    let c = client();

    for bad in [
        "/3,zz",
        "/3",
        "/x,01637037d6",
        "/3/01637037d6/a/b",
        "/3,0102030405060708090a0b0c0d",
    ] {
        let resp = c.get(srv.url(bad)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            json(resp).await["error"]
                .as_str()
                .unwrap()
                .contains("file id")
        );
    }
    let resp = c.get(srv.url("/99,01637037d6")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = c
        .put(srv.url("/99,01637037d6"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Truncated multipart body.
    let body = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nabcdef";
    let resp = c
        .post(srv.url("/3,01637037d6"))
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=B")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("multipart")
    );

    // Over the limit: 413 with a JSON error, raw and multipart.
    let big = vec![7u8; 64 * 1024 + 1];
    let resp = c
        .put(srv.url("/3,01637037d6"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("file over the limited")
    );
    let form = Form::new().part("file", Part::bytes(big.clone()).file_name("big"));
    let resp = c
        .post(srv.url("/3,01637037d6"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Streamed (no Content-Length): refused while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![1u8; 16 * 1024])).collect();
    let resp = c
        .put(srv.url("/3,01637037d6"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Unsupported method.
    let resp = c.patch(srv.url("/3,01637037d6")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Still serving.
    let resp = c
        .put(srv.url("/3,01637037d6"))
        .body(vec![1u8; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = c.get(srv.url("/3,01637037d6")).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), 64 * 1024);

    // Status, health and metrics.
    let resp = c.get(srv.url("/status")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let st = json(resp).await;
    assert!(st["Version"].as_str().unwrap().starts_with("kelp"));
    assert_eq!(st["Volumes"][0]["Id"], 3);
    assert_eq!(st["Volumes"][0]["FileCount"], 1);
    assert!(st["DiskStatuses"][0]["all"].as_u64().unwrap() > 0);
    let resp = c.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c.get(srv.url("/metrics")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("kelp_volume_http_requests_total"), "{text}");
    assert!(text.contains("kelp_volume_http_request_duration_seconds"));

    srv.stop().await;
}

#[tokio::test]
async fn corruption_is_an_error_and_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let srv = Server::start(path.clone(), |_| {}).await;
    srv.allocate(4, "col").await;
    let c = client();
    let a = vec![0xabu8; 4096];
    let b = b"second needle".to_vec();
    for (fid, data) in [("4,0100000001", &a), ("4,0200000002", &b)] {
        let resp = c
            .put(srv.url(&format!("/{fid}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    srv.stop().await;

    // Restart on the same dir: everything is still there.
    let srv = Server::start(path.clone(), |_| {}).await;
    let resp = c.get(srv.url("/4,0100000001")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), a.as_slice());
    let resp = c.get(srv.url("/4,0200000002")).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b.as_slice());

    // Flip one data bit of the first needle (superblock 8 + header 16 +
    // DataSize 4 puts its data at offset 28).
    let dat = path.join("col_4.dat");
    let mut bytes = std::fs::read(&dat).unwrap();
    bytes[28 + 100] ^= 0x01;
    std::fs::write(&dat, &bytes).unwrap();
    let resp = c.get(srv.url("/4,0100000001")).send().await.unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
    let err = json(resp).await["error"].as_str().unwrap().to_string();
    assert!(err.contains("corrupt") || err.contains("CRC"), "{err}");
    // The other needle is unaffected.
    let resp = c.get(srv.url("/4,0200000002")).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b.as_slice());
    srv.stop().await;
}

/// Concurrent uploads to one volume share fdatasyncs (group commit) and
/// every acknowledged write reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |_| {}).await;
    srv.allocate(5, "").await;
    let c = client();
    const N: u64 = 64;
    let uploads = (1..=N).map(|i| {
        let c = c.clone();
        let url = srv.url(&format!("/5,{i:02x}0000abcd"));
        async move {
            let resp = c
                .put(url)
                .body(format!("payload {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
    });
    futures::future::join_all(uploads).await;
    for i in 1..=N {
        let resp = c
            .get(srv.url(&format!("/5,{i:02x}0000abcd")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), format!("payload {i}"));
    }
    // The sampler publishes group-commit counters once a second; poll.
    let mut fsyncs = None;
    for _ in 0..100 {
        let text = c
            .get(srv.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let ops = metric(&text, "kelp_volume_group_commit_ops_total");
        if ops.is_some_and(|o| o >= N as f64) {
            fsyncs = metric(&text, "kelp_volume_fsyncs_total");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let fsyncs = fsyncs.expect("group-commit metrics");
    eprintln!("{N} concurrent uploads, {fsyncs} fsyncs");
    assert!(fsyncs >= 1.0 && fsyncs < N as f64, "{fsyncs}");
    srv.stop().await;
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A needle over the streaming threshold is sent piece by piece: the
/// body, headers, HEAD, conditional and range answers are what a whole
/// read gives; a flipped data bit cuts the answer short of its
/// Content-Length instead of completing it with corrupt bytes.
#[tokio::test]
async fn large_needles_are_streamed_with_their_crc_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let srv = Server::start(path.clone(), |_| {}).await;
    srv.allocate(6, "big").await;
    let c = client();
    let data: Vec<u8> = (0..3_000_017u32).map(|i| (i % 253) as u8).collect();
    let fid = "6,0100000abc";
    let form = Form::new().part(
        "file",
        Part::bytes(data.clone())
            .file_name("movie.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let resp = c
        .post(srv.url(&format!("/{fid}")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let resp = c.get(srv.url(&format!("/{fid}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["content-type"], "video/mp4");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains("movie.mp4")
    );
    let etag = h["etag"].to_str().unwrap().to_string();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    let resp = c.head(srv.url(&format!("/{fid}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(resp.headers()["etag"], etag.as_str());

    let resp = c
        .get(srv.url(&format!("/{fid}")))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);

    let resp = c
        .get(srv.url(&format!("/{fid}")))
        .header("Range", "bytes=1000000-1000009")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        &data[1_000_000..1_000_010]
    );

    // A wrong cookie is still "not found".
    let resp = c.get(srv.url("/6,0100000abd")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Flip one data bit near the end of the data (superblock 8, header 16,
    // DataSize 4 put the data at offset 28).
    let dat = path.join("big_6.dat");
    let mut bytes = std::fs::read(&dat).unwrap();
    bytes[28 + 2_900_000] ^= 0x01;
    std::fs::write(&dat, &bytes).unwrap();
    let resp = c.get(srv.url(&format!("/{fid}"))).send().await.unwrap();
    // The headers went out before the data was read; the body never
    // completes.
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await;
    assert!(body.is_err(), "a corrupt needle was sent whole");
    srv.stop().await;
}

/// With `-concurrentUploadLimitMB` smaller than the uploads, uploads wait
/// for room instead of all holding their bodies at once: an upload whose
/// body is still arriving keeps the next one waiting, and once it is done
/// every upload is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_wait_for_the_upload_budget() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |cfg| {
        cfg.concurrent_upload_limit = 1 << 20;
    })
    .await;
    srv.allocate(7, "").await;
    let c = client();

    // A raw upload of 2 MiB whose body is sent in two halves: it reserves
    // the whole budget before its body is read.
    let big: Vec<u8> = (0..2u32 << 20).map(|i| (i % 249) as u8).collect();
    let addr = srv.http.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "PUT /7,0100000001 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    slow.write_all(&big[..1 << 20]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let small = {
        let c = c.clone();
        let url = srv.url("/7,0200000002");
        tokio::spawn(async move { c.put(url).body("small").send().await.unwrap().status() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!small.is_finished(), "an upload ran past a full budget");
    slow.write_all(&big[1 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = tokio::io::AsyncReadExt::read(&mut slow, &mut buf)
            .await
            .unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(small.await.unwrap(), StatusCode::CREATED);

    // Many uploads larger than the budget, at once: each waits its turn.
    let uploads = (3..9u64).map(|i| {
        let c = c.clone();
        let url = srv.url(&format!("/7,{i:02x}00000003"));
        let data = vec![i as u8; (3 << 20) / 2];
        async move {
            let form = Form::new().part("file", Part::bytes(data).file_name("b.bin"));
            c.post(url).multipart(form).send().await.unwrap().status()
        }
    });
    for status in futures::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    for i in 3..9u64 {
        let got = c
            .get(srv.url(&format!("/7,{i:02x}00000003")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), vec![i as u8; (3 << 20) / 2].as_slice());
    }
    let got = c
        .get(srv.url("/7,0100000001"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), big.as_slice());
    srv.stop().await;
}
