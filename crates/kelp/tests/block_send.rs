//! Block snapshots offline, with the `kelp` binary as users run it:
//! `kelp block snapshot|rollback|clone|send|receive` on region
//! directories, streams through real pipes (as `send | ssh | receive`
//! would), the result served by downstairs and an upstairs and compared by
//! `qemu-img compare`; refusals that change nothing; cut and killed
//! receives resumed to the same bytes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::block::{Volume, kelp_cmd, nbd_url, run, tool};
use kelp_block::Region;
use kelp_block::context::block_crc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BS: usize = 4096;
const EXTENT: u32 = 256;
const EXTENTS: u32 = 16;
const TOTAL: u64 = (EXTENT * EXTENTS) as u64;

fn dir_arg(dirs: &[PathBuf]) -> String {
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("--dir={}", list.join(","))
}

fn ok(args: &[&str]) -> String {
    let out = kelp_cmd(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kelp {args:?} failed: {text}");
    text
}

fn refused(args: &[&str], want: &str) -> String {
    let out = kelp_cmd(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "kelp {args:?} should fail: {text}");
    assert!(
        text.contains(want),
        "kelp {args:?}: wanted {want:?} in: {text}"
    );
    text
}

fn create(root: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..3)
        .map(|i| {
            let d = root.join(format!("{prefix}{i}"));
            ok(&[
                "block",
                "create",
                &format!("--dir={}", d.display()),
                "--block-size=4096",
                &format!("--extent-size={EXTENT}"),
                &format!("--extent-count={EXTENTS}"),
            ]);
            d
        })
        .collect()
}

/// The same writes on every replica (as an upstairs would send them),
/// applied to `image` too.
fn write_all(dirs: &[PathBuf], image: &mut [u8], rng: &mut StdRng, blocks: usize) {
    let mut writes = Vec::new();
    for _ in 0..blocks {
        let b = rng.random_range(0..TOTAL) as usize;
        let data: Vec<u8> = if rng.random_bool(0.1) {
            vec![0; BS]
        } else {
            (0..BS).map(|_| rng.random()).collect()
        };
        image[b * BS..(b + 1) * BS].copy_from_slice(&data);
        writes.push((b as u64, data));
    }
    for d in dirs {
        let mut r = Region::open(d, false).unwrap();
        for (b, data) in &writes {
            if data.iter().all(|&x| x == 0) {
                r.write_zeroes(*b, 1).unwrap();
            } else {
                r.write(*b, data, &[block_crc(data)]).unwrap();
            }
        }
        let f = r.flush_mark() + 1;
        r.flush(f, 1).unwrap();
    }
}

/// A source volume with snapshots s1, s2, s3 and what each holds.
fn source(root: &Path) -> (Vec<PathBuf>, Vec<Vec<u8>>) {
    let dirs = create(root, "src");
    let mut rng = StdRng::seed_from_u64(7);
    let mut image = vec![0u8; TOTAL as usize * BS];
    let mut images = Vec::new();
    for (name, n) in [("s1", 1500), ("s2", 200), ("s3", 40)] {
        write_all(&dirs, &mut image, &mut rng, n);
        ok(&["block", "snapshot", "create", &dir_arg(&dirs), name]);
        images.push(image.clone());
    }
    // Written after s3: never sent.
    write_all(&dirs, &mut image, &mut rng, 30);
    (dirs, images)
}

/// What snapshot `name` of region `dir` holds.
fn snapshot_bytes(dir: &Path, name: &str) -> Vec<u8> {
    let r = Region::open(dir, true).unwrap();
    let (ctxs, data) = r.read_snapshot(name, 0, TOTAL).unwrap();
    for (i, c) in ctxs.iter().enumerate() {
        assert!(c.verify(&data[i * BS..(i + 1) * BS]), "{name} block {i}");
    }
    data
}

fn live_bytes(dir: &Path) -> Vec<u8> {
    Region::open(dir, true).unwrap().read(0, TOTAL).unwrap().1
}

fn snapshot_names(dirs: &[PathBuf]) -> String {
    ok(&["block", "snapshot", "list", "--json", &dir_arg(dirs)])
}

/// `kelp block send ARGS | kelp block receive ARGS` through a real pipe.
fn pipe(send: &[&str], receive: &[&str]) -> (bool, String) {
    let kelp = env!("CARGO_BIN_EXE_kelp");
    let mut tx = Command::new(kelp)
        .args(["block", "send", "-q"])
        .args(send)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = Command::new(kelp)
        .args(["block", "receive", "-q"])
        .args(receive)
        .stdin(tx.stdout.take().unwrap())
        .output()
        .unwrap();
    let txo = tx.wait_with_output().unwrap();
    let text = format!(
        "{}{}{}",
        String::from_utf8_lossy(&rx.stdout),
        String::from_utf8_lossy(&rx.stderr),
        String::from_utf8_lossy(&txo.stderr)
    );
    (rx.status.success() && txo.status.success(), text)
}

/// Serves regions `dirs` with downstairs and an upstairs, and checks with
/// `qemu-img compare` that the volume holds `want`.
fn serve_and_compare(qemu_img: &Path, root: &Path, dirs: &[PathBuf], want: &[u8]) {
    let file = root.join("want.raw");
    std::fs::write(&file, want).unwrap();
    let mut v = Volume::serve(root, dirs);
    let mut up = v.upstairs(1, &[]);
    run(Command::new(qemu_img)
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&file)
        .arg(nbd_url(&up)));
    up.stop();
    v.stop();
}

#[test]
fn send_receive_serve_compare_and_roll_back() {
    let Some(qemu_img) = tool("qemu-img") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(tmp.path());
    let dst = create(tmp.path(), "dst");
    let (good, text) = pipe(&[&dir_arg(&src[1..2]), "s1"], &[&dir_arg(&dst)]);
    assert!(good, "full send | receive: {text}");
    // Every intermediate snapshot in one go, like zfs send -I.
    let (good, text) = pipe(
        &[&dir_arg(&src[..1]), "-I", "s1", "s3", "--compress"],
        &[&dir_arg(&dst)],
    );
    assert!(good, "send -I | receive: {text}");
    let list = snapshot_names(&dst);
    for name in ["s1", "s2", "s3"] {
        assert!(list.contains(&format!("\"name\":\"{name}\"")), "{list}");
    }
    let ids = |dirs: &[PathBuf]| -> Vec<(String, String)> {
        snapshot_names(dirs)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["name"].to_string(), v["guid"].to_string())
            })
            .collect()
    };
    assert_eq!(ids(&dst), ids(&src), "same names, GUIDs and order");
    for (i, name) in ["s1", "s2", "s3"].iter().enumerate() {
        assert!(
            snapshot_bytes(&dst[2], name) == images[i],
            "{name} on the receiver"
        );
    }
    // Serve the received regions and compare with qemu-img, as a user
    // would check them.
    serve_and_compare(&qemu_img, tmp.path(), &dst, &images[2]);
    ok(&["block", "verify", &dir_arg(&dst)]);
    // Rolling back past later snapshots needs --destroy-later.
    refused(
        &["block", "rollback", &dir_arg(&src), "s1"],
        "would destroy s2, s3",
    );
    let out = ok(&["block", "rollback", &dir_arg(&src), "s1", "--destroy-later"]);
    assert!(out.contains("destroyed later snapshots: s2, s3"), "{out}");
    for d in &src {
        assert!(live_bytes(d) == images[0], "rolled back to s1");
    }
    serve_and_compare(&qemu_img, tmp.path(), &src, &images[0]);
    // A clone of s2 on the receiver is a volume of its own.
    let clones: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("clone{i}")))
        .collect();
    let out = ok(&[
        "block",
        "clone",
        &dir_arg(&dst),
        "s2",
        &format!(
            "--to={}",
            clones
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ]);
    assert!(out.contains("cloned"), "{out}");
    for c in &clones {
        assert!(live_bytes(c) == images[1], "the clone holds s2");
    }
    assert!(
        snapshot_bytes(&dst[0], "s3") == images[2],
        "the origin keeps s3"
    );
}

#[test]
fn refusals_leave_the_target_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = source(tmp.path());
    let dst = create(tmp.path(), "dst");
    let (good, text) = pipe(&[&dir_arg(&src[..1]), "s1"], &[&dir_arg(&dst)]);
    assert!(good, "{text}");
    let listed = snapshot_names(&dst);
    let live = live_bytes(&dst[0]);
    let unchanged = |what: &str| {
        assert_eq!(snapshot_names(&dst), listed, "{what} changed the snapshots");
        assert!(live_bytes(&dst[0]) == live, "{what} changed the volume");
    };
    let stream = |args: &[&str]| -> Vec<u8> {
        let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["block", "send", "-q", &dir_arg(&src[..1])])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let receive_bytes = |bytes: &[u8], extra: &[&str]| -> (bool, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["block", "receive", "-q", &dir_arg(&dst)])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(bytes);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let expect_refused = |bytes: &[u8], want: &str, what: &str| {
        let (good, text) = receive_bytes(bytes, &[]);
        assert!(!good, "{what} was accepted: {text}");
        assert!(text.contains(want), "{what}: wanted {want:?} in {text}");
        unchanged(what);
    };
    let inc23 = stream(&["s3", "--from=s2"]);
    expect_refused(
        &inc23,
        "does not hold",
        "an incremental onto a missing base",
    );
    expect_refused(&stream(&["s1"]), "already holds", "the same snapshot again");
    expect_refused(
        b"GARBAGE-NOT-A-STREAM-AT-ALL-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "not a Kelp send stream",
        "garbage",
    );
    let inc12 = stream(&["s2", "--from=s1"]);
    let mut v9 = inc12.clone();
    v9[8] = 9;
    expect_refused(&v9, "", "another stream version");
    for at in [70usize, inc12.len() / 2, inc12.len() - 10] {
        let mut bad = inc12.clone();
        bad[at] ^= 0x20;
        expect_refused(&bad, "", &format!("a flipped byte at {at}"));
        expect_refused(&inc12[..at], "", &format!("a stream cut at {at}"));
    }
    // Another geometry.
    let small: Vec<PathBuf> = (0..1)
        .map(|i| tmp.path().join(format!("small{i}")))
        .collect();
    ok(&[
        "block",
        "create",
        &format!("--dir={}", small[0].display()),
        "--extent-size=256",
        "--extent-count=2",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["block", "receive", "-q", &dir_arg(&small), "-f"])
        .arg(tmp.path().join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let full = tmp.path().join("full.ks");
    std::fs::write(&full, stream(&["s1"])).unwrap();
    refused(
        &[
            "block",
            "receive",
            &dir_arg(&small),
            &format!("--input={}", full.display()),
        ],
        "the stream is for a volume of 4096 blocks",
    );
    // A target written since its newest snapshot refuses; --force rolls back.
    {
        let mut r: Vec<Region> = dst
            .iter()
            .map(|d| Region::open(d, false).unwrap())
            .collect();
        let d = vec![5u8; BS];
        for x in r.iter_mut() {
            x.write(9, &d, &[block_crc(&d)]).unwrap();
            let f = x.flush_mark() + 1;
            x.flush(f, 1).unwrap();
        }
    }
    let (good, text) = receive_bytes(&inc12, &[]);
    assert!(!good && text.contains("--force"), "{text}");
    let (good, text) = receive_bytes(&inc12, &["--force"]);
    assert!(good, "{text}");
    // Names: bad, duplicate; deleting what does not exist.
    refused(
        &["block", "snapshot", "create", &dir_arg(&dst), "a b"],
        "may hold only",
    );
    refused(
        &["block", "snapshot", "create", &dir_arg(&dst), "s2"],
        "already exists",
    );
    refused(
        &["block", "snapshot", "delete", &dir_arg(&dst), "nope"],
        "no snapshot named",
    );
    // A token for another snapshot: the sender refuses it.
    let s3 = stream(&["s3", "--from=s2"]);
    let tok = {
        let cut = tmp.path().join("cut.ks");
        std::fs::write(&cut, &s3[..s3.len() / 2]).unwrap();
        let out = kelp_cmd(&[
            "block",
            "receive",
            &dir_arg(&dst),
            "--resumable",
            &format!("--input={}", cut.display()),
        ]);
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("resume token: "))
            .unwrap_or_else(|| panic!("no token in {text}"))
            .to_string()
    };
    refused(
        &[
            "block",
            "send",
            &dir_arg(&src[..1]),
            "s2",
            &format!("--resume={tok}"),
        ],
        "another snapshot",
    );
    let other = create(tmp.path(), "other");
    ok(&["block", "snapshot", "create", &dir_arg(&other), "s3"]);
    refused(
        &[
            "block",
            "send",
            &dir_arg(&other[..1]),
            &format!("--resume={tok}"),
        ],
        "another volume",
    );
    // A receive in progress blocks another stream until resumed or aborted.
    let (good, text) = receive_bytes(&stream(&["s1"]), &[]);
    assert!(!good && text.contains("in progress"), "{text}");
    let status = ok(&["block", "receive", &dir_arg(&dst), "--status"]);
    assert!(status.contains(&tok), "{status}");
    ok(&["block", "receive", &dir_arg(&dst), "--abort"]);
    assert!(
        snapshot_bytes(&dst[0], "s2") == live_bytes(&dst[0]),
        "aborted back to s2"
    );
    // Regions a downstairs serves are locked.
    let mut v = Volume::serve(tmp.path(), &dst);
    let (good, text) = receive_bytes(&s3, &[]);
    assert!(!good && text.contains("another downstairs"), "{text}");
    v.stop();
    let (good, text) = receive_bytes(&s3, &[]);
    assert!(good, "{text}");
}

/// The sender dies (the stream ends) at seeded random points, or the
/// receiver is killed -9: the receive resumes from its token to the same
/// bytes, again and again.
#[test]
fn cut_and_killed_receives_resume_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(tmp.path());
    let full = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["block", "send", "-q", &dir_arg(&src[..1]), "s3"])
        .output()
        .unwrap()
        .stdout;
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..3 {
        let dst = create(tmp.path(), &format!("r{round}-"));
        let mut received = 0;
        // Up to three cuts, then the rest.
        for _ in 0..3 {
            let at = rng.random_range(received.max(100)..full.len());
            let cut = tmp.path().join("cut.ks");
            std::fs::write(&cut, &full[..at]).unwrap();
            let out = kelp_cmd(&[
                "block",
                "receive",
                &dir_arg(&dst),
                "--resumable",
                "--checkpoint-mib=1",
                &format!("--input={}", cut.display()),
            ]);
            assert!(!out.status.success(), "a cut stream was accepted");
            received = at;
            let status = ok(&["block", "receive", &dir_arg(&dst), "--status"]);
            assert!(status.contains("resume token"), "{status}");
            // The snapshot does not exist until the receive ends.
            assert!(!snapshot_names(&dst).contains("s3"));
        }
        let status = ok(&["block", "receive", &dir_arg(&dst), "--status"]);
        let tok = status
            .lines()
            .find_map(|l| l.strip_prefix("resume token: "))
            .unwrap()
            .to_string();
        let (good, text) = pipe(
            &[&dir_arg(&src[2..]), &format!("--resume={tok}")],
            &[&dir_arg(&dst), "--resumable"],
        );
        assert!(good, "resume: {text}");
        assert!(text.contains("resumed at block"), "{text}");
        for d in &dst {
            assert!(snapshot_bytes(d, "s3") == images[2], "round {round}");
        }
        ok(&["block", "verify", &dir_arg(&dst)]);
    }
    // kill -9 of the receiver halfway through its input.
    let dst = create(tmp.path(), "killed");
    let mut rx = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args([
            "block",
            "receive",
            "-q",
            &dir_arg(&dst),
            "--resumable",
            "--checkpoint-mib=1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = rx.stdin.take().unwrap();
    stdin.write_all(&full[..full.len() * 3 / 4]).unwrap();
    stdin.flush().unwrap();
    // Let it apply what it has, then kill it without warning.
    let status = common::wait_until("a resume point", common::DEADLINE, || {
        let st = kelp_storage::Storage::real();
        let s = kelp_block::transfer::ReceiveState::load_from(&st, &dst[0]).ok()??;
        (s.next_block > 0).then_some(s)
    });
    rx.kill().unwrap();
    rx.wait().unwrap();
    drop(stdin);
    let tok = status.token().encode();
    let (good, text) = pipe(
        &[&dir_arg(&src[..1]), &format!("--resume={tok}")],
        &[&dir_arg(&dst), "--resumable"],
    );
    assert!(good, "resume after kill -9: {text}");
    for d in &dst {
        assert!(snapshot_bytes(d, "s3") == images[2]);
    }
}

/// `kelp block snapshot --control` against a running volume, and sends
/// from a region its downstairs is serving while writes keep landing: the
/// streams carry exactly the snapshots, whatever moves under them.
#[test]
fn snapshots_and_sends_of_a_running_volume() {
    let (Some(qemu_img), Some(qemu_io)) = (tool("qemu-img"), tool("qemu-io")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut v = Volume::new(tmp.path(), EXTENTS);
    let mut up = v.upstairs(1, &["--control=127.0.0.1:0"]);
    let ctl = format!("--control=127.0.0.1:{}", up.port("control_port"));
    let image = tmp.path().join("a.raw");
    std::fs::write(&image, common::blob(5, TOTAL as usize * BS)).unwrap();
    run(Command::new(&qemu_img)
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&image)
        .arg(nbd_url(&up)));
    let out = ok(&["block", "snapshot", "create", &ctl, "s1"]);
    assert!(out.contains("on every downstairs"), "{out}");
    refused(&["block", "snapshot", "create", &ctl, "s1"], "exists");
    let url = nbd_url(&up);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dst = create(tmp.path(), "dst");
    std::thread::scope(|s| {
        // Writes over the whole volume while snapshots are taken and sent.
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let off = (i * 7919 % (TOTAL / 16)) * 16 * BS as u64;
                let _ = Command::new(&qemu_io)
                    .args([
                        "-f",
                        "raw",
                        "-c",
                        &format!("write -P {} {off} 64k", i % 250 + 1),
                    ])
                    .arg(&url)
                    .output();
                i += 1;
            }
        });
        let (good, text) = pipe(&[&dir_arg(&v.dirs[1..2]), "s1"], &[&dir_arg(&dst)]);
        assert!(good, "send s1 from a served region: {text}");
        ok(&["block", "snapshot", "create", &ctl, "s2"]);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (good, text) = pipe(
            &[&dir_arg(&v.dirs[2..3]), "--from=s1", "s2"],
            &[&dir_arg(&dst)],
        );
        assert!(good, "incremental from a served region: {text}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let list = ok(&["block", "snapshot", "list", "--json", &ctl]);
    assert!(list.contains("\"s1\"") && list.contains("\"s2\""), "{list}");
    up.stop();
    v.stop();
    assert!(
        snapshot_bytes(&dst[0], "s1") == std::fs::read(&image).unwrap(),
        "the received s1 is the image written before it"
    );
    for d in &dst {
        assert!(
            snapshot_bytes(d, "s2") == snapshot_bytes(&v.dirs[0], "s2"),
            "the received s2 is the volume's"
        );
    }
    let mut v = Volume::serve(tmp.path(), &v.dirs.clone());
    let mut up = v.upstairs(2, &["--control=127.0.0.1:0"]);
    let ctl = format!("--control=127.0.0.1:{}", up.port("control_port"));
    ok(&["block", "snapshot", "delete", &ctl, "s1"]);
    let list = ok(&["block", "snapshot", "list", "--json", &ctl]);
    assert!(
        !list.contains("\"s1\"") && list.contains("\"s2\""),
        "{list}"
    );
    up.stop();
    v.stop();
}

/// On a file system without reflinks (ext4) a clone is linked: served at
/// once, reading its origin's snapshot; written through NBD, which copies
/// only the extents written; and the origin keeps the snapshot until the
/// clone has copied every block, by `kelp block fill` or by its
/// downstairs in the background.
#[test]
fn linked_clones_serve_at_once_and_hold_their_origin_snapshot() {
    let (Some(qemu_img), Some(qemu_io)) = (tool("qemu-img"), tool("qemu-io")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(tmp.path());
    let to_arg = |dirs: &[PathBuf]| {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!("--to={}", list.join(","))
    };
    let clone_dirs = |prefix: &str| -> Vec<PathBuf> {
        (0..3)
            .map(|i| tmp.path().join(format!("{prefix}{i}")))
            .collect()
    };
    let a = clone_dirs("a");
    let out = ok(&["block", "clone", &dir_arg(&src), "s2", &to_arg(&a)]);
    if out.contains("reflink") {
        kelp_testkit::skip("the temporary directory's file system shares blocks (reflink)");
        return;
    }
    assert!(out.contains("linked, 16 extent(s) to copy"), "{out}");
    refused(
        &["block", "snapshot", "delete", &dir_arg(&src), "s2"],
        "still reads from it",
    );
    refused(
        &["block", "rollback", &dir_arg(&src), "s1", "--destroy-later"],
        "still reads from it",
    );
    assert!(snapshot_names(&src).contains("\"s2\""), "refusals kept s2");
    // Through a running origin's control API: an answer (409), not a
    // failure of its downstairs, which go on serving.
    {
        let mut v = Volume::serve(tmp.path(), &src);
        let mut up = v.upstairs(1, &["--control=127.0.0.1:0"]);
        let control = format!("--control=127.0.0.1:{}", up.port("control_port"));
        refused(
            &["block", "snapshot", "delete", &control, "s2"],
            "still reads from it",
        );
        let out = run(Command::new(&qemu_io).args([
            "-f",
            "raw",
            "-c",
            "write -P 0x33 0 4096",
            "-c",
            "read -P 0x33 0 4096",
            &nbd_url(&up),
        ]));
        assert!(!out.contains("rror") && !out.contains("ail"), "{out}");
        let listed = ok(&["block", "snapshot", "list", &control]);
        assert!(listed.contains("s2"), "{listed}");
        up.stop();
        v.verify();
    }
    // Served at once, the background copy off: reads go to the origin.
    let want = tmp.path().join("s2.raw");
    std::fs::write(&want, &images[1]).unwrap();
    let mut v = Volume::serve_with(tmp.path(), &a, &["--clone-fill=off"]);
    let mut up = v.upstairs(1, &[]);
    let compare = |up: &common::Kelp, file: &Path| {
        run(Command::new(&qemu_img)
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(file)
            .arg(nbd_url(up)));
    };
    compare(&up, &want);
    // A write copies the extent it lands in, and only that one.
    let out = run(Command::new(&qemu_io).args([
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 4096 65536",
        &nbd_url(&up),
    ]));
    assert!(!out.contains("rror"), "{out}");
    up.stop();
    v.stop();
    let mut expect = images[1].clone();
    expect[4096..4096 + 65536].fill(0x5a);
    for d in &a {
        let r = Region::open(d, true).unwrap();
        assert_eq!(r.linked_extents(), EXTENTS as usize - 1, "{}", d.display());
        assert!(r.read(0, TOTAL).unwrap().1 == expect, "{}", d.display());
    }
    ok(&["block", "verify", &dir_arg(&a)]);
    let out = ok(&["block", "snapshot", "list", &dir_arg(&a)]);
    assert!(out.contains("is a linked clone of"), "{out}");
    // `kelp block fill` copies the rest; the clone then stands alone.
    let out = ok(&["block", "fill", &dir_arg(&a)]);
    assert!(out.contains("copied 15 extent(s)"), "{out}");
    for d in &a {
        assert!(!d.join("origin.kelp").exists());
        assert!(live_bytes(d) == expect, "{}", d.display());
    }
    // A clone of s3 copied by its downstairs in the background while it
    // serves.
    let b = clone_dirs("b");
    ok(&["block", "clone", &dir_arg(&src), "s3", &to_arg(&b)]);
    // A snapshot of the clone sends what it reads from its origin.
    ok(&["block", "snapshot", "create", &dir_arg(&b), "c1"]);
    let sent = create(tmp.path(), "sent");
    let (good, text) = pipe(&[&dir_arg(&b[..1]), "c1"], &[&dir_arg(&sent)]);
    assert!(good, "send of a linked clone's snapshot: {text}");
    assert!(live_bytes(&sent[0]) == images[2], "the stream holds s3");
    let mut v = Volume::serve(tmp.path(), &b);
    let mut up = v.upstairs(1, &[]);
    let want3 = tmp.path().join("s3.raw");
    std::fs::write(&want3, &images[2]).unwrap();
    compare(&up, &want3);
    kelp_testkit::until(
        "the clone to copy everything from its origin",
        std::time::Duration::from_secs(60),
        || {
            b.iter()
                .all(|d| !d.join("origin.kelp").exists())
                .then_some(())
        },
    );
    compare(&up, &want3);
    up.stop();
    v.verify();
    // Nothing reads the origin's snapshots now.
    ok(&["block", "snapshot", "delete", &dir_arg(&src), "s2"]);
    ok(&["block", "snapshot", "delete", &dir_arg(&src), "s3"]);
    for d in &b {
        assert!(live_bytes(d) == images[2], "{}", d.display());
    }
    for d in &a {
        assert!(live_bytes(d) == expect, "{}", d.display());
    }
}
