//! Compaction: reclaims space, keeps every live needle byte-identical,
//! keeps deletes deleted, runs alongside writers and readers, and survives
//! a crash at every step of compact and commit (fault injection) and
//! damaged `.cpd`/`.cpx`/`.cpc` files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kelp_needle::compaction::FaultPoint;
use kelp_needle::*;

const COOKIE: u32 = 0x5eed;

fn data_for(key: u64, generation: u64) -> Vec<u8> {
    let len = (key * 37 + generation * 11) % 700 + 10;
    (0..len)
        .map(|i| (i * 31 + key * 7 + generation) as u8)
        .collect()
}

fn needle(key: u64, generation: u64) -> Needle {
    Needle {
        id: key,
        cookie: COOKIE,
        data: data_for(key, generation).into(),
        name: format!("k{key}").into_bytes(),
        mime: b"application/x-test".to_vec(),
        ..Needle::default()
    }
}

/// What must be true of a volume: live keys with their data, deleted keys.
#[derive(Debug, Clone, Default)]
struct Expect {
    live: BTreeMap<u64, Vec<u8>>,
    deleted: BTreeSet<u64>,
}

/// Writes and deletes are recorded as acknowledged; callers `sync` (or
/// `sync_through`) before anything that simulates a crash.
impl Expect {
    fn write(&mut self, v: &Volume, key: u64, generation: u64) -> u64 {
        let mut n = needle(key, generation);
        let out = v.write(&mut n).unwrap();
        self.live.insert(key, n.data.to_vec());
        self.deleted.remove(&key);
        out.seq
    }

    fn delete(&mut self, v: &Volume, key: u64) -> u64 {
        let out = v.delete(key, COOKIE).unwrap();
        self.live.remove(&key);
        self.deleted.insert(key);
        out.seq
    }

    fn check(&self, v: &Volume, what: &str) {
        for (k, data) in &self.live {
            let n = v
                .read(*k)
                .unwrap_or_else(|e| panic!("{what}: live key {k}: {e}"));
            assert_eq!(&n.data, data, "{what}: key {k} data");
            assert_eq!(n.name, format!("k{k}").into_bytes(), "{what}: key {k} name");
            assert_eq!(n.cookie, COOKIE, "{what}: key {k} cookie");
        }
        for k in &self.deleted {
            assert!(
                matches!(v.read(*k), Err(VolumeError::NotFound { .. })),
                "{what}: deleted key {k} came back"
            );
        }
        assert_eq!(v.info().live_count, self.live.len() as u64, "{what}");
    }
}

fn create(dir: &Path, width: OffsetWidth) -> Volume {
    Volume::create(
        dir,
        "",
        1,
        VolumeOptions {
            offset_width: width,
            ..VolumeOptions::default()
        },
    )
    .unwrap()
}

fn open(dir: &Path) -> Volume {
    Volume::open(dir, "", 1, &OpenOptions::default()).unwrap()
}

fn len(dir: &Path, ext: &str) -> u64 {
    fs::metadata(dir.join(format!("1.{ext}"))).map_or(0, |m| m.len())
}

fn exists(dir: &Path, ext: &str) -> bool {
    dir.join(format!("1.{ext}")).exists()
}

fn disk_revision(dir: &Path) -> u16 {
    let b = fs::read(dir.join("1.dat")).unwrap();
    u16::from_be_bytes([b[4], b[5]])
}

/// A volume with 60 needles, some overwritten, a third deleted, all synced.
fn populate(v: &Volume) -> Expect {
    let mut e = Expect::default();
    for k in 1..=60 {
        e.write(v, k, 0);
    }
    for k in (1..=60).step_by(7) {
        e.write(v, k, 1);
    }
    for k in (2..=60).step_by(3) {
        e.delete(v, k);
    }
    v.sync().unwrap();
    e
}

/// Writes, overwrites and deletes made after `compact` started.
fn during(v: &Volume, e: &mut Expect) {
    for k in 61..=75 {
        e.write(v, k, 0);
    }
    e.write(v, 1, 2); // overwrite a key copied by compaction
    e.delete(v, 4); // delete a key copied by compaction
    e.delete(v, 62); // delete a key written during compaction
    e.write(v, 66, 1);
    v.sync().unwrap();
}

fn assert_no_leftovers(dir: &Path, what: &str) {
    for ext in ["cpd", "cpx", "cpc"] {
        assert!(!exists(dir, ext), "{what}: .{ext} left behind");
    }
}

#[test]
fn reclaims_space_and_keeps_live_needles() {
    for width in [OffsetWidth::Five, OffsetWidth::Four] {
        let d = tempfile::tempdir().unwrap();
        let v = create(d.path(), width);
        let mut e = Expect::default();
        for k in 1..=300 {
            e.write(&v, k, 0);
        }
        for k in (1..=300).step_by(5) {
            e.write(&v, k, 1);
        }
        for k in 1..=300 {
            if k % 4 != 0 {
                e.delete(&v, k);
            }
        }
        let ratio = v.garbage_ratio();
        assert!(ratio > 0.6, "garbage ratio {ratio}");
        let before: BTreeMap<u64, Needle> =
            e.live.keys().map(|k| (*k, v.read(*k).unwrap())).collect();
        let (dat_before, idx_before) = (len(d.path(), "dat"), len(d.path(), "idx"));

        let r = v.compact(None).unwrap();
        assert_eq!(r.live_needles, e.live.len() as u64);
        assert_eq!((r.dropped_corrupt, r.dropped_expired), (0, 0));
        assert!(exists(d.path(), "cpd") && exists(d.path(), "cpx"));
        e.check(&v, "between compact and commit");
        let c = v.commit_compaction().unwrap();
        assert_eq!(c.compaction_revision, 1);
        assert_no_leftovers(d.path(), "after commit");

        let (dat_after, idx_after) = (len(d.path(), "dat"), len(d.path(), "idx"));
        eprintln!("{width:?}: .dat {dat_before} -> {dat_after}, .idx {idx_before} -> {idx_after}");
        assert!(
            dat_after * 3 < dat_before,
            ".dat {dat_before} -> {dat_after}"
        );
        assert_eq!(idx_after, e.live.len() as u64 * width.entry_size() as u64);
        assert_eq!(v.info().size, dat_after);
        assert_eq!(v.garbage_ratio(), 0.0);
        assert_eq!(disk_revision(d.path()), 1);
        assert_eq!(v.info().compaction_revision, 1);
        e.check(&v, "after commit");
        // Byte-identical, AppendAtNs included.
        for (k, n) in &before {
            assert_eq!(&v.read(*k).unwrap(), n, "key {k}");
        }
        // .idx sorted by key.
        let idx = fs::read(d.path().join("1.idx")).unwrap();
        let keys: Vec<u64> = idx::decode_all(&idx, width)
            .unwrap()
            .map(|x| x.key)
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));

        // Writable, and it all survives a clean reopen and a crash reopen.
        e.write(&v, 1000, 0);
        e.delete(&v, 4);
        v.close().unwrap();
        let v = open(d.path());
        e.check(&v, "reopen after close");
        e.write(&v, 1001, 0);
        v.sync().unwrap();
        drop(v);
        let v = open(d.path());
        e.check(&v, "reopen after crash");
        // A second compaction works and bumps the revision again.
        v.compact(None).unwrap();
        v.commit_compaction().unwrap();
        assert_eq!(disk_revision(d.path()), 2);
        e.check(&v, "second compaction");
    }
}

#[test]
fn cleanup_and_misuse() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    let e = populate(&v);
    assert!(matches!(
        v.commit_compaction(),
        Err(VolumeError::Compaction(_))
    ));
    v.compact(None).unwrap();
    assert!(v.compaction_pending());
    v.cleanup_compaction().unwrap();
    assert!(!v.compaction_pending());
    assert_no_leftovers(d.path(), "after cleanup");
    assert!(v.commit_compaction().is_err());
    e.check(&v, "after cleanup");
    // Compacting twice keeps only the second result.
    v.compact(None).unwrap();
    v.compact(None).unwrap();
    v.commit_compaction().unwrap();
    assert_eq!(disk_revision(d.path()), 1);
    e.check(&v, "after recompact");
    // An empty volume compacts to just a superblock.
    let d2 = tempfile::tempdir().unwrap();
    let v2 = create(d2.path(), OffsetWidth::Four);
    v2.compact(None).unwrap();
    v2.commit_compaction().unwrap();
    assert_eq!(len(d2.path(), "dat"), 8);
    assert_eq!(len(d2.path(), "idx"), 0);
    drop(v2);
    open(d2.path());
}

#[test]
fn corrupt_needles_are_dropped_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    let mut e = populate(&v);
    // Flip a data byte of key 5's needle.
    let at = v.lookup(6).unwrap().offset + 25;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.path().join("1.dat"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    assert!(matches!(v.read(6), Err(VolumeError::Corrupt { .. })));
    let r = v.compact(None).unwrap();
    assert_eq!(r.dropped_corrupt, 1);
    v.commit_compaction().unwrap();
    e.live.remove(&6);
    e.check(&v, "after dropping the corrupt needle");
    assert!(matches!(v.read(6), Err(VolumeError::NotFound { .. })));
}

#[test]
fn writes_and_reads_concurrent_with_compaction() {
    let d = tempfile::tempdir().unwrap();
    let v = Arc::new(create(d.path(), OffsetWidth::Five));
    let mut base = Expect::default();
    for k in 1..=400 {
        base.write(&v, k, 0);
    }
    for k in (1..=400).step_by(2) {
        base.delete(&v, k);
    }
    v.sync().unwrap();
    let stop = AtomicBool::new(false);
    let stable: Vec<(u64, Vec<u8>)> = base
        .live
        .iter()
        .filter(|(k, _)| *k % 4 == 0)
        .map(|(k, d)| (*k, d.clone()))
        .collect();
    let results = std::thread::scope(|s| {
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let v = v.clone();
                let stop = &stop;
                s.spawn(move || {
                    let mut e = Expect::default();
                    let mut k = 10_000 + w * 100_000;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let mut seq = e.write(&v, k, w);
                        if k % 3 == 0 && e.live.contains_key(&(k - 1)) {
                            seq = e.delete(&v, k - 1);
                        }
                        // Keys 2 mod 4 of the base set belong to writer 0.
                        if w == 0 && k % 5 == 0 {
                            seq = e.write(&v, 2 + 4 * ((k / 5) % 100), 9);
                        }
                        v.sync_through(seq).unwrap();
                    }
                    e
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let v = v.clone();
                let stop = &stop;
                let stable = &stable;
                s.spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for (k, data) in stable {
                            let n = v
                                .read(*k)
                                .unwrap_or_else(|e| panic!("reader: key {k}: {e}"));
                            assert_eq!(&n.data, data, "reader: key {k}");
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        let mut commits = 0;
        for _ in 0..6 {
            v.compact(Some(2 << 20)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            v.commit_compaction().unwrap();
            commits += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let es: Vec<Expect> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        (es, reads, commits)
    });
    let (es, reads, commits) = results;
    let mut all = base.clone();
    for e in &es {
        for (k, d) in &e.live {
            all.live.insert(*k, d.clone());
            all.deleted.remove(k);
        }
        for k in &e.deleted {
            all.live.remove(k);
            all.deleted.insert(*k);
        }
    }
    let written: usize = es.iter().map(|e| e.live.len() + e.deleted.len()).sum();
    eprintln!("{commits} commits, {written} keys touched by writers, {reads} reads");
    assert!(written > 50, "writers made too little progress: {written}");
    all.check(&v, "after concurrent compactions");
    assert_eq!(disk_revision(d.path()), 6);
    let v = Arc::try_unwrap(v).ok().unwrap();
    drop(v);
    all.check(&open(d.path()), "after reopen");
}

/// Stops compaction at `at`, drops the volume as a crash would, reopens.
/// Returns the reopened volume and what it must hold.
fn crash_at(dir: &Path, width: OffsetWidth, at: FaultPoint) -> (Volume, Expect) {
    let v = create(dir, width);
    let mut e = populate(&v);
    if at.in_commit() {
        v.compact(None).unwrap();
        during(&v, &mut e);
        v.inject_fault(Some(at));
        let r = v.commit_compaction();
        assert!(
            matches!(r, Err(VolumeError::FaultInjected(_))),
            "{at:?}: {r:?}"
        );
    } else {
        v.inject_fault(Some(at));
        let r = v.compact(None);
        assert!(
            matches!(r, Err(VolumeError::FaultInjected(_))),
            "{at:?}: {r:?}"
        );
    }
    drop(v);
    (open(dir), e)
}

fn after_crash_checks(dir: &Path, v: Volume, mut e: Expect, what: &str) {
    e.check(&v, what);
    assert!(!v.is_read_only(), "{what}: read-only");
    assert_no_leftovers(dir, what);
    e.write(&v, 5000, 0);
    let first = *e.live.keys().next().unwrap();
    e.delete(&v, first);
    v.sync().unwrap();
    drop(v);
    let v = open(dir);
    e.check(&v, &format!("{what}, second open"));
    let rev = disk_revision(dir);
    v.compact(None).unwrap();
    v.commit_compaction().unwrap();
    assert_eq!(disk_revision(dir), rev + 1, "{what}");
    e.check(&v, &format!("{what}, recompacted"));
    drop(v);
    e.check(&open(dir), &format!("{what}, final open"));
}

#[test]
fn crash_at_every_step() {
    for width in [OffsetWidth::Five, OffsetWidth::Four] {
        for at in FaultPoint::ALL {
            let d = tempfile::tempdir().unwrap();
            let what = format!("{width:?} crash at {at:?}");
            let (v, e) = crash_at(d.path(), width, at);
            // From the durable marker on the switch is rolled forward.
            let forward = at.in_commit()
                && !matches!(
                    at,
                    FaultPoint::CommitDiffWritten
                        | FaultPoint::CommitSynced
                        | FaultPoint::CommitMarkerWritten
                );
            // A written but unsynced marker survives a kill -9 (page cache).
            let forward = forward || at == FaultPoint::CommitMarkerWritten;
            assert_eq!(
                disk_revision(d.path()),
                u16::from(forward),
                "{what}: rolled the wrong way"
            );
            after_crash_checks(d.path(), v, e, &what);
        }
    }
}

/// Crash at `at`, then damage files with `damage` before reopening.
fn crash_then(
    width: OffsetWidth,
    at: FaultPoint,
    damage: impl Fn(&Path),
) -> (tempfile::TempDir, Volume, Expect) {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), width);
    let mut e = populate(&v);
    v.compact(None).unwrap();
    during(&v, &mut e);
    v.inject_fault(Some(at));
    assert!(v.commit_compaction().is_err());
    drop(v);
    damage(d.path());
    let v = open(d.path());
    (d, v, e)
}

fn truncate(dir: &Path, ext: &str, by: u64) {
    let p = dir.join(format!("1.{ext}"));
    let l = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(l.saturating_sub(by))
        .unwrap();
}

#[test]
fn damaged_compaction_files() {
    for width in [OffsetWidth::Five, OffsetWidth::Four] {
        let es = width.entry_size() as u64;
        type Damage = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, FaultPoint, Damage, Option<u16>)> = vec![
            (
                "torn .cpd, no marker",
                FaultPoint::CommitSynced,
                Box::new(|d: &Path| truncate(d, "cpd", 100)),
                Some(0),
            ),
            (
                "torn .cpx, no marker",
                FaultPoint::CommitDiffWritten,
                Box::new(move |d: &Path| truncate(d, "cpx", es + 3)),
                Some(0),
            ),
            (
                "torn .cpd under a marker: roll back",
                FaultPoint::CommitMarkerDurable,
                Box::new(|d: &Path| truncate(d, "cpd", 40)),
                Some(0),
            ),
            (
                "torn .cpx under a marker: roll back",
                FaultPoint::CommitMarkerDurable,
                Box::new(move |d: &Path| truncate(d, "cpx", es)),
                Some(0),
            ),
            (
                ".cpx lost under a marker: roll back",
                FaultPoint::CommitMarkerDurable,
                Box::new(|d: &Path| fs::remove_file(d.join("1.cpx")).unwrap()),
                Some(0),
            ),
            (
                "empty marker (SeaweedFS style)",
                FaultPoint::CommitMarkerDurable,
                Box::new(|d: &Path| truncate(d, "cpc", 1000)),
                Some(1),
            ),
            (
                "torn marker",
                FaultPoint::CommitMarkerDurable,
                Box::new(|d: &Path| truncate(d, "cpc", 10)),
                Some(1),
            ),
            (
                "empty marker after .cpd rename",
                FaultPoint::CommitDatRenamed,
                Box::new(|d: &Path| truncate(d, "cpc", 1000)),
                Some(1),
            ),
            (
                "torn .cpx after .cpd rename: rebuild .idx",
                FaultPoint::CommitDatRenamed,
                Box::new(move |d: &Path| truncate(d, "cpx", es * 2)),
                Some(1),
            ),
            (
                "torn new .idx after renames: rebuild .idx",
                FaultPoint::CommitRenamesDurable,
                Box::new(move |d: &Path| truncate(d, "idx", es * 3 + 1)),
                Some(1),
            ),
            (
                "stale sidecars after renames",
                FaultPoint::CommitIdxRenamed,
                Box::new(|d: &Path| {
                    let _ = fs::remove_file(d.join("1.kwm"));
                }),
                Some(1),
            ),
        ];
        for (name, at, damage, rev) in cases {
            let what = format!("{width:?}: {name}");
            let (d, v, e) = crash_then(width, at, damage);
            if let Some(rev) = rev {
                assert_eq!(disk_revision(d.path()), rev, "{what}");
            }
            after_crash_checks(d.path(), v, e, &what);
        }
    }
}

/// SeaweedFS #11410: replaying the diff must rewrite all five offset bytes.
/// A needle above 32 GiB (a sparse `.dat`) written during compaction lands
/// at a small offset in the compacted file.
#[test]
fn five_byte_offsets_in_the_diff() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    let mut e = Expect::default();
    e.write(&v, 1, 0);
    drop(v);
    // Hand-place needle 2 at 32 GiB + 64 and index it.
    let high = (1u64 << 35) + 64;
    let mut n = needle(2, 0);
    n.checksum = needle::crc32c(&n.data);
    let bytes = n.encode(3).unwrap();
    let dat = fs::OpenOptions::new()
        .write(true)
        .open(d.path().join("1.dat"))
        .unwrap();
    if let Err(e) = dat.write_all_at(&bytes, high) {
        kelp_testkit::skip(&format!(
            "the file system refuses a sparse 32 GiB file: {e}"
        ));
        return;
    }
    dat.sync_all().unwrap();
    let size = {
        let h: [u8; 16] = bytes[..16].try_into().unwrap();
        needle::parse_header(&h).2
    };
    let entry = IdxEntry::new(2, high / 8, size)
        .to_bytes(OffsetWidth::Five)
        .unwrap();
    assert_eq!(entry[12], 1, "high offset byte");
    let idx_len = len(d.path(), "idx");
    fs::OpenOptions::new()
        .write(true)
        .open(d.path().join("1.idx"))
        .unwrap()
        .write_all_at(&entry, idx_len)
        .unwrap();
    for ext in ["kwm", "knm"] {
        let _ = fs::remove_file(d.path().join(format!("1.{ext}")));
    }
    e.live.insert(2, n.data.to_vec());
    let v = open(d.path());
    e.check(&v, "sparse volume");
    v.compact(None).unwrap();
    // Both written above 32 GiB, so their entries carry high byte 1.
    e.write(&v, 3, 0);
    e.delete(&v, 1);
    e.write(&v, 4, 0);
    assert!(v.lookup(4).unwrap().offset > 1 << 35);
    v.commit_compaction().unwrap();
    e.check(&v, "after commit");
    assert!(len(d.path(), "dat") < 1 << 20);
    assert!(v.lookup(4).unwrap().offset < 1 << 20);
    drop(v);
    let v = open(d.path());
    e.check(&v, "after reopen");
    let idx = fs::read(d.path().join("1.idx")).unwrap();
    for x in idx::decode_all(&idx, OffsetWidth::Five).unwrap() {
        assert!(x.offset_units < 1 << 20, "stale high offset byte in {x:?}");
    }
}
