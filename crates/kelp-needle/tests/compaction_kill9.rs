//! kill -9 during compaction, for real: a child process (this test binary
//! re-run with `CHILD_DIR` set, filtered to `child_process_helper`) writes
//! and deletes with group commit on one thread while another compacts and
//! commits in a loop; the parent SIGKILLs it at a random moment, reopens
//! the volume and checks it against the child's journal, many times over
//! one directory.
//!
//! The journal is appended with one `write` per line after the operation
//! was acknowledged (synced), so a line survives a kill -9 exactly when
//! the acknowledgement happened: `W k` (write of key k acknowledged),
//! `d k` (delete of k about to be issued), `D k` (delete acknowledged),
//! `c`/`m`/`M` (compact started / commit started / commit done).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions as FsOpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kelp_needle::*;
use parking_lot::Mutex;
use rand::Rng;

const CHILD_DIR: &str = "KELP_COMPACT_CHILD_DIR";
const CHILD_CYCLE: &str = "KELP_COMPACT_CHILD_CYCLE";
const COOKIE: u32 = 0xabcd_0123;

fn data_for(key: u64) -> Vec<u8> {
    let len = (key.wrapping_mul(2654435761) % 3000 + 1) as usize;
    (0..len)
        .map(|i| (i as u64 ^ key.rotate_left(7)) as u8)
        .collect()
}

fn journal(dir: &Path) -> std::path::PathBuf {
    dir.join("journal.log")
}

/// Runs only in the child: never returns normally (the parent kills it; a
/// safety timeout exits after 60 s).
#[test]
fn child_process_helper() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let cycle: u64 = std::env::var(CHILD_CYCLE)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v = if dir.join("1.dat").exists() {
        Volume::open(dir, "", 1, &OpenOptions::default()).expect("child: open")
    } else {
        Volume::create(dir, "", 1, VolumeOptions::default()).expect("child: create")
    };
    let j = Mutex::new(
        FsOpenOptions::new()
            .create(true)
            .append(true)
            .open(journal(dir))
            .unwrap(),
    );
    let log = |line: String| {
        let mut f = j.lock();
        f.write_all(line.as_bytes()).unwrap();
    };
    log(format!("S {cycle}\n"));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = rand::rng();
            let mut acked: Vec<u64> = Vec::new();
            let mut key = (cycle + 1) << 32;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                let mut seq = 0;
                for _ in 0..4 {
                    key += 1;
                    let mut n = Needle {
                        id: key,
                        cookie: COOKIE,
                        data: data_for(key).into(),
                        ..Needle::default()
                    };
                    seq = v.write(&mut n).expect("child: write").seq;
                    batch.push(key);
                }
                v.sync_through(seq).expect("child: sync");
                for k in &batch {
                    log(format!("W {k}\n"));
                }
                acked.extend(batch);
                if acked.len() > 8 && rng.random_bool(0.6) {
                    let k = acked.swap_remove(rng.random_range(0..acked.len()));
                    log(format!("d {k}\n"));
                    let out = v.delete(k, COOKIE).expect("child: delete");
                    v.sync_through(out.seq).expect("child: sync");
                    log(format!("D {k}\n"));
                }
            }
        });
        s.spawn(|| {
            let mut rng = rand::rng();
            loop {
                log("c\n".to_string());
                v.compact(None).expect("child: compact");
                std::thread::sleep(Duration::from_millis(rng.random_range(0..10)));
                log("m\n".to_string());
                v.commit_compaction().expect("child: commit");
                log("M\n".to_string());
                std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
            }
        });
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("child: not killed within 60 s");
        std::process::exit(3);
    });
}

#[derive(Default)]
struct Journal {
    acked: BTreeSet<u64>,
    deleted: BTreeSet<u64>,
    delete_intent: BTreeSet<u64>,
    /// Last compaction marker of the last cycle.
    phase: char,
    starts: usize,
}

fn read_journal(dir: &Path) -> Journal {
    let text = fs::read_to_string(journal(dir)).unwrap_or_default();
    let mut j = Journal::default();
    for line in text.lines() {
        let mut it = line.split(' ');
        let (Some(op), arg) = (it.next(), it.next().and_then(|a| a.parse::<u64>().ok())) else {
            continue;
        };
        match (op, arg) {
            ("W", Some(k)) => {
                j.acked.insert(k);
            }
            ("d", Some(k)) => {
                j.delete_intent.insert(k);
            }
            ("D", Some(k)) => {
                j.deleted.insert(k);
            }
            ("S", _) => {
                j.starts += 1;
                j.phase = 'S';
            }
            ("c", _) | ("m", _) | ("M", _) => j.phase = op.chars().next().unwrap_or('?'),
            _ => {}
        }
    }
    j
}

fn verify(dir: &Path, what: &str) -> (usize, u16) {
    let j = read_journal(dir);
    let v = Volume::open(dir, "", 1, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert!(!v.is_read_only(), "{what}: read-only after recovery");
    for ext in ["cpd", "cpx", "cpc"] {
        assert!(
            !dir.join(format!("1.{ext}")).exists(),
            "{what}: .{ext} left"
        );
    }
    for k in &j.acked {
        if j.delete_intent.contains(k) {
            continue;
        }
        let n = v
            .read(*k)
            .unwrap_or_else(|e| panic!("{what}: acknowledged key {k:x} lost: {e}"));
        assert_eq!(n.data, data_for(*k), "{what}: key {k:x} has wrong bytes");
    }
    for k in &j.deleted {
        assert!(
            matches!(v.read(*k), Err(VolumeError::NotFound { .. })),
            "{what}: deleted key {k:x} came back"
        );
    }
    // Whatever is there (acknowledged or not) is intact.
    let mut seen = BTreeMap::new();
    for (k, _) in v.entries() {
        let n = v
            .read(k)
            .unwrap_or_else(|e| panic!("{what}: key {k:x} unreadable: {e}"));
        assert_eq!(n.data, data_for(k), "{what}: key {k:x} has wrong bytes");
        seen.insert(k, ());
    }
    let rev = v.info().compaction_revision;
    (seen.len(), rev)
}

#[test]
fn kill9_during_compaction_loop() {
    let cycles: usize = std::env::var("KELP_COMPACT_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut phases = BTreeMap::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let log_path = tmp.path().join(format!("child-{cycle}.log"));
        let mut child = Command::new(&exe)
            .args([
                "child_process_helper",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir)
            .env(CHILD_CYCLE, cycle.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn child");
        let t0 = Instant::now();
        while read_journal(&dir).starts <= cycle {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "cycle {cycle}: child exited early ({st}): {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "child never started"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "cycle {cycle}: child died on its own ({st}): {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let phase = read_journal(&dir).phase;
        *phases.entry(phase).or_insert(0) += 1;
        let (live, rev) = verify(&dir, &format!("cycle {cycle} (killed in phase {phase})"));
        eprintln!("cycle {cycle}: killed in phase {phase}, {live} live needles, revision {rev}");
    }
    let j = read_journal(&dir);
    eprintln!(
        "{cycles} kills in {:?}; phases at kill (c=compacting, m=committing, M=between): {phases:?}; {} acked writes, {} acked deletes",
        started.elapsed(),
        j.acked.len(),
        j.deleted.len()
    );
    assert!(j.acked.len() > 100, "too little work: {}", j.acked.len());
    let (_, rev) = verify(&dir, "final");
    assert!(rev > 0, "no compaction ever committed");
}
