//! Send and receive between regions (transfer.rs), on the in-memory
//! storage model: full and incremental streams, refusals that change
//! nothing, cut and damaged streams with and without resume, a full disk,
//! and power cuts in the middle of a receive.

use std::path::Path;

use kelp_region::context::block_crc;
use kelp_region::transfer::{
    self, ReceiveFailure, ReceiveOptions, ReceiveState, ResumeToken, SendRequest,
};
use kelp_region::{BlockError, Region};
use kelp_storage::{Fault, FaultKind, FaultOp, Memory, Storage, for_each_seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BS: usize = 512;
const ES: u32 = 16;
const EC: u32 = 4;
const TOTAL: u64 = (ES * EC) as u64;

fn block(rng: &mut StdRng) -> Vec<u8> {
    let b: u8 = rng.random_range(1..=255);
    (0..BS).map(|i| b ^ (i as u8)).collect()
}

fn write_random(r: &mut Region, rng: &mut StdRng, n: usize) {
    for _ in 0..n {
        let b = rng.random_range(0..TOTAL);
        if rng.random_bool(0.15) {
            r.write_zeroes(b, 1).unwrap();
        } else {
            let d = block(rng);
            r.write(b, &d, &[block_crc(&d)]).unwrap();
        }
    }
}

/// A source region with snapshots s1, s2, s3, changes between them and
/// after.
fn source(st: &Storage, seed: u64) -> Region {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = Region::create_in(st.clone(), Path::new("/src"), BS as u32, ES, EC, false).unwrap();
    for name in ["s1", "s2", "s3"] {
        write_random(&mut r, &mut rng, 30);
        r.snapshot_take(r.next_snapshot(name)).unwrap();
    }
    write_random(&mut r, &mut rng, 10);
    r
}

fn targets(st: &Storage) -> Vec<Region> {
    (0..3)
        .map(|i| {
            let d = format!("/t{i}");
            Region::create_in(st.clone(), Path::new(&d), BS as u32, ES, EC, false).unwrap()
        })
        .collect()
}

fn stream(src: &Region, to: &str, from: Option<&str>) -> Vec<u8> {
    let req = SendRequest {
        snapshot: Some(to.into()),
        from: from.map(String::from),
        resume: None,
        compress: to == "s2",
    };
    let mut out = Vec::new();
    transfer::send(src, &req, &mut out, |_| {}).unwrap();
    out
}

#[allow(clippy::result_large_err)]
fn recv(
    ts: &mut [Region],
    bytes: &[u8],
    opts: ReceiveOptions,
) -> Result<transfer::ReceiveReport, ReceiveFailure> {
    transfer::receive(ts, bytes, opts, |_| {})
}

/// The full stream of s1 into fresh targets.
fn receive_s1(src: &Region, ts: &mut [Region]) {
    recv(ts, &stream(src, "s1", None), ReceiveOptions::default()).unwrap();
}

/// Every target holds `name` with exactly the source's content.
fn same_snapshot(src: &Region, ts: &[Region], name: &str) {
    let (sc, sd) = src.read_snapshot(name, 0, TOTAL).unwrap();
    for t in ts {
        let (tc, td) = t.read_snapshot(name, 0, TOTAL).unwrap();
        assert!(sd == td, "{name} differs on {}", t.dir().display());
        for (i, (a, b)) in sc.iter().zip(&tc).enumerate() {
            assert!(
                b.verify(&td[i * BS..(i + 1) * BS]),
                "block {i} fails its context"
            );
            let zero =
                |c: &kelp_region::BlockContext| !matches!(c, kelp_region::BlockContext::Data(_));
            assert!(a == b || (zero(a) && zero(b)));
        }
        assert_eq!(
            t.snapshot(name).unwrap().guid,
            src.snapshot(name).unwrap().guid,
            "a received snapshot keeps its GUID"
        );
    }
}

/// What a target looks like, to check that a refused receive changed
/// nothing.
fn state(ts: &[Region]) -> Vec<(Vec<String>, Vec<u8>)> {
    ts.iter()
        .map(|t| {
            let names = t.snapshots().iter().map(|s| s.name.clone()).collect();
            let (_, d) = t.read(0, TOTAL).unwrap();
            (names, d)
        })
        .collect()
}

#[test]
fn full_and_incremental_streams_rebuild_every_snapshot() {
    let st = Storage::new(Memory::new());
    let src = source(&st, 1);
    let mut ts = targets(&st);
    let full = stream(&src, "s1", None);
    let r = recv(&mut ts, &full, ReceiveOptions::default()).unwrap();
    assert!(r.blocks_written > 0);
    same_snapshot(&src, &ts, "s1");
    // Out of order: s2→s3 before s1→s2.
    let before = state(&ts);
    let e = recv(
        &mut ts,
        &stream(&src, "s3", Some("s2")),
        ReceiveOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e}");
    assert_eq!(state(&ts), before, "a refused receive changes nothing");
    let inc = stream(&src, "s2", Some("s1"));
    let r = recv(&mut ts, &inc, ReceiveOptions::default()).unwrap();
    assert!(
        r.blocks_written + r.blocks_zeroed <= 30,
        "only what changed: {r:?}"
    );
    same_snapshot(&src, &ts, "s2");
    // The same stream twice: the snapshot is already there.
    let before = state(&ts);
    let e = recv(&mut ts, &inc, ReceiveOptions::default()).unwrap_err();
    assert!(e.to_string().contains("already"), "{e}");
    assert_eq!(state(&ts), before);
    // A target written after its newest snapshot refuses, unless forced.
    let d = vec![9u8; BS];
    for t in ts.iter_mut() {
        t.write(3, &d, &[block_crc(&d)]).unwrap();
    }
    let inc3 = stream(&src, "s3", Some("s2"));
    let e = recv(&mut ts, &inc3, ReceiveOptions::default()).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    let forced = ReceiveOptions {
        force: true,
        ..Default::default()
    };
    recv(&mut ts, &inc3, forced).unwrap();
    for name in ["s1", "s2", "s3"] {
        same_snapshot(&src, &ts, name);
    }
    // An incremental onto a different volume with a snapshot of the same
    // name is refused by GUID.
    let st2 = Storage::new(Memory::new());
    let other = source(&st2, 2);
    let mut ts2 = targets(&st2);
    receive_s1(&other, &mut ts2);
    let before = state(&ts2);
    let e = recv(&mut ts2, &inc, ReceiveOptions::default()).unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e}");
    assert_eq!(state(&ts2), before);
}

#[test]
fn another_geometry_and_a_non_empty_target_are_refused() {
    let st = Storage::new(Memory::new());
    let src = source(&st, 3);
    let full = stream(&src, "s1", None);
    let mut small =
        vec![Region::create_in(st.clone(), Path::new("/g"), BS as u32, ES, EC - 1, false).unwrap()];
    let e = recv(&mut small, &full, ReceiveOptions::default()).unwrap_err();
    assert!(e.to_string().contains("blocks of"), "{e}");
    let mut ts = targets(&st);
    let d = vec![1u8; BS];
    ts[0].write(0, &d, &[block_crc(&d)]).unwrap();
    let e = recv(&mut ts[..1], &full, ReceiveOptions::default()).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let mut bad = full.clone();
    bad[0] = b'X';
    let e = recv(&mut ts[1..], &bad, ReceiveOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a Kelp send stream"), "{e}");
}

/// A stream cut or damaged anywhere: without --resumable the target is
/// exactly as it was; with it, the token resumes the receive to the same
/// result.
fn damaged_case(seed: u64) {
    let st = Storage::new(Memory::new());
    let src = source(&st, 100 + seed % 7);
    let mut ts = targets(&st);
    receive_s1(&src, &mut ts);
    let inc = stream(&src, "s2", Some("s1"));
    let mut rng = StdRng::seed_from_u64(seed);
    let at = rng.random_range(0..inc.len());
    let mut bad = inc.clone();
    let flip = rng.random_bool(0.5);
    if flip {
        bad[at] ^= 1 << rng.random_range(0..8);
    } else {
        bad.truncate(at);
    }
    let before = state(&ts);
    let e = recv(&mut ts, &bad, ReceiveOptions::default()).unwrap_err();
    assert!(e.resume.is_none());
    assert_eq!(
        state(&ts),
        before,
        "seed {seed}: a refused stream changed the target ({e})"
    );
    for t in &ts {
        assert!(
            ReceiveState::load(t).unwrap().is_none(),
            "seed {seed}: no state left"
        );
    }
    // Resumable: keep what came, resume from the token.
    let opts = ReceiveOptions {
        resumable: true,
        ..Default::default()
    };
    match recv(&mut ts, &bad, opts) {
        Ok(_) => panic!("seed {seed}: a damaged stream was accepted"),
        Err(f) => {
            // A header error changes nothing and leaves nothing to resume.
            if let Some(token) = f.resume {
                let t = ResumeToken::decode(&token.encode()).unwrap();
                assert_eq!(t, token);
                let req = SendRequest {
                    resume: Some(t),
                    ..Default::default()
                };
                let mut rest = Vec::new();
                transfer::send(&src, &req, &mut rest, |_| {}).unwrap();
                let r = recv(&mut ts, &rest, opts).unwrap();
                assert_eq!(r.resumed_from, Some(t.next_block));
            } else {
                assert_eq!(state(&ts), before, "seed {seed}");
                recv(&mut ts, &inc, opts).unwrap();
            }
        }
    }
    same_snapshot(&src, &ts, "s2");
    same_snapshot(&src, &ts, "s1");
}

#[test]
fn cut_or_flipped_streams_change_nothing_or_resume() {
    for_each_seed(
        "cut_or_flipped_streams_change_nothing_or_resume",
        60,
        damaged_case,
    );
}

#[test]
fn a_token_cannot_send_another_snapshot() {
    let st = Storage::new(Memory::new());
    let src = source(&st, 5);
    let s2 = src.snapshot("s2").unwrap().guid;
    let token = ResumeToken {
        from: Some(src.snapshot("s1").unwrap().guid),
        to: s2,
        next_block: 7,
    };
    let mut out = Vec::new();
    let req = SendRequest {
        snapshot: Some("s3".into()),
        resume: Some(token),
        ..Default::default()
    };
    let e = transfer::send(&src, &req, &mut out, |_| {}).unwrap_err();
    assert!(e.to_string().contains("another snapshot"), "{e}");
    let st2 = Storage::new(Memory::new());
    let other = source(&st2, 6);
    let req = SendRequest {
        resume: Some(token),
        ..Default::default()
    };
    let e = transfer::send(&other, &req, &mut out, |_| {}).unwrap_err();
    assert!(e.to_string().contains("another volume"), "{e}");
    let mut text = token.encode();
    text.replace_range(10..11, if &text[10..11] == "0" { "1" } else { "0" });
    assert!(ResumeToken::decode(&text).is_err());
    assert!(ResumeToken::decode("kelp1-zz").is_err());
}

#[test]
fn a_full_disk_during_receive_leaves_the_target_as_it_was() {
    let mem = Memory::new();
    let src = source(&Storage::new(Memory::new()), 8);
    let fault = Fault::new(mem.storage());
    let st = fault.storage();
    let mut ts = targets(&st);
    receive_s1(&src, &mut ts);
    let before = state(&ts);
    fault.fail_on(FaultOp::Write, ".ext", 5, FaultKind::NoSpace);
    let e = recv(
        &mut ts,
        &stream(&src, "s2", Some("s1")),
        ReceiveOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e.error, BlockError::NoSpace(_)), "{e}");
    // Rolling back needs space too: the error says to abort once there is.
    assert!(e.to_string().contains("--abort"), "{e}");
    fault.free_space();
    for t in ts.iter_mut() {
        t.reopen().unwrap();
    }
    assert_eq!(
        ts.iter().map(|t| t.snapshots().len()).collect::<Vec<_>>(),
        vec![1, 1, 1],
        "the snapshots never changed"
    );
    transfer::abort_regions(&mut ts).unwrap();
    assert_eq!(state(&ts), before);
    recv(
        &mut ts,
        &stream(&src, "s2", Some("s1")),
        ReceiveOptions::default(),
    )
    .unwrap();
    same_snapshot(&src, &ts, "s2");
}

/// Power cuts at random points of a receive: the earlier snapshots read
/// back exactly, and the receive resumes (or restarts) to the same result.
fn crash_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mem = Memory::new();
    let src = source(&Storage::new(Memory::new()), 200 + seed % 5);
    drop(targets(&mem.storage()));
    let open = |st: &Storage| -> Vec<Region> {
        (0..3)
            .map(|i| Region::open_in(st.clone(), Path::new(&format!("/t{i}")), false).unwrap())
            .collect()
    };
    let mut ts = open(&mem.storage());
    receive_s1(&src, &mut ts);
    drop(ts);
    let fault = Fault::new(mem.storage());
    let op = [FaultOp::Write, FaultOp::Sync, FaultOp::Rename][rng.random_range(0..3)];
    fault.fail(op, rng.random_range(0..40), FaultKind::Eio);
    let inc = stream(&src, "s2", Some("s1"));
    let opts = ReceiveOptions {
        resumable: true,
        ..Default::default()
    };
    if let Ok(mut ts) = (0..3)
        .map(|i| Region::open_in(fault.storage(), Path::new(&format!("/t{i}")), false))
        .collect::<Result<Vec<_>, _>>()
    {
        // The process dies at the fault: whatever it got to.
        let _ = recv(&mut ts, &inc, opts);
    }
    mem.crash(seed);
    let mut ts = open(&mem.storage());
    same_snapshot(&src, &ts, "s1");
    transfer::settle_pending(&mut ts).unwrap();
    if ts.iter().any(|t| t.snapshot("s2").is_ok()) {
        same_snapshot(&src, &ts, "s2");
        return;
    }
    let pending = ReceiveState::load(&ts[0]).unwrap();
    let bytes = match pending {
        Some(p) => {
            let req = SendRequest {
                resume: Some(p.token()),
                ..Default::default()
            };
            let mut rest = Vec::new();
            transfer::send(&src, &req, &mut rest, |_| {}).unwrap();
            rest
        }
        None => inc,
    };
    // Replicas may have stopped at different points; abort and redo when
    // they disagree.
    match recv(&mut ts, &bytes, opts) {
        Ok(_) => {}
        Err(_) => {
            transfer::abort_regions(&mut ts).unwrap();
            recv(&mut ts, &stream(&src, "s2", Some("s1")), opts)
                .unwrap_or_else(|e| panic!("seed {seed}: redo after abort: {e}"));
        }
    }
    same_snapshot(&src, &ts, "s1");
    same_snapshot(&src, &ts, "s2");
}

#[test]
fn power_cuts_during_receive_keep_snapshots_and_resume() {
    for_each_seed(
        "power_cuts_during_receive_keep_snapshots_and_resume",
        150,
        crash_case,
    );
}

/// A send from a read-only view of a region that keeps being written (as
/// a downstairs would): blocks of the snapshot move to the saved-version
/// file and their slots are reused under the send, which reads them again
/// from a fresh view and still sends exactly the snapshot.
#[test]
fn a_send_survives_blocks_moving_under_it() {
    let st = Storage::new(Memory::new());
    let mut live = source(&st, 11);
    let view = Region::open_in(st.clone(), Path::new("/src"), true).unwrap();
    let want = {
        let mut ts = targets(&Storage::new(Memory::new()));
        let full = stream(&view, "s3", None);
        recv(&mut ts, &full, ReceiveOptions::default()).unwrap();
        ts.remove(0).read_snapshot("s3", 0, TOTAL).unwrap().1
    };
    // Overwrite every block three times with flushes between: every slot
    // the view knows is reused.
    for round in 0..3u8 {
        for b in 0..TOTAL {
            let d = vec![round ^ b as u8 ^ 0x33; BS];
            live.write(b, &d, &[block_crc(&d)]).unwrap();
        }
        let f = live.flush_mark() + 1;
        live.flush(f, 1).unwrap();
    }
    let mut ts = targets(&Storage::new(Memory::new()));
    let full = stream(&view, "s3", None);
    recv(&mut ts, &full, ReceiveOptions::default()).unwrap();
    assert!(ts[0].read_snapshot("s3", 0, TOTAL).unwrap().1 == want);
}
