//! The filer's HTTP API as clients use it, against real `kelp` processes:
//! uploads (multipart and raw), reads with ranges and conditions, listings
//! with pages, metadata, mkdir, moves, deletes, quotas, the change-log
//! stream, a PostgreSQL-backed filer, and memory bounded while a large
//! file streams through.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::blocking::multipart;
use serde_json::Value;

fn server_with_filer(dir: &std::path::Path, extra: &[&str]) -> (Kelp, String) {
    let mut args = vec!["-filer", "-filer.port=0"];
    args.extend_from_slice(extra);
    let k = kelp_server(dir, &args);
    let url = format!("http://127.0.0.1:{}", k.port("filer_port"));
    (k, url)
}

fn json(r: reqwest::blocking::Response) -> Value {
    r.json().unwrap()
}

#[test]
fn files_directories_ranges_conditions_and_listings() {
    let tmp = tempfile::tempdir().unwrap();
    let (_k, f) = server_with_filer(&tmp.path().join("data"), &[]);
    let c = http();

    // Multipart to a directory takes the part's name; a raw PUT names itself.
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(b"hello\n".to_vec())
            .file_name("h.txt")
            .mime_str("text/plain")
            .unwrap(),
    );
    let r = c.post(format!("{f}/docs/")).multipart(form).send().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(json(r)["name"], "h.txt");
    let body = blob(1, 300_000);
    let r = c
        .put(format!("{f}/docs/a%20b+%26.bin"))
        .header("Content-Type", "application/x-kelp")
        .header("Seaweed-Color", "blue")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = c.get(format!("{f}/docs/a%20b+%26.bin")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-kelp");
    assert_eq!(r.headers()["seaweed-color"], "blue");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let modified = r.headers()["last-modified"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", hex_md5(&body)));
    assert_eq!(r.bytes().unwrap(), body);
    assert_eq!(
        c.get(format!("{f}/docs/h.txt"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "hello\n"
    );

    // Ranges.
    let r = c
        .get(format!("{f}/docs/a%20b+%26.bin"))
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/300000");
    assert_eq!(r.bytes().unwrap(), &body[100..200]);
    let r = c
        .get(format!("{f}/docs/a%20b+%26.bin"))
        .header("Range", "bytes=-10")
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap(), &body[body.len() - 10..]);
    let r = c
        .get(format!("{f}/docs/a%20b+%26.bin"))
        .header("Range", "bytes=300000-")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */300000");

    // Conditions.
    let get = |h: &str, v: &str| {
        c.get(format!("{f}/docs/a%20b+%26.bin"))
            .header(h, v)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get("If-None-Match", &etag), StatusCode::NOT_MODIFIED);
    assert_eq!(get("If-None-Match", "\"other\""), StatusCode::OK);
    assert_eq!(
        get("If-Match", "\"other\""),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(get("If-Match", &etag), StatusCode::OK);
    assert_eq!(
        get("If-Modified-Since", &modified),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"),
        StatusCode::PRECONDITION_FAILED
    );
    let r = c.head(format!("{f}/docs/a%20b+%26.bin")).send().unwrap();
    assert_eq!(r.headers()["content-length"], "300000");

    // Metadata and listings (pages of 2 over 5 names, in byte order).
    let m = json(
        c.get(format!("{f}/docs/a%20b+%26.bin?metadata=true"))
            .send()
            .unwrap(),
    );
    assert_eq!(m["FileSize"], 300_000);
    assert_eq!(m["FullPath"], "/docs/a b+&.bin");
    assert_eq!(m["Extended"]["Seaweed-Color"], "Ymx1ZQ==");
    for n in ["c", "d", "e"] {
        c.put(format!("{f}/docs/{n}")).body(n).send().unwrap();
    }
    let mut names = Vec::new();
    let mut last = String::new();
    loop {
        let v = json(
            c.get(format!("{f}/docs/?limit=2&lastFileName={last}"))
                .header("Accept", "application/json")
                .send()
                .unwrap(),
        );
        for e in v["Entries"].as_array().into_iter().flatten() {
            names.push(e["FullPath"].as_str().unwrap().to_string());
        }
        if !v["ShouldDisplayLoadMore"].as_bool().unwrap() {
            break;
        }
        last = v["LastFileName"].as_str().unwrap().to_string();
    }
    assert_eq!(
        names,
        [
            "/docs/a b+&.bin",
            "/docs/c",
            "/docs/d",
            "/docs/e",
            "/docs/h.txt"
        ]
    );

    // mkdir, move, delete.
    assert_eq!(
        c.post(format!("{f}/empty/")).send().unwrap().status(),
        StatusCode::CREATED
    );
    let v = json(
        c.get(format!("{f}/empty/"))
            .header("Accept", "application/json")
            .send()
            .unwrap(),
    );
    assert_eq!(v["EmptyFolder"], true);
    let r = c
        .post(format!("{f}/moved/h2.txt?mv.from=/docs/h.txt"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(format!("{f}/docs/h.txt")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(format!("{f}/moved/h2.txt"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "hello\n"
    );
    let r = c.delete(format!("{f}/docs")).send().unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(json(r)["error"].as_str().unwrap().contains("not empty"));
    assert_eq!(
        c.delete(format!("{f}/docs?recursive=true"))
            .send()
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(format!("{f}/docs/c")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Bad input gets a clear error.
    let r = c.get(format!("{f}/a/%FF")).send().unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .put(format!("{f}/moved/h2.txt/x"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(
        json(r)["error"]
            .as_str()
            .unwrap()
            .contains("not a directory")
    );
    let r = c.get(format!("{f}/moved/?limit=x")).send().unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

fn hex_md5(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn quotas_and_the_change_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let (_k, f) = server_with_filer(&tmp.path().join("data"), &[]);
    let c = http();
    let r = c
        .post(format!("{f}/q?quota.bytes=100&quota.entries=10"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        c.put(format!("{f}/q/a"))
            .body(vec![1u8; 60])
            .send()
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let r = c
        .put(format!("{f}/q/b"))
        .body(vec![1u8; 41])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(
        json(r)["error"]
            .as_str()
            .unwrap()
            .contains("quota of 100 bytes")
    );
    assert_eq!(
        c.get(format!("{f}/q/b")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // A follower sees a write made after it subscribed.
    let stream = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{f}/__kelp/events?prefix=/ev&follow=true"))
        .send()
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    c.put(format!("{f}/ev/x")).body("1").send().unwrap();
    c.put(format!("{f}/other/y")).body("1").send().unwrap();
    c.delete(format!("{f}/ev/x")).send().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let path = |s: &str| v[s]["FullPath"].as_str().map(str::to_string);
        seen.push((path("old"), path("new")));
    }
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        seen,
        [(None, s("/ev")), (None, s("/ev/x")), (s("/ev/x"), None)]
    );
    // A late subscriber starts from a sequence number.
    let all = c
        .get(format!("{f}/__kelp/events?prefix=/ev"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let first: Value = serde_json::from_str(all.lines().next().unwrap()).unwrap();
    let after = first["seq"].as_u64().unwrap();
    let rest = c
        .get(format!("{f}/__kelp/events?prefix=/ev&after={after}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(rest.lines().count(), 2);
}

#[test]
fn a_filer_on_postgresql_keeps_its_namespace_across_restarts() {
    let Some(pg) = kelp_testkit::Postgres::start_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let k = kelp_server(&tmp.path().join("data"), &[]);
    let master = format!("127.0.0.1:{}", k.port("master_port"));
    let url = pg.url();
    let fdir = tmp.path().join("filer");
    let fdir_arg = format!("-dir={}", fdir.display());
    let args = [
        "filer",
        "-master",
        master.as_str(),
        "-port=0",
        fdir_arg.as_str(),
        "-store=postgres",
        "-postgres.url",
        url.as_str(),
    ];
    let logs = tmp.path().join("logs");
    let data = blob(3, 5 << 20);
    {
        let filer = Kelp::start(&args, &logs);
        let f = format!("http://127.0.0.1:{}", filer.port("filer_port"));
        let r = http()
            .put(format!("{f}/pg/big"))
            .body(data.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let st = json(http().get(format!("{f}/__kelp/status")).send().unwrap());
        assert!(
            st["store"].as_str().unwrap().starts_with("postgres"),
            "{st}"
        );
    }
    let filer = Kelp::start(&args, &logs);
    let f = format!("http://127.0.0.1:{}", filer.port("filer_port"));
    let got = http()
        .get(format!("{f}/pg/big"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(got == data, "the file read back differs");
    // A wrong URL is a clear error at start, not a hang.
    let bad = [
        "filer",
        "-master",
        master.as_str(),
        "-port=0",
        fdir_arg.as_str(),
        "-store=postgres",
        "-postgres.url",
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=2",
    ];
    let err = Kelp::try_start_in(&bad, &logs, None)
        .err()
        .expect("a filer without its database must not start");
    assert!(err.contains("postgres") || err.contains("connect"), "{err}");
}

/// A large upload streams through the filer: its memory stays at a few
/// chunks, not the file's size.
#[test]
fn a_large_upload_streams_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let k = kelp_server(&tmp.path().join("data"), &["-volume.fileSizeLimitMB=64"]);
    let master = format!("127.0.0.1:{}", k.port("master_port"));
    let fdir = format!("-dir={}", tmp.path().join("filer").display());
    let filer = Kelp::start(
        &[
            "filer",
            "-master",
            master.as_str(),
            "-port=0",
            fdir.as_str(),
            "-maxMB=4",
        ],
        &tmp.path().join("logs"),
    );
    let f = format!("http://127.0.0.1:{}", filer.port("filer_port"));
    const TOTAL: u64 = 256 << 20;
    // A reader that makes the bytes as they are sent.
    struct Gen(u64);
    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (TOTAL - self.0).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((self.0 + i as u64) % 251) as u8;
            }
            self.0 += n as u64;
            Ok(n)
        }
    }
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let r = c
        .put(format!("{f}/big/file"))
        .body(reqwest::blocking::Body::sized(Gen(0), TOTAL))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let peak = peak_rss_mib(filer.child.id());
    eprintln!("filer peak RSS after a 256 MiB upload: {peak} MiB");
    assert!(peak < 150, "the filer held {peak} MiB for a 256 MiB upload");
    let m = json(c.get(format!("{f}/big/file?metadata=true")).send().unwrap());
    assert_eq!(m["FileSize"], TOTAL);
    assert_eq!(m["chunks"].as_array().unwrap().len(), 64);
    let mut r = c
        .get(format!("{f}/big/file"))
        .header("Range", "bytes=100000000-100000999")
        .send()
        .unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    let want: Vec<u8> = (100_000_000u64..100_001_000)
        .map(|i| (i % 251) as u8)
        .collect();
    assert_eq!(got, want);
}

fn peak_rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}
