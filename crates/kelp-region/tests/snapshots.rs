//! Region snapshots against a model: random writes, zeroings, flushes,
//! snapshots, deletes, rollbacks, clones (and writes to them), clean
//! reopens and power cuts (`Memory::crash`, which keeps what was synced and
//! a seeded part of what was not, torn at sectors). Checked after every
//! step:
//!
//! * every snapshot reads exactly what the volume held when it was taken;
//! * the live volume reads, per block, its flushed value or one written
//!   since (after a power cut; exactly its value otherwise);
//! * every clone reads exactly its own history, whatever happens to its
//!   origin and the snapshot it came from;
//! * deleting every snapshot leaves no saved version on disk.
//!
//! A failing seed is printed; `KELP_CRASH_SEED=N` replays it alone.

use std::path::Path;

use kelp_region::context::block_crc;
use kelp_region::{BlockContext, Region};
use kelp_storage::{Fault, FaultKind, FaultOp, Memory, for_each_seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ES: u32 = 4;
const EC: u32 = 3;
const TOTAL: u64 = (ES * EC) as u64;
const BS: usize = 512;

#[derive(Clone)]
struct Live {
    flushed: Vec<u8>,
    since: Vec<Vec<u8>>,
}

struct Model {
    live: Vec<Live>,
    snaps: Vec<(String, Vec<Vec<u8>>)>,
    /// Clones: directory, what it holds (always flushed) and the snapshot
    /// it was made from, which the origin keeps while the clone links to it.
    clones: Vec<(String, Vec<Vec<u8>>, String)>,
}

/// Copies every clone of snapshot `name` still linked to it, so that the
/// origin may let the snapshot go.
fn fill_clones_of(mem: &Memory, model: &Model, names: &[&str]) {
    for (to, _, from) in &model.clones {
        if names.contains(&from.as_str()) {
            let mut c = Region::open_in(mem.storage(), Path::new(to.as_str()), false).unwrap();
            c.fill_all().unwrap();
            assert!(c.origin().is_none() && c.linked_extents() == 0);
        }
    }
}

/// Whether a still-linked clone was made from one of `names`.
fn held(mem: &Memory, model: &Model, names: &[&str]) -> bool {
    model.clones.iter().any(|(to, _, from)| {
        names.contains(&from.as_str())
            && Region::open_in(mem.storage(), Path::new(to.as_str()), true)
                .unwrap()
                .origin()
                .is_some()
    })
}

impl Model {
    fn settle(&mut self) {
        for m in &mut self.live {
            if let Some(v) = m.since.pop() {
                m.flushed = v;
            }
            m.since.clear();
        }
    }

    fn image(&self) -> Vec<Vec<u8>> {
        self.live.iter().map(|m| m.flushed.clone()).collect()
    }
}

fn fill(rng: &mut StdRng) -> Vec<u8> {
    let b: u8 = rng.random_range(1..=255);
    (0..BS).map(|i| b.wrapping_add((i / 7) as u8) | 1).collect()
}

fn check_snapshots(r: &Region, model: &Model, seed: u64, step: &str) {
    let names: Vec<&str> = r.snapshots().iter().map(|s| s.name.as_str()).collect();
    let want: Vec<&str> = model.snaps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want, "seed {seed} after {step}: snapshot list");
    for (name, content) in &model.snaps {
        let (ctxs, data) = r.read_snapshot(name, 0, TOTAL).unwrap();
        for b in 0..TOTAL as usize {
            let got = &data[b * BS..(b + 1) * BS];
            assert!(
                ctxs[b].verify(got),
                "seed {seed}: {name} block {b} fails its context"
            );
            assert!(
                got == &content[b][..],
                "seed {seed} after {step}: snapshot {name} block {b} differs from the model"
            );
        }
    }
}

fn check_live(r: &Region, model: &mut Model, seed: u64, crashed: bool) {
    let (ctxs, data) = r.read(0, TOTAL).unwrap();
    for b in 0..TOTAL as usize {
        let got = &data[b * BS..(b + 1) * BS];
        assert!(
            ctxs[b].verify(got),
            "seed {seed}: live block {b} fails its context"
        );
        let m = &mut model.live[b];
        if crashed {
            assert!(
                got == &m.flushed[..] || m.since.iter().any(|v| v == got),
                "seed {seed}: live block {b} after a power cut"
            );
            m.flushed = got.to_vec();
            m.since.clear();
        } else {
            let want = m.since.last().unwrap_or(&m.flushed);
            assert!(got == &want[..], "seed {seed}: live block {b}");
        }
    }
}

fn case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mem = Memory::new();
    let dir = Path::new("/r");
    drop(Region::create_in(mem.storage(), dir, BS as u32, ES, EC, false).unwrap());
    let mut r = Region::open_in(mem.storage(), dir, false).unwrap();
    let mut model = Model {
        live: vec![
            Live {
                flushed: vec![0; BS],
                since: vec![]
            };
            TOTAL as usize
        ],
        snaps: vec![],
        clones: vec![],
    };
    let mut names = 0;
    for _ in 0..40 {
        let step;
        let mut crashed = false;
        match rng.random_range(0..100) {
            0..45 => {
                step = "write";
                let start = rng.random_range(0..TOTAL);
                let n = rng.random_range(1..=3).min(TOTAL - start);
                let blocks: Vec<Vec<u8>> = (0..n).map(|_| fill(&mut rng)).collect();
                let crcs: Vec<u32> = blocks.iter().map(|b| block_crc(b)).collect();
                r.write(start, &blocks.concat(), &crcs).unwrap();
                for (i, b) in blocks.into_iter().enumerate() {
                    model.live[start as usize + i].since.push(b);
                }
            }
            45..52 => {
                step = "zero";
                let start = rng.random_range(0..TOTAL);
                let n = rng.random_range(1..=3).min(TOTAL - start);
                r.write_zeroes(start, n).unwrap();
                for i in 0..n {
                    model.live[(start + i) as usize].since.push(vec![0; BS]);
                }
            }
            52..62 => {
                step = "flush";
                let f = r.flush_mark() + 1;
                r.flush(f, 1).unwrap();
                model.settle();
            }
            62..74 => {
                step = "snapshot";
                names += 1;
                let name = format!("s{names}");
                r.snapshot_take(r.next_snapshot(&name)).unwrap();
                model.settle();
                model.snaps.push((name, model.image()));
            }
            74..80 if !model.snaps.is_empty() => {
                step = "delete";
                let i = rng.random_range(0..model.snaps.len());
                let (name, _) = model.snaps.remove(i);
                if held(&mem, &model, &[&name]) {
                    let e = r.snapshot_delete(&name).unwrap_err();
                    assert!(
                        e.to_string().contains("still reads from it"),
                        "seed {seed}: {e}"
                    );
                    assert!(r.snapshot(&name).is_ok(), "seed {seed}: refused, kept");
                    fill_clones_of(&mem, &model, &[&name]);
                }
                r.snapshot_delete(&name).unwrap();
            }
            80..84 if !model.snaps.is_empty() => {
                step = "rollback";
                let i = rng.random_range(0..model.snaps.len());
                let name = model.snaps[i].0.clone();
                let later = i + 1 < model.snaps.len();
                if later {
                    assert!(
                        r.rollback(&name, false).is_err(),
                        "seed {seed}: later snapshots refuse"
                    );
                }
                let later: Vec<&str> = model.snaps[i + 1..]
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                if held(&mem, &model, &later) {
                    assert!(
                        r.rollback(&name, true).is_err(),
                        "seed {seed}: a later snapshot a clone reads refuses"
                    );
                    fill_clones_of(&mem, &model, &later);
                }
                r.rollback(&name, true).unwrap();
                model.snaps.truncate(i + 1);
                let content = model.snaps[i].1.clone();
                for (m, v) in model.live.iter_mut().zip(content) {
                    m.flushed = v;
                    m.since.clear();
                }
                assert!(
                    !r.changed_since_newest_snapshot(),
                    "seed {seed}: rolled back"
                );
            }
            84..88 if !model.snaps.is_empty() => {
                step = "clone";
                let i = rng.random_range(0..model.snaps.len());
                let (name, content) = model.snaps[i].clone();
                let to = format!("/clone{}", model.clones.len());
                kelp_region::snapshot::clone_region_in(&mem.storage(), dir, Path::new(&to), &name)
                    .unwrap_or_else(|e| panic!("seed {seed}: clone of {name}: {e}"));
                model.clones.push((to, content, name));
            }
            88..90 if !model.clones.is_empty() => {
                step = "clone write";
                let i = rng.random_range(0..model.clones.len());
                let (to, content, _) = &mut model.clones[i];
                let mut c = Region::open_in(mem.storage(), Path::new(to.as_str()), false).unwrap();
                if rng.random_bool(0.3) {
                    // The background copy of one extent.
                    c.fill_next().unwrap();
                }
                let b = rng.random_range(0..TOTAL);
                let d = fill(&mut rng);
                c.write(b, &d, &[block_crc(&d)]).unwrap();
                let f = c.flush_mark() + 1;
                c.flush(f, 1).unwrap();
                content[b as usize] = d;
            }
            90..94 => {
                step = "reopen";
                drop(r);
                r = Region::open_in(mem.storage(), dir, false).unwrap();
            }
            _ => {
                step = "power cut";
                drop(r);
                mem.crash(seed.wrapping_mul(7919).wrapping_add(names));
                r = Region::open_in(mem.storage(), dir, false)
                    .unwrap_or_else(|e| panic!("seed {seed}: reopen after a power cut: {e}"));
                crashed = true;
            }
        }
        if std::env::var_os("KELP_TRACE").is_some() {
            eprintln!(
                "{step}: mark {} snaps {:?}",
                r.flush_mark(),
                r.snapshots()
                    .iter()
                    .map(|s| (&s.name, s.flush))
                    .collect::<Vec<_>>()
            );
        }
        check_snapshots(&r, &model, seed, step);
        check_live(&r, &mut model, seed, crashed);
        for (to, content, _) in &model.clones {
            let c = Region::open_in(mem.storage(), Path::new(to.as_str()), true).unwrap();
            let (_, data) = c.read(0, TOTAL).unwrap();
            for (b, want) in content.iter().enumerate() {
                assert!(
                    data[b * BS..(b + 1) * BS] == want[..],
                    "seed {seed} after {step}: clone {to} block {b}"
                );
            }
        }
    }
    let all: Vec<&str> = model.clones.iter().map(|(_, _, f)| f.as_str()).collect();
    fill_clones_of(&mem, &model, &all);
    for (name, _) in std::mem::take(&mut model.snaps) {
        r.snapshot_delete(&name).unwrap();
    }
    assert_eq!(r.saved_bytes(), 0, "seed {seed}: saved versions left");
}

#[test]
fn snapshots_read_as_the_model_says_through_crashes() {
    for_each_seed(
        "snapshots_read_as_the_model_says_through_crashes",
        400,
        case,
    );
}

fn pattern(b: u64, round: u8) -> Vec<u8> {
    (0..4096).map(|i| (b as u8) ^ round ^ (i as u8)).collect()
}

fn write_blocks(r: &mut Region, blocks: impl Iterator<Item = u64>, round: u8) {
    for b in blocks {
        let d = pattern(b, round);
        r.write(b, &d, &[block_crc(&d)]).unwrap();
    }
}

/// Overwriting a tenth of the volume after a snapshot costs about a tenth
/// more space, and creating the snapshot copies nothing.
#[test]
fn copy_on_write_costs_what_was_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let total = 64 * 16;
    let mut r = Region::create(d.path(), 4096, 64, 16).unwrap();
    write_blocks(&mut r, 0..total, 1);
    r.flush(1, 1).unwrap();
    r.snapshot_take(r.next_snapshot("base")).unwrap();
    assert_eq!(r.saved_bytes(), 0, "a snapshot copies nothing");
    write_blocks(&mut r, (0..total).step_by(10), 2);
    r.flush(r.flush_mark() + 1, 1).unwrap();
    let changed = total.div_ceil(10) * 4096;
    let saved = r.saved_bytes();
    assert!(
        saved >= changed && saved < changed + changed / 10 + 64 * 16 * 32,
        "saved {saved} bytes for {changed} overwritten"
    );
    // The snapshot still reads the first round; the live volume the second.
    let (_, old) = r.read_snapshot("base", 0, 2).unwrap();
    assert_eq!(&old[..4096], &pattern(0, 1)[..]);
    let (_, live) = r.read(0, 1).unwrap();
    assert_eq!(live, pattern(0, 2));
    // Versions: the 10% changed after "base" are born after it.
    r.snapshot_take(r.next_snapshot("next")).unwrap();
    let base = r.snapshot("base").unwrap().flush;
    let next = r.snapshot("next").unwrap().flush;
    let changed: Vec<u64> = r
        .snapshot_versions(next, 0, total)
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_some_and(|v| v.birth > base))
        .map(|(b, _)| b as u64)
        .collect();
    assert_eq!(changed, (0..total).step_by(10).collect::<Vec<_>>());
    // Deleting the snapshot frees what only it held.
    let freed = r.snapshot_delete("base").unwrap();
    assert!(freed >= total.div_ceil(10) * 4096, "freed {freed}");
    assert_eq!(r.saved_bytes(), 0);
    let (_, live) = r.read(0, 1).unwrap();
    assert_eq!(live, pattern(0, 2), "the live volume is untouched");
}

#[test]
fn bad_names_duplicates_and_missing_snapshots_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), 512, 8, 2).unwrap();
    r.snapshot_take(r.next_snapshot("a")).unwrap();
    let e = r.snapshot_take(r.next_snapshot("a")).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    for bad in ["", "-x", "a/b", "a b"] {
        assert!(r.snapshot_take(r.next_snapshot(bad)).is_err(), "{bad:?}");
    }
    let e = r.snapshot_delete("nope").unwrap_err();
    assert!(e.to_string().contains("no snapshot named \"nope\""), "{e}");
    assert!(r.read_snapshot("nope", 0, 1).is_err());
    assert_eq!(r.snapshots().len(), 1);
    // A zero-length region read of a snapshot still checks its range.
    assert!(r.read_snapshot("a", 16, 1).is_err());
    let (ctx, _) = r.read_snapshot("a", 0, 1).unwrap();
    assert_eq!(ctx[0], BlockContext::Unwritten);
}

/// A clone shares nothing it can be told apart by: it reads the snapshot,
/// takes writes of its own, and leaves the origin alone.
#[test]
fn clone_is_a_writable_copy_of_the_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let (a, c) = (d.path().join("a"), d.path().join("c"));
    let mut r = Region::create(&a, 4096, 16, 4).unwrap();
    write_blocks(&mut r, 0..64, 1);
    r.snapshot_take(r.next_snapshot("s1")).unwrap();
    write_blocks(&mut r, 0..8, 2);
    r.snapshot_take(r.next_snapshot("s2")).unwrap();
    write_blocks(&mut r, 0..4, 3);
    r.flush(r.flush_mark() + 1, 1).unwrap();
    drop(r);
    let report = kelp_region::snapshot::clone_region(&a, &c, "s1").unwrap();
    // Shared by reflink where the file system can, else linked.
    assert!(report.reflinked > 0 || report.linked == 4, "{report:?}");
    let mut cl = Region::open(&c, false).unwrap();
    assert!(
        cl.snapshots().is_empty(),
        "a clone starts without snapshots"
    );
    let (_, data) = cl.read(0, 64).unwrap();
    for b in 0..64u64 {
        assert_eq!(&data[b as usize * 4096..][..4096], &pattern(b, 1)[..]);
    }
    assert_ne!(cl.def().uuid, Region::open(&a, true).unwrap().def().uuid);
    write_blocks(&mut cl, 10..12, 9);
    cl.flush(cl.flush_mark() + 1, 1).unwrap();
    let o = Region::open(&a, true).unwrap();
    let (_, data) = o.read(10, 1).unwrap();
    assert_eq!(data, pattern(10, 1), "the origin is untouched");
    let (_, data) = o.read_snapshot("s2", 0, 1).unwrap();
    assert_eq!(data, pattern(0, 2));
    assert!(
        kelp_region::snapshot::clone_region(&a, &c, "s1").is_err(),
        "target exists"
    );
    assert!(kelp_region::snapshot::clone_region(&a, &d.path().join("x"), "nope").is_err());
}

/// An origin region of `extents` × 16 blocks, every block written (round
/// 1), with snapshot s1 of it.
fn origin_with_s1(st: &kelp_storage::Storage, dir: &Path, extents: u32) -> Region {
    let mut r = Region::create_in(st.clone(), dir, 4096, 16, extents, false).unwrap();
    write_blocks(&mut r, 0..16 * extents as u64, 1);
    r.snapshot_take(r.next_snapshot("s1")).unwrap();
    r
}

/// A linked clone (the Memory backend cannot reflink) reads its origin's
/// snapshot while the origin keeps writing over it, copies an extent at
/// its first write, and holds the snapshot until it has copied everything.
#[test]
fn linked_clone_reads_a_running_origin_and_holds_its_snapshot() {
    let mem = Memory::new();
    let st = mem.storage();
    let (a, c) = (Path::new("/a"), Path::new("/c"));
    let mut r = origin_with_s1(&st, a, 4);
    write_blocks(&mut r, 0..8, 2);
    r.snapshot_take(r.next_snapshot("s2")).unwrap();
    let report = kelp_region::snapshot::clone_region_in(&st, a, c, "s1").unwrap();
    assert_eq!((report.linked, report.reflinked), (4, 0));
    let mut cl = Region::open_in(st.clone(), c, false).unwrap();
    assert!(cl.snapshots().is_empty());
    assert_eq!(cl.linked_extents(), 4);
    assert_eq!(cl.origin().map(|o| o.name.as_str()), Some("s1"));
    let expect = |cl: &Region, written: &[u64]| {
        let (ctxs, data) = cl.read(0, 64).unwrap();
        for b in 0..64u64 {
            let got = &data[b as usize * 4096..][..4096];
            assert!(ctxs[b as usize].verify(got), "block {b} fails its context");
            let round = if written.contains(&b) { 9 } else { 1 };
            assert_eq!(got, &pattern(b, round)[..], "clone block {b}");
        }
    };
    expect(&cl, &[]);
    // The origin writes over every block s1 holds, flushing between: s1's
    // versions move to the saved-version files and their slots are
    // reused, under the clone's loaded view.
    for round in [3, 4, 5] {
        write_blocks(&mut r, 0..64, round);
        // Before the flush copies s1's versions out they are only in their
        // slots: a view opened now must find them there.
        expect(&Region::open_in(st.clone(), c, true).unwrap(), &[]);
        r.flush(r.flush_mark() + 1, 1).unwrap();
    }
    expect(&cl, &[]);
    let e = r.snapshot_delete("s1").unwrap_err();
    assert!(e.to_string().contains("still reads from it"), "{e}");
    assert!(
        r.snapshot("s1").is_ok(),
        "the refused delete changed nothing"
    );
    // A write copies its extent first; the rest still reads the origin.
    write_blocks(&mut cl, 10..12, 9);
    cl.flush(cl.flush_mark() + 1, 1).unwrap();
    assert_eq!(cl.linked_extents(), 3);
    expect(&cl, &[10, 11]);
    let (_, d) = r.read(10, 1).unwrap();
    assert_eq!(d, pattern(10, 5), "the origin is untouched");
    drop(cl);
    let mut cl = Region::open_in(st.clone(), c, false).unwrap();
    expect(&cl, &[10, 11]);
    // A background copy staged without the lock, then overtaken by a
    // write that copied the extent itself: the stage is dropped.
    let job = cl.fill_job().unwrap();
    let staged = job.stage().unwrap();
    assert!(st.exists(&staged).unwrap());
    // (Extent 0 was copied by the writes above; the job is extent 1.)
    write_blocks(&mut cl, 16..17, 9);
    assert_eq!(cl.linked_extents(), 2);
    assert!(cl.fill_install(&job, &staged).unwrap(), "two extents left");
    assert!(!st.exists(&staged).unwrap(), "the stale stage is removed");
    assert_eq!(cl.linked_extents(), 2);
    expect(&cl, &[10, 11, 16]);
    // One staged while nothing intervenes is installed.
    let job = cl.fill_job().unwrap();
    let staged = job.stage().unwrap();
    assert!(cl.fill_install(&job, &staged).unwrap());
    assert_eq!(cl.linked_extents(), 1);
    expect(&cl, &[10, 11, 16]);
    cl.fill_all().unwrap();
    assert!(cl.origin().is_none());
    assert!(!st.exists(&c.join("origin.kelp")).unwrap());
    // The clone no longer needs s1, and reads the same once it is gone.
    r.snapshot_delete("s1").unwrap();
    drop(cl);
    let cl = Region::open_in(st.clone(), c, false).unwrap();
    assert_eq!(cl.linked_extents(), 0);
    expect(&cl, &[10, 11, 16]);
}

/// A region whose extents say they are linked but that names no origin is
/// refused at open, not read as zeros.
#[test]
fn a_linked_extent_without_its_origin_is_refused() {
    let mem = Memory::new();
    let st = mem.storage();
    let (a, c) = (Path::new("/a"), Path::new("/c"));
    let _r = origin_with_s1(&st, a, 2);
    kelp_region::snapshot::clone_region_in(&st, a, c, "s1").unwrap();
    st.remove(&c.join("origin.kelp")).unwrap();
    let e = Region::open_in(st.clone(), c, true).err().expect("refused");
    assert!(e.to_string().contains("origin.kelp is missing"), "{e}");
}

/// Repair between a clone's replicas copies a linked extent as the blocks
/// it reads: the image of a linked extent equals that of a copied one, and
/// replacing a linked extent with an image copies it.
#[test]
fn linked_extents_repair_like_copied_ones() {
    let mem = Memory::new();
    let st = mem.storage();
    let a = Path::new("/a");
    let mut r = Region::create_in(st.clone(), a, 4096, 16, 3, false).unwrap();
    write_blocks(&mut r, 0..40, 1);
    r.write_zeroes(3, 2).unwrap();
    r.snapshot_take(r.next_snapshot("s1")).unwrap();
    write_blocks(&mut r, 0..48, 2);
    r.flush(r.flush_mark() + 1, 1).unwrap();
    let (c0, c1) = (Path::new("/c0"), Path::new("/c1"));
    let reports = kelp_region::snapshot::clone_volume_in(
        &st,
        &[a.to_path_buf(), a.to_path_buf()],
        &[c0.to_path_buf(), c1.to_path_buf()],
        "s1",
    )
    .unwrap();
    assert!(reports.iter().all(|r| r.linked == 3));
    let mut filled = Region::open_in(st.clone(), c0, false).unwrap();
    filled.fill_all().unwrap();
    let mut linked = Region::open_in(st.clone(), c1, false).unwrap();
    for eid in 0..3 {
        assert_eq!(
            filled.extent_image(eid).unwrap(),
            linked.extent_image(eid).unwrap(),
            "extent {eid}"
        );
    }
    assert_eq!(filled.versions(), linked.versions());
    let img = filled.extent_image(1).unwrap();
    linked.extent_replace(1, &img).unwrap();
    assert_eq!(linked.linked_extents(), 2);
    assert_eq!(filled.read(0, 48).unwrap(), linked.read(0, 48).unwrap());
    assert_eq!(
        filled.snapshot_versions(u64::MAX, 0, 48).unwrap(),
        linked.snapshot_versions(u64::MAX, 0, 48).unwrap()
    );
}

/// A write after a snapshot only notes the version it replaces; the next
/// flush copies it out. A power cut after that copy was written but before
/// it was synced (here the sync fails, so the flush fails and the header is
/// never stamped) keeps the snapshot whole: the old versions are still in
/// their slots, and the dirty extents' open saves them again.
fn crash_between_copy_out_and_its_sync(seed: u64) {
    let mem = Memory::new();
    let fault = Fault::new(mem.storage());
    let dir = Path::new("/r");
    drop(Region::create_in(mem.storage(), dir, BS as u32, ES, EC, false).unwrap());
    let mut r = Region::open_in(fault.storage(), dir, false).unwrap();
    let old: Vec<Vec<u8>> = (0..TOTAL).map(|b| vec![b as u8 * 2 + 1; BS]).collect();
    let new: Vec<Vec<u8>> = (0..TOTAL).map(|b| vec![b as u8 * 2 + 2; BS]).collect();
    for (b, d) in old.iter().enumerate() {
        r.write(b as u64, d, &[block_crc(d)]).unwrap();
    }
    r.flush(1, 1).unwrap();
    r.snapshot_take(r.next_snapshot("s")).unwrap();
    for (b, d) in new.iter().enumerate() {
        r.write(b as u64, d, &[block_crc(d)]).unwrap();
    }
    // The saved-version files are created, headers only.
    assert_eq!(
        r.saved_bytes(),
        EC as u64 * 32,
        "seed {seed}: a write copies nothing"
    );
    // Pending versions read from their slots meanwhile.
    let (_, data) = r.read_snapshot("s", 0, TOTAL).unwrap();
    assert!(
        data == old.concat(),
        "seed {seed}: snapshot before the flush"
    );
    fault.fail_on(FaultOp::Sync, ".snap", 0, FaultKind::Eio);
    let f = r.flush_mark() + 1;
    assert!(
        r.flush(f, 1).is_err(),
        "seed {seed}: the copy-out's sync fails"
    );
    drop(r);
    mem.crash(seed);
    let r = Region::open_in(mem.storage(), dir, false)
        .unwrap_or_else(|e| panic!("seed {seed}: reopen after a power cut: {e}"));
    let (_, data) = r.read_snapshot("s", 0, TOTAL).unwrap();
    for b in 0..TOTAL as usize {
        assert!(
            data[b * BS..(b + 1) * BS] == old[b][..],
            "seed {seed}: snapshot block {b} after the power cut"
        );
    }
    let (_, live) = r.read(0, TOTAL).unwrap();
    for b in 0..TOTAL as usize {
        let got = &live[b * BS..(b + 1) * BS];
        assert!(
            got == &old[b][..] || got == &new[b][..],
            "seed {seed}: live block {b}"
        );
    }
}

#[test]
fn a_crash_between_the_copy_out_and_its_sync_keeps_the_snapshot() {
    for_each_seed(
        "a_crash_between_the_copy_out_and_its_sync_keeps_the_snapshot",
        100,
        crash_between_copy_out_and_its_sync,
    );
}

/// A read-only view opened beside a writer (a send from a running
/// downstairs) reads a snapshot's versions that the writer has noted but
/// not yet copied out from their slots, and from the saved-version file
/// once a flush has.
#[test]
fn a_view_reads_versions_not_yet_copied_out() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), 4096, 16, 2).unwrap();
    write_blocks(&mut r, 0..32, 1);
    r.flush(1, 1).unwrap();
    r.snapshot_take(r.next_snapshot("s")).unwrap();
    write_blocks(&mut r, 0..32, 2);
    let check = |when: &str| {
        let view = Region::open(d.path(), true).unwrap();
        let (_, data) = view.read_snapshot("s", 0, 32).unwrap();
        for b in 0..32u64 {
            assert!(
                data[b as usize * 4096..][..4096] == pattern(b, 1)[..],
                "{when}: block {b}"
            );
        }
        let (_, live) = view.read(5, 1).unwrap();
        assert_eq!(live, pattern(5, 2), "{when}: live");
    };
    check("pending");
    r.flush(r.flush_mark() + 1, 1).unwrap();
    assert!(r.saved_bytes() >= 32 * 4096);
    check("copied out");
}
