//! Regions made by an earlier release keep opening. `fixtures/region-v1`
//! is a small region written by the code of December 2026 (extent format
//! version 1, before per-block change tracking): three extents of eight
//! 512-byte blocks, with flushed writes, an overwrite, zeroed blocks and an
//! unflushed write in a dirty extent. When the extent format changes, this
//! fixture stays as it is. The test opens a copy with today's
//! code and checks every block and every extent version.
//!
//! `KELP_WRITE_REGION_FIXTURE=1` rewrites the fixture with today's code
//! instead; do that only on purpose, since it is the format of a past
//! release that this test pins.

use std::path::{Path, PathBuf};

use kelp_region::context::block_crc;
use kelp_region::{BlockContext, ExtentVersion, Region};

const BS: usize = 512;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/region-v1")
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BS)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn write(r: &mut Region, block: u64, data: &[u8]) {
    let crcs: Vec<u32> = data.chunks(BS).map(block_crc).collect();
    r.write(block, data, &crcs).unwrap();
}

/// What the fixture was made of, and so what it must read back as.
fn build(dir: &Path) {
    let mut r = Region::create(dir, BS as u32, 8, 3).unwrap();
    r.set_generation(1).unwrap();
    let first: Vec<u8> = (1..=4).flat_map(pattern).collect();
    write(&mut r, 0, &first);
    r.flush(1, 1).unwrap();
    write(&mut r, 2, &pattern(9));
    // Block 3 held data; 4 and 5 were never written.
    r.write_zeroes(3, 3).unwrap();
    write(&mut r, 17, &pattern(7));
    r.flush(2, 1).unwrap();
    r.set_generation(3).unwrap();
    // Written and never flushed: extent 1 stays dirty.
    write(&mut r, 9, &pattern(8));
}

/// Block by block, what the fixture holds.
fn expected() -> Vec<(u64, Option<Vec<u8>>)> {
    let mut blocks: Vec<(u64, Option<Vec<u8>>)> = (0..24).map(|b| (b, None)).collect();
    for (b, seed) in [(0, 1), (1, 2), (2, 9), (9, 8), (17, 7)] {
        blocks[b as usize].1 = Some(pattern(seed));
    }
    blocks
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_region_of_the_first_extent_format_still_opens_and_reads_back() {
    if std::env::var_os("KELP_WRITE_REGION_FIXTURE").is_some() {
        let _ = std::fs::remove_dir_all(fixture());
        build(&fixture());
        println!("wrote {}", fixture().display());
        return;
    }
    assert!(
        fixture().join("region.kelp").exists(),
        "the fixture {} is missing",
        fixture().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    copy_dir(&fixture(), &dir);
    let r = Region::open(&dir, false).unwrap();
    assert_eq!(r.def().block_size as usize, BS);
    assert_eq!(r.def().total_blocks(), 24);
    assert_eq!(r.generation(), 3);
    assert_eq!(
        r.versions(),
        vec![
            ExtentVersion {
                generation: 1,
                flush: 2,
                dirty: false
            },
            ExtentVersion {
                generation: 0,
                flush: 0,
                dirty: true
            },
            ExtentVersion {
                generation: 1,
                flush: 2,
                dirty: false
            },
        ]
    );
    let (ctxs, data) = r.read(0, 24).unwrap();
    for (b, want) in expected() {
        let got = &data[b as usize * BS..(b as usize + 1) * BS];
        match want {
            Some(bytes) => {
                assert_eq!(got, bytes.as_slice(), "block {b}");
                assert_eq!(
                    ctxs[b as usize],
                    BlockContext::Data(block_crc(&bytes)),
                    "block {b}"
                );
            }
            None => {
                assert!(
                    got.iter().all(|&x| x == 0),
                    "block {b} should read as zeros"
                );
                assert!(
                    matches!(
                        ctxs[b as usize],
                        BlockContext::Unwritten | BlockContext::Zero
                    ),
                    "block {b}: {:?}",
                    ctxs[b as usize]
                );
            }
        }
    }
    // A zeroed block that held data says so; never-written ones too.
    assert_eq!(ctxs[3], BlockContext::Zero);
    assert_eq!(ctxs[12], BlockContext::Unwritten);
    upgrade(r, &dir);
}

/// Format-1 extents have no births (they read as 0, older than any
/// snapshot): a snapshot of the old region holds all of it, a write after
/// it is told apart, and the extents it stamps become format 2.
fn upgrade(mut r: Region, dir: &Path) {
    assert_eq!(r.extent_formats(), vec![1, 1, 1]);
    r.snapshot_take(r.next_snapshot("before")).unwrap();
    write(&mut r, 0, &pattern(40));
    r.flush(r.flush_mark() + 1, 3).unwrap();
    let at = r.snapshot("before").unwrap().flush;
    let versions = r.snapshot_versions(at, 0, 24).unwrap();
    assert!(versions.iter().flatten().all(|v| v.birth == 0));
    let (_, old) = r.read_snapshot("before", 0, 1).unwrap();
    assert_eq!(old, pattern(1));
    drop(r);
    let r = Region::open(dir, false).unwrap();
    assert_eq!(r.extent_formats()[0], 2, "stamped extents are format 2");
    let (_, old) = r.read_snapshot("before", 0, 1).unwrap();
    assert_eq!(old, pattern(1));
    let (_, now) = r.read(0, 1).unwrap();
    assert_eq!(now, pattern(40));
}
