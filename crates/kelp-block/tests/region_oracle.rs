//! Region operations against a simple oracle (a map of block -> bytes), with
//! reopen and simulated torn writes in the mix.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

use kelp_block::context::block_crc;
use kelp_block::extent::{FlushHandle, data_offset};
use kelp_block::{BlockContext, Region};
use proptest::prelude::*;

const BS: usize = 512;
const ES: u32 = 8;
const EC: u32 = 4;
const TOTAL: u64 = (ES * EC) as u64;

#[derive(Debug, Clone)]
enum Op {
    Write { start: u64, n: u64, seed: u8 },
    Zero { start: u64, n: u64 },
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..TOTAL, 1..10u64, any::<u8>()).prop_map(|(s, n, seed)| Op::Write { start: s, n: n.min(TOTAL - s), seed }),
        1 => (0..TOTAL, 1..10u64).prop_map(|(s, n)| Op::Zero { start: s, n: n.min(TOTAL - s) }),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn block_bytes(seed: u8, b: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| {
            seed.wrapping_add((b as u8).wrapping_mul(31))
                .wrapping_add(i as u8)
                | 1
        })
        .collect()
}

fn check(r: &Region, oracle: &BTreeMap<u64, Vec<u8>>) {
    let (ctxs, data) = r.read(0, TOTAL).unwrap();
    for b in 0..TOTAL {
        let got = &data[b as usize * BS..(b as usize + 1) * BS];
        assert!(ctxs[b as usize].verify(got), "block {b} fails its context");
        match oracle.get(&b) {
            Some(want) => assert_eq!(got, &want[..], "block {b}"),
            None => assert!(got.iter().all(|&x| x == 0), "block {b} should be zero"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn region_matches_oracle(ops in proptest::collection::vec(op(), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
        let mut oracle = BTreeMap::new();
        let mut flushes = 0;
        for op in ops {
            match op {
                Op::Write { start, n, seed } => {
                    let mut data = Vec::new();
                    for b in start..start + n {
                        let bytes = block_bytes(seed, b);
                        data.extend_from_slice(&bytes);
                        oracle.insert(b, bytes);
                    }
                    let crcs: Vec<u32> = data.chunks(BS).map(block_crc).collect();
                    r.write(start, &data, &crcs).unwrap();
                }
                Op::Zero { start, n } => {
                    r.write_zeroes(start, n).unwrap();
                    for b in start..start + n { oracle.remove(&b); }
                }
                Op::Flush => {
                    flushes += 1;
                    r.flush(flushes, 1).unwrap();
                    prop_assert!(r.versions().iter().all(|v| !v.dirty));
                }
                Op::Reopen => {
                    drop(r);
                    r = Region::open(d.path(), false).unwrap();
                }
            }
            check(&r, &oracle);
        }
    }
}

fn ext_file(dir: &std::path::Path, id: u32) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("extents").join(format!("{id:08x}.ext")))
        .unwrap()
}

fn write_blocks(r: &mut Region, start: u64, fill: u8, n: u64) -> Vec<u8> {
    let data = vec![fill; n as usize * BS];
    let crcs: Vec<u32> = data.chunks(BS).map(block_crc).collect();
    r.write(start, &data, &crcs).unwrap();
    data
}

/// A write torn in its data area: after reopen the block holds its flushed
/// value, never a mix.
#[test]
fn torn_data_falls_back_to_flushed_value() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, 1, 0xAA, 1);
    r.flush(1, 1).unwrap();
    write_blocks(&mut r, 1, 0xBB, 1);
    drop(r);
    // The second write went to slot B (slot index 1) of block 1. Tear its
    // data: half the old bytes are back.
    let f = ext_file(d.path(), 0);
    let off = data_offset(ES) + (ES as u64 + 1) * BS as u64;
    f.write_all_at(&[0x11; BS / 2], off).unwrap();
    drop(f);
    let r = Region::open(d.path(), false).unwrap();
    let (ctx, data) = r.read(1, 1).unwrap();
    assert_eq!(data, vec![0xAA; BS]);
    assert_eq!(ctx[0], BlockContext::Data(block_crc(&[0xAA; BS])));
}

/// A context slot torn mid-write is ignored; a never-flushed first write
/// that was torn leaves the block unwritten (zeros).
#[test]
fn torn_context_and_truncation() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, ES as u64, 0xCC, ES as u64); // all of extent 1
    drop(r);
    // Tear the context of block 0 of extent 1 (slot A).
    let f = ext_file(d.path(), 1);
    f.write_all_at(&[0xFF; 5], 64 + 3).unwrap();
    // Truncate the data of the last block: it reads as zeros, fails its CRC.
    let len = f.metadata().unwrap().len();
    let last_a = data_offset(ES) + (ES as u64 - 1) * BS as u64;
    f.set_len(last_a + 10).unwrap();
    drop(f);
    let r = Region::open(d.path(), false).unwrap();
    let (ctxs, data) = r.read(ES as u64, ES as u64).unwrap();
    assert_eq!(ctxs[0], BlockContext::Unwritten);
    assert_eq!(ctxs[ES as usize - 1], BlockContext::Unwritten);
    assert!(data[..BS].iter().all(|&x| x == 0));
    for k in 1..ES as usize - 1 {
        assert_eq!(&data[k * BS..(k + 1) * BS], &[0xCC; BS][..]);
    }
    let f = ext_file(d.path(), 1);
    assert_eq!(f.metadata().unwrap().len(), len, "length restored");
}

/// Two writes to a block between flushes overwrite the unflushed slot, so a
/// torn second write still leaves the flushed value reachable.
#[test]
fn rewrite_before_flush_keeps_flushed_slot() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, 0, 1, 1);
    r.flush(1, 1).unwrap(); // flushed in slot A
    write_blocks(&mut r, 0, 2, 1); // slot B
    write_blocks(&mut r, 0, 3, 1); // slot B again, not A
    drop(r);
    let f = ext_file(d.path(), 0);
    f.write_all_at(&[9; 7], data_offset(ES) + ES as u64 * BS as u64)
        .unwrap(); // tear B
    drop(f);
    let r = Region::open(d.path(), false).unwrap();
    assert_eq!(r.read(0, 1).unwrap().1, vec![1; BS]);
}

#[test]
fn torn_header_reads_as_dirty_version_zero() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, 0, 5, 2);
    r.flush(3, 2).unwrap();
    drop(r);
    ext_file(d.path(), 0).write_all_at(&[0x77], 30).unwrap();
    let r = Region::open(d.path(), false).unwrap();
    let v = r.versions()[0];
    assert!(v.dirty && v.flush == 0 && v.generation == 0);
    assert_eq!(r.read(0, 2).unwrap().1, vec![5; 2 * BS]);
    assert!(!r.versions()[1].dirty);
}

#[test]
fn extent_image_and_replace() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let mut a = Region::create(d1.path(), BS as u32, ES, EC).unwrap();
    let mut b = Region::create(d2.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut a, 9, 4, 3);
    a.write_zeroes(10, 1).unwrap();
    a.flush(7, 3).unwrap();
    write_blocks(&mut b, 8, 6, 8);
    let img = a.extent_image(1).unwrap();
    b.extent_replace(1, &img).unwrap();
    assert_eq!(b.versions()[1], a.versions()[1]);
    assert_eq!(b.read(8, 8).unwrap(), a.read(8, 8).unwrap());
    drop(b);
    let b = Region::open(d2.path(), false).unwrap();
    assert_eq!(b.read(8, 8).unwrap(), a.read(8, 8).unwrap());
    let report = kelp_block::verify::verify(&[d2.path().to_path_buf()]).unwrap();
    assert!(report.ok(), "{report}");
}

fn read_block(r: &Region, b: u64) -> Vec<u8> {
    r.read(b, 1).unwrap().1
}

/// Runs the rest of a flush begun with `flush_begin`, as the downstairs'
/// flusher thread does, with `ok` deciding whether it succeeds.
fn complete_flush(r: &mut Region, handles: Vec<(u32, FlushHandle)>, flush: u64, ok: bool) {
    for (eid, h) in handles {
        h.sync().unwrap();
        r.flush_header(eid, flush, 1).unwrap();
        h.sync().unwrap();
        r.flush_end(eid, ok).unwrap();
    }
    r.flush_finish();
}

/// A whole flush in the steps the downstairs takes.
fn finish_flush(r: &mut Region, flush: u64, ok: bool) {
    let handles = r.flush_begin(flush, None).unwrap();
    complete_flush(r, handles, flush, ok);
}

/// While a flush is under way, blocks it is not persisting can be written,
/// blocks it is persisting cannot, and a torn write after the flush falls
/// back to the value that flush made durable.
#[test]
fn flush_under_way_lets_other_blocks_be_written() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, 1, 0xAA, 1);
    r.flush(1, 1).unwrap(); // 0xAA flushed in slot A
    write_blocks(&mut r, 1, 0xBB, 1); // slot B, unflushed
    write_blocks(&mut r, 2, 0x22, 1);

    let handles = r.flush_begin(2, None).unwrap();
    assert_eq!(handles.len(), 1, "only extent 0 is dirty");
    assert!(r.flush_in_flight());
    assert!(!r.can_write(1, 1), "block 1 is being flushed");
    assert!(!r.can_write(0, 3), "a range touching it waits too");
    assert!(r.can_write(3, 1) && r.can_write(ES as u64, 4));
    let data = vec![0xEE; BS];
    assert!(r.write(1, &data, &[block_crc(&data)]).is_err());
    assert!(r.flush(9, 1).is_err(), "one flush at a time");
    write_blocks(&mut r, 3, 0x33, 1); // beside the flush
    assert_eq!(read_block(&r, 1), vec![0xBB; BS]);

    complete_flush(&mut r, handles, 2, true);
    assert!(!r.flush_in_flight() && r.can_write(1, 1));
    let v = r.versions()[0];
    assert_eq!((v.flush, v.dirty), (2, true), "written during the flush");

    write_blocks(&mut r, 1, 0xCC, 1); // slot A: B now holds the flushed 0xBB
    drop(r);
    let f = ext_file(d.path(), 0);
    f.write_all_at(&[0x11; BS / 2], data_offset(ES) + BS as u64)
        .unwrap(); // tear slot A of block 1
    drop(f);
    let r = Region::open(d.path(), false).unwrap();
    assert_eq!(read_block(&r, 1), vec![0xBB; BS]);
    assert_eq!(read_block(&r, 2), vec![0x22; BS]);
    assert_eq!(read_block(&r, 3), vec![0x33; BS]);
}

/// An extent stamped clean by a flush under way takes no writes until the
/// clean header is synced; a failed flush leaves its blocks unflushed and
/// the extent dirty at its old version.
#[test]
fn clean_stamp_holds_writes_until_synced() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, 0, 0x10, 1);
    let handles = r.flush_begin(1, None).unwrap();
    let (eid, h) = &handles[0];
    h.sync().unwrap();
    r.flush_header(*eid, 1, 1).unwrap();
    assert!(!r.can_write(5, 1), "extent 0 waits for its clean header");
    assert!(r.can_write(ES as u64, 1), "other extents do not");
    let data = vec![0xEE; BS];
    assert!(r.write(5, &data, &[block_crc(&data)]).is_err());
    h.sync().unwrap();
    r.flush_end(*eid, true).unwrap();
    r.flush_finish();
    assert!(r.can_write(5, 1));
    let v = r.versions()[0];
    assert_eq!((v.generation, v.flush, v.dirty), (1, 1, false));

    // 0x10 is flushed in slot A. 0x20 goes to slot B; its flush fails.
    write_blocks(&mut r, 0, 0x20, 1);
    finish_flush(&mut r, 2, false);
    let v = r.versions()[0];
    assert_eq!((v.flush, v.dirty), (1, true), "old version, dirty");
    // A failed flush fails the region (fsyncgate): no write or flush is
    // taken until it is reopened. Reads go on.
    let data = vec![0x30; BS];
    assert!(matches!(
        r.write(0, &data, &[block_crc(&data)]),
        Err(kelp_block::BlockError::StorageFailed(_))
    ));
    assert!(r.io_failure().is_some());
    assert!(r.flush(9, 1).is_err());
    assert_eq!(read_block(&r, 0), vec![0x20; BS]);
    drop(r);
    let f = ext_file(d.path(), 0);
    f.write_all_at(&[0x11; 9], data_offset(ES) + ES as u64 * BS as u64)
        .unwrap(); // tear slot B of block 0
    drop(f);
    let mut r = Region::open(d.path(), false).unwrap();
    let v = r.versions()[0];
    assert_eq!((v.flush, v.dirty), (1, true), "the dirty header is on disk");
    assert_eq!(read_block(&r, 0), vec![0x10; BS]);
    finish_flush(&mut r, 3, true);
    assert!(!r.versions()[0].dirty);
}

/// A slot whose data was torn is passed over at a dirty open, and its
/// context erased: after a flush stamps the extent clean, the next open
/// (which trusts contexts without reading data) must not pick it up.
#[test]
fn torn_slot_stays_rejected_after_the_extent_is_flushed_clean() {
    let d = tempfile::tempdir().unwrap();
    let mut r = Region::create(d.path(), BS as u32, ES, EC).unwrap();
    write_blocks(&mut r, 2, 0x44, 1); // slot A of block 2, never flushed
    drop(r);
    ext_file(d.path(), 0)
        .write_all_at(&[0x99; 16], data_offset(ES) + 2 * BS as u64)
        .unwrap(); // tear its data; the context stays whole
    let mut r = Region::open(d.path(), false).unwrap();
    assert_eq!(r.read(2, 1).unwrap().0[0], BlockContext::Unwritten);
    r.flush(1, 1).unwrap();
    drop(r);
    let r = Region::open(d.path(), false).unwrap();
    assert!(!r.versions()[0].dirty);
    let (ctx, data) = r.read(2, 1).unwrap();
    assert!(
        ctx[0].verify(&data),
        "a clean extent serves a torn block: {:?}",
        ctx[0]
    );
}
