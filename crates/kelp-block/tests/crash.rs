//! Seeded crash points on the in-memory page-cache model for a region:
//! random writes, zeroings and flushes (whole and split); the power is cut
//! (`Memory::crash`) at a random point; the region is reopened. What the
//! two-slot layout with per-block contexts guarantees, and what is checked:
//!
//! * every block's data matches the context it is read with (nothing torn
//!   is served: the reader's check never fails after recovery);
//! * a block not written since the last successful flush reads exactly its
//!   flushed value;
//! * a block written since reads its flushed value or one of the values
//!   written since, whole (never a mix inside the block). Blocks of 4096
//!   bytes span eight sectors, so the model does tear inside them.
//!
//! Two crash rounds per case, so recovery's own writes are crashed too. In
//! half the cases the process also "dies" inside an operation first: an
//! injected EIO on a random write, fdatasync or rename stops everything
//! there (a failed write may have stored any of its blocks). A failing
//! seed is printed; `KELP_CRASH_SEED=N` replays just that one.

use std::path::Path;

use kelp_block::context::block_crc;
use kelp_block::{BlockError, Region};
use kelp_storage::{Fault, FaultKind, FaultOp, Memory, Storage, for_each_seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ES: u32 = 4;
const EC: u32 = 3;
const TOTAL: u64 = (ES * EC) as u64;

struct BlockModel {
    flushed: Vec<u8>,
    since: Vec<Vec<u8>>,
}

fn fill(rng: &mut StdRng, bs: usize) -> Vec<u8> {
    let b: u8 = rng.random_range(1..=255);
    (0..bs).map(|i| b.wrapping_add((i / 7) as u8) | 1).collect()
}

/// Random operations, stopping at a random point or at the first error
/// (an injected fault: the process dies there).
fn run_ops(
    r: &mut Region,
    rng: &mut StdRng,
    model: &mut [BlockModel],
    bs: usize,
    flush: &mut u64,
) -> Result<(), BlockError> {
    for _ in 0..rng.random_range(1..12) {
        let start = rng.random_range(0..TOTAL);
        let n = rng.random_range(1..=4).min(TOTAL - start);
        match rng.random_range(0..10) {
            0..6 => {
                let blocks: Vec<Vec<u8>> = (0..n).map(|_| fill(rng, bs)).collect();
                let crcs: Vec<u32> = blocks.iter().map(|b| block_crc(b)).collect();
                let data = blocks.concat();
                // Recorded first: a write that fails may still land.
                for (i, b) in blocks.into_iter().enumerate() {
                    model[start as usize + i].since.push(b);
                }
                r.write(start, &data, &crcs)?;
            }
            6 => {
                for m in &mut model[start as usize..(start + n) as usize] {
                    m.since.push(vec![0; bs]);
                }
                r.write_zeroes(start, n)?;
            }
            7 => {
                *flush += 1;
                r.flush(*flush, 1)?;
                settle_all(model);
            }
            _ => {
                // The downstairs' split flush: sync, stamp, sync, end.
                *flush += 1;
                let handles = r.flush_begin(*flush, None)?;
                for (eid, h) in &handles {
                    let res = h
                        .sync()
                        .and_then(|()| r.flush_header(*eid, *flush, 1))
                        .and_then(|()| h.sync());
                    r.flush_end(*eid, res.is_ok())?;
                    res?;
                }
                r.flush_finish();
                settle_all(model);
            }
        }
    }
    Ok(())
}

/// A backend over `mem` that, in half the cases, fails one random write,
/// fdatasync or rename with EIO.
fn faulty(mem: &Memory, rng: &mut StdRng) -> Storage {
    let fault = Fault::new(mem.storage());
    if rng.random_bool(0.5) {
        let op = [FaultOp::Write, FaultOp::Sync, FaultOp::Rename][rng.random_range(0..3)];
        fault.fail(op, rng.random_range(0..30), FaultKind::Eio);
    }
    fault.storage()
}

fn settle_all(model: &mut [BlockModel]) {
    for m in model {
        if let Some(v) = m.since.pop() {
            m.flushed = v;
        }
        m.since.clear();
    }
}

fn verify(r: &Region, model: &mut [BlockModel], seed: u64) {
    for b in 0..TOTAL {
        let (ctx, data) = r
            .read(b, 1)
            .unwrap_or_else(|e| panic!("seed {seed}: read of block {b}: {e}"));
        assert!(
            ctx[0].verify(&data),
            "seed {seed}: block {b} fails its context {:?}",
            ctx[0]
        );
        let m = &mut model[b as usize];
        let ok = data == m.flushed || m.since.contains(&data);
        assert!(
            ok,
            "seed {seed}: block {b} reads neither its flushed value nor one written since ({} since)",
            m.since.len()
        );
        // Reopening synced what it found: that is the new baseline.
        m.flushed = data;
        m.since.clear();
    }
}

fn crash_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let bs: usize = if rng.random_bool(0.5) { 512 } else { 4096 };
    let mem = Memory::new();
    let dir = Path::new("/region");
    drop(Region::create_in(mem.storage(), dir, bs as u32, ES, EC, false).expect("create"));
    let mut model: Vec<BlockModel> = (0..TOTAL)
        .map(|_| BlockModel {
            flushed: vec![0; bs],
            since: Vec::new(),
        })
        .collect();
    let mut flush = 0;
    for round in 0..2u64 {
        // Opening may hit the injected fault too: recovery is crashed then.
        if let Ok(mut r) = Region::open_in(faulty(&mem, &mut rng), dir, false) {
            // An error is the injected fault: the process dies there.
            let _ = run_ops(&mut r, &mut rng, &mut model, bs, &mut flush);
        }
        mem.crash(seed.wrapping_mul(31).wrapping_add(round));
        let r = Region::open_in(mem.storage(), dir, false)
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after crash {round}: {e}"));
        verify(&r, &mut model, seed);
        flush = flush.max(r.versions().iter().map(|v| v.flush).max().unwrap_or(0));
    }
}

#[test]
fn flushed_blocks_survive_seeded_crashes() {
    for_each_seed("flushed_blocks_survive_seeded_crashes", 1500, crash_case);
}
