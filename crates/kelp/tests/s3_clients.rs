//! Real S3 clients against `kelp server -filer -s3`, driven as a user
//! would: awscli (high-level `s3` commands and `s3api`), rclone, s3cmd and
//! boto3's presigned URLs. Each test checks what a user checks: the bytes
//! that come back, what a listing shows, what an expired URL answers.
//!
//! Needs `aws` and boto3 (`python3 -m pip install awscli boto3`), `rclone`
//! and `s3cmd` (Debian). Without one, its test is skipped, except under
//! `CI`, where it fails (`scripts/test.sh` installs them).
//!
//! `KELP_S3_TEST_ENDPOINT=http://127.0.0.1:PORT` runs the same tests against
//! a gateway that is already running (SeaweedFS's `weed s3`, say, with an
//! identity holding the keys below): how the tests were checked against
//! the reference before Kelp's gateway existed. Against `weed` 4.48 all
//! pass but s3cmd's last listing (see there).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const AK: &str = "kelpS3TestAK";
const SK: &str = "kelpS3TestSK/with+chars";
const MIB: usize = 1 << 20;

/// A gateway to test: Kelp's (started here) or one named by the environment.
struct Gateway {
    _kelp: Option<Kelp>,
    endpoint: String,
    tmp: tempfile::TempDir,
}

impl Gateway {
    fn start() -> Gateway {
        let tmp = tempfile::tempdir().unwrap();
        if let Ok(e) = std::env::var("KELP_S3_TEST_ENDPOINT") {
            return Gateway {
                _kelp: None,
                endpoint: e,
                tmp,
            };
        }
        let ident = tmp.path().join("identities.json");
        let doc = serde_json::json!({"identities": [{"name": "admin",
            "credentials": [{"accessKey": AK, "secretKey": SK}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(&ident, doc.to_string()).unwrap();
        let config = format!("-s3.config={}", ident.display());
        let kelp = kelp_server(
            &tmp.path().join("data"),
            &["-filer", "-filer.port=0", "-s3", "-s3.port=0", &config],
        );
        let endpoint = format!("http://127.0.0.1:{}", kelp.port("s3_port"));
        Gateway {
            _kelp: Some(kelp),
            endpoint,
            tmp,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn host_port(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }
}

/// Runs `cmd`, panics with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tree of files a user would upload: empty, one byte, just over the
/// (lowered) multipart threshold, and names with spaces, unicode, `&+%`.
fn make_tree(root: &Path, big: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("empty".to_string(), Vec::new()),
        ("one".to_string(), blob(1, 1)),
        ("dir/five_mib_plus_one".to_string(), blob(2, 5 * MIB + 1)),
        ("sp ace/ünï cødé &+%.txt".to_string(), blob(3, 1000)),
        ("dir/sub/a&b+c%20d".to_string(), blob(4, 10)),
    ];
    if big {
        files.push(("big/hundred_mib".to_string(), blob(5, 100 * MIB)));
    }
    for (name, data) in &files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    files
}

fn assert_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        let got = std::fs::read(root.join(name))
            .unwrap_or_else(|e| panic!("{name} did not come back: {e}"));
        assert!(
            got == *data,
            "{name}: {} bytes differ from what was uploaded",
            got.len()
        );
    }
}

fn aws_cli() -> Option<PathBuf> {
    require_tool("aws (python3 -m pip install awscli)", which("aws"))
}

/// `aws` with the keys and a temporary config in the environment.
fn aws(g: &Gateway, bin: &Path, args: &[&str]) -> String {
    run(Command::new(bin)
        .args(["--endpoint-url", &g.endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", SK)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", g.path("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", g.path("aws-credentials"))
        .env("AWS_PAGER", ""))
}

fn aws_json(g: &Gateway, bin: &Path, args: &[&str]) -> Value {
    let out = aws(g, bin, args);
    if out.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {out}"))
}

fn keys_of(v: &Value, field: &str, name: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e[name].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn awscli_sync_cp_ls_rm_and_s3api() {
    let Some(bin) = aws_cli() else { return };
    let g = Gateway::start();
    // Multipart above 5 MB instead of 8, as a user would lower it.
    aws(
        &g,
        &bin,
        &["configure", "set", "default.s3.multipart_threshold", "5MB"],
    );
    let src = g.path("src");
    let files = make_tree(&src, true);
    aws(&g, &bin, &["s3", "mb", "s3://tree"]);
    aws(
        &g,
        &bin,
        &["s3", "sync", src.to_str().unwrap(), "s3://tree/up/"],
    );

    // ls shows every key with its size.
    let ls = aws(&g, &bin, &["s3", "ls", "--recursive", "s3://tree/up/"]);
    for (name, data) in &files {
        let line = ls
            .lines()
            .find(|l| l.ends_with(&format!("up/{name}")))
            .unwrap_or_else(|| panic!("ls lacks up/{name}:\n{ls}"));
        assert!(line.contains(&format!(" {} up/", data.len())), "{line}");
    }
    // A second sync has nothing to do.
    let again = aws(
        &g,
        &bin,
        &["s3", "sync", src.to_str().unwrap(), "s3://tree/up/"],
    );
    assert!(
        again.trim().is_empty(),
        "second sync uploaded again: {again}"
    );

    // Download everything and compare bytes.
    let down = g.path("down");
    aws(
        &g,
        &bin,
        &[
            "s3",
            "cp",
            "--recursive",
            "s3://tree/up/",
            down.to_str().unwrap(),
        ],
    );
    assert_tree(&down, &files);
    let single = g.path("single");
    aws(
        &g,
        &bin,
        &[
            "s3",
            "cp",
            "s3://tree/up/sp ace/ünï cødé &+%.txt",
            single.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&single).unwrap(), files[3].1);

    // Delimiter and prefix: folders fold into CommonPrefixes.
    let v = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "tree",
            "--prefix",
            "up/",
            "--delimiter",
            "/",
        ],
    );
    let mut prefixes = keys_of(&v, "CommonPrefixes", "Prefix");
    prefixes.sort();
    assert_eq!(prefixes, ["up/big/", "up/dir/", "up/sp ace/"], "{v}");
    let mut keys = keys_of(&v, "Contents", "Key");
    keys.sort();
    assert_eq!(keys, ["up/empty", "up/one"], "{v}");
    let v = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "tree",
            "--prefix",
            "up/dir/",
        ],
    );
    let mut keys = keys_of(&v, "Contents", "Key");
    keys.sort();
    assert_eq!(
        keys,
        ["up/dir/five_mib_plus_one", "up/dir/sub/a&b+c%20d"],
        "{v}"
    );

    // Pagination: 25 keys in pages of 10, cut after 15 items, then resumed.
    let pg = g.path("pg");
    std::fs::create_dir_all(&pg).unwrap();
    for i in 0..25 {
        std::fs::write(pg.join(format!("k{i:02}")), format!("{i}")).unwrap();
    }
    aws(
        &g,
        &bin,
        &["s3", "sync", pg.to_str().unwrap(), "s3://tree/pg/"],
    );
    let first = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "tree",
            "--prefix",
            "pg/",
            "--page-size",
            "10",
            "--max-items",
            "15",
        ],
    );
    let k1 = keys_of(&first, "Contents", "Key");
    assert_eq!(k1.len(), 15, "{first}");
    let token = first["NextToken"]
        .as_str()
        .expect("a NextToken after 15 of 25");
    let rest = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "tree",
            "--prefix",
            "pg/",
            "--page-size",
            "10",
            "--starting-token",
            token,
        ],
    );
    let k2 = keys_of(&rest, "Contents", "Key");
    let all: Vec<String> = k1.iter().chain(&k2).cloned().collect();
    let want: Vec<String> = (0..25).map(|i| format!("pg/k{i:02}")).collect();
    assert_eq!(all, want, "pages overlap or miss keys");
    let whole = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "tree",
            "--prefix",
            "pg/",
            "--page-size",
            "7",
        ],
    );
    assert_eq!(keys_of(&whole, "Contents", "Key"), want);

    // Multipart uploads: one started, listed, aborted, gone.
    let mp = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "create-multipart-upload",
            "--bucket",
            "tree",
            "--key",
            "mp/x",
        ],
    );
    let upload_id = mp["UploadId"].as_str().expect("UploadId").to_string();
    let listed = aws_json(
        &g,
        &bin,
        &["s3api", "list-multipart-uploads", "--bucket", "tree"],
    );
    let ids = keys_of(&listed, "Uploads", "UploadId");
    assert!(ids.contains(&upload_id), "{listed}");
    aws(
        &g,
        &bin,
        &[
            "s3api",
            "abort-multipart-upload",
            "--bucket",
            "tree",
            "--key",
            "mp/x",
            "--upload-id",
            &upload_id,
        ],
    );
    let listed = aws_json(
        &g,
        &bin,
        &["s3api", "list-multipart-uploads", "--bucket", "tree"],
    );
    assert!(
        !keys_of(&listed, "Uploads", "UploadId").contains(&upload_id),
        "{listed}"
    );

    // Server-side copy, then a ranged read.
    aws(
        &g,
        &bin,
        &[
            "s3api",
            "copy-object",
            "--bucket",
            "tree",
            "--key",
            "copied/five",
            "--copy-source",
            "tree/up/dir/five_mib_plus_one",
        ],
    );
    let out = g.path("range.bin");
    let v = aws_json(
        &g,
        &bin,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "tree",
            "--key",
            "copied/five",
            "--range",
            "bytes=5242800-5242880",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(v["ContentLength"], 81, "{v}");
    assert_eq!(std::fs::read(&out).unwrap(), files[2].1[5_242_800..]);

    // rm one, then everything.
    aws(&g, &bin, &["s3", "rm", "s3://tree/up/one"]);
    let ls = aws(&g, &bin, &["s3", "ls", "--recursive", "s3://tree/up/"]);
    assert!(!ls.lines().any(|l| l.ends_with("up/one")), "{ls}");
    aws(&g, &bin, &["s3", "rm", "--recursive", "s3://tree/"]);
    let ls = aws(&g, &bin, &["s3", "ls", "--recursive", "s3://tree/"]);
    assert!(
        ls.trim().is_empty(),
        "bucket not empty after rm --recursive: {ls}"
    );
}

#[test]
fn rclone_sync_up_check_and_back() {
    let Some(bin) = require_tool("rclone (Debian rclone)", which("rclone")) else {
        return;
    };
    let g = Gateway::start();
    let src = g.path("src");
    let files = make_tree(&src, false);
    let rclone = |args: &[&str]| {
        run(Command::new(&bin)
            .args(args)
            // Debian's rclone 1.60 cannot load a CA bundle into its
            // transport and refuses to start when one is set; the endpoint
            // is plain HTTP anyway.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", g.path("rclone.conf"))
            .env("RCLONE_CONFIG_K_TYPE", "s3")
            .env("RCLONE_CONFIG_K_PROVIDER", "Other")
            .env("RCLONE_CONFIG_K_ENDPOINT", &g.endpoint)
            .env("RCLONE_CONFIG_K_ACCESS_KEY_ID", AK)
            .env("RCLONE_CONFIG_K_SECRET_ACCESS_KEY", SK)
            .env("RCLONE_CONFIG_K_REGION", "us-east-1")
            .env("RCLONE_CONFIG_K_FORCE_PATH_STYLE", "true"))
    };
    std::fs::write(g.path("rclone.conf"), "").unwrap();
    rclone(&["mkdir", "k:rcl"]);
    rclone(&["sync", src.to_str().unwrap(), "k:rcl/tree"]);
    rclone(&["check", src.to_str().unwrap(), "k:rcl/tree"]);
    let listed = rclone(&["lsf", "-R", "--files-only", "k:rcl/tree"]);
    for (name, _) in &files {
        assert!(
            listed.lines().any(|l| l == name),
            "lsf lacks {name}:\n{listed}"
        );
    }
    let back = g.path("back");
    rclone(&["sync", "k:rcl/tree", back.to_str().unwrap()]);
    assert_tree(&back, &files);
    // A deleted source file disappears from the bucket on the next sync.
    std::fs::remove_file(src.join("one")).unwrap();
    rclone(&["sync", src.to_str().unwrap(), "k:rcl/tree"]);
    let listed = rclone(&["lsf", "-R", "--files-only", "k:rcl/tree"]);
    assert!(!listed.lines().any(|l| l == "one"), "{listed}");
}

#[test]
fn s3cmd_mb_put_get_ls_del() {
    let Some(bin) = require_tool("s3cmd (Debian s3cmd)", which("s3cmd")) else {
        return;
    };
    let g = Gateway::start();
    let cfg = g.path("s3cmd.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {AK}\nsecret_key = {SK}\nhost_base = {h}\nhost_bucket = {h}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n",
            h = g.host_port()
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| run(Command::new(&bin).arg("-c").arg(&cfg).args(args));
    let data = blob(7, 3 * MIB + 7);
    let file = g.path("file.bin");
    std::fs::write(&file, &data).unwrap();
    s3cmd(&["mb", "s3://s3c"]);
    let buckets = s3cmd(&["ls"]);
    assert!(buckets.contains("s3://s3c"), "{buckets}");
    s3cmd(&["put", file.to_str().unwrap(), "s3://s3c/a/file.bin"]);
    s3cmd(&["put", file.to_str().unwrap(), "s3://s3c/a/b c&d.bin"]);
    let ls = s3cmd(&["ls", "s3://s3c/a/"]);
    assert!(ls.contains("s3://s3c/a/file.bin"), "{ls}");
    assert!(ls.contains("s3://s3c/a/b c&d.bin"), "{ls}");
    assert!(ls.contains(&data.len().to_string()), "{ls}");
    let out = g.path("back.bin");
    s3cmd(&["get", "s3://s3c/a/b c&d.bin", out.to_str().unwrap()]);
    assert!(
        std::fs::read(&out).unwrap() == data,
        "s3cmd get: bytes differ"
    );
    s3cmd(&["del", "s3://s3c/a/file.bin"]);
    s3cmd(&["del", "s3://s3c/a/b c&d.bin"]);
    // Nothing is left under a/ (SeaweedFS 4.48 still lists a directory
    // marker `s3://s3c/a/` here; S3 and Kelp list nothing).
    let ls = s3cmd(&["ls", "s3://s3c/a/"]);
    assert!(ls.trim().is_empty(), "{ls}");
    s3cmd(&["rb", "s3://s3c"]);
}

const PRESIGN: &str = r#"
import json, sys, time, urllib.request, urllib.error
import boto3
from botocore.config import Config
endpoint, ak, sk = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name="us-east-1",
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="presign")
body = bytes(range(256)) * 40
s3.put_object(Bucket="presign", Key="dir/ob ject+1", Body=body)
def fetch(url, data=None, method="GET"):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method)) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
out = {}
url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "dir/ob ject+1"},
                                ExpiresIn=300)
status, got = fetch(url)
out["get"] = [status, got == body]
put = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "up"}, ExpiresIn=300)
status, _ = fetch(put, data=b"presigned put", method="PUT")
out["put"] = [status, s3.get_object(Bucket="presign", Key="up")["Body"].read() == b"presigned put"]
short = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "dir/ob ject+1"},
                                  ExpiresIn=1)
time.sleep(2.5)
status, err = fetch(short)
out["expired"] = [status, err.decode(errors="replace")]
print(json.dumps(out))
"#;

#[test]
fn boto3_presigned_urls() {
    if python_with_boto3().is_none() {
        return;
    }
    let g = Gateway::start();
    let out = run(Command::new("python3").args(["-c", PRESIGN, &g.endpoint, AK, SK]));
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["get"], serde_json::json!([200, true]), "{v}");
    assert_eq!(v["put"], serde_json::json!([200, true]), "{v}");
    assert_eq!(v["expired"][0], 403, "{v}");
    assert!(
        v["expired"][1]
            .as_str()
            .unwrap_or("")
            .contains("AccessDenied"),
        "{v}"
    );
}
