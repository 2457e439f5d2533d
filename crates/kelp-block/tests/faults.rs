//! Injected IO errors (`kelp_storage::Fault` over the in-memory model) on
//! a region: a failed fdatasync or write fails the region (nothing more is
//! written or flushed until it is reopened), a full disk is `NoSpace` all
//! the way to the guest (NBD ENOSPC), and nothing flushed is lost.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kelp_block::context::block_crc;
use kelp_block::frame::ErrorCode;
use kelp_block::nbd::proto::{ENOSPC, errno};
use kelp_block::upstairs::{self, UpstairsConfig};
use kelp_block::{BlockError, Region};
use kelp_storage::{Fault, FaultKind, FaultOp, Memory};
use tokio::net::TcpListener;

const ES: u32 = 4;
const EC: u32 = 2;
const DIR: &str = "/region";

fn setup(bs: u32) -> (Memory, Fault, Region) {
    let mem = Memory::new();
    let fault = Fault::new(mem.storage());
    let r = Region::create_in(fault.storage(), Path::new(DIR), bs, ES, EC, false).unwrap();
    (mem, fault, r)
}

fn write(r: &mut Region, start: u64, fill: u8, bs: usize) -> Result<(), BlockError> {
    let data = vec![fill; bs];
    r.write(start, &data, &[block_crc(&data)])
}

fn reopen(mem: &Memory, seed: u64) -> Region {
    mem.crash(seed);
    Region::open_in(mem.storage(), Path::new(DIR), false).unwrap()
}

fn block(r: &Region, b: u64) -> Vec<u8> {
    let (ctx, data) = r.read(b, 1).unwrap();
    assert!(ctx[0].verify(&data), "block {b} fails its context");
    data
}

#[test]
fn failed_fdatasync_fails_the_region_until_reopened() {
    for split in [false, true] {
        let (mem, fault, mut r) = setup(512);
        write(&mut r, 0, 1, 512).unwrap();
        r.flush(1, 1).unwrap();
        write(&mut r, 0, 2, 512).unwrap();
        write(&mut r, 5, 3, 512).unwrap();
        fault.fail_on(FaultOp::Sync, ".ext", 0, FaultKind::Eio);
        if split {
            // The downstairs' way: sync outside the region, then end.
            let handles = r.flush_begin(2, None).unwrap();
            let mut failed = false;
            for (eid, h) in &handles {
                let ok = h.sync().is_ok();
                failed |= !ok;
                r.flush_end(*eid, ok).unwrap();
            }
            r.flush_finish();
            assert!(failed);
        } else {
            assert!(r.flush(2, 1).is_err());
        }
        assert_eq!(fault.fired(), 1);
        // The fault was one-shot; a retried flush would succeed, and must
        // not be trusted.
        assert!(r.io_failure().is_some());
        assert!(matches!(r.flush(3, 1), Err(BlockError::StorageFailed(_))));
        assert!(matches!(
            write(&mut r, 1, 4, 512),
            Err(BlockError::StorageFailed(_))
        ));
        assert!(matches!(
            r.write_zeroes(1, 1),
            Err(BlockError::StorageFailed(_))
        ));
        assert!(r.flush_begin(3, None).is_err());
        assert_eq!(block(&r, 0), vec![2; 512], "reads go on");
        drop(r);
        for seed in 0..30 {
            let mut r = reopen(&mem, seed);
            assert!(r.io_failure().is_none());
            let b0 = block(&r, 0);
            assert!(b0 == vec![1; 512] || b0 == vec![2; 512], "seed {seed}");
            write(&mut r, 1, 5, 512).unwrap();
            r.flush(10 + seed, 1).unwrap();
        }
    }
}

#[test]
fn enospc_halfway_is_no_space_and_keeps_flushed_blocks() {
    for seed in 0..30 {
        let (mem, fault, mut r) = setup(4096);
        for b in 0..(ES * EC) as u64 {
            write(&mut r, b, b as u8 + 1, 4096).unwrap();
        }
        r.flush(1, 1).unwrap();
        write(&mut r, 1, 0xA0, 4096).unwrap();
        fault.fail_on(FaultOp::Write, ".ext", 0, FaultKind::NoSpaceHalfway);
        let e = write(&mut r, 1, 0xB0, 4096).unwrap_err();
        assert!(matches!(e, BlockError::NoSpace(_)), "{e}");
        assert_eq!(ErrorCode::from(&e), ErrorCode::NoSpace);
        assert_eq!(errno(&e), ENOSPC);
        assert!(matches!(
            write(&mut r, 2, 0xC0, 4096),
            Err(BlockError::StorageFailed(_))
        ));
        fault.free_space();
        drop(r);
        let r = reopen(&mem, seed);
        for b in 0..(ES * EC) as u64 {
            let got = block(&r, b);
            let ok = got == vec![b as u8 + 1; 4096] || (b == 1 && got == vec![0xA0; 4096]);
            assert!(ok, "seed {seed}: block {b} lost its flushed value");
        }
    }
}

#[test]
fn rename_failing_in_an_extent_replace_keeps_the_old_extent() {
    let (mem, fault, mut r) = setup(512);
    for b in 0..ES as u64 {
        write(&mut r, b, 7, 512).unwrap();
    }
    r.flush(1, 1).unwrap();
    let mut image = r.extent_image(0).unwrap();
    image.data.fill(9);
    image
        .contexts
        .fill(kelp_block::BlockContext::Data(block_crc(&[9; 512])));
    fault.fail(FaultOp::Rename, 0, FaultKind::Eio);
    assert!(r.extent_replace(0, &image).is_err());
    assert_eq!(block(&r, 0), vec![7; 512]);
    assert!(r.io_failure().is_some());
    drop(r);
    let r = reopen(&mem, 1);
    for b in 0..ES as u64 {
        assert_eq!(block(&r, b), vec![7; 512]);
    }
}

/// A guest write that every downstairs fails for lack of space gets
/// `NoSpace`, which the NBD server answers with ENOSPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstairs_out_of_space_is_enospc_for_the_guest() {
    let mut faults = Vec::new();
    let mut targets = Vec::new();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    for _ in 0..3 {
        let fault = Fault::new(Memory::new().storage());
        let region = Region::create_in(fault.storage(), Path::new(DIR), 512, 64, 2, false).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        targets.push(listener.local_addr().unwrap().to_string());
        let mut stop = stop_tx.subscribe();
        tokio::spawn(kelp_block::downstairs::run(listener, region, async move {
            let _ = stop.recv().await;
        }));
        faults.push(fault);
    }
    let mut cfg = UpstairsConfig::new(targets, 1);
    cfg.flush_interval = Duration::from_secs(3600);
    let v = tokio::time::timeout(Duration::from_secs(20), upstairs::start(cfg))
        .await
        .expect("activation in time")
        .expect("activation");
    v.write(0, Bytes::from(vec![1u8; 512]), true).await.unwrap();
    for f in &faults {
        f.fail(FaultOp::Write, 0, FaultKind::NoSpace);
    }
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        v.write(8, Bytes::from(vec![2u8; 512]), false),
    )
    .await
    .expect("answered in time")
    .unwrap_err();
    assert!(matches!(e, BlockError::NoSpace(_)), "{e}");
    assert_eq!(errno(&e), ENOSPC);
    drop(v);
    let _ = stop_tx.send(());
}
