//! Power cut: `kelp server` writes to a loop-mounted XFS that is shut down
//! with `xfs_io -x -c shutdown` (which drops everything not yet fsynced)
//! in the middle of concurrent writes. After remounting, every acknowledged
//! blob must read back intact. kill -9 alone cannot catch a missing fsync;
//! this can. The server is frozen (SIGSTOP) at the cut, so no fdatasync
//! straddles it: docs/durability.md explains why. Needs root, loop devices
//! and xfsprogs. `KELP_KEEP_TMP=1` keeps the image and logs of a run.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::xfs::{LoopXfs, tools_present};
use common::*;

/// Runs `rounds` of load + power cut + remount against `kelp server` with
/// `extra` flags and returns the history and a server started afterwards.
fn cut_power(
    root: &Path,
    fs: &mut LoopXfs,
    extra: &[&str],
    rounds: u64,
    verify_each: bool,
) -> (History, Kelp) {
    let dir = fs.mnt.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let logs = root.join("logs");
    let client = http();
    let mut history = History::default();
    let dir_arg = format!("-dir={}", dir.display());
    let mut args = vec![
        "server",
        dir_arg.as_str(),
        "-master.port=0",
        "-volume.port=0",
        "-ip=127.0.0.1",
    ];
    args.extend_from_slice(extra);
    for round in 0..rounds {
        let mut kelp = Kelp::start(&args, &logs);
        wait_healthy(&kelp.master_url());
        if verify_each {
            let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
            verify_history(&client, &url, &history);
        }
        let stop = AtomicBool::new(false);
        let master = kelp.master_url();
        let mut h = std::thread::scope(|s| {
            let load = s.spawn(|| write_load(&master, 8, (round + 1) << 40, &stop));
            std::thread::sleep(Duration::from_millis(1500));
            // The cut is an instant: the server is frozen first, so no
            // fdatasync straddles the shutdown (one that does can return
            // success for data the shutdown then drops — an artifact of
            // simulating the cut, which a real power cut cannot produce:
            // there, nothing is answered afterwards). See docs/durability.md.
            let cut_at = Instant::now();
            kelp.freeze();
            fs.shutdown().expect("xfs shutdown");
            kelp.kill9();
            stop.store(true, Ordering::Relaxed);
            (load.join().unwrap(), cut_at)
        });
        h.0.set_fault_at(h.1);
        let h = h.0;
        eprintln!(
            "round {round}: {} acked, {} unacked, {} deleted before the power cut",
            h.acked.len(),
            h.unacked.len(),
            h.deleted.len()
        );
        assert!(
            h.acked.len() > 20,
            "too few writes before the cut: {}",
            h.acked.len()
        );
        history.merge(h);
        drop(kelp);
        fs.umount().expect("umount after shutdown");
        fs.mount().expect("remount");
    }
    let kelp = Kelp::start(&args, &logs);
    wait_healthy(&kelp.master_url());
    (history, kelp)
}

#[test]
fn power_cut_keeps_every_acknowledged_blob() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = if std::env::var_os("KELP_KEEP_TMP").is_some() {
        let p = tmp.keep();
        eprintln!("keeping {}", p.display());
        p
    } else {
        tmp.path().to_path_buf()
    };
    let mut fs = LoopXfs::create(&tmp_path).expect("loop-mounted XFS");
    let (history, kelp) = cut_power(&tmp_path, &mut fs, &[], 3, true);
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    verify_history(&http(), &url, &history);
}

/// The control: without fsync the same power cut loses acknowledged blobs,
/// so the test above would notice a missing fsync.
#[test]
fn power_cut_without_fsync_is_detected() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut fs = LoopXfs::create(tmp.path()).expect("loop-mounted XFS");
    let (history, kelp) = cut_power(tmp.path(), &mut fs, &["-sync=none"], 1, false);
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    let client = http();
    let lost = history
        .acked
        .iter()
        .filter(|a| {
            get(&client, &url, &a.fid)
                .map(|r| r.status() != reqwest::StatusCode::OK)
                .unwrap_or(true)
        })
        .count();
    eprintln!(
        "--sync=none lost {lost} of {} acknowledged blobs",
        history.acked.len()
    );
    assert!(
        lost > 0,
        "a power cut without fsync lost nothing: the power-cut test cannot tell"
    );
}

/// One checked slot of the block volume: the patterns written to it, in
/// order, and whether each write's FLUSH was acknowledged.
#[derive(Default, Clone)]
struct SlotHistory(Vec<(u8, bool)>);

impl SlotHistory {
    /// Patterns a 4 KiB block of the slot may hold after a crash: the last
    /// flushed one and any attempted after it (0 if none was flushed).
    fn allowed(&self) -> Vec<u8> {
        let last = self.0.iter().rposition(|(_, acked)| *acked);
        let mut out: Vec<u8> = match last {
            Some(i) => self.0[i..].iter().map(|(p, _)| *p).collect(),
            None => std::iter::once(0)
                .chain(self.0.iter().map(|(p, _)| *p))
                .collect(),
        };
        out.dedup();
        out
    }
}

const SLOTS: u64 = 16;
const SLOT_BYTES: u64 = 256 << 10;

fn qemu_io_ok(qemu_io: &Path, url: &str, cmds: &[String]) -> bool {
    let mut c = Command::new(qemu_io);
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    match c.arg(url).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            out.status.success() && !text.contains("failed")
        }
        Err(_) => false,
    }
}

/// What a power cut under a block volume left: every slot's write history,
/// the volume's contents read back after remount and reattach, and the
/// running processes (three downstairs and the upstairs).
struct BlockCut {
    history: Vec<SlotHistory>,
    data: Vec<u8>,
    procs: Vec<Kelp>,
    dirs: Vec<String>,
    /// Unmounted when dropped, after the processes (fields drop in order).
    _fs: LoopXfs,
}

impl BlockCut {
    /// Every block of a flushed write that holds neither its flushed value
    /// nor a later attempted one, one line each.
    fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (slot, h) in self.history.iter().enumerate() {
            let allowed = h.allowed();
            for b in 0..SLOT_BYTES / 4096 {
                let off = slot * SLOT_BYTES as usize + b as usize * 4096;
                let block = &self.data[off..off + 4096];
                if !(allowed.contains(&block[0]) && block.iter().all(|&x| x == block[0])) {
                    out.push(format!(
                        "slot {slot} block {b}: holds {:#x}.., allowed {allowed:?}",
                        block[0]
                    ));
                }
            }
        }
        out
    }
}

/// The pattern the slots hold in snapshot `s1` when the power cut test
/// takes one first.
const SNAPSHOT_PATTERN: u8 = 0x5a;

/// Three downstairs (with `downstairs_args`) on one loop-mounted XFS and an
/// upstairs; qemu-io writes and flushes over NBD (with automatic flushes
/// every 20 ms running beside further writes), then the power is cut:
/// freeze, `xfs_io shutdown`, kill -9, remount, reattach. With `snapshot`,
/// the slots are first filled with `SNAPSHOT_PATTERN` and snapshot `s1`
/// taken, so the load overwrites blocks the snapshot keeps (copy-on-write
/// under the power cut).
fn block_power_cut(root: &Path, downstairs_args: &[&str], snapshot: bool) -> Option<BlockCut> {
    let (Some(qemu_io), Some(qemu_img)) = (
        require_tool("qemu-io (apt-get install qemu-utils)", which("qemu-io")),
        require_tool("qemu-img (apt-get install qemu-utils)", which("qemu-img")),
    ) else {
        return None;
    };
    let logs = root.join("logs");
    let mut fs = LoopXfs::create(root).expect("loop-mounted XFS");
    let dirs: Vec<String> = (0..3)
        .map(|i| fs.mnt.join(format!("r{i}")).display().to_string())
        .collect();
    for d in &dirs {
        let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["block", "create", &format!("--dir={d}")])
            .args([
                "--block-size=4096",
                "--extent-size=64",
                "--extent-count=128",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let start = |generation: u64| -> Vec<Kelp> {
        let mut ks: Vec<Kelp> = dirs
            .iter()
            .map(|d| {
                let dir = format!("--dir={d}");
                let mut args = vec!["downstairs", dir.as_str(), "--port=0"];
                args.extend_from_slice(downstairs_args);
                Kelp::start(&args, &logs)
            })
            .collect();
        let mut args: Vec<String> = ks
            .iter()
            .map(|k| format!("--target=127.0.0.1:{}", k.port("port")))
            .collect();
        args.extend([
            format!("--gen={generation}"),
            "--nbd=127.0.0.1:0".into(),
            "--flush-interval-ms=20".into(),
        ]);
        let mut all = vec!["upstairs"];
        all.extend(args.iter().map(|s| s.as_str()));
        ks.push(Kelp::start(&all, &logs));
        ks
    };
    let mut generation = 1;
    if snapshot {
        let mut procs = start(generation);
        let url = format!("nbd://127.0.0.1:{}", procs[3].port("nbd_port"));
        let fill = [
            format!("write -P {SNAPSHOT_PATTERN} 0 {}", SLOTS * SLOT_BYTES),
            "flush".to_string(),
        ];
        assert!(qemu_io_ok(&qemu_io, &url, &fill), "filling the slots");
        for k in procs.iter_mut().rev() {
            k.stop();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args([
                "block",
                "snapshot",
                "create",
                &format!("--dir={}", dirs.join(",")),
                "s1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        generation += 1;
    }
    let mut procs = start(generation);
    let url = format!("nbd://127.0.0.1:{}", procs[3].port("nbd_port"));
    let stop = AtomicBool::new(false);
    let flushed = AtomicUsize::new(0);
    let history = std::thread::scope(|s| {
        // Unchecked load above the slots keeps automatic flushes busy.
        let bg = s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let off = SLOTS * SLOT_BYTES + (i * 7919 % 400) * (64 << 10);
                qemu_io_ok(&qemu_io, &url, &[format!("write -P 0xee {off} 64k")]);
                i += 1;
            }
        });
        let checked = s.spawn(|| {
            let mut h = vec![SlotHistory::default(); SLOTS as usize];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let slot = (i * 5) % SLOTS;
                let pattern = (i % 250) as u8 + 1;
                let cmds = [
                    format!("write -P {pattern} {} {SLOT_BYTES}", slot * SLOT_BYTES),
                    "flush".to_string(),
                ];
                // Recorded before the result: an unacknowledged write may
                // still have landed.
                h[slot as usize].0.push((pattern, false));
                let ok = qemu_io_ok(&qemu_io, &url, &cmds);
                // Acknowledged only if it finished before the cut.
                if ok && !stop.load(Ordering::Relaxed) {
                    h[slot as usize].0.last_mut().unwrap().1 = true;
                    flushed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            h
        });
        // At least 3 s of load and 30 flushed writes (a loaded machine
        // is slower), at most 60 s.
        let t0 = Instant::now();
        while (t0.elapsed() < Duration::from_secs(3) || flushed.load(Ordering::Relaxed) < 30)
            && t0.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for k in procs.iter_mut() {
            k.freeze();
        }
        stop.store(true, Ordering::Relaxed);
        fs.shutdown().expect("xfs shutdown");
        for k in procs.iter_mut() {
            k.kill9();
        }
        bg.join().unwrap();
        checked.join().unwrap()
    });
    let acked: usize = history
        .iter()
        .map(|h| h.0.iter().filter(|(_, a)| *a).count())
        .sum();
    eprintln!("{acked} flushed slot writes before the power cut");
    assert!(acked > 20, "too few flushed writes before the cut: {acked}");
    drop(procs);
    fs.umount().expect("umount after shutdown");
    fs.mount().expect("remount");

    let procs = start(generation + 1);
    let url = format!("nbd://127.0.0.1:{}", procs[3].port("nbd_port"));
    let image = root.join("after.raw");
    let out = Command::new(&qemu_img)
        .args(["convert", "-f", "raw", "-O", "raw", &url])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img convert: {out:?}");
    let data = std::fs::read(&image).unwrap();
    Some(BlockCut {
        history,
        data,
        procs,
        dirs,
        _fs: fs,
    })
}

/// Power cut under a replicated block volume (see [`block_power_cut`]):
/// every block of every flushed write holds its flushed value or a later
/// attempted one (never a torn or older one), and the three replicas agree.
#[test]
fn power_cut_keeps_every_flushed_block_write() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut cut) = block_power_cut(tmp.path(), &[], false) else {
        return;
    };
    let violations = cut.violations();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    verify_replicas(&mut cut);
}

/// The same power cut after a snapshot: the load overwrites blocks the
/// snapshot keeps, so their saved copies must be durable before their
/// slots are reused. After the cut the live volume holds every flushed
/// write, every replica's snapshot reads back exactly what it held, and
/// the replicas agree.
#[test]
fn power_cut_keeps_snapshots() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut cut) = block_power_cut(tmp.path(), &[], true) else {
        return;
    };
    let violations = cut.violations();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    verify_replicas(&mut cut);
    let blocks = SLOTS * SLOT_BYTES / 4096;
    for d in &cut.dirs {
        let r = kelp_block::Region::open(Path::new(d), true).unwrap();
        assert!(
            r.saved_bytes() > 0,
            "{d}: the load overwrote nothing the snapshot keeps"
        );
        let (ctxs, data) = r.read_snapshot("s1", 0, blocks).unwrap();
        for (i, c) in ctxs.iter().enumerate() {
            let blk = &data[i * 4096..(i + 1) * 4096];
            assert!(c.verify(blk), "{d}: s1 block {i} fails its context");
            assert!(
                blk.iter().all(|&x| x == SNAPSHOT_PATTERN),
                "{d}: s1 block {i} holds {:#x}, not the snapshot's {SNAPSHOT_PATTERN:#x}",
                blk[0]
            );
        }
    }
}

/// Stops the volume cleanly and checks that the replicas agree.
fn verify_replicas(cut: &mut BlockCut) {
    // Reconciled at activation: once the upstairs has stopped cleanly, the
    // three replicas hold the same data.
    cut.procs[3].stop();
    for k in cut.procs.iter_mut().take(3) {
        k.stop();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["block", "verify", &format!("--dir={}", cut.dirs.join(","))])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replicas differ: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The control: with the downstairs skipping fdatasync (`--sync=none`) the
/// same power cut loses flushed block writes, so the test above would
/// notice a missing fsync.
#[test]
fn block_power_cut_without_fsync_is_detected() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(cut) = block_power_cut(tmp.path(), &["--sync=none"], false) else {
        return;
    };
    let lost = cut.violations();
    eprintln!("--sync=none: {} flushed blocks lost or wrong", lost.len());
    assert!(
        !lost.is_empty(),
        "a power cut without fsync lost no flushed block: the block power-cut test cannot tell"
    );
}
