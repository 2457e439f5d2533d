//! Injected IO errors (`kelp_storage::Fault` over the in-memory model):
//! a failed fdatasync is never followed by an acknowledgement, a full disk
//! is a clear `NoSpace` error that loses nothing acknowledged, and a
//! rename failing in a compaction commit leaves the volume readable and
//! intact, finished by the next open.

use std::path::Path;

use kelp_needle::{Needle, OpenOptions, Volume, VolumeError, VolumeOptions};
use kelp_storage::{Fault, FaultKind, FaultOp, Memory};

const DIR: &str = "/vols";

fn needle(key: u64, len: usize) -> Needle {
    Needle {
        id: key,
        cookie: key as u32,
        data: (0..len)
            .map(|i| (key as u8).wrapping_add(i as u8))
            .collect(),
        ..Needle::default()
    }
}

fn setup() -> (Memory, Fault, Volume) {
    let mem = Memory::new();
    let fault = Fault::new(mem.storage());
    let v = Volume::create_in(
        fault.storage(),
        Path::new(DIR),
        "",
        1,
        VolumeOptions::default(),
    )
    .unwrap();
    (mem, fault, v)
}

fn reopen(mem: &Memory, seed: u64) -> Volume {
    mem.crash(seed);
    Volume::open_in(
        mem.storage(),
        Path::new(DIR),
        "",
        1,
        &OpenOptions::default(),
    )
    .unwrap()
}

fn assert_reads(v: &Volume, key: u64, len: usize) {
    let got = v.read(key).unwrap_or_else(|e| panic!("key {key}: {e}"));
    assert_eq!(got.data, needle(key, len).data, "key {key}");
}

#[test]
fn failed_fdatasync_is_never_followed_by_an_acknowledgement() {
    let (mem, fault, v) = setup();
    let a = v.write(&mut needle(1, 100)).unwrap();
    v.sync_through(a.seq).unwrap();
    assert!(v.io_failure().is_none());

    let b = v.write(&mut needle(2, 200)).unwrap();
    let c = v.write(&mut needle(3, 300)).unwrap();
    fault.fail_on(FaultOp::Sync, ".dat", 0, FaultKind::Eio);
    assert!(matches!(
        v.sync_through(c.seq),
        Err(VolumeError::SyncFailed(_))
    ));
    assert_eq!(fault.fired(), 1);
    // The fault was one-shot: a retried fdatasync would now succeed, and
    // must not be trusted. Every waiting write fails, later ones are refused.
    assert!(matches!(
        v.sync_through(b.seq),
        Err(VolumeError::SyncFailed(_))
    ));
    assert!(v.sync().is_err());
    assert!(matches!(
        v.write(&mut needle(4, 10)),
        Err(VolumeError::ReadOnly)
    ));
    assert!(matches!(v.delete(1, 1), Err(VolumeError::ReadOnly)));
    assert!(v.is_read_only());
    assert!(v.io_failure().is_some_and(|w| w.contains("fdatasync")));
    assert!(
        matches!(
            v.set_read_only(false, false),
            Err(VolumeError::SyncFailed(_))
        ),
        "only a reopen clears a failed sync"
    );
    assert!(v.checkpoint().is_err());
    assert_reads(&v, 1, 100);

    drop(v);
    for seed in 0..50 {
        let v = reopen(&mem, seed);
        assert_reads(&v, 1, 100);
        assert!(v.io_failure().is_none() && !v.is_read_only());
        v.write(&mut needle(5, 5)).unwrap();
        v.sync().unwrap();
    }
}

#[test]
fn write_eio_poisons_the_volume() {
    let (mem, fault, v) = setup();
    let a = v.write(&mut needle(1, 100)).unwrap();
    let b = v.write(&mut needle(2, 100)).unwrap();
    fault.fail_on(FaultOp::Write, ".idx", 0, FaultKind::Eio);
    assert!(matches!(
        v.write(&mut needle(3, 100)),
        Err(VolumeError::Io(_))
    ));
    assert!(
        v.sync_through(b.seq).is_err(),
        "writes waiting for a sync fail too"
    );
    assert!(v.sync_through(a.seq).is_err());
    assert!(matches!(
        v.write(&mut needle(4, 1)),
        Err(VolumeError::ReadOnly)
    ));
    drop(v);
    let v = reopen(&mem, 7);
    assert!(matches!(v.read(3), Err(VolumeError::NotFound { .. })));
}

#[test]
fn enospc_halfway_is_no_space_and_loses_nothing_acknowledged() {
    for seed in 0..50 {
        let (mem, fault, v) = setup();
        let a = v.write(&mut needle(1, 1000)).unwrap();
        v.sync_through(a.seq).unwrap();
        let b = v.write(&mut needle(2, 2000)).unwrap();
        // The next .dat write stores half its bytes, then the disk is full.
        fault.fail_on(FaultOp::Write, ".dat", 0, FaultKind::NoSpaceHalfway);
        let e = v.write(&mut needle(3, 3000)).unwrap_err();
        assert!(matches!(e, VolumeError::NoSpace(_)), "{e}");
        assert!(v.is_read_only());
        assert!(v.io_failure().is_some_and(|w| w.contains("no space")));
        assert!(matches!(
            v.write(&mut needle(4, 1)),
            Err(VolumeError::ReadOnly)
        ));
        // What was written before still serves, and still syncs: the
        // write waiting on it is acknowledged.
        v.sync_through(b.seq).unwrap();
        assert_reads(&v, 1, 1000);
        assert_reads(&v, 2, 2000);
        assert!(matches!(v.read(3), Err(VolumeError::NotFound { .. })));
        if seed == 0 {
            // Space freed and the volume marked writable: writes go on,
            // over the half-written tail.
            fault.free_space();
            v.set_read_only(false, false).unwrap();
            assert!(v.io_failure().is_none());
            let d = v.write(&mut needle(5, 500)).unwrap();
            v.sync_through(d.seq).unwrap();
        }
        drop(v);
        let v = reopen(&mem, seed);
        assert_reads(&v, 1, 1000);
        assert_reads(&v, 2, 2000);
        assert!(matches!(v.read(3), Err(VolumeError::NotFound { .. })));
        if seed == 0 {
            assert_reads(&v, 5, 500);
        }
    }
}

#[test]
fn enospc_during_compaction_keeps_the_old_volume() {
    let (mem, fault, v) = setup();
    for k in 1..=20 {
        v.write(&mut needle(k, 300)).unwrap();
    }
    for k in 1..=10 {
        v.delete(k, k as u32).unwrap();
    }
    v.sync().unwrap();
    fault.fail_on(FaultOp::Write, ".cpd", 0, FaultKind::NoSpace);
    assert!(matches!(v.compact(None), Err(VolumeError::NoSpace(_))));
    assert!(!v.compaction_pending());
    fault.free_space();
    assert!(
        !v.is_read_only(),
        "a failed compaction leaves the volume writable"
    );
    let w = v.write(&mut needle(30, 30)).unwrap();
    v.sync_through(w.seq).unwrap();
    for k in 11..=20 {
        assert_reads(&v, k, 300);
    }
    drop(v);
    let v = reopen(&mem, 3);
    for k in 11..=20 {
        assert_reads(&v, k, 300);
    }
    assert_reads(&v, 30, 30);
    assert!(
        !mem.paths()
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".cpd"))
    );
}

#[test]
fn rename_failing_in_a_compaction_commit_keeps_the_volume_intact() {
    for seed in 0..30 {
        let (mem, fault, v) = setup();
        for k in 1..=20 {
            v.write(&mut needle(k, 300)).unwrap();
        }
        for k in 1..=10 {
            v.delete(k, k as u32).unwrap();
        }
        v.sync().unwrap();
        v.compact(None).unwrap();
        // Written during the compaction: the commit replays it.
        let w = v.write(&mut needle(40, 40)).unwrap();
        v.sync_through(w.seq).unwrap();
        fault.fail(FaultOp::Rename, seed % 2, FaultKind::Eio);
        assert!(v.commit_compaction().is_err());
        // Past the commit's point of no return: reads go on from the old
        // files, writes wait for the reopen that finishes the commit.
        for k in 11..=20 {
            assert_reads(&v, k, 300);
        }
        assert_reads(&v, 40, 40);
        assert!(matches!(v.read(1), Err(VolumeError::NotFound { .. })));
        assert!(v.write(&mut needle(41, 1)).is_err());
        assert!(v.io_failure().is_some());
        drop(v);
        let v = reopen(&mem, seed);
        for k in 11..=20 {
            assert_reads(&v, k, 300);
        }
        assert_reads(&v, 40, 40);
        assert!(matches!(v.read(1), Err(VolumeError::NotFound { .. })));
        assert_eq!(
            v.superblock().compaction_revision,
            1,
            "seed {seed}: commit finished"
        );
        v.write(&mut needle(41, 1)).unwrap();
    }
}

/// Group commit under a failing fdatasync: many writers share syncs; the
/// third fdatasync fails. Every write whose `sync_through` returned Ok
/// survives a crash; once the failure is seen, no write appended after it
/// is ever acknowledged.
#[test]
fn concurrent_writers_share_a_failed_sync() {
    for seed in 0..10 {
        let (mem, fault, v) = setup();
        let v = std::sync::Arc::new(v);
        fault.fail_on(FaultOp::Sync, ".dat", 2, FaultKind::Eio);
        let acked: Vec<(u64, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let v = v.clone();
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..10u64 {
                            let key = 1 + t * 100 + i;
                            let poisoned = v.io_failure().is_some();
                            let r = v.write(&mut needle(key, 64));
                            if poisoned {
                                assert!(r.is_err(), "a write accepted after a failed fdatasync");
                            }
                            let Ok(w) = r else { break };
                            out.push((key, v.sync_through(w.seq).is_ok()));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(fault.fired(), 1);
        assert!(
            acked.iter().any(|(_, ok)| !ok),
            "some writes waited on the failed sync"
        );
        drop(v);
        let v = reopen(&mem, seed);
        for (key, ok) in acked {
            if ok {
                assert_reads(&v, key, 64);
            }
        }
    }
}

/// The async wait (`Volume::durable`, what the volume server awaits):
/// writes from many threads are acknowledged only once durable, so they
/// all survive a crash; a failed fdatasync fails every waiter; and the
/// syncer thread never keeps the volume from being closed.
#[test]
fn durable_futures_acknowledge_only_synced_writes() {
    let (mem, fault, v) = setup();
    let v = std::sync::Arc::new(v);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let v = v.clone();
            s.spawn(move || {
                for i in 0..25u64 {
                    let key = 1 + t * 100 + i;
                    let out = v.write(&mut needle(key, 300)).unwrap();
                    futures::executor::block_on(v.durable(out.seq)).unwrap();
                }
            });
        }
    });
    let stats = v.sync_stats();
    assert_eq!(stats.synced_seq, 200, "every acknowledged write is synced");
    // Acknowledged, then a write that never was: a crash keeps the former.
    v.write(&mut needle(9999, 10)).unwrap();
    let v = std::sync::Arc::try_unwrap(v)
        .unwrap_or_else(|_| panic!("the syncer thread still holds the volume"));
    drop(v);
    for seed in 0..5 {
        let v = reopen(&mem, seed);
        for t in 0..8u64 {
            for i in 0..25u64 {
                assert_reads(&v, 1 + t * 100 + i, 300);
            }
        }
    }

    let v = std::sync::Arc::new(
        Volume::open_in(
            fault.storage(),
            Path::new(DIR),
            "",
            1,
            &OpenOptions::default(),
        )
        .unwrap(),
    );
    let a = v.write(&mut needle(5000, 10)).unwrap();
    let b = v.write(&mut needle(5001, 10)).unwrap();
    fault.fail_on(FaultOp::Sync, ".dat", 0, FaultKind::Eio);
    assert!(matches!(
        futures::executor::block_on(v.durable(b.seq)),
        Err(VolumeError::SyncFailed(_))
    ));
    assert!(
        matches!(
            futures::executor::block_on(v.durable(a.seq)),
            Err(VolumeError::SyncFailed(_))
        ),
        "a retried fdatasync is not trusted"
    );
}

#[test]
fn a_full_disk_while_zeroing_ahead_is_no_space_and_close_cuts_what_it_left() {
    let (mem, fault, v) = setup();
    let a = v.write(&mut needle(1, 100)).unwrap();
    v.sync_through(a.seq).unwrap();
    // Write until the next append needs more zeroed space; that zeroing
    // stores half of its first piece, then the disk is full.
    let mut key = 2;
    loop {
        let len = mem
            .storage()
            .len_if_exists(Path::new("/vols/1.dat"))
            .unwrap()
            .unwrap();
        if v.info().size + 40_000 > len {
            break;
        }
        v.write(&mut needle(key, 5000)).unwrap();
        key += 1;
    }
    fault.fail_on(FaultOp::Write, ".dat", 0, FaultKind::NoSpaceHalfway);
    // Longer than what is left of the zeroed space, so it zeroes first.
    let e = v.write(&mut needle(key, 45_000)).unwrap_err();
    assert!(matches!(e, VolumeError::NoSpace(_)), "{e}");
    assert!(v.is_read_only());
    fault.free_space();
    v.set_read_only(false, false).unwrap();
    // No more zeroing: the file grows by the appends alone.
    let b = v.write(&mut needle(key + 1, 100)).unwrap();
    v.sync_through(b.seq).unwrap();
    let end = v.info().size;
    // The half-written zeros lie past the last needle; close cuts them.
    assert!(
        mem.storage()
            .len_if_exists(Path::new("/vols/1.dat"))
            .unwrap()
            > Some(end)
    );
    v.close().unwrap();
    assert_eq!(
        mem.storage()
            .len_if_exists(Path::new("/vols/1.dat"))
            .unwrap(),
        Some(end)
    );
    let v = reopen(&mem, 3);
    assert_reads(&v, 1, 100);
    assert_reads(&v, key + 1, 100);
    assert!(matches!(v.read(key), Err(VolumeError::NotFound { .. })));
}
