//! kill -9 of `kelp server` at random moments during concurrent writes and
//! deletes, many cycles on one data directory. After every restart each
//! acknowledged blob reads back byte-identical, each acknowledged delete
//! stays deleted, the volumes still take writes, and no unacknowledged blob
//! is ever served partially.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use rand::Rng;

#[test]
fn kill9_during_writes_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("KELP_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let client = http();
    let mut history = History::default();
    let mut rng = rand::rng();

    for cycle in 0..cycles {
        let mut kelp = kelp_server(&dir, &[]);
        let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
        verify_history(&client, &url, &history);

        let stop = AtomicBool::new(false);
        let run_for = Duration::from_millis(rng.random_range(150..700));
        let master = kelp.master_url();
        let h = std::thread::scope(|s| {
            let load = s.spawn(|| write_load(&master, 8, (cycle as u64 + 1) << 40, &stop));
            std::thread::sleep(run_for);
            kelp.kill9();
            stop.store(true, Ordering::Relaxed);
            load.join().unwrap()
        });
        eprintln!(
            "cycle {cycle}: {} acked, {} unacked, {} deleted after {run_for:?}",
            h.acked.len(),
            h.unacked.len(),
            h.deleted.len()
        );
        history.merge(h);
    }

    let kelp = kelp_server(&dir, &[]);
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    verify_history(&client, &url, &history);
    assert!(
        history.acked.len() > 100,
        "the load wrote too little to mean anything: {}",
        history.acked.len()
    );
    // Still writable after all the crashes.
    let a = assign(&client, &kelp.master_url(), "");
    let r = upload(&client, &a.url, &a.fid, "after.bin", b"still writable").unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
}
