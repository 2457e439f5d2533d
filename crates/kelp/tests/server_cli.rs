//! The `kelp` binary as a user runs it: help text, Go-style flags, one
//! process (`kelp server`) and separate master and volume processes, a
//! blob's whole life over HTTP, and a restart that keeps the data.

mod common;

use std::process::Command;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_explains_every_seaweedfs_flag() {
    let top = help(&["--help"]);
    for cmd in ["server", "master", "volume"] {
        assert!(top.contains(cmd), "kelp --help lacks {cmd}");
    }
    let server = help(&["server", "-help"]);
    for flag in [
        "--dir",
        "--ip",
        "--master.port",
        "--volume.port",
        "--master.dir",
        "--sync",
        // The master's and volume server's own flags, spelled as `weed server` does.
        "--master.volumeSizeLimitMB",
        "--master.garbageThreshold",
        "--volume.fileSizeLimitMB",
        "--volume.readMode",
        "--volume.pulseSeconds",
    ] {
        assert!(
            server.contains(flag),
            "kelp server --help lacks {flag}:\n{server}"
        );
    }
    let master = help(&["master", "--help"]);
    for flag in [
        "--port",
        "--mdir",
        "--ip",
        "--volumeSizeLimitMB",
        "--defaultReplication",
    ] {
        assert!(
            master.contains(flag),
            "kelp master --help lacks {flag}:\n{master}"
        );
    }
    let volume = help(&["volume", "--help"]);
    for flag in [
        "--port",
        "--dir",
        "--mserver",
        "--ip",
        "--dataCenter",
        "--rack",
        "--max",
    ] {
        assert!(
            volume.contains(flag),
            "kelp volume --help lacks {flag}:\n{volume}"
        );
    }
}

/// `kelp server` builds its volume server from the same flags as `kelp
/// volume`, in both spellings: a limit given as `-volume.fileSizeLimitMB`
/// (weed server's) or `-fileSizeLimitMB` (weed volume's) is enforced.
#[test]
fn server_takes_volume_flags_in_both_spellings() {
    for flag in ["-volume.fileSizeLimitMB=1", "-fileSizeLimitMB=1"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let kelp = kelp_server(&data, &[flag, "-master.volumeSizeLimitMB=64"]);
        let client = http();
        let a = assign(&client, &kelp.master_url(), "");
        // 413, or the connection closed under the body as the server
        // refuses it from its Content-Length: either way nothing is stored.
        match upload(&client, &a.url, &a.fid, "big.bin", &blob(1, 1536 * 1024)) {
            Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{flag}"),
            Err(e) => assert!(e.is_body() || e.is_request(), "{flag}: {e}"),
        }
        // The server may have closed that connection under the body; a
        // pooled client could pick it again, so ask on a new one.
        let client = http();
        let r = get(&client, &a.url, &a.fid).unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{flag}: the big blob was stored"
        );
        let r = upload(&client, &a.url, &a.fid, "small.bin", &blob(1, 1000)).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{flag}");
    }
}

#[test]
fn bad_flags_are_refused_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["master", "-defaultReplication=9x9", "-port=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("defaultReplication"), "unclear error: {err}");
}

#[test]
fn server_keeps_blobs_across_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let client = http();
    let dir_s = dir.display().to_string();
    // Go-style flags with a space before the value.
    let mut kelp = Kelp::start(
        &[
            "server",
            "-dir",
            &dir_s,
            "-master.port",
            "0",
            "-volume.port",
            "0",
            "-ip",
            "127.0.0.1",
        ],
        &tmp.path().join("logs"),
    );
    wait_healthy(&kelp.master_url());
    let master = kelp.master_url();

    let a = assign(&client, &master, "");
    let data = blob(7, 10_000);
    let r = upload(&client, &a.url, &a.fid, "seven.bin", &data).unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().unwrap();
    assert_eq!(v["size"], 10_000);
    assert_eq!(v["name"], "seven.bin");

    let r = get(&client, &a.url, &a.fid).unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());

    let vid = a.fid.split(',').next().unwrap();
    let v: Value = client
        .get(format!("{master}/dir/lookup?volumeId={vid}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["locations"][0]["url"], a.url.as_str(), "{v}");

    for path in ["/dir/status", "/vol/status", "/cluster/status"] {
        let r = client.get(format!("{master}{path}")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json::<Value>()
            .unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    }
    let metrics = client
        .get(format!("{}/metrics", kelp.volume_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("kelp_volume_http_request_duration_seconds"),
        "{metrics}"
    );

    let gone = assign(&client, &master, "");
    upload(&client, &gone.url, &gone.fid, "gone.bin", b"bye").unwrap();
    let r = delete(&client, &gone.url, &gone.fid).unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    kelp.stop();
    let kelp = Kelp::start(
        &[
            "server",
            "-dir",
            &dir_s,
            "-master.port",
            "0",
            "-volume.port",
            "0",
            "-ip",
            "127.0.0.1",
        ],
        &tmp.path().join("logs"),
    );
    wait_healthy(&kelp.master_url());
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    let r = get(&client, &url, &a.fid).unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
    assert_eq!(
        get(&client, &url, &gone.fid).unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // The master never hands out a key twice, even after a restart.
    let b = assign(&client, &kelp.master_url(), "");
    assert_ne!(b.fid, a.fid);
    assert_ne!(b.fid, gone.fid);
}

#[test]
fn separate_master_and_volume_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let mdir = format!("-mdir={}", tmp.path().join("m").display());
    let master = Kelp::start(&["master", "-port=0", "-ip=127.0.0.1", &mdir], &logs);
    let mserver = format!(
        "-mserver=127.0.0.1:{}.{}",
        master.port("master_port"),
        master.port("master_grpc_port")
    );
    let vdir = format!("-dir={}", tmp.path().join("v").display());
    let volume = Kelp::start(
        &[
            "volume",
            "-port=0",
            "-ip=127.0.0.1",
            &vdir,
            &mserver,
            "-dataCenter=dc1",
            "-rack=r1",
            "-max=3",
        ],
        &logs,
    );
    let client = http();
    let base = format!("http://127.0.0.1:{}", master.port("master_port"));
    let a = assign(&client, &base, "collection=pics");
    assert_eq!(a.url, format!("127.0.0.1:{}", volume.port("volume_port")));
    let r = upload(&client, &a.url, &a.fid, "p.jpg", b"jpeg bytes").unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        get(&client, &a.url, &a.fid)
            .unwrap()
            .bytes()
            .unwrap()
            .as_ref(),
        b"jpeg bytes"
    );
    let status: Value = client
        .get(format!("{base}/dir/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = status.to_string();
    assert!(
        text.contains("dc1") && text.contains("r1"),
        "topology lacks dc1/r1: {text}"
    );
    // -max=3 bounds the slots this server offers.
    let v: Value = client
        .get(format!("{base}/vol/grow?count=10&collection=more"))
        .send()
        .unwrap()
        .json()
        .unwrap_or(Value::Null);
    assert!(
        v["count"].as_u64().unwrap_or(0) <= 3,
        "grew beyond -max: {v}"
    );
}
