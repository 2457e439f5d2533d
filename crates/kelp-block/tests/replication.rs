//! Upstairs + three in-process downstairs over real TCP on loopback:
//! replication, quorum acks, replay, live repair, reconciliation, fencing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kelp_block::Region;
use kelp_block::upstairs::{self, UpstairsConfig, Volume};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const BS: u32 = 512;
const ES: u32 = 64;
const EC: u32 = 8;

struct Ds {
    dir: PathBuf,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ds {
    async fn start(dir: &Path, addr: Option<SocketAddr>) -> Ds {
        let listener = TcpListener::bind(addr.unwrap_or("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        // A region just released by a stopped downstairs may still be
        // locked for a moment while its worker threads wind down.
        let region = wait_for("region lock", || Region::open(dir, false).ok()).await;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            kelp_block::downstairs::run(listener, region, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Ds {
            dir: dir.to_path_buf(),
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        *self = Ds::start(&self.dir.clone(), Some(self.addr)).await;
    }
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    kelp_testkit::until_async(what, Duration::from_secs(20), || std::future::ready(f())).await
}

struct Cluster {
    _tmp: tempfile::TempDir,
    ds: Vec<Ds>,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster::with_extents(EC).await
    }

    async fn with_extents(extent_count: u32) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut ds = vec![];
        for i in 0..3 {
            let dir = tmp.path().join(format!("r{i}"));
            drop(Region::create(&dir, BS, ES, extent_count).unwrap());
            ds.push(Ds::start(&dir, None).await);
        }
        Cluster { _tmp: tmp, ds }
    }

    fn cfg(&self, generation: u64) -> UpstairsConfig {
        let mut c = UpstairsConfig::new(
            self.ds.iter().map(|d| d.addr.to_string()).collect(),
            generation,
        );
        c.flush_interval = Duration::from_millis(100);
        c
    }

    async fn attach(&self, generation: u64) -> Volume {
        tokio::time::timeout(
            Duration::from_secs(20),
            upstairs::start(self.cfg(generation)),
        )
        .await
        .expect("activation in time")
        .expect("activation")
    }

    /// Drains `v` (every downstairs holds everything), drops it, and
    /// checks the three replicas hold identical data and extent versions.
    async fn drained_and_identical(&mut self, v: Volume) {
        v.drain(Duration::from_secs(20)).await.unwrap();
        drop(v);
        let report = self.verify().await;
        assert!(report.ok(), "{report}");
        assert!(report.version_mismatches().is_empty(), "{report}");
    }

    /// Damages each (downstairs, block) in `damaged` with [`damage`].
    fn damage(&self, damaged: &[(usize, u64)]) {
        for &(ds, block) in damaged {
            damage(&self.ds[ds].dir, block);
        }
    }

    async fn verify(&mut self) -> kelp_block::verify::VerifyReport {
        for d in &mut self.ds {
            d.stop().await;
        }
        let dirs: Vec<PathBuf> = self.ds.iter().map(|d| d.dir.clone()).collect();
        kelp_block::verify::verify(&dirs).unwrap()
    }
}

fn pattern(seed: u64, len: usize) -> Bytes {
    Bytes::from(kelp_testkit::blob(seed, len))
}

async fn wait_modes(v: &Volume, want: &str) {
    let start = Instant::now();
    loop {
        let s = v.status().await.unwrap();
        if s.modes.iter().all(|m| m == want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "modes stuck at {:?}",
            s.modes
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_flush_and_replicas_agree() {
    let mut cl = Cluster::new().await;
    let v = cl.attach(1).await;
    assert_eq!(v.size_bytes(), (BS * ES * EC) as u64);
    let mut expect = vec![0u8; v.size_bytes() as usize];
    let mut futs = vec![];
    for i in 0..40u64 {
        let start = (i * 37) % (v.total_blocks - 20);
        let data = pattern(i, 16 * BS as usize);
        expect[start as usize * 512..(start as usize + 16) * 512].copy_from_slice(&data);
        // Overlapping writes are issued in order from one task: each waits
        // for the previous so the final contents are well defined.
        v.write(start, data, i % 7 == 0).await.unwrap();
        let v2 = v.clone();
        futs.push(tokio::spawn(
            async move { v2.read(start, 4).await.unwrap() },
        ));
    }
    for f in futs {
        f.await.unwrap();
    }
    v.write_zeroes(100, 30, false).await.unwrap();
    expect[100 * 512..130 * 512].fill(0);
    v.flush().await.unwrap();
    let all = v.read(0, v.total_blocks).await.unwrap();
    assert!(all == expect[..], "read back differs");
    // A flush is acknowledged by two: let the third finish before the
    // replicas are compared.
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_downstairs_down_then_replayed() {
    let mut cl = Cluster::new().await;
    let v = cl.attach(1).await;
    v.write(0, pattern(1, 64 * 512), false).await.unwrap();
    v.flush().await.unwrap();
    cl.ds[1].stop().await;
    // IO continues on two.
    for i in 0..20u64 {
        v.write(i * 8, pattern(100 + i, 8 * 512), false)
            .await
            .unwrap();
    }
    v.flush().await.unwrap();
    let s = v.status().await.unwrap();
    assert_eq!(s.modes[1], "offline");
    cl.ds[1].restart().await;
    wait_modes(&v, "active").await;
    v.flush().await.unwrap();
    let data = v.read(0, 160).await.unwrap();
    for i in 0..20u64 {
        assert_eq!(
            &data[i as usize * 8 * 512..(i as usize + 1) * 8 * 512],
            &pattern(100 + i, 8 * 512)[..]
        );
    }
    drop(v);
    let report = cl.verify().await;
    assert!(report.ok(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outage_is_live_repaired() {
    let mut cl = Cluster::new().await;
    let mut cfg = cl.cfg(1);
    cfg.max_replay_jobs = 8;
    let v = upstairs::start(cfg).await.unwrap();
    cl.ds[2].stop().await;
    for i in 0..40u64 {
        v.write((i * 13) % 500, pattern(i, 4 * 512), false)
            .await
            .unwrap();
    }
    let start = Instant::now();
    loop {
        if v.status().await.unwrap().modes[2] == "faulted" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cl.ds[2].restart().await;
    // Writes keep going during the repair.
    let writer = {
        let v = v.clone();
        tokio::spawn(async move {
            for i in 0..60u64 {
                v.write((i * 29) % 500, pattern(1000 + i, 2 * 512), false)
                    .await
                    .unwrap();
            }
        })
    };
    writer.await.unwrap();
    wait_modes(&v, "active").await;
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_live_repair_never_makes_a_stale_extent_look_fresh() {
    // Enough extents that the repair is still going when it is cut short.
    const EXTENTS: u32 = 256;
    let mut cl = Cluster::with_extents(EXTENTS).await;
    let mut cfg = cl.cfg(1);
    cfg.max_replay_jobs = 4;
    cfg.flush_interval = Duration::from_secs(3600);
    let v = upstairs::start(cfg).await.unwrap();
    let last = ES as u64 * (EXTENTS as u64 - 1);
    v.write(last, pattern(100, 512), true).await.unwrap();
    // Downstairs 0 stops with the last extent dirty, holding a write that
    // the others then overwrite and flush.
    v.write(last, pattern(101, 512), false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cl.ds[0].stop().await;
    v.write(last, pattern(102, 512), true).await.unwrap();
    for i in 0..8 {
        v.write(i, pattern(110 + i, 512), false).await.unwrap();
    }
    wait_modes_of(&v, 0, "faulted").await;
    cl.ds[0].restart().await;
    // Flushes reach it while it is being repaired; it is stopped before
    // the repair gets to the last extent.
    wait_modes_of(&v, 0, "repair").await;
    for i in 0..10 {
        v.write(i % 8, pattern(200 + i, 512), true).await.unwrap();
    }
    // Those flushes were acknowledged by 1 and 2; wait until 0 has run the
    // newest of them too, then check its repair is still under way.
    let status = v.status().await.unwrap();
    let newest = status.flushed[1].max(status.flushed[2]);
    assert!(newest > 0, "no flush acknowledged: {:?}", status.flushed);
    let status = wait_for_status(&v, "downstairs 0 to run the newest flush", |s| {
        s.flushed[0] >= newest
    })
    .await;
    assert_eq!(status.modes[0], "repair", "repair too fast");
    cl.ds[0].stop().await;
    drop(v);
    for d in &mut cl.ds {
        d.stop().await;
    }
    for d in &mut cl.ds {
        d.restart().await;
    }
    let v = cl.attach(2).await;
    let got = v.read(last, 1).await.unwrap();
    assert!(
        got == pattern(102, 512),
        "the flushed write was lost: activation took downstairs 0's stale copy"
    );
    drop(v);
    let report = cl.verify().await;
    assert!(report.ok(), "{report}");
}

/// Polls the volume's status until `done` holds, and returns that status.
async fn wait_for_status(
    v: &Volume,
    what: &str,
    done: impl Fn(&kelp_block::upstairs::Status) -> bool,
) -> kelp_block::upstairs::Status {
    kelp_testkit::until_async(what, Duration::from_secs(20), || async {
        v.status().await.ok().filter(|s| done(s))
    })
    .await
}

async fn wait_modes_of(v: &Volume, c: usize, want: &str) {
    let start = Instant::now();
    loop {
        let modes = v.status().await.unwrap().modes;
        if modes[c] == want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{modes:?}");
        v.write(0, pattern(1, 512), false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_at_activation_and_generation_fencing() {
    let mut cl = Cluster::new().await;
    let v1 = cl.attach(1).await;
    v1.write(0, pattern(7, 8 * 512), false).await.unwrap();
    v1.flush().await.unwrap();
    // Downstairs 0 misses a flushed write.
    cl.ds[0].stop().await;
    v1.write(ES as u64 * 3, pattern(8, 8 * 512), false)
        .await
        .unwrap();
    v1.flush().await.unwrap();
    drop(v1);
    cl.ds[0].restart().await;
    let v2 = cl.attach(2).await;
    assert_eq!(
        v2.read(ES as u64 * 3, 8).await.unwrap(),
        pattern(8, 8 * 512)
    );
    // A third upstairs with a higher generation fences the second.
    let v3 = cl.attach(3).await;
    let start = Instant::now();
    loop {
        match v2.write(0, pattern(9, 512), false).await {
            Err(e) => {
                assert!(
                    e.is_fenced() || matches!(e, kelp_block::BlockError::Fenced(_)),
                    "{e}"
                );
                break;
            }
            Ok(()) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "old upstairs not fenced"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(v2.status().await.unwrap().fenced);
    // An older generation cannot come back.
    match upstairs::start(cl.cfg(2)).await {
        Err(e) => assert!(
            e.is_fenced(),
            "generation 2 refused for another reason: {e}"
        ),
        Ok(_) => panic!("generation 2 activated after generation 3"),
    }
    v3.write(0, pattern(10, 512), true).await.unwrap();
    assert_eq!(v3.read(0, 1).await.unwrap(), pattern(10, 512));
    // A flush is acknowledged by two downstairs; a clean shutdown drains
    // until all three hold it (the third may still be catching up after
    // being taken over from the fenced upstairs).
    v3.drain(Duration::from_secs(20)).await.unwrap();
    drop((v2, v3));
    let report = cl.verify().await;
    assert!(report.ok(), "{report}");
    assert!(report.version_mismatches().is_empty(), "{report}");
}

/// Flips a byte of `block`'s data (in extent 0) in both of its slots in the
/// region at `dir`: whichever slot holds the block is damaged, the other is
/// a hole or an older copy.
fn damage(dir: &Path, block: u64) {
    use std::os::unix::fs::FileExt;
    assert!(block < ES as u64);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("extents/00000000.ext"))
        .unwrap();
    let data_off = kelp_block::extent::data_offset(ES);
    for slot in 0..2u64 {
        let off = data_off + (slot * ES as u64 + block) * BS as u64 + 17;
        let mut b = [0u8];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], off).unwrap();
    }
    f.sync_all().unwrap();
}

/// Writes blocks 4..8 (seed `seed`), lets every downstairs take them, then
/// writes them again (seed `seed + 1`, returned) with downstairs 2 stopped:
/// 0 and 1 end with the newer copy of extent 0, 2 with the older. Then
/// damages `damaged` (downstairs, block) and restarts all three.
async fn damaged_after_2_fell_behind(
    cl: &mut Cluster,
    seed: u64,
    damaged: &[(usize, u64)],
) -> Bytes {
    let v = cl.attach(1).await;
    v.write(4, pattern(seed, 4 * 512), true).await.unwrap();
    v.drain(Duration::from_secs(20)).await.unwrap();
    cl.ds[2].stop().await;
    let new = pattern(seed + 1, 4 * 512);
    v.write(4, new.clone(), true).await.unwrap();
    drop(v);
    for d in &mut cl.ds {
        d.stop().await;
    }
    cl.damage(damaged);
    for d in &mut cl.ds {
        d.restart().await;
    }
    new
}

/// Activates generation 2, checks blocks 4..8 read `new`, and that all
/// three replicas end identical, versions included.
async fn reconciled_to(mut cl: Cluster, new: Bytes) {
    let v = cl.attach(2).await;
    assert_eq!(v.read(4, 4).await.unwrap(), new);
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_is_read_elsewhere_and_repaired() {
    let mut cl = Cluster::new().await;
    let v = cl.attach(1).await;
    v.write(5, pattern(3, 512), true).await.unwrap();
    drop(v);
    for d in &mut cl.ds {
        d.stop().await;
    }
    damage(&cl.ds[0].dir, 5);
    for d in &mut cl.ds {
        d.restart().await;
    }
    let v = cl.attach(2).await;
    for _ in 0..6 {
        assert_eq!(v.read(5, 1).await.unwrap(), pattern(3, 512));
    }
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_freshest_copy_is_reconciled_from_the_next() {
    let mut cl = Cluster::new().await;
    // The freshest copies are on 0 and 1; 0, first in line, is damaged.
    let new = damaged_after_2_fell_behind(&mut cl, 40, &[(0, 5)]).await;
    reconciled_to(cl, new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extent_damaged_on_every_copy_is_merged_block_by_block() {
    let mut cl = Cluster::new().await;
    // Every copy fails somewhere, but each block is intact on a fresh copy.
    let new = damaged_after_2_fell_behind(&mut cl, 42, &[(0, 5), (1, 6), (2, 5)]).await;
    reconciled_to(cl, new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_damaged_on_every_copy_fails_activation_by_name() {
    let mut cl = Cluster::new().await;
    damaged_after_2_fell_behind(&mut cl, 44, &[(0, 6), (1, 6), (2, 6)]).await;
    let err = tokio::time::timeout(Duration::from_secs(20), upstairs::start(cl.cfg(2)))
        .await
        .expect("activation gives up in time")
        .err()
        .expect("activation fails");
    let msg = err.to_string();
    assert!(msg.contains("block 6"), "{msg}");
    assert!(msg.contains("every downstairs"), "{msg}");
    // No data changed: the damage is still there on all three, and the
    // stale copy on 2 was not stamped as fresh as the others.
    let report = cl.verify().await;
    assert_eq!(
        report.bad_checksums,
        vec![(0, 6), (1, 6), (2, 6)],
        "{report}"
    );
    assert!(
        report.versions[2][0].freshness() < report.versions[0][0].freshness(),
        "{report}"
    );
}

/// Writes extent 0 (returned), stops downstairs 0, damages `damaged`
/// (downstairs, block), then gives 0 a fresh region, so live repair has to
/// copy extent 0 from damaged sources.
async fn live_repair_from_damaged(cl: &mut Cluster, damaged: &[(usize, u64)]) -> (Volume, Bytes) {
    let v = cl.attach(1).await;
    let data = pattern(70, 64 * 512);
    v.write(0, data.clone(), true).await.unwrap();
    v.drain(Duration::from_secs(20)).await.unwrap();
    cl.ds[0].stop().await;
    cl.damage(damaged);
    std::fs::remove_dir_all(&cl.ds[0].dir).unwrap();
    drop(Region::create(&cl.ds[0].dir, BS, ES, EC).unwrap());
    cl.ds[0].restart().await;
    (v, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_repair_reads_around_a_damaged_source() {
    let mut cl = Cluster::new().await;
    // Downstairs 1, the first repair source, has a damaged block.
    let (v, data) = live_repair_from_damaged(&mut cl, &[(1, 9)]).await;
    // The repair takes extent 0 from 2 instead; 1 stays active, so writes
    // keep their quorum throughout.
    let start = Instant::now();
    for i in 0u64.. {
        v.write(ES as u64 * 7 + i % 8, pattern(60 + i, 512), true)
            .await
            .expect("writes keep going during the repair");
        let modes = v.status().await.unwrap().modes;
        assert_eq!(modes[1], "active", "{modes:?}");
        if modes.iter().all(|m| m == "active") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{modes:?}");
    }
    // Reads served by 1 find its bad block and rewrite it.
    for _ in 0..6 {
        assert_eq!(v.read(9, 1).await.unwrap(), data.slice(9 * 512..10 * 512));
    }
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_repair_merges_blocks_from_two_damaged_sources() {
    let mut cl = Cluster::new().await;
    let (v, data) = live_repair_from_damaged(&mut cl, &[(1, 9), (2, 10)]).await;
    // Writes to the extent being copied keep going and are not lost.
    let start = Instant::now();
    let mut last = [None; 4];
    for i in 0u64.. {
        let b = 20 + i % 4;
        v.write(b, pattern(80 + i, 512), true).await.unwrap();
        last[(i % 4) as usize] = Some(80 + i);
        let modes = v.status().await.unwrap().modes;
        if modes.iter().all(|m| m == "active") && i >= 4 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{modes:?}");
    }
    for _ in 0..6 {
        assert_eq!(v.read(9, 2).await.unwrap(), data.slice(9 * 512..11 * 512));
    }
    for (k, seed) in last.iter().enumerate() {
        assert_eq!(
            v.read(20 + k as u64, 1).await.unwrap(),
            pattern(seed.unwrap(), 512)
        );
    }
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_repair_leaves_a_block_damaged_on_every_source_as_an_error() {
    let mut cl = Cluster::new().await;
    let (v, _) = live_repair_from_damaged(&mut cl, &[(1, 9), (2, 9)]).await;
    // The repair cannot finish: downstairs 0 goes back to faulted, the
    // other two keep serving, and the lost block reads as an error.
    let start = Instant::now();
    loop {
        let modes = v.status().await.unwrap().modes;
        if modes[0] == "faulted" && start.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert_eq!(modes[1..], ["active", "active"], "{modes:?}");
        assert!(start.elapsed() < Duration::from_secs(20), "{modes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v.write(30, pattern(90, 512), true).await.unwrap();
    assert_eq!(v.read(30, 1).await.unwrap(), pattern(90, 512));
    let err = v
        .read(9, 1)
        .await
        .expect_err("a block lost everywhere is an error");
    let msg = err.to_string();
    assert!(
        msg.contains("block 9") && msg.contains("checksum on every active downstairs"),
        "{msg}"
    );
    assert_eq!(v.status().await.unwrap().modes[0], "faulted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_region_is_live_repaired() {
    let mut cl = Cluster::new().await;
    let v = cl.attach(1).await;
    v.write(0, pattern(21, 64 * 512), true).await.unwrap();
    cl.ds[0].stop().await;
    // The replica is lost; a fresh region takes its place at the same address.
    std::fs::remove_dir_all(&cl.ds[0].dir).unwrap();
    drop(Region::create(&cl.ds[0].dir, BS, ES, EC).unwrap());
    v.write(ES as u64 * 2, pattern(22, 8 * 512), false)
        .await
        .unwrap();
    cl.ds[0].restart().await;
    wait_modes(&v, "active").await;
    cl.drained_and_identical(v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_at_a_new_address_is_live_repaired() {
    let mut cl = Cluster::new().await;
    let v = cl.attach(1).await;
    v.write(0, pattern(31, 64 * 512), true).await.unwrap();
    v.write(ES as u64 * 5, pattern(32, 16 * 512), true)
        .await
        .unwrap();
    // Downstairs 0's server is gone for good.
    cl.ds[0].stop().await;
    let old = cl.ds[0].addr.to_string();
    v.write(ES as u64 * 2, pattern(33, 8 * 512), false)
        .await
        .unwrap();
    // An active downstairs cannot be replaced; an unknown one neither.
    let active = cl.ds[1].addr.to_string();
    assert!(v.replace(&active, "127.0.0.1:1").await.is_err());
    assert!(v.replace("127.0.0.1:2", "127.0.0.1:1").await.is_err());
    // A fresh region on another server takes its place.
    let dir = cl._tmp.path().join("r0-new");
    drop(Region::create(&dir, BS, ES, EC).unwrap());
    let fresh = Ds::start(&dir, None).await;
    v.replace(&old, &fresh.addr.to_string()).await.unwrap();
    cl.ds[0] = fresh;
    wait_modes(&v, "active").await;
    v.write(ES as u64 * 7, pattern(34, 4 * 512), true)
        .await
        .unwrap();
    assert_eq!(v.read(0, 64).await.unwrap(), pattern(31, 64 * 512));
    cl.drained_and_identical(v).await;
}
