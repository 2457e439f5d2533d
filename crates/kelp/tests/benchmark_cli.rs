//! `kelp benchmark --json` against a running `kelp server` prints a JSON
//! report with both phases and no failed requests.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn benchmark_json_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let kelp = kelp_server(&dir, &[]);
    assign(&http(), &kelp.master_url(), "collection=benchmark");
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args([
            "benchmark",
            &format!("-master=127.0.0.1:{}", kelp.port("master_port")),
            "-n",
            "200",
            "-c",
            "4",
            "-size=64",
            &format!("-list={}", tmp.path().join("list.txt").display()),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for p in phases {
        assert_eq!(p["failed"], 0, "{p}");
        assert_eq!(p["completed"], 200, "{p}");
    }
}
