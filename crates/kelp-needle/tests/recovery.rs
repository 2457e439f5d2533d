//! Crash recovery: whatever happens to the unsynced tail of `.dat` and
//! `.idx`, reopening keeps every needle acknowledged by `sync_through`,
//! never returns wrong bytes, and leaves the volume writable.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kelp_needle::*;

fn needle(id: u64, data: &[u8]) -> Needle {
    Needle {
        id,
        cookie: 0xc0ffee,
        data: data.to_vec().into(),
        name: b"n".to_vec(),
        ..Needle::default()
    }
}

fn data_for(key: u64) -> Vec<u8> {
    (0..(key * 13 % 90 + 5)).map(|i| (i * key) as u8).collect()
}

struct Template {
    dir: tempfile::TempDir,
    acked: BTreeMap<u64, Vec<u8>>,
    /// Unsynced writes: key -> data (may or may not survive).
    tail: BTreeMap<u64, Vec<u8>>,
    synced_dat: u64,
    synced_idx: u64,
    full_dat: u64,
    full_idx: u64,
}

fn template(width: OffsetWidth) -> Template {
    let dir = tempfile::tempdir().unwrap();
    let v = Volume::create(
        dir.path(),
        "",
        1,
        VolumeOptions {
            offset_width: width,
            ..VolumeOptions::default()
        },
    )
    .unwrap();
    let mut acked = BTreeMap::new();
    for k in 1..=20u64 {
        v.write(&mut needle(k, &data_for(k))).unwrap();
        acked.insert(k, data_for(k));
    }
    v.write(&mut needle(4, b"overwritten")).unwrap();
    acked.insert(4, b"overwritten".to_vec());
    let d = v.delete(3, 0xc0ffee).unwrap();
    acked.remove(&3);
    v.sync_through(d.seq).unwrap();
    let synced = v.info();
    let mut tail = BTreeMap::new();
    for k in 21..=24u64 {
        v.write(&mut needle(k, &data_for(k))).unwrap();
        tail.insert(k, data_for(k));
    }
    v.delete(22, 0xc0ffee).unwrap();
    let full = v.info();
    drop(v); // crash: no close, tail not synced
    Template {
        dir,
        acked,
        tail,
        synced_dat: synced.size,
        synced_idx: synced.idx_size,
        full_dat: full.size,
        full_idx: full.idx_size,
    }
}

fn copy_to(t: &Template, dst: &Path, keep_sidecars: bool) {
    for e in fs::read_dir(t.dir.path()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if !keep_sidecars && (name.ends_with(".kwm") || name.ends_with(".knm")) {
            continue;
        }
        fs::copy(e.path(), dst.join(name)).unwrap();
    }
}

fn check(t: &Template, dir: &Path, what: &str) {
    let v = Volume::open(dir, "", 1, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert!(!v.is_read_only(), "{what}: read-only after recovery");
    for (k, data) in &t.acked {
        let n = v
            .read(*k)
            .unwrap_or_else(|e| panic!("{what}: acked key {k}: {e}"));
        assert_eq!(&n.data, data, "{what}: key {k}");
    }
    assert!(
        matches!(v.read(3), Err(VolumeError::NotFound { key: 3 })),
        "{what}: deleted key came back: {:?}",
        v.read(3)
    );
    for (k, data) in &t.tail {
        if let Ok(n) = v.read(*k) {
            assert_eq!(&n.data, data, "{what}: unacked key {k} has wrong bytes");
        }
    }
    let info = v.info();
    assert!(
        info.size >= t.synced_dat,
        "{what}: dat cut below the sync point"
    );
    assert_eq!(
        fs::metadata(dir.join("1.dat")).unwrap().len(),
        info.size,
        "{what}"
    );
    // Writable, and the new state survives another crash-free reopen.
    let out = v.write(&mut needle(100, b"after recovery")).unwrap();
    v.sync_through(out.seq).unwrap();
    drop(v);
    let v = Volume::open(dir, "", 1, &OpenOptions::default()).unwrap();
    assert_eq!(&v.read(100).unwrap().data[..], b"after recovery", "{what}");
    for (k, data) in &t.acked {
        assert_eq!(
            &v.read(*k).unwrap().data,
            data,
            "{what}: second open, key {k}"
        );
    }
}

fn each_case(mut f: impl FnMut(&Template, &Path, bool, OffsetWidth)) {
    for width in [OffsetWidth::Five, OffsetWidth::Four] {
        let t = template(width);
        for sidecars in [true, false] {
            let d = tempfile::tempdir().unwrap();
            copy_to(&t, d.path(), sidecars);
            f(&t, d.path(), sidecars, width);
        }
    }
}

fn set_len(p: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn fresh(t: &Template, sidecars: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_to(t, d.path(), sidecars);
    d
}

#[test]
fn truncate_dat_at_every_tail_byte() {
    each_case(|t, _, sidecars, w| {
        assert!(t.full_dat > t.synced_dat);
        for len in t.synced_dat..=t.full_dat {
            let d = fresh(t, sidecars);
            set_len(&d.path().join("1.dat"), len);
            check(
                t,
                d.path(),
                &format!("{w:?} sidecars={sidecars} dat len {len}"),
            );
        }
    });
}

#[test]
fn truncate_idx_at_every_tail_byte() {
    each_case(|t, _, sidecars, w| {
        for len in t.synced_idx..=t.full_idx {
            let d = fresh(t, sidecars);
            set_len(&d.path().join("1.idx"), len);
            check(
                t,
                d.path(),
                &format!("{w:?} sidecars={sidecars} idx len {len}"),
            );
            // Both torn: dat cut in the middle of the tail too.
            let d = fresh(t, sidecars);
            set_len(&d.path().join("1.idx"), len);
            set_len(
                &d.path().join("1.dat"),
                (t.synced_dat + t.full_dat) / 2 + len % 8,
            );
            check(
                t,
                d.path(),
                &format!("{w:?} sidecars={sidecars} idx len {len} + dat"),
            );
        }
    });
}

#[test]
fn garbage_and_zeros_appended() {
    each_case(|t, _, sidecars, w| {
        for (file, n, byte) in [
            ("1.dat", 1, 0u8),
            ("1.dat", 37, 0),
            ("1.dat", 64, 0xab),
            ("1.idx", 1, 0),
            ("1.idx", w.entry_size() * 2, 0),
            ("1.idx", w.entry_size(), 0x5a),
            ("1.idx", 40, 0xff),
        ] {
            let d = fresh(t, sidecars);
            let p = d.path().join(file);
            let mut b = fs::read(&p).unwrap();
            b.extend(std::iter::repeat_n(byte, n));
            fs::write(&p, b).unwrap();
            check(
                t,
                d.path(),
                &format!("{w:?} sidecars={sidecars} {file} +{n}x{byte:02x}"),
            );
        }
    });
}

#[test]
fn byte_flip_in_unsynced_tail() {
    each_case(|t, _, sidecars, w| {
        for (file, from, to) in [
            ("1.dat", t.synced_dat, t.full_dat),
            ("1.idx", t.synced_idx, t.full_idx),
        ] {
            for pos in from..to {
                let d = fresh(t, sidecars);
                let p = d.path().join(file);
                let mut b = fs::read(&p).unwrap();
                b[pos as usize] ^= 0x41;
                fs::write(&p, b).unwrap();
                check(
                    t,
                    d.path(),
                    &format!("{w:?} sidecars={sidecars} flip {file}@{pos}"),
                );
            }
        }
    });
}

#[test]
fn dat_without_idx_is_rebuilt() {
    each_case(|t, _, sidecars, w| {
        if sidecars {
            return;
        }
        let d = fresh(t, false);
        fs::remove_file(d.path().join("1.idx")).unwrap();
        check(t, d.path(), &format!("{w:?} rebuilt idx"));
    });
}

#[test]
fn clean_volume_is_not_touched() {
    let t = template(OffsetWidth::Five);
    for sidecars in [true, false] {
        let d = fresh(&t, sidecars);
        let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
        // The crash left a complete (if unsynced) tail: all of it is kept.
        assert_eq!(v.info().size, t.full_dat);
        assert_eq!(v.info().idx_size, t.full_idx);
        assert!(
            matches!(v.read(22), Err(VolumeError::NotFound { key: 22 })),
            "deleted key 22: {:?}",
            v.read(22)
        );
        assert_eq!(v.read(24).unwrap().data, data_for(24));
    }
}

type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

/// Group commit fdatasyncs only `.dat` for a batch, so a crash can leave
/// `.idx` without the entries of acknowledged writes (cut short, zeroed,
/// or with a hole). Recovery indexes their needles again from `.dat`.
#[test]
fn idx_entries_lost_behind_a_synced_dat_come_back() {
    for width in [OffsetWidth::Five, OffsetWidth::Four] {
        let src = tempfile::tempdir().unwrap();
        let opts = VolumeOptions {
            offset_width: width,
            ..VolumeOptions::default()
        };
        let v = Volume::create(src.path(), "", 1, opts).unwrap();
        // The first sync writes the watermark (the trusted point) here.
        let first = v.write(&mut needle(1, &data_for(1))).unwrap();
        v.sync_through(first.seq).unwrap();
        let trusted_idx = v.info().idx_size;
        let mut acked = BTreeMap::from([(1, data_for(1))]);
        for k in 2..=30u64 {
            v.write(&mut needle(k, &data_for(k))).unwrap();
            acked.insert(k, data_for(k));
        }
        v.delete(7, 0xc0ffee).unwrap();
        acked.remove(&7);
        let last = v.write(&mut needle(9, b"nine again")).unwrap();
        acked.insert(9, b"nine again".to_vec());
        v.sync_through(last.seq).unwrap();
        let full_idx = v.info().idx_size;
        assert!(full_idx > trusted_idx);
        drop(v); // no close: .idx after the watermark was never fdatasynced

        let es = width.entry_size() as u64;
        let hole = trusted_idx + 5 * es;
        let cases: [(&str, Damage<'_>); 4] = [
            (
                "cut to the trusted point",
                Box::new(|b| b.truncate(trusted_idx as usize)),
            ),
            (
                "cut mid-entry",
                Box::new(|b| b.truncate((trusted_idx + 3 * es + 2) as usize)),
            ),
            (
                "zeroed tail",
                Box::new(|b| b[trusted_idx as usize..].fill(0)),
            ),
            (
                "one entry lost",
                Box::new(move |b| b[hole as usize..(hole + es) as usize].fill(0)),
            ),
        ];
        for (what, damage) in cases {
            let d = tempfile::tempdir().unwrap();
            for e in fs::read_dir(src.path()).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
            }
            let p = d.path().join("1.idx");
            let mut b = fs::read(&p).unwrap();
            damage(&mut b);
            fs::write(&p, b).unwrap();
            for open in 0..2 {
                let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
                for (k, data) in &acked {
                    let n = v
                        .read(*k)
                        .unwrap_or_else(|e| panic!("{width:?} {what} open {open}: key {k}: {e}"));
                    assert_eq!(&n.data, data, "{width:?} {what}: key {k}");
                }
                assert!(
                    matches!(v.read(7), Err(VolumeError::NotFound { .. })),
                    "{width:?} {what}: the deleted key came back"
                );
                assert_eq!(
                    v.info().idx_size,
                    full_idx,
                    "{width:?} {what}: .idx refilled"
                );
            }
        }
    }
}
