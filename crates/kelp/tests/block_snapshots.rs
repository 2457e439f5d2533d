//! Snapshots of a running block volume, end to end with real processes:
//! `kelp downstairs` ×3 and `kelp upstairs --control --nbd-snapshots`,
//! qemu-img writing the live export, snapshots taken through the control
//! API, and each snapshot's read-only export compared with what the volume
//! held when it was taken while fio keeps writing the live volume.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::block::{Volume, kelp_cmd, run, tool};
use common::{DEADLINE, Kelp, wait_until};

const EXTENTS: u32 = 32;
/// 32 extents of 256 blocks of 4 KiB.
const SIZE: usize = 32 << 20;

/// An upstairs with a control API and the snapshot NBD server.
fn snap_upstairs(v: &Volume, generation: u64) -> Kelp {
    v.upstairs(
        generation,
        &["--nbd-snapshots=127.0.0.1:0", "--control=127.0.0.1:0"],
    )
}

fn control(up: &Kelp) -> String {
    format!("http://127.0.0.1:{}", up.port("control_port"))
}

fn live_url(up: &Kelp) -> String {
    format!("nbd://127.0.0.1:{}", up.port("nbd_port"))
}

fn snap_url(up: &Kelp, name: &str) -> String {
    format!("nbd://127.0.0.1:{}/{name}", up.port("nbd_snapshots_port"))
}

/// POST /snapshots: (status, JSON body).
fn create(up: &Kelp, name: &str) -> (u16, serde_json::Value) {
    let r = common::http()
        .post(format!("{}/snapshots", control(up)))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

fn list(up: &Kelp) -> Vec<String> {
    let v: serde_json::Value = common::http()
        .get(format!("{}/snapshots", control(up)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn compare(qemu_img: &Path, a: &str, b: &Path) {
    run(Command::new(qemu_img)
        .args(["compare", "-f", "raw", "-F", "raw", a])
        .arg(b));
}

#[test]
fn snapshots_of_a_running_volume_while_fio_writes() {
    let (Some(qemu_img), Some(qemu_io), Some(fio), Some(nbdcopy), Some(nbdinfo)) = (
        tool("qemu-img"),
        tool("qemu-io"),
        tool("fio"),
        tool("nbdcopy"),
        tool("nbdinfo"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let v = Volume::new(tmp.path(), EXTENTS);
    let mut up = snap_upstairs(&v, 1);

    // s1: a random image written over NBD.
    let image1 = tmp.path().join("image1.raw");
    let mut data = common::blob(7, SIZE);
    std::fs::write(&image1, &data).unwrap();
    run(Command::new(&qemu_img)
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&image1)
        .arg(live_url(&up)));
    let (status, s1) = create(&up, "s1");
    assert_eq!(status, 200, "{s1}");
    assert_eq!(s1["name"], "s1");
    let guid = s1["guid"].as_str().unwrap();
    assert!(
        guid.len() == 32 && guid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{s1}"
    );
    assert!(s1["flush"].as_u64().unwrap() > 0 && s1["created"].as_u64().unwrap() > 0);

    // s2: part of the volume overwritten.
    run(Command::new(&qemu_io).args([
        "-f",
        "raw",
        "-c",
        "write -P 0xab 4M 8M",
        "-c",
        "write -P 0x5c 30M 12k",
        &live_url(&up),
    ]));
    data[4 << 20..12 << 20].fill(0xab);
    data[30 << 20..(30 << 20) + (12 << 10)].fill(0x5c);
    let image2 = tmp.path().join("image2.raw");
    std::fs::write(&image2, &data).unwrap();
    let (status, s2) = create(&up, "s2");
    assert_eq!(status, 200, "{s2}");
    assert!(s2["flush"].as_u64().unwrap() > s1["flush"].as_u64().unwrap());
    let (status, dup) = create(&up, "s1");
    assert_eq!(status, 409, "{dup}");
    let (status, bad) = create(&up, "-bad name");
    assert_eq!(status, 400, "{bad}");
    assert_eq!(list(&up), ["s1", "s2"]);

    // fio writes the live volume while the snapshots are compared.
    let mut fio = Command::new(&fio)
        .args([
            "--name=live",
            "--ioengine=nbd",
            &format!("--uri={}", live_url(&up)),
            "--rw=randwrite",
            "--bs=4k",
            "--size=32M",
            "--iodepth=8",
            "--time_based",
            "--runtime=6",
            "--output-format=terse",
        ])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    compare(&qemu_img, &snap_url(&up, "s1"), &image1);
    compare(&qemu_img, &snap_url(&up, "s2"), &image2);
    assert!(
        fio.try_wait().unwrap().is_none(),
        "fio ended before the compares did ({:?}); they did not run beside it",
        started.elapsed()
    );
    // An unknown export is refused; a snapshot export takes no writes.
    let out = Command::new(&nbdinfo)
        .arg(snap_url(&up, "nope"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown snapshot export opened");
    let out = Command::new(&nbdcopy)
        .arg(&image2)
        .arg(snap_url(&up, "s1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && err.contains("read"),
        "a write to a snapshot export: {err}"
    );
    let out = Command::new(&nbdinfo)
        .args(["--json", &snap_url(&up, "s2")])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && info.contains("\"is_read_only\": true"),
        "{info}"
    );
    let out = fio.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fio failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Still the same after fio, and the live volume moved on.
    compare(&qemu_img, &snap_url(&up, "s2"), &image2);
    let live = Command::new(&qemu_img)
        .args(["compare", "-f", "raw", "-F", "raw", &live_url(&up)])
        .arg(&image2)
        .output()
        .unwrap();
    assert!(!live.status.success(), "fio changed nothing?");

    // The library client, as the CLI uses it; then a delete.
    let addr = format!("127.0.0.1:{}", up.port("control_port"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use kelp_block::control::client;
        let l = client::list_snapshots(&addr).await.unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].guid, guid);
        let e = client::create_snapshot(&addr, "s2").await.unwrap_err();
        assert!(
            matches!(e, kelp_block::error::BlockError::SnapshotExists(_)),
            "{e}"
        );
        let s3 = client::create_snapshot(&addr, "s3").await.unwrap();
        assert!(s3.flush > l[1].flush);
        client::delete_snapshot(&addr, "s1").await.unwrap();
        let e = client::delete_snapshot(&addr, "s1").await.unwrap_err();
        assert!(
            matches!(e, kelp_block::error::BlockError::NoSuchSnapshot(_)),
            "{e}"
        );
    });
    assert_eq!(list(&up), ["s2", "s3"]);
    let out = Command::new(&nbdinfo)
        .arg(snap_url(&up, "s1"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a deleted snapshot is still exported"
    );
    compare(&qemu_img, &snap_url(&up, "s2"), &image2);
    up.stop();
    // Every replica holds the same snapshots, with the same content.
    let mut v = v;
    for d in &mut v.ds {
        d.stop();
    }
    for dir in &v.dirs {
        let r = kelp_block::region::Region::open(dir, true).unwrap();
        let names: Vec<&str> = r.snapshots().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s2", "s3"], "{}", dir.display());
        let total = r.def().total_blocks();
        let (_, got) = r.read_snapshot("s2", 0, total).unwrap();
        assert!(got == data, "s2 differs on {}", dir.display());
    }
}

/// With a downstairs down, a snapshot is refused up front, naming it; once
/// it is back (replayed), snapshots work again.
#[test]
fn snapshot_refused_while_a_downstairs_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mut v = Volume::new(tmp.path(), EXTENTS);
    let mut up = snap_upstairs(&v, 1);
    let port = v.ds[2].port("port");
    v.ds[2].kill9();
    let status = |up: &Kelp| -> serde_json::Value {
        common::http()
            .get(format!("{}/status", control(up)))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // The connection closing tells the upstairs at once.
    wait_until(
        "the upstairs to notice downstairs 2 is gone",
        DEADLINE,
        || (status(&up)["modes"][2] != "active").then_some(()),
    );
    let (code, body) = create(&up, "s1");
    assert_eq!(code, 503, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("downstairs 2 (127.0.0.1:{port})")),
        "the error names the missing replica: {msg}"
    );
    v.ds[2] = v.start_ds(2, port);
    wait_until("all three downstairs active again", DEADLINE, || {
        let s = status(&up);
        (s["modes"] == serde_json::json!(["active", "active", "active"])).then_some(())
    });
    let (code, body) = create(&up, "s1");
    assert_eq!(code, 200, "{body}");
    up.stop();
}

/// A downstairs killed with `kill -9` during a snapshot request, then
/// restarted: the request may fail or succeed, but once the upstairs has
/// brought it back every replica holds the same snapshots, every listed
/// snapshot reads back exactly what the volume held when it was taken, and
/// `kelp block verify` (data, extent versions, births, catalogs, snapshot
/// versions) passes. In the last round the downstairs is frozen before
/// the request and the upstairs killed too, so a new upstairs reconciles a
/// downstairs that lacks the snapshot the other two took.
#[test]
fn a_downstairs_killed_during_a_snapshot_gets_it_when_it_is_back() {
    let Some(qemu_img) = tool("qemu-img") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    let mut v = Volume::new(tmp.path(), EXTENTS);
    let mut up = snap_upstairs(&v, 1);
    // What the volume held when each snapshot was taken.
    let mut want: Vec<(String, Vec<u8>)> = vec![];
    let write = |up: &Kelp, seed: u64| {
        let data = common::blob(seed, SIZE);
        let path = tmp.path().join(format!("image{seed}.raw"));
        std::fs::write(&path, &data).unwrap();
        run(Command::new(&qemu_img)
            .args(["convert", "-n", "-f", "raw", "-O", "raw"])
            .arg(&path)
            .arg(live_url(up)));
        data
    };
    let image = write(&up, 1);
    let (status, s) = create(&up, "s1");
    assert_eq!(status, 200, "{s}");
    want.push(("s1".into(), image));
    // Rounds 0 to 2: the upstairs replays or live-repairs the downstairs.
    // Round 3: the upstairs is killed too while the downstairs is down, so
    // a new one reconciles the three.
    for round in 0..4u64 {
        let image = write(&up, 10 + round);
        let name = format!("during-{round}");
        let k = (round % 3) as usize;
        let port = v.ds[k].port("port");
        let url = control(&up);
        let body = serde_json::json!({ "name": name });
        if round == 3 {
            // Frozen first: the other two take the snapshot, it cannot.
            v.ds[k].freeze();
        }
        let req = std::thread::spawn(move || {
            common::http()
                .post(format!("{url}/snapshots"))
                .json(&body)
                .send()
                .map(|r| r.status().as_u16())
        });
        // Killed as soon as the upstairs has queued the snapshot's flush
        // (or a moment later), so the kill lands during it.
        let queued = format!("snapshot={name}");
        let start = Instant::now();
        while !up.log_text().contains(&queued) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(round % 2 * 3));
        v.ds[k].kill9();
        // The request waits for the killed downstairs (it may still take
        // the snapshot when replayed), so it is restarted first; in the
        // last round the upstairs dies before it is back.
        if round == 3 {
            // Long enough for the other two to take it.
            std::thread::sleep(Duration::from_millis(500));
            up.kill9();
        }
        v.ds[k] = v.start_ds(k, port);
        let status = req.join().unwrap();
        eprintln!("round {round}: snapshot {name} answered {status:?}");
        if round == 3 {
            up = snap_upstairs(&v, 2);
        }
        // A snapshot needs all three active: this one succeeds once the
        // killed downstairs is back (replayed or repaired). Nothing was
        // written since, so it holds the same image.
        let probe = format!("after-{round}");
        wait_until("all three downstairs to be active again", DEADLINE, || {
            let (status, _) = create(&up, &probe);
            (status == 200).then_some(())
        });
        // The snapshot taken during the kill exists on the volume if any
        // replica took it (the request may have failed).
        if list(&up).contains(&name) {
            want.push((name, image.clone()));
        }
        want.push((probe, image));
        if round == 3 {
            assert!(
                up.log_text().contains("bringing a downstairs' snapshots"),
                "the new upstairs gave downstairs {k} the snapshot it missed"
            );
        }
    }
    up.stop();
    // Stops the downstairs; the replicas agree.
    v.verify();

    // Every region lists the same snapshots.
    let lists: Vec<String> = v
        .dirs
        .iter()
        .map(|d| {
            let out = kelp_cmd(&[
                "block",
                "snapshot",
                "list",
                &format!("--dir={}", d.display()),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert!(lists.iter().all(|l| l == &lists[0]), "{lists:#?}");
    // Every listed snapshot reads back exactly, on every replica.
    let regions: Vec<kelp_block::Region> = v
        .dirs
        .iter()
        .map(|d| kelp_block::Region::open(d, true).unwrap())
        .collect();
    let blocks = (SIZE / 4096) as u64;
    let listed: Vec<String> = regions[0]
        .snapshots()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    for r in &regions {
        assert_eq!(
            r.snapshots(),
            regions[0].snapshots(),
            "{}",
            r.dir().display()
        );
    }
    let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(listed, names, "the volume's snapshots, in order");
    for (name, image) in &want {
        for r in &regions {
            let (_, data) = r.read_snapshot(name, 0, blocks).unwrap();
            assert!(
                data == *image,
                "snapshot {name} on {} differs from what the volume held",
                r.dir().display()
            );
        }
    }
}
