//! `kelp s3 -filer=HOST:PORT`: an S3 gateway in its own process over the
//! namespace of a running filer (`kelp server -filer`). Objects written
//! through S3 (small, multi-chunk, multipart) read back identical through
//! S3 and through the filer's HTTP API; a delete is seen by the filer.
//! After kill -9 of the gateway mid-upload, acknowledged objects read
//! back, and the restarted gateway reaps its lease, so the filer's
//! collector deletes the chunks of the cut uploads. Driven by boto3 (the
//! signing client of the other S3 tests); skipped without it, except
//! under `CI`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const IDS: &str = r#"{"identities": [
  {"name": "alice", "credentials": [{"accessKey": "AKALICE", "secretKey": "alice-secret"}],
   "actions": ["Admin"]}
]}"#;

const PRELUDE: &str = r#"
import os, random, sys, urllib.error, urllib.request
import boto3
from botocore.config import Config

EP, FILER = os.environ["EP"], os.environ["FILER"]
s3 = boto3.client("s3", endpoint_url=EP, aws_access_key_id="AKALICE",
    aws_secret_access_key="alice-secret", region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
        retries={"max_attempts": 1}))

def content(seed, n):
    return random.Random(seed).randbytes(n)

def eq(got, want, what):
    if got != want:
        g = got if not isinstance(got, bytes) else f"{len(got)} bytes"
        w = want if not isinstance(want, bytes) else f"{len(want)} bytes"
        raise AssertionError(f"{what}: got {g!r}, want {w!r}")

def via_filer(path):
    try:
        return urllib.request.urlopen(FILER + path).read()
    except urllib.error.HTTPError as e:
        return e.code
"#;

/// Bucket, single PUTs (one chunk and three), a multipart upload; every
/// object read back through S3 and through the filer; a delete.
const SCENARIO: &str = r#"
s3.create_bucket(Bucket="photos")
small = content(1, 5)
nine = content(2, 9 << 20)
parts = [content(3, 5 << 20), content(4, 1 << 20)]
s3.put_object(Bucket="photos", Key="a.txt", Body=small)
s3.put_object(Bucket="photos", Key="big/nine.bin", Body=nine)
up = s3.create_multipart_upload(Bucket="photos", Key="mp.bin")["UploadId"]
done = []
for i, p in enumerate(parts, 1):
    r = s3.upload_part(Bucket="photos", Key="mp.bin", PartNumber=i, UploadId=up, Body=p)
    done.append({"PartNumber": i, "ETag": r["ETag"]})
s3.complete_multipart_upload(Bucket="photos", Key="mp.bin", UploadId=up,
    MultipartUpload={"Parts": done})
want = {"a.txt": small, "big/nine.bin": nine, "mp.bin": b"".join(parts)}
for key, body in want.items():
    eq(s3.get_object(Bucket="photos", Key=key)["Body"].read(), body, f"S3 GET {key}")
    eq(via_filer(f"/buckets/photos/{key}"), body, f"filer GET {key}")
listed = [o["Key"] for o in s3.list_objects_v2(Bucket="photos")["Contents"]]
eq(sorted(listed), sorted(want), "listing")
import json
meta = json.loads(urllib.request.urlopen(FILER + "/buckets/photos/big/nine.bin?metadata=true").read())
eq(len(meta["chunks"]), 3, "chunks of a 9 MiB object (4 MiB chunks)")
s3.delete_object(Bucket="photos", Key="a.txt")
eq(via_filer("/buckets/photos/a.txt"), 404, "the filer after DeleteObject")
"#;

/// Uploads 9 MiB objects until the gateway goes away, printing each
/// acknowledged key.
const LOAD: &str = r#"
s3.create_bucket(Bucket="load")
i = 0
while True:
    s3.put_object(Bucket="load", Key=f"k{i}", Body=content(100 + i, 9 << 20))
    print(f"acked {i}", flush=True)
    i += 1
"#;

/// The acknowledged objects, through the restarted gateway and the filer.
const CHECK: &str = r#"
for i in [int(x) for x in sys.argv[1].split(",")]:
    body = content(100 + i, 9 << 20)
    eq(s3.get_object(Bucket="load", Key=f"k{i}")["Body"].read(), body, f"S3 GET k{i}")
    eq(via_filer(f"/buckets/load/k{i}"), body, f"filer GET k{i}")
"#;

fn script(tmp: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let f = tmp.join(format!("{name}.py"));
    std::fs::write(&f, format!("{PRELUDE}\n{body}\nprint('ok')\n")).unwrap();
    f
}

fn python_cmd(file: &Path, s3: &str, filer: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg(file)
        .env("EP", s3)
        .env("FILER", filer)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CONFIG_FILE");
    c
}

fn run(c: &mut Command, what: &str) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gateway(tmp: &Path, filer_port: u16) -> Kelp {
    let filer = format!("-filer=127.0.0.1:{filer_port}");
    let dir = format!("-dir={}", tmp.join("gw").display());
    let cfg = format!("-s3.config={}", tmp.join("ids.json").display());
    Kelp::start(
        &[
            "s3",
            filer.as_str(),
            "-port=0",
            "-ip=127.0.0.1",
            dir.as_str(),
            cfg.as_str(),
        ],
        &tmp.join("logs"),
    )
}

fn filer_status(filer: &str) -> Value {
    http()
        .get(format!("{filer}/__kelp/status"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Chunks every file below `dir` references, through the filer's listing.
fn referenced_chunks(filer: &str, dir: &str) -> u64 {
    let v: Value = http()
        .get(format!("{filer}{dir}/?limit=10000"))
        .header("Accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut n = 0;
    for e in v["Entries"].as_array().cloned().unwrap_or_default() {
        let path = e["FullPath"].as_str().unwrap();
        if e["Mode"].as_u64().unwrap() & (1 << 31) != 0 {
            n += referenced_chunks(filer, path);
        } else {
            let meta: Value = http()
                .get(format!("{filer}{path}?metadata=true"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            n += meta["chunks"].as_array().map_or(0, |c| c.len() as u64);
        }
    }
    n
}

fn live_needles(k: &Kelp) -> Option<u64> {
    let v: Value = http()
        .get(format!("{}/status", k.volume_url()))
        .send()
        .ok()?
        .json()
        .ok()?;
    Some(
        v["Volumes"]
            .as_array()?
            .iter()
            .map(|vol| {
                vol["FileCount"].as_u64().unwrap_or(0) - vol["DeleteCount"].as_u64().unwrap_or(0)
            })
            .sum(),
    )
}

#[test]
fn s3_gateway_over_a_remote_filer() {
    if python_with_boto3().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(tmp.path().join("ids.json"), IDS).unwrap();
    let cluster = kelp_server(&data, &["-filer", "-filer.port=0", "-filer.gcSeconds=1"]);
    let filer_port = cluster.port("filer_port");
    let filer = format!("http://127.0.0.1:{filer_port}");
    let status = filer_status(&filer);
    assert_eq!(status["store_wire"], 1, "{status}");
    assert!(
        !status["masters"].as_array().unwrap().is_empty(),
        "{status}"
    );

    let mut gw = gateway(tmp.path(), filer_port);
    let s3 = format!("http://127.0.0.1:{}", gw.port("s3_port"));
    run(
        &mut python_cmd(&script(tmp.path(), "scenario", SCENARIO), &s3, &filer),
        "the S3 scenario",
    );

    // The deleted object's chunk collected: from here on, a live needle
    // no entry references is a chunk of an upload under way.
    let settled = || {
        let live = live_needles(&cluster)?;
        (live == referenced_chunks(&filer, "/buckets")).then_some(())
    };
    wait_until(
        "the deleted object's chunk to be collected",
        Duration::from_secs(30),
        settled,
    );

    // kill -9 of the gateway while it uploads: once a chunk of an upload
    // is on the volume server and its entry is not committed yet.
    let mut load = python_cmd(&script(tmp.path(), "load", LOAD), &s3, &filer)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = load.stdout.take().unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let reader = std::thread::spawn({
        let acked = acked.clone();
        move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(i) = line.strip_prefix("acked ") {
                    acked.lock().unwrap().push(i.to_string());
                }
            }
        }
    });
    wait_until("3 uploads", Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 3).then_some(())
    });
    wait_until("an upload under way", Duration::from_secs(30), || {
        let live = live_needles(&cluster)?;
        (live > referenced_chunks(&filer, "/buckets")).then_some(())
    });
    gw.kill9();
    let _ = load.wait();
    reader.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let leases = filer_status(&filer)["leases_open"].as_u64().unwrap();
    assert!(
        leases >= 1,
        "the killed gateway's lease is in the filer's store"
    );

    // The restarted gateway (same -dir, so the same id) reaps its lease:
    // the ids it never committed go to the filer's collector.
    let gw = gateway(tmp.path(), filer_port);
    let s3 = format!("http://127.0.0.1:{}", gw.port("s3_port"));
    assert_eq!(filer_status(&filer)["leases_open"], 0, "reaped at start");
    let log = gw.log_text();
    assert!(log.contains("reaping a lease"), "{log}");
    eprintln!("{} objects acknowledged before kill -9", acked.len());
    run(
        python_cmd(&script(tmp.path(), "check", CHECK), &s3, &filer).arg(acked.join(",")),
        "reading the acknowledged objects back",
    );
    wait_until(
        "the cut uploads' chunks to be collected",
        Duration::from_secs(60),
        || {
            let referenced = referenced_chunks(&filer, "/buckets");
            let live = live_needles(&cluster)?;
            eprintln!("live needles {live}, referenced chunks {referenced}");
            (live == referenced).then_some(())
        },
    );
}

/// `-filer.port` serves a filer API of the gateway's own store, which a
/// gateway over a remote filer does not have: refused, saying why.
#[test]
fn filer_port_with_filer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = format!("-dir={}", tmp.path().display());
    let out = Command::new(kelp_bin())
        .args(["s3", "-filer=127.0.0.1:1", "-filer.port=0", "-port=0"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-filer.port") && err.contains("cannot be used with -filer"),
        "{err}"
    );
}
