//! Disk faults under `kelp server`.
//!
//! - fsyncs that fail for a moment: an LD_PRELOAD shim
//!   (`support/fail_fsync.c`) makes fdatasync of volume files return EIO
//!   while a flag file exists. No write is acknowledged whose fsync failed;
//!   every volume that saw the failure turns read-only and the master hears
//!   it at once, so uploads succeed again within a second of the fault
//!   clearing, on other volumes, and everything acknowledged reads back.
//! - a full disk: the data directory on a small tmpfs. Uploads that do not
//!   fit answer 507 with a message saying so, and everything acknowledged
//!   before reads back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Builds the shim with the C compiler, or None outside CI without one.
fn build_shim(out: &Path) -> Option<PathBuf> {
    let cc = require_tool("cc (a C compiler, for the fsync fault shim)", which("cc"))?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fail_fsync.c");
    let so = out.join("fail_fsync.so");
    let status = Command::new(cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling {} failed", src.display());
    Some(so)
}

/// Assigns a file id and uploads `data` to it. Ok(fid, url) when the upload
/// was acknowledged (201), Err(status or error) otherwise.
fn put(
    client: &reqwest::blocking::Client,
    master: &str,
    data: &[u8],
) -> Result<(String, String), String> {
    let r = client
        .get(format!("{master}/dir/assign"))
        .send()
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("assign answered {}", r.status()));
    }
    let v: serde_json::Value = r.json().map_err(|e| e.to_string())?;
    let (Some(fid), Some(url)) = (v["fid"].as_str(), v["url"].as_str()) else {
        return Err(format!("assign answered {v}"));
    };
    let resp = upload(client, url, fid, "b.bin", data).map_err(|e| e.to_string())?;
    if resp.status().as_u16() == 201 {
        Ok((fid.to_string(), url.to_string()))
    } else {
        Err(format!("upload of {fid} answered {}", resp.status()))
    }
}

/// An acknowledged blob reads back with exactly its bytes.
fn assert_reads_back(client: &reqwest::blocking::Client, url: &str, fid: &str, want: &[u8]) {
    let r = get(client, url, fid).unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "acknowledged {fid} is not readable"
    );
    assert_eq!(r.bytes().unwrap().as_ref(), want, "{fid} changed");
}

#[test]
fn failed_fsyncs_are_never_acknowledged_and_writes_resume_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(shim) = build_shim(tmp.path()) else {
        return;
    };
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let flag = tmp.path().join("fail-fsync");
    let dir_arg = format!("-dir={}", dir.display());
    let kelp = Kelp::start_with_env(
        &[
            "server",
            &dir_arg,
            "-master.port=0",
            "-volume.port=0",
            "-ip=127.0.0.1",
        ],
        &tmp.path().join("logs"),
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("KELP_FAIL_FSYNC_FLAG", flag.as_os_str()),
        ],
    );
    let master = kelp.master_url();
    wait_healthy(&master);
    let client = http();
    let mut acked = Vec::new();
    let mut seed = 0u64;
    let mut next = || {
        seed += 1;
        (seed, blob(seed, 1000 + (seed as usize % 3000)))
    };

    // Healthy: writes are acknowledged (the first waits for volumes to grow).
    let (s, data) = next();
    let first = wait_until("a first upload", DEADLINE, || {
        put(&client, &master, &data).ok()
    });
    acked.push((first, s));
    for _ in 0..20 {
        let (s, data) = next();
        acked.push((put(&client, &master, &data).expect("healthy upload"), s));
    }

    // The fault: every fsync of a volume file fails. No upload may succeed.
    std::fs::write(&flag, b"").unwrap();
    let mut refused = 0;
    let fault_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < fault_until {
        let (_, data) = next();
        match put(&client, &master, &data) {
            Ok((fid, _)) => panic!("upload of {fid} was acknowledged although its fsync failed"),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "no upload was tried during the fault");

    // The fault clears: within a second uploads are acknowledged again.
    std::fs::remove_file(&flag).unwrap();
    let cleared = Instant::now();
    let (s, data) = next();
    let resumed = loop {
        match put(&client, &master, &data) {
            Ok(done) => break done,
            Err(e) => {
                assert!(
                    cleared.elapsed() < Duration::from_secs(1),
                    "uploads still fail {:?} after the fault cleared: {e}",
                    cleared.elapsed()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    eprintln!(
        "uploads resumed {:?} after the fault cleared ({refused} refused during it)",
        cleared.elapsed()
    );
    acked.push((resumed, s));
    // The master no longer hands out a volume that saw the failure.
    for _ in 0..30 {
        let (s, data) = next();
        acked.push((
            put(&client, &master, &data).expect("upload after the fault"),
            s,
        ));
    }

    // Everything acknowledged, before and after, reads back intact.
    let by_len = |s: u64| blob(s, 1000 + (s as usize % 3000));
    for ((fid, url), s) in &acked {
        assert_reads_back(&client, url, fid, &by_len(*s));
    }
    // The server said why it refused.
    assert!(
        kelp.log_text().contains("fdatasync failed"),
        "the log does not report the failed fdatasync"
    );
}

#[test]
fn a_full_disk_answers_507_and_keeps_what_was_acknowledged() {
    if !is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mount -t tmpfs failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let dir_arg = format!("-dir={}", dir.display());
    let mdir_arg = format!("-master.dir={}", tmp.path().join("master").display());
    let kelp = Kelp::start(
        &[
            "server",
            &dir_arg,
            &mdir_arg,
            "-master.port=0",
            "-volume.port=0",
            "-ip=127.0.0.1",
        ],
        &tmp.path().join("logs"),
    );
    let master = kelp.master_url();
    wait_healthy(&master);
    let client = http();
    let mut acked = Vec::new();
    let mut full = None;
    for seed in 1..=200u64 {
        let data = blob(seed, 64 * 1024);
        let r = client.get(format!("{master}/dir/assign")).send().unwrap();
        if !r.status().is_success() {
            // No volume can be grown on a full disk either.
            break;
        }
        let v: serde_json::Value = r.json().unwrap();
        let (fid, url) = (v["fid"].as_str().unwrap(), v["url"].as_str().unwrap());
        let resp = upload(&client, url, fid, "b.bin", &data).unwrap();
        match resp.status().as_u16() {
            201 => acked.push((fid.to_string(), url.to_string(), seed)),
            507 => {
                full = Some(resp.text().unwrap());
                break;
            }
            other => panic!("upload of {fid} answered {other}: {}", resp.text().unwrap()),
        }
    }
    let body = full.expect("3 MiB of tmpfs never filled up");
    assert!(
        body.contains("no space left"),
        "the 507 does not say the disk is full: {body}"
    );
    assert!(!acked.is_empty(), "nothing fitted before the disk was full");
    for (fid, url, seed) in &acked {
        assert_reads_back(&client, url, fid, &blob(*seed, 64 * 1024));
    }
}
