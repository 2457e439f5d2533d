//! `kelp benchmark --json` against a running `kelp server` prints a JSON
//! report with both phases and no failed requests.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Runs `kelp benchmark --json` against a `kelp server` started with
/// `server_flags` and returns the parsed report.
fn run_benchmark(server_flags: &[&str], bench_flags: &[&str]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let kelp = kelp_server(&dir, server_flags);
    let master = format!("-master=127.0.0.1:{}", kelp.port("master_port"));
    let list = format!("-list={}", tmp.path().join("list.txt").display());
    let mut args = vec![
        "benchmark",
        master.as_str(),
        "-c",
        "4",
        "-size=64",
        list.as_str(),
        "--json",
    ];
    args.extend_from_slice(bench_flags);
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn assert_no_failures(report: &Value, n: u64) {
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for p in phases {
        assert_eq!(p["failed"], 0, "{p}");
        assert_eq!(p["completed"], n, "{p}");
    }
    assert_eq!(report["delete_failures"], 0, "{report}");
}

#[test]
fn benchmark_json_report() {
    let report = run_benchmark(&[], &["-n", "200"]);
    assert_no_failures(&report, 200);
}

/// With write and read keys set, the benchmark carries the master's tokens
/// on uploads, deletes and reads.
#[test]
fn benchmark_with_jwt() {
    let report = run_benchmark(
        &[
            "-jwt.signing.key=bench-write-secret",
            "-jwt.signing.read.key=bench-read-secret",
        ],
        &["-n", "150", "-deletePercent=20"],
    );
    assert_no_failures(&report, 150);
}

/// `kelp benchmark -s3` against `kelp server -filer -s3` with an identity:
/// signed PUTs, GETs whose bytes are checked, and a listing that counts
/// every key; a wrong secret fails every request and says why.
#[test]
fn benchmark_s3_json_report() {
    let tmp = tempfile::tempdir().unwrap();
    let ident = tmp.path().join("identities.json");
    std::fs::write(
        &ident,
        r#"{"identities":[{"name":"admin","credentials":[{"accessKey":"benchAK","secretKey":"benchSK"}],"actions":["Admin","Read","Write","List"]}]}"#,
    )
    .unwrap();
    let config = format!("-s3.config={}", ident.display());
    let kelp = kelp_server(
        &tmp.path().join("data"),
        &["-filer", "-filer.port=0", "-s3", "-s3.port=0", &config],
    );
    let endpoint = format!("-endpoint=http://127.0.0.1:{}", kelp.port("s3_port"));
    let bench = || -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["benchmark", "-s3", &endpoint, "-accessKey=benchAK"])
            .arg("-secretKey=benchSK")
            .args([
                "-bucket=bench",
                "-n",
                "120",
                "-c",
                "4",
                "-size=1000",
                "-listObjects",
            ])
            .arg("-json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stdout is JSON")
    };
    let report = bench();
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["put", "get", "list"], "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["listed_keys"], 120, "{report}");
    assert_eq!(report["phases"][0]["completed"], 120, "{report}");
    assert_eq!(report["phases"][1]["bytes"], 120 * 1000, "{report}");

    // A wrong secret: the bucket check is refused before any phase runs.
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args([
            "benchmark",
            "-s3",
            &endpoint,
            "-accessKey=benchAK",
            "-secretKey=wrong",
        ])
        .args(["-bucket=other", "-n", "5", "-json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
}
