//! Vacuum through the real `kelp server`: `/vol/vacuum` reclaims the space
//! of deleted blobs while every live blob reads back and deleted ones stay
//! 404; kill -9 at random moments while vacuums and writes run loses
//! nothing acknowledged; and write latency during compaction is measured
//! (printed, not asserted).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::Value;

fn dat_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".dat"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn compaction_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cpd") || n.ends_with(".cpx") || n.ends_with(".cpc"))
        .collect()
}

/// `/vol/vacuum`; returns the ids it compacted.
fn vacuum(client: &reqwest::blocking::Client, master: &str, threshold: f64) -> Vec<u64> {
    let r = client
        .get(format!("{master}/vol/vacuum?garbageThreshold={threshold}"))
        .timeout(Duration::from_secs(120))
        .send()
        .expect("vacuum request");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().unwrap();
    assert!(
        v["Topology"]["DataCenters"].is_array(),
        "not /dir/status: {v}"
    );
    let failed = &v["Vacuum"]["Failed"];
    assert_eq!(
        failed.as_array().map_or(0, Vec::len),
        0,
        "vacuum failures: {failed}"
    );
    v["Vacuum"]["Compacted"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn check(
    client: &reqwest::blocking::Client,
    keep: &[(Assigned, u64, usize)],
    deleted: &[Assigned],
    what: &str,
) {
    for (a, seed, len) in keep {
        let r = get(client, &a.url, &a.fid).unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what}: live {} missing", a.fid);
        assert!(
            r.bytes().unwrap().as_ref() == blob(*seed, *len).as_slice(),
            "{what}: live {} has wrong bytes",
            a.fid
        );
    }
    for a in deleted {
        let r = get(client, &a.url, &a.fid).unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{what}: deleted {} came back",
            a.fid
        );
    }
}

#[test]
fn vacuum_reclaims_space_and_keeps_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["-master.vacuumIntervalSeconds=0"];
    let mut kelp = kelp_server(&dir, &args);
    let client = http();
    let master = kelp.master_url();

    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..240u64 {
        let a = assign(&client, &master, "");
        let len = 2000 + (i as usize * 37) % 4000;
        let r = upload(&client, &a.url, &a.fid, "v.bin", &blob(i, len)).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        live.push((a, i, len));
    }
    // Delete four out of five.
    let mut keep = Vec::new();
    for (n, (a, seed, len)) in live.into_iter().enumerate() {
        if n % 5 == 0 {
            keep.push((a, seed, len));
        } else {
            let r = delete(&client, &a.url, &a.fid).unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            deleted.push(a);
        }
    }
    let before = dat_bytes(&dir);
    let compacted = vacuum(&client, &master, 0.1);
    let after = dat_bytes(&dir);
    eprintln!("vacuum compacted volumes {compacted:?}: .dat total {before} -> {after} bytes");
    assert!(!compacted.is_empty(), "nothing was compacted");
    assert!(
        after * 3 < before,
        ".dat did not shrink enough: {before} -> {after}"
    );
    assert!(compaction_leftovers(&dir).is_empty());

    check(&client, &keep, &deleted, "after vacuum");
    // Below the threshold now: a second run compacts nothing.
    assert!(vacuum(&client, &master, 0.1).is_empty());
    // Still writable.
    let a = assign(&client, &master, "");
    let r = upload(&client, &a.url, &a.fid, "after.bin", b"after vacuum").unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // And it all survives a crash.
    kelp.kill9();
    let kelp = kelp_server(&dir, &args);
    let client = http();
    // Volume server URLs change with the restart (port 0).
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    for (a, _, _) in keep.iter_mut() {
        a.url = url.clone();
    }
    for a in deleted.iter_mut() {
        a.url = url.clone();
    }
    check(&client, &keep, &deleted, "after kill -9 and restart");
}

/// Uploads from `writers` threads until `stop`; returns upload latencies
/// in microseconds. Every fifth blob is deleted again to make garbage.
fn timed_writes(master: &str, writers: usize, seed: u64, stop: &AtomicBool) -> Vec<u64> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                s.spawn(move || {
                    let client = http();
                    let mut lat = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let a = assign(&client, master, "");
                        let data = blob(seed + w as u64 * 1_000_000 + n, 4096);
                        let t = Instant::now();
                        let r = upload(&client, &a.url, &a.fid, "lat.bin", &data).unwrap();
                        lat.push(t.elapsed().as_micros() as u64);
                        assert_eq!(r.status(), StatusCode::CREATED);
                        if n.is_multiple_of(5) {
                            delete(&client, &a.url, &a.fid).unwrap();
                        }
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!(
        "n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        v.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    )
}

#[test]
fn write_latency_during_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let kelp = kelp_server(&dir, &["-master.vacuumIntervalSeconds=0"]);
    let client = http();
    let master = kelp.master_url();
    // Some bulk so that each compaction copies a few MiB.
    for i in 0..160u64 {
        let a = assign(&client, &master, "");
        let r = upload(&client, &a.url, &a.fid, "bulk.bin", &blob(i, 64 * 1024)).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        if i % 2 == 0 {
            let r = delete(&client, &a.url, &a.fid).unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "DELETE {}", a.fid);
        }
    }
    let phase = Duration::from_secs(3);
    let quiet = {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| timed_writes(&master, 4, 1 << 40, &stop));
            std::thread::sleep(phase);
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap()
        })
    };
    let vacuums = AtomicU64::new(0);
    let busy = {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| timed_writes(&master, 4, 2 << 40, &stop));
            let v = s.spawn(|| {
                let client = http();
                while !stop.load(Ordering::Relaxed) {
                    vacuums.fetch_add(
                        vacuum(&client, &master, 0.0).len() as u64,
                        Ordering::Relaxed,
                    );
                }
            });
            std::thread::sleep(phase);
            stop.store(true, Ordering::Relaxed);
            v.join().unwrap();
            h.join().unwrap()
        })
    };
    eprintln!("upload latency without compaction: {}", percentiles(quiet));
    eprintln!(
        "upload latency during compaction ({} volume compactions): {}",
        vacuums.load(Ordering::Relaxed),
        percentiles(busy)
    );
    assert!(vacuums.load(Ordering::Relaxed) > 0, "no compaction ran");
    // How long each commit held writers off, from the server's log.
    let mut blocked: Vec<u64> = kelp
        .log_text()
        .lines()
        .filter(|l| l.contains("compaction committed"))
        .filter_map(|l| {
            let at = l.find("writes_blocked_us=")? + "writes_blocked_us=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if !blocked.is_empty() {
        eprintln!(
            "writes blocked per commit: {}",
            percentiles(std::mem::take(&mut blocked))
        );
    }
}

#[test]
fn kill9_during_vacuum_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("KELP_VACUUM_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["-master.vacuumIntervalSeconds=0"];
    let client = http();
    let mut history = History::default();
    let mut rng = rand::rng();
    let compactions = AtomicU64::new(0);
    for cycle in 0..cycles {
        let mut kelp = kelp_server(&dir, &args);
        assert!(
            compaction_leftovers(&dir).is_empty(),
            "cycle {cycle}: leftovers after open: {:?}",
            compaction_leftovers(&dir)
        );
        let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
        verify_history(&client, &url, &history);
        let stop = AtomicBool::new(false);
        let run_for = Duration::from_millis(rng.random_range(300..1200));
        let master = kelp.master_url();
        let h = std::thread::scope(|s| {
            let load = s.spawn(|| write_load(&master, 4, (cycle as u64 + 1) << 40, &stop));
            let vac = s.spawn(|| {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = c
                        .get(format!("{master}/vol/vacuum?garbageThreshold=0.01"))
                        .send()
                    else {
                        break;
                    };
                    if let Ok(v) = r.json::<Value>() {
                        let n = v["Vacuum"]["Compacted"].as_array().map_or(0, Vec::len);
                        compactions.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            });
            std::thread::sleep(run_for);
            kelp.kill9();
            stop.store(true, Ordering::Relaxed);
            vac.join().unwrap();
            load.join().unwrap()
        });
        eprintln!(
            "cycle {cycle}: {} acked, {} unacked, {} deleted after {run_for:?}; {} compactions so far",
            h.acked.len(),
            h.unacked.len(),
            h.deleted.len(),
            compactions.load(Ordering::Relaxed)
        );
        history.merge(h);
    }
    let kelp = kelp_server(&dir, &args);
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    verify_history(&client, &url, &history);
    assert!(compaction_leftovers(&dir).is_empty());
    assert!(
        history.acked.len() > 100,
        "too little load: {}",
        history.acked.len()
    );
    // The last run compacts whatever garbage is left, and nothing is lost.
    vacuum(&client, &kelp.master_url(), 0.0);
    verify_history(&client, &url, &history);
    assert!(
        compactions.load(Ordering::Relaxed) > 0,
        "no vacuum completed during the crash cycles"
    );
    let a = assign(&client, &kelp.master_url(), "");
    let r = upload(&client, &a.url, &a.fid, "after.bin", b"still writable").unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
