use std::sync::Arc;

use kelp_needle::*;

fn needle(id: u64, cookie: u32, data: &[u8]) -> Needle {
    Needle {
        id,
        cookie,
        data: data.to_vec().into(),
        name: b"f.txt".to_vec(),
        mime: b"text/plain".to_vec(),
        last_modified: 1_700_000_000,
        ..Needle::default()
    }
}

fn create(dir: &std::path::Path, width: OffsetWidth) -> Volume {
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

/// A volume in `SyncMode::None` (SeaweedFS's: acknowledged from the page cache).
fn create_unsynced(dir: &std::path::Path, vid: u32) -> Volume {
    let opts = VolumeOptions {
        sync_mode: SyncMode::None,
        ..VolumeOptions::default()
    };
    Volume::create(dir, "", vid, opts).unwrap()
}

#[test]
fn write_read_delete_reopen() {
    for width in [OffsetWidth::Four, OffsetWidth::Five] {
        let d = tempfile::tempdir().unwrap();
        let v = create(d.path(), width);
        let mut seq = 0;
        for i in 1..=50u64 {
            let out = v
                .write(&mut needle(i, i as u32, &vec![i as u8; i as usize * 7]))
                .unwrap();
            assert!(!out.unchanged);
            assert!(out.seq > seq);
            seq = out.seq;
        }
        // Empty upload still has a body.
        let out = v.write(&mut needle(60, 6, b"")).unwrap();
        assert!(out.size > 0);
        // Unchanged rewrite, cookie mismatch, overwrite.
        assert!(v.write(&mut needle(3, 3, &[3; 21])).unwrap().unchanged);
        assert!(matches!(
            v.write(&mut needle(3, 99, b"x")),
            Err(VolumeError::CookieMismatch { .. })
        ));
        v.write(&mut needle(4, 4, b"new")).unwrap();
        // Delete.
        assert!(matches!(
            v.delete(5, 1),
            Err(VolumeError::CookieMismatch { .. })
        ));
        let del = v.delete(5, 5).unwrap();
        assert_eq!(del.size as u64, needle(5, 5, &[5; 35]).body_size());
        assert!(matches!(v.delete(5, 5), Err(VolumeError::NotFound { .. })));
        assert!(matches!(v.read(5), Err(VolumeError::NotFound { .. })));
        v.sync_through(del.seq).unwrap();
        let info = v.info();
        assert_eq!(info.live_count, 50);
        assert_eq!(info.file_count, 52);
        assert_eq!(info.delete_count, 2);
        assert_eq!(info.max_file_key, 60);
        let check = |v: &Volume| {
            for i in 1..=50u64 {
                if i == 5 {
                    continue;
                }
                let n = v.read(i).unwrap();
                let want = if i == 4 {
                    b"new".to_vec()
                } else {
                    vec![i as u8; i as usize * 7]
                };
                assert_eq!(n.data, want);
                assert_eq!(n.cookie, i as u32);
                assert_eq!(n.name, b"f.txt");
            }
            assert_eq!(&v.read(60).unwrap().data[..], b"");
        };
        check(&v);
        let size = v.info().size;
        v.close().unwrap();
        // Clean reopen (checkpoint), then reopen without checkpoint (full replay).
        let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
        assert_eq!(v.offset_width(), width);
        assert_eq!(v.info().size, size);
        assert_eq!(v.info().file_count, 52);
        check(&v);
        drop(v);
        std::fs::remove_file(d.path().join("1.knm")).unwrap();
        std::fs::remove_file(d.path().join("1.kwm")).unwrap();
        let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
        assert_eq!(v.info().size, size);
        assert_eq!(v.info().delete_count, 2);
        check(&v);
        // AppendAtNs keeps increasing across reopen.
        let last = v.read(60).unwrap().append_at_ns;
        v.write(&mut needle(70, 7, b"later")).unwrap();
        assert!(v.read(70).unwrap().append_at_ns > last);
        v.destroy().unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}

#[test]
fn seaweedfs_layout_and_vif() {
    let d = tempfile::tempdir().unwrap();
    let v = Volume::create(
        d.path(),
        "pics",
        6,
        VolumeOptions {
            replica_placement: "001".parse().unwrap(),
            ..VolumeOptions::default()
        },
    )
    .unwrap();
    let mut n = Needle {
        cookie: 0x1848da59,
        id: 1,
        data: b"hello seaweed world\n".to_vec().into(),
        name: b"hello.txt".to_vec(),
        mime: b"text/plain".to_vec(),
        last_modified: 0x006b03ab8e,
        ..Needle::default()
    };
    v.write(&mut n).unwrap();
    v.delete(1, 0x1848da59).unwrap();
    v.close().unwrap();
    let dat = std::fs::read(d.path().join("pics_6.dat")).unwrap();
    assert_eq!(&dat[..8], &[3, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&dat[8..12], &[0x18, 0x48, 0xda, 0x59]);
    assert_eq!(dat.len(), 88 + 32);
    assert_eq!(
        &dat[88 + 12..88 + 20],
        &[0, 0, 0, 0, 0x6e, 0x46, 0xb8, 0x98]
    );
    let idx = std::fs::read(d.path().join("pics_6.idx")).unwrap();
    assert_eq!(
        idx,
        [
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0x33][..],
            &[
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x0b, 0, 0xff, 0xff, 0xff, 0xff
            ][..]
        ]
        .concat()
    );
    let vif = VolumeInfoFile::load(&d.path().join("pics_6.vif"))
        .unwrap()
        .unwrap();
    assert_eq!((vif.version, vif.bytes_offset), (3, 5));
    assert_eq!(scan_dir(d.path()).unwrap(), vec![("pics".to_string(), 6)]);
}

#[test]
fn concurrent_writers_share_syncs() {
    let d = tempfile::tempdir().unwrap();
    let v = Arc::new(create(d.path(), OffsetWidth::Five));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let v = v.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let key = t * 1000 + i + 1;
                    let out = v.write(&mut needle(key, 1, &key.to_be_bytes())).unwrap();
                    v.sync_through(out.seq).unwrap();
                    assert_eq!(v.read(key).unwrap().data[..], key.to_be_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = v.sync_stats();
    assert_eq!(s.written_seq, 400);
    assert_eq!(s.synced_seq, 400);
    // Every write was made durable by some fdatasync, and concurrent
    // writers shared them (one sync per write would be 400).
    assert!(s.syncs >= 1, "no fdatasync at all");
    assert!(
        s.syncs < 400,
        "{} syncs for 400 writes: none shared",
        s.syncs
    );
    assert_eq!(v.info().live_count, 400);
}

#[test]
fn bit_flip_in_data_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    v.write(&mut needle(1, 1, b"some data here")).unwrap();
    v.sync().unwrap();
    let off = v.lookup(1).unwrap().offset;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.path().join("1.dat"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", off + 22).unwrap();
    match v.read(1) {
        Err(VolumeError::Corrupt { reason, .. }) => assert!(reason.contains("CRC"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn read_only_and_sync_none() {
    let d = tempfile::tempdir().unwrap();
    let v = create_unsynced(d.path(), 2);
    let out = v.write(&mut needle(1, 1, b"a")).unwrap();
    v.sync_through(out.seq).unwrap();
    assert_eq!(v.sync_stats().syncs, 0);
    v.set_read_only(true, true).unwrap();
    assert!(matches!(
        v.write(&mut needle(2, 1, b"a")),
        Err(VolumeError::ReadOnly)
    ));
    assert!(matches!(v.delete(1, 1), Err(VolumeError::ReadOnly)));
    drop(v);
    let v = Volume::open(d.path(), "", 2, &OpenOptions::default()).unwrap();
    assert!(v.is_read_only());
    assert_eq!(&v.read(1).unwrap().data[..], b"a");
}

#[test]
fn checkpoint_load_matches_full_replay() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    for i in 1..=3000u64 {
        // Mostly increasing keys with some out-of-order and overwrites.
        let key = if i % 7 == 0 { 100_000 - i } else { i };
        v.write(&mut needle(key, 1, &i.to_be_bytes())).unwrap();
        if i % 11 == 0 {
            v.delete(i - 3, 1).ok();
        }
        if i == 1500 {
            v.checkpoint().unwrap();
        }
    }
    let want = v.entries();
    let info = v.info();
    drop(v); // no clean close: checkpoint covers half, tail is replayed
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    let report = v.open_report();
    assert!(report.checkpoint_idx_bytes > 0 && report.replayed_idx_bytes > 0);
    assert_eq!(v.entries(), want);
    let i2 = v.info();
    assert_eq!(
        (
            i2.file_count,
            i2.delete_count,
            i2.deleted_byte_count,
            i2.size,
            i2.max_file_key
        ),
        (
            info.file_count,
            info.delete_count,
            info.deleted_byte_count,
            info.size,
            info.max_file_key
        )
    );
    drop(v);
    std::fs::remove_file(d.path().join("1.knm")).unwrap();
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    assert_eq!(v.open_report().checkpoint_idx_bytes, 0);
    assert_eq!(v.entries(), want);
    assert_eq!(v.info().file_count, info.file_count);
    assert_eq!(v.info().deleted_byte_count, info.deleted_byte_count);
}

/// A volume written and closed by the previous release (checkpoint
/// format version 1; `tests/fixtures/knm-v1`, made with `kelp volume` at
/// adaf09e from 300 multipart uploads and 3 deletes) opens, serves every
/// blob, and is closed with a version-2 checkpoint that opens again.
#[test]
fn volume_with_a_version_1_checkpoint_opens() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knm-v1");
    let d = tempfile::tempdir().unwrap();
    for ext in ["dat", "idx", "knm", "kwm", "vif"] {
        std::fs::copy(
            fixture.join(format!("fx_1.{ext}")),
            d.path().join(format!("fx_1.{ext}")),
        )
        .unwrap();
    }
    let fids = std::fs::read_to_string(fixture.join("fids.txt")).unwrap();
    let deleted = [10, 20, 299];
    let check = |v: &Volume| {
        for (i, fid) in fids.lines().enumerate() {
            let i = i + 1;
            let kc = fid.strip_prefix("1,").unwrap();
            let (key, cookie) = kc.split_at(kc.len() - 8);
            let key = u64::from_str_radix(key, 16).unwrap();
            let cookie = u32::from_str_radix(cookie, 16).unwrap();
            match v.read(key) {
                Ok(n) => {
                    assert!(!deleted.contains(&i), "blob {i} was deleted");
                    assert_eq!(n.cookie, cookie);
                    let want = format!("blob {i} {}", "0".repeat((i % 97).max(1)));
                    assert_eq!(n.data.as_ref(), want.as_bytes(), "blob {i}");
                }
                Err(e) => assert!(deleted.contains(&i), "blob {i}: {e}"),
            }
        }
    };
    let knm = d.path().join("fx_1.knm");
    let version = |p: &std::path::Path| std::fs::read(p).unwrap()[8..12].to_vec();
    assert_eq!(version(&knm), 1u32.to_be_bytes());
    let idx_len = std::fs::metadata(d.path().join("fx_1.idx")).unwrap().len();
    let v = Volume::open(d.path(), "fx", 1, &OpenOptions::default()).unwrap();
    // The map came from the version-1 checkpoint, not an .idx replay.
    assert_eq!(
        v.open_report(),
        OpenReport {
            checkpoint_idx_bytes: idx_len,
            replayed_idx_bytes: 0
        }
    );
    check(&v);
    assert_eq!(v.info().live_count, 297);
    v.write(&mut needle(1000, 5, b"after")).unwrap();
    v.close().unwrap();
    assert_eq!(version(&knm), 2u32.to_be_bytes());
    let v = Volume::open(d.path(), "fx", 1, &OpenOptions::default()).unwrap();
    assert_eq!(v.open_report().checkpoint_idx_bytes, idx_len + 17);
    assert_eq!(v.open_report().replayed_idx_bytes, 0);
    check(&v);
    assert_eq!(v.read(1000).unwrap().data.as_ref(), b"after");
    assert_eq!(v.info().live_count, 298);
}

#[test]
fn maybe_checkpoint_threshold() {
    let d = tempfile::tempdir().unwrap();
    create(d.path(), OffsetWidth::Five).close().unwrap();
    let v = Volume::open(
        d.path(),
        "",
        1,
        &OpenOptions {
            checkpoint_every_idx_bytes: 17 * 10,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    for i in 1..=9u64 {
        v.write(&mut needle(i, 1, b"x")).unwrap();
    }
    assert!(!v.maybe_checkpoint().unwrap());
    v.write(&mut needle(10, 1, b"x")).unwrap();
    assert!(v.maybe_checkpoint().unwrap());
    assert!(!v.maybe_checkpoint().unwrap());
    // Opened from that checkpoint, a volume does not write it again (a
    // needless copy of a big map right after every restart).
    v.close().unwrap();
    let opts = OpenOptions {
        checkpoint_every_idx_bytes: 17 * 10,
        ..OpenOptions::default()
    };
    let v = Volume::open(d.path(), "", 1, &opts).unwrap();
    assert!(!v.maybe_checkpoint().unwrap());
    for i in 11..=20u64 {
        v.write(&mut needle(i, 1, b"x")).unwrap();
    }
    assert!(v.maybe_checkpoint().unwrap());
    drop(v);
    let v = Volume::open(d.path(), "", 1, &opts).unwrap();
    for i in 1..=20u64 {
        assert_eq!(&v.read(i).unwrap().data[..], b"x");
    }
}

#[test]
fn sorted_idx_after_seaweedfs_compaction() {
    // After a SeaweedFS vacuum the .idx is sorted by key, so its last entry
    // is not the needle at the end of .dat.
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    for k in [9u64, 5, 3, 7, 1] {
        v.write(&mut needle(k, 1, &[k as u8; 10])).unwrap();
    }
    let size = v.info().size;
    let tail_ns = v.read(1).unwrap().append_at_ns;
    drop(v);
    let p = d.path().join("1.idx");
    let raw = std::fs::read(&p).unwrap();
    let mut entries: Vec<&[u8]> = raw.chunks(17).collect();
    entries.sort();
    std::fs::write(&p, entries.concat()).unwrap();
    for ext in ["knm", "kwm"] {
        let _ = std::fs::remove_file(d.path().join(format!("1.{ext}")));
    }
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    assert!(!v.is_read_only());
    assert_eq!(v.info().size, size);
    for k in [9u64, 5, 3, 7, 1] {
        assert_eq!(v.read(k).unwrap().data[..], [k as u8; 10]);
    }
    v.write(&mut needle(11, 1, b"z")).unwrap();
    assert!(v.read(11).unwrap().append_at_ns > tail_ns);
}

/// A large needle read in pieces (`open_data`) gives the same fields and
/// data as a whole read, in versions 2 and 3; a flipped data bit makes
/// the last piece an error, never a complete read.
#[test]
fn open_data_streams_pieces_and_checks_the_crc() {
    for version in [2u8, 3] {
        let d = tempfile::tempdir().unwrap();
        let v = Volume::create(
            d.path(),
            "",
            1,
            VolumeOptions {
                version,
                ..VolumeOptions::default()
            },
        )
        .unwrap();
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut big = needle(9, 0x77, &data);
        big.pairs = br#"{"Seaweed-a":"b"}"#.to_vec();
        big.ttl = "3d".parse().unwrap();
        v.write(&mut big).unwrap();
        // Bare needles too: no fields after the data, and empty data.
        let mut bare = Needle {
            id: 10,
            cookie: 1,
            data: vec![1, 2, 3].into(),
            ..Needle::default()
        };
        v.write(&mut bare).unwrap();
        let mut empty = needle(11, 2, b"");
        v.write(&mut empty).unwrap();

        for (key, piece) in [
            (9u64, 65_536usize),
            (9, 1 << 20),
            (9, 4 << 20),
            (10, 2),
            (11, 8),
        ] {
            let whole = v.read(key).unwrap();
            let (meta, mut stream) = v.open_data(key).unwrap();
            assert_eq!(stream.len(), whole.data.len() as u64);
            let mut got = Vec::new();
            let mut pieces = 0;
            while let Some(p) = stream.next_piece(piece).unwrap() {
                assert!(p.len() <= piece);
                got.extend_from_slice(&p);
                pieces += 1;
            }
            assert_eq!(got, whole.data, "key {key} version {version}");
            assert_eq!(pieces, whole.data.len().div_ceil(piece));
            assert!(meta.data.is_empty());
            assert_eq!(
                Needle {
                    data: whole.data.clone(),
                    ..meta
                },
                whole
            );
        }
        assert!(matches!(v.open_data(12), Err(VolumeError::NotFound { .. })));

        // Flip one bit in the middle of the big needle's data.
        let val = v.lookup(9).unwrap();
        let dat = d.path().join("1.dat");
        let mut bytes = std::fs::read(&dat).unwrap();
        bytes[val.offset as usize + 20 + 500_000] ^= 0x10;
        std::fs::write(&dat, &bytes).unwrap();
        let (_, mut stream) = v.open_data(9).unwrap();
        let mut handed_out = 0;
        let err = loop {
            match stream.next_piece(100_000) {
                Ok(Some(p)) => handed_out += p.len(),
                Ok(None) => panic!("a corrupt needle was read to its end"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, VolumeError::Corrupt { key: 9, .. }), "{err}");
        assert!(handed_out < data.len());
    }
}

fn dat_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("1.dat")).unwrap().len()
}

/// Whether `.dat` holds only zero bytes from `from` to its end.
fn zeros_from(dir: &std::path::Path, from: u64) -> bool {
    let dat = std::fs::read(dir.join("1.dat")).unwrap();
    dat[from as usize..].iter().all(|&b| b == 0)
}

/// Writes needles `keys` (cookie 7, `len` bytes of the key's low byte),
/// each synced before the next.
fn write_synced(v: &Volume, keys: std::ops::RangeInclusive<u64>, len: usize) {
    for i in keys {
        let out = v.write(&mut needle(i, 7, &vec![i as u8; len])).unwrap();
        v.sync_through(out.seq).unwrap();
    }
}

#[test]
fn durable_volume_zeroes_ahead_and_close_cuts_the_zeros() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    write_synced(&v, 1..=200, 1000);
    v.delete(3, 7).unwrap();
    let end = v.info().size;
    // Zeroed ahead of the next append, a whole chunk past the last needle.
    let len = dat_len(d.path());
    assert!(len >= end + (512 << 10), "{len} vs {end}");
    assert!(zeros_from(d.path(), end));
    v.close().unwrap();
    // A closed .dat ends at its last needle, as SeaweedFS expects.
    assert_eq!(dat_len(d.path()), end);
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    assert_eq!(v.info().size, end);
    for i in (1..=200u64).filter(|&i| i != 3) {
        assert_eq!(&v.read(i).unwrap().data[..], &[i as u8; 1000]);
    }
    assert!(matches!(v.read(3), Err(VolumeError::NotFound { .. })));
}

#[test]
fn a_volume_not_closed_releases_its_zeros_at_open() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    write_synced(&v, 1..=50, 700);
    let end = v.info().size;
    assert!(dat_len(d.path()) > end);
    // As after kill -9: no close, no checkpoint.
    drop(v);
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    assert_eq!(v.info().size, end);
    assert_eq!(dat_len(d.path()), end, "the zeros are cut at open");
    for i in 1..=50u64 {
        assert_eq!(&v.read(i).unwrap().data[..], &[i as u8; 700]);
    }
    // Appends go on right after the last needle, zeroing ahead again.
    let out = v.write(&mut needle(51, 7, &[51; 700])).unwrap();
    v.sync_through(out.seq).unwrap();
    assert!(dat_len(d.path()) > v.info().size);
    drop(v);
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    assert_eq!(&v.read(51).unwrap().data[..], &[51; 700]);
    assert_eq!(v.info().file_count, 51);
}

#[test]
fn large_needles_and_sync_none_are_appended_without_zeros() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    v.write(&mut needle(1, 7, &vec![1; 300 << 10])).unwrap();
    assert_eq!(dat_len(d.path()), v.info().size);
    drop(v);

    let d = tempfile::tempdir().unwrap();
    let v = create_unsynced(d.path(), 1);
    for i in 1..=20u64 {
        v.write(&mut needle(i, 7, &[1; 100])).unwrap();
    }
    assert_eq!(dat_len(d.path()), v.info().size);
}

#[test]
fn zeros_after_a_crash_do_not_delete_needle_zero() {
    // 32 zero bytes parse as a tombstone of key 0, cookie 0: recovery
    // must not take the zeroed space for one.
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    let out = v.write(&mut needle(0, 0, b"key zero")).unwrap();
    v.sync_through(out.seq).unwrap();
    // No checkpoint or watermark covers it yet, and .idx may lack it:
    // only .dat, then zeros, as after kill -9.
    let end = v.info().size;
    drop(v);
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.path().join("1.idx"))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(zeros_from(d.path(), end) && dat_len(d.path()) > end);
    let v = Volume::open(d.path(), "", 1, &OpenOptions::default()).unwrap();
    assert_eq!(&v.read(0).unwrap().data[..], b"key zero");
    assert_eq!(v.info().file_count, 1);
    assert_eq!(dat_len(d.path()), end);
}

#[test]
fn released_space_stays_released() {
    let d = tempfile::tempdir().unwrap();
    let v = create(d.path(), OffsetWidth::Five);
    v.write(&mut needle(1, 7, &[1; 100])).unwrap();
    assert!(dat_len(d.path()) > v.info().size);
    assert!(v.release_zeroed_space().unwrap());
    assert_eq!(dat_len(d.path()), v.info().size);
    // A write that still comes (a shared volume at shutdown) zeroes
    // nothing new.
    let out = v.write(&mut needle(2, 7, &[2; 100])).unwrap();
    v.sync_through(out.seq).unwrap();
    assert_eq!(dat_len(d.path()), v.info().size);
    assert!(!v.release_zeroed_space().unwrap());
}
