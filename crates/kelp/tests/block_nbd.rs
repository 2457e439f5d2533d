//! Block volumes end to end with real processes and real NBD clients:
//! `kelp downstairs` ×3, `kelp upstairs`, then qemu-img, nbdinfo, nbdcopy,
//! fio and qemu-io against the export; kill -9 of a downstairs and of the
//! upstairs; generation fencing; `kelp block verify` at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::block::{Volume, kelp_cmd, nbd_url, random_file, run, tool};
use common::{DEADLINE, Kelp, wait_until};

/// Without --extent-size a region gets the largest extents a repair frame
/// carries (32 MiB), whatever the block size; it is sparse unless
/// --preallocate; a bad geometry is refused.
#[test]
fn block_create_defaults_and_preallocation() {
    let tmp = tempfile::tempdir().unwrap();
    for (bs, blocks) in [("512", "65536"), ("4096", "8192")] {
        let d = tmp.path().join(bs);
        let out = kelp_cmd(&[
            "block",
            "create",
            &format!("--dir={}", d.display()),
            &format!("--block-size={bs}"),
            "--extent-count=2",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("2 extents of {blocks} blocks")),
            "{stdout}"
        );
    }
    // Sparse by default; --preallocate allocates every byte of every
    // extent file (both slots of every block).
    let allocated = |dir: &str| -> (u64, u64) {
        let f = tmp.path().join(dir).join("extents").join("00000000.ext");
        let m = std::fs::metadata(f).unwrap();
        (std::os::unix::fs::MetadataExt::blocks(&m) * 512, m.len())
    };
    let (used, len) = allocated("4096");
    assert!(
        used < len / 4,
        "a default region is sparse: {used} of {len}"
    );
    let out = kelp_cmd(&[
        "block",
        "create",
        &format!("--dir={}", tmp.path().join("pre").display()),
        "--extent-size=256",
        "--extent-count=2",
        "--preallocate",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("preallocated"),
        "{stdout}"
    );
    let (used, len) = allocated("pre");
    assert!(used >= len, "preallocated: {used} of {len} bytes allocated");
    let out = kelp_cmd(&[
        "block",
        "create",
        &format!("--dir={}", tmp.path().join("big").display()),
        "--extent-size=16384",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("extent size 16384"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qemu_img_round_trip_nbdinfo_nbdcopy() {
    let (Some(qemu_img), Some(nbdinfo), Some(nbdcopy)) =
        (tool("qemu-img"), tool("nbdinfo"), tool("nbdcopy"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut v = Volume::new(tmp.path(), 256);
    let sock = tmp.path().join("nbd.sock");
    let mut up = v.upstairs(1, &[&format!("--nbd-socket={}", sock.display())]);
    let size = 256usize << 20;
    let input = tmp.path().join("in.raw");
    random_file(&input, size, 42);
    run(Command::new(&qemu_img)
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&input)
        .arg(nbd_url(&up)));
    let out = tmp.path().join("out.raw");
    run(Command::new(&qemu_img)
        .args(["convert", "-f", "raw", "-O", "raw", &nbd_url(&up)])
        .arg(&out));
    assert!(
        std::fs::read(&input).unwrap() == std::fs::read(&out).unwrap(),
        "qemu-img round trip differs"
    );
    let unix = format!("nbd+unix:///kelp?socket={}", sock.display());
    let info = run(Command::new(&nbdinfo).arg("--size").arg(&unix));
    assert_eq!(info.trim(), size.to_string());
    let copy = tmp.path().join("copy.raw");
    run(Command::new(&nbdcopy).arg(&unix).arg(&copy));
    assert!(
        std::fs::read(&input).unwrap() == std::fs::read(&copy).unwrap(),
        "nbdcopy differs"
    );
    up.stop();
    assert!(
        up.log_text()
            .contains("all three downstairs flushed and in sync"),
        "{}",
        up.log_text()
    );
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn kill9_downstairs_during_fio_then_catch_up() {
    let Some(fio) = tool("fio") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut v = Volume::new(tmp.path(), 32);
    let mut up = v.upstairs(1, &[]);
    let mut child = Command::new(&fio)
        .args([
            "--name=kill9",
            "--ioengine=nbd",
            &format!("--uri={}", nbd_url(&up)),
            "--rw=randwrite",
            "--bs=4k",
            "--size=24M",
            "--iodepth=16",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--output-format=terse",
        ])
        // fio writes a verify-state file into its working directory.
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let port = v.ds[1].port("port");
    v.ds[1].kill9();
    std::thread::sleep(Duration::from_millis(400));
    v.ds[1] = v.start_ds(1, port);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "fio did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "fio failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    up.stop();
    let log = up.log_text();
    assert!(
        log.contains("all three downstairs flushed and in sync"),
        "{log}"
    );
    assert!(
        log.contains("replaying") || log.contains("live repair"),
        "{log}"
    );
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn kill9_upstairs_reattach_and_fencing() {
    let Some(qemu_io) = tool("qemu-io") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut v = Volume::new(tmp.path(), 16);
    let mut up1 = v.upstairs(1, &[]);
    let qio = |url: &str, cmds: &[&str]| {
        let mut c = Command::new(&qemu_io);
        c.args(["-f", "raw"]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.arg(url);
        c
    };
    run(&mut qio(&nbd_url(&up1), &["write -P 0x5a 0 4M", "flush"]));
    // Writes in flight when the upstairs dies.
    let mut bg = qio(&nbd_url(&up1), &["write -P 0x77 4M 8M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    up1.kill9();
    let _ = bg.wait();
    // Reattach with a higher generation: every flushed write is there.
    let up2 = v.upstairs(2, &[]);
    let out = run(&mut qio(&nbd_url(&up2), &["read -P 0x5a 0 4M"]));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // An older generation is refused outright.
    let mut args = vec!["upstairs".to_string()];
    args.extend(v.targets());
    args.extend(["--gen=1".into(), "--nbd=127.0.0.1:0".into()]);
    let old_log = tmp.path().join("old-upstairs.log");
    let mut old = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&old_log).unwrap())
        .spawn()
        .unwrap();
    let st = wait_until("gen 1 upstairs to give up", DEADLINE, || {
        old.try_wait().unwrap()
    });
    assert!(!st.success(), "an older generation activated");
    // Refused for its generation, not for anything else.
    let said = std::fs::read_to_string(&old_log).unwrap();
    assert!(
        said.contains("generation 1 is lower than generation 2"),
        "{said}"
    );
    // Two upstairs at once: the newer one fences the older.
    let mut up3 = v.upstairs(3, &[]);
    let out = Command::new(&qemu_io)
        .args(["-f", "raw", "-c", "write -P 0x11 0 64k", "-c", "flush"])
        .arg(nbd_url(&up2))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || text.contains("failed"),
        "fenced upstairs took a write: {text}"
    );
    assert!(up2.log_text().contains("fenced"), "{}", up2.log_text());
    run(&mut qio(
        &nbd_url(&up3),
        &["read -P 0x5a 0 4M", "write -P 0x22 0 64k", "flush"],
    ));
    up3.stop();
    drop(up2);
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

/// `qemu-io -c CMD` against the export; fails the test if qemu-io reports
/// an error or a pattern mismatch.
fn qemu_io(qemu_io: &Path, up: &Kelp, cmd: &str) {
    let out = run(Command::new(qemu_io).args(["-f", "raw", "-c", cmd, &nbd_url(up)]));
    assert!(
        !out.contains("ail") && !out.contains("rror"),
        "qemu-io {cmd}: {out}"
    );
}

fn control_status(client: &reqwest::blocking::Client, port: u16) -> serde_json::Value {
    client
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn a_dead_downstairs_is_replaced_through_the_control_api() {
    let Some(qemu_io_bin) = tool("qemu-io") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut v = Volume::new(tmp.path(), 8);
    let mut up = v.upstairs(1, &["--control=127.0.0.1:0"]);
    let control = up.port("control_port");
    let client = common::http();
    qemu_io(&qemu_io_bin, &up, "write -P 0x5a 0 3M");

    // Downstairs 0 dies for good; a fresh region on a new port replaces it.
    let old = format!("127.0.0.1:{}", v.ds[0].port("port"));
    v.ds[0].kill9();
    let fresh = tmp.path().join("region-new");
    let out = kelp_cmd(&[
        "block",
        "create",
        &format!("--dir={}", fresh.display()),
        "--block-size=4096",
        "--extent-size=256",
        "--extent-count=8",
    ]);
    assert!(out.status.success());
    v.dirs[0] = fresh;
    let ds = v.start_ds(0, 0);
    let new = format!("127.0.0.1:{}", ds.port("port"));
    v.ds[0] = ds;
    // Replacing a healthy downstairs is refused.
    let healthy = format!("127.0.0.1:{}", v.ds[1].port("port"));
    let r = client
        .post(format!("http://127.0.0.1:{control}/replace"))
        .query(&[("old", healthy.as_str()), ("new", "127.0.0.1:9")])
        .send()
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let r = client
        .post(format!("http://127.0.0.1:{control}/replace"))
        .query(&[("old", old.as_str()), ("new", new.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED, "{:?}", r.text());
    wait_until("live repair of the replacement", DEADLINE, || {
        let s = control_status(&client, control);
        (s["modes"] == serde_json::json!(["active", "active", "active"])).then_some(())
    });
    qemu_io(&qemu_io_bin, &up, "write -P 0x6b 4M 1M");
    qemu_io(&qemu_io_bin, &up, "read -P 0x5a 0 3M");
    qemu_io(&qemu_io_bin, &up, "read -P 0x6b 4M 1M");
    // A clean stop drains: all three hold everything.
    up.stop();
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

/// Writes a fresh random secret file readable only by its owner.
fn secret_file(path: &Path, seed: u64) -> String {
    use std::os::unix::fs::PermissionsExt;
    let hex: String = common::blob(seed, 32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!("--secret-file={}", path.display())
}

/// Downstairs started with `--secret-file` serve only an upstairs holding
/// the same secret. One without it, or with another, never activates, and
/// both sides log why; with it, qemu-img reads the volume.
#[test]
fn downstairs_secret_refuses_an_upstairs_without_it() {
    let (Some(qemu_img), Some(qemu_io_bin)) = (tool("qemu-img"), tool("qemu-io")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(&tmp.path().join("volume.secret"), 1);
    let other = secret_file(&tmp.path().join("other.secret"), 2);
    let mut v = Volume::with_ds_args(tmp.path(), 4, std::slice::from_ref(&secret));

    let log = v.upstairs_refused(&[], "requires the volume's secret");
    assert!(log.contains("--secret-file"), "{log}");
    let log = v.upstairs_refused(&[&other], "could not prove it holds the volume's secret");
    assert!(!log.contains("volume active"), "{log}");
    // The downstairs may log after the upstairs has exited.
    v.ds[0].log_until("both refusals", |log| {
        log.contains("upstairs refused")
            && log.contains("requires the volume's secret")
            && log.contains("the upstairs refused this downstairs")
    });

    let mut up = v.upstairs(1, &[&secret]);
    let info = run(Command::new(&qemu_img).args(["info", "--output=json", &nbd_url(&up)]));
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 4u64 << 20)),
        "{info}"
    );
    qemu_io(&qemu_io_bin, &up, "write -P 0x5a 0 64k");
    qemu_io(&qemu_io_bin, &up, "read -P 0x5a 0 64k");
    up.stop();
    assert!(v.ds[0].log_text().contains("upstairs authenticated"));
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

fn flag(name: &str, path: PathBuf) -> String {
    format!("--{name}={}", path.display())
}

/// Runs a tool that is expected to fail; returns what it printed.
fn run_fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{cmd:?} succeeded: {text}");
    text
}

/// The whole stack secured: downstairs with a secret and mutual TLS, NBD
/// over TLS with client certificates required. qemu-img, qemu-io and
/// nbdinfo get through with the test CA's client certificate; plain NBD
/// clients and clients without a certificate are refused.
#[test]
fn nbd_over_tls_with_qemu_and_nbdinfo() {
    let (Some(qemu_img), Some(qemu_io_bin), Some(nbdinfo)) =
        (tool("qemu-img"), tool("qemu-io"), tool("nbdinfo"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    kelp_net::test_pki::generate(&pki);
    // A client directory with the CA only: no client certificate.
    let anon = tmp.path().join("anon");
    std::fs::create_dir_all(&anon).unwrap();
    std::fs::copy(pki.join("ca-cert.pem"), anon.join("ca-cert.pem")).unwrap();
    let secret = secret_file(&tmp.path().join("volume.secret"), 3);
    let ds_args = vec![
        secret.clone(),
        flag("tls-cert", pki.join("server-cert.pem")),
        flag("tls-key", pki.join("server-key.pem")),
        flag("tls-ca", pki.join("ca-cert.pem")),
    ];
    let mut v = Volume::with_ds_args(tmp.path(), 4, &ds_args);
    let up_args = [
        secret.clone(),
        flag("tls-ca", pki.join("ca-cert.pem")),
        flag("tls-cert", pki.join("client-cert.pem")),
        flag("tls-key", pki.join("client-key.pem")),
        flag("nbd-tls-cert", pki.join("server-cert.pem")),
        flag("nbd-tls-key", pki.join("server-key.pem")),
        flag("nbd-tls-ca", pki.join("ca-cert.pem")),
    ];
    let refs: Vec<&str> = up_args.iter().map(|s| s.as_str()).collect();
    let mut up = v.upstairs(1, &refs);
    let port = up.port("nbd_port");
    let creds = |dir: &Path| {
        format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}",
            dir.display()
        )
    };
    let image = format!("driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0");

    let info = run(Command::new(&qemu_img).args([
        "info",
        "--output=json",
        "--object",
        &creds(&pki),
        "--image-opts",
        &image,
    ]));
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 4u64 << 20)),
        "{info}"
    );
    for cmd in ["write -P 0x3c 4096 128k", "read -P 0x3c 4096 128k"] {
        let out = run(Command::new(&qemu_io_bin).args([
            "--object",
            &creds(&pki),
            "--image-opts",
            &image,
            "-c",
            cmd,
        ]));
        assert!(
            !out.contains("ail") && !out.contains("rror"),
            "qemu-io {cmd}: {out}"
        );
    }
    let uri = format!(
        "nbds://127.0.0.1:{port}/kelp?tls-certificates={}",
        pki.display()
    );
    let size = run(Command::new(&nbdinfo).args(["--size", &uri]));
    assert_eq!(size.trim(), (4u64 << 20).to_string());

    // Refused: plain NBD (TLS is required), and TLS without a client
    // certificate (the export requires one of the CA).
    let plain = run_fails(Command::new(&qemu_img).args(["info", &nbd_url(&up)]));
    assert!(plain.to_lowercase().contains("tls"), "{plain}");
    let plain = run_fails(Command::new(&nbdinfo).args(["--size", &nbd_url(&up)]));
    assert!(plain.to_lowercase().contains("tls"), "{plain}");
    run_fails(Command::new(&qemu_img).args([
        "info",
        "--object",
        &creds(&anon),
        "--image-opts",
        &image,
    ]));
    run_fails(Command::new(&nbdinfo).args([
        "--size",
        &format!(
            "nbds://127.0.0.1:{port}/kelp?tls-certificates={}",
            anon.display()
        ),
    ]));
    up.log_until("the plain client's refusal", |log| {
        log.contains("TLS is required")
    });

    up.stop();
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

/// Writes `DIR/keys.psk` as psktool does (`username:hexkey` per line, one
/// line per `(username, seed)`), readable only by its owner (unless
/// `mode` says otherwise). Returns the file's path.
fn keys_psk(dir: &Path, users: &[(&str, u64)], mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let text: String = users
        .iter()
        .map(|(user, seed)| {
            let hex: String = common::blob(*seed, 32)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{user}:{hex}\n")
        })
        .collect();
    let path = dir.join("keys.psk");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// NBD over TLS with a pre-shared key (qemu's tls-creds-psk), against the
/// real clients: qemu-img and qemu-io (GnuTLS, TLS 1.3; and TLS 1.2 when
/// the client disables 1.3) and nbdinfo (libnbd, `tls-psk-file`). A wrong
/// key, an unknown username and a plain client are refused, and the
/// upstairs logs why.
#[test]
fn nbd_over_tls_psk_with_qemu_and_nbdinfo() {
    let (Some(qemu_img), Some(qemu_io_bin), Some(nbdinfo)) =
        (tool("qemu-img"), tool("qemu-io"), tool("nbdinfo"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = keys_psk(
        &tmp.path().join("server"),
        &[("alice", 11), ("carol", 12)],
        0o600,
    );
    let alice = tmp.path().join("alice");
    keys_psk(&alice, &[("alice", 11)], 0o600);
    let carol = tmp.path().join("carol");
    keys_psk(&carol, &[("carol", 12)], 0o600);
    // Alice's name with another key; a name the server does not know
    // with alice's key.
    let wrong = tmp.path().join("wrong");
    keys_psk(&wrong, &[("alice", 13)], 0o600);
    let unknown = tmp.path().join("unknown");
    keys_psk(&unknown, &[("bob", 11)], 0o600);

    let mut v = Volume::new(tmp.path(), 4);
    let sock = tmp.path().join("nbd.sock");
    let mut up = v.upstairs(
        1,
        &[
            &flag("nbd-tls-psk", server),
            &flag("nbd-socket", sock.clone()),
        ],
    );
    let port = up.port("nbd_port");
    let creds = |dir: &Path, user: &str, extra: &str| {
        format!(
            "tls-creds-psk,id=tls0,endpoint=client,dir={},username={user}{extra}",
            dir.display()
        )
    };
    let image = format!("driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0");
    let qemu_img_info = |creds: &str| {
        let mut c = Command::new(&qemu_img);
        c.args([
            "info",
            "--output=json",
            "--object",
            creds,
            "--image-opts",
            &image,
        ]);
        c
    };
    let size = format!("\"virtual-size\": {}", 4u64 << 20);

    let info = run(&mut qemu_img_info(&creds(&alice, "alice", "")));
    assert!(info.contains(&size), "{info}");
    for cmd in ["write -P 0x3c 4096 128k", "read -P 0x3c 4096 128k"] {
        let out = run(Command::new(&qemu_io_bin).args([
            "--object",
            &creds(&alice, "alice", ""),
            "--image-opts",
            &image,
            "-c",
            cmd,
        ]));
        assert!(
            !out.contains("ail") && !out.contains("rror"),
            "qemu-io {cmd}: {out}"
        );
    }
    let log = up.log_text();
    assert!(
        log.contains("upgraded to TLS-PSK") && log.contains("identity=alice version=TLSv1.3"),
        "{log}"
    );
    // A client without TLS 1.3 gets TLS 1.2 with ECDHE-PSK (forward
    // secrecy), never plain PSK.
    let info = run(&mut qemu_img_info(&creds(
        &carol,
        "carol",
        ",priority=NORMAL:-VERS-TLS1.3",
    )));
    assert!(info.contains(&size), "{info}");
    let log = up.log_text();
    assert!(
        log.contains("identity=carol version=TLSv1.2 cipher=ECDHE-PSK-"),
        "{log}"
    );
    let uri = |user: &str, dir: &Path| {
        format!(
            "nbds://{user}@127.0.0.1:{port}/kelp?tls-psk-file={}",
            dir.join("keys.psk").display()
        )
    };
    let out = run(Command::new(&nbdinfo).args(["--size", &uri("alice", &alice)]));
    assert_eq!(out.trim(), (4u64 << 20).to_string());
    let out = run(Command::new(&nbdinfo).arg(uri("alice", &alice)));
    assert!(out.contains("with TLS"), "{out}");
    // The unix socket too.
    let unix = format!(
        "nbds+unix://alice@/kelp?socket={}&tls-psk-file={}",
        sock.display(),
        alice.join("keys.psk").display()
    );
    let out = run(Command::new(&nbdinfo).args(["--size", &unix]));
    assert_eq!(out.trim(), (4u64 << 20).to_string());

    // Refused: a wrong key, an unknown username (qemu-img and nbdinfo
    // each), and plain NBD.
    for (dir, user, why) in [
        (&wrong, "alice", "wrong key for identity \"alice\""),
        (&unknown, "bob", "unknown identity \"bob\""),
    ] {
        let out = run_fails(&mut qemu_img_info(&creds(dir, user, "")));
        assert!(out.contains("TLS handshake failed"), "{out}");
        let out = run_fails(Command::new(&nbdinfo).args(["--size", &uri(user, dir)]));
        assert!(out.contains("gnutls_handshake"), "{out}");
        // Both refusals logged, and no more.
        let log = up.log_until("each refusal", |log| log.matches(why).count() >= 2);
        assert_eq!(log.matches(why).count(), 2, "{log}");
    }
    let plain = run_fails(Command::new(&qemu_img).args(["info", &nbd_url(&up)]));
    assert!(plain.contains("TLS is required"), "{plain}");
    let plain = run_fails(Command::new(&nbdinfo).args(["--size", &nbd_url(&up)]));
    assert!(plain.to_lowercase().contains("tls"), "{plain}");
    let log = up.log_until("the plain client's refusal", |log| {
        log.contains("nbd client refused: TLS is required")
    });
    assert!(!log.contains("readable by others"), "{log}");

    // Still serving after the refusals.
    let out = run(Command::new(&qemu_io_bin).args([
        "--object",
        &creds(&alice, "alice", ""),
        "--image-opts",
        &image,
        "-c",
        "read -P 0x3c 4096 128k",
    ]));
    assert!(!out.contains("ail"), "{out}");
    up.stop();
    let report = v.verify();
    assert!(report.contains("OK"), "{report}");
}

/// `--nbd-tls-psk` refuses a malformed keys.psk naming the line, cannot be
/// combined with --nbd-tls-cert, and warns about a file others may read.
#[test]
fn nbd_tls_psk_file_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let good = keys_psk(&tmp.path().join("shared"), &[("alice", 1)], 0o644);
    let bad = tmp.path().join("bad.psk");
    std::fs::write(
        &bad,
        format!(
            "{}\nbob:0123xyzw\n",
            std::fs::read_to_string(&good).unwrap().trim()
        ),
    )
    .unwrap();
    let upstairs = |extra: &[String]| {
        let mut args: Vec<String> = ["upstairs", "--gen=1", "--nbd=127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for _ in 0..3 {
            // Nothing listens on port 1: the upstairs never activates.
            args.push("--target=127.0.0.1:1".into());
        }
        args.extend(extra.iter().cloned());
        args
    };

    let args = upstairs(&[flag("nbd-tls-psk", bad.clone())]);
    let out = kelp_cmd(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.psk") && err.contains("line 2") && err.contains("not hex"),
        "{err}"
    );

    let pki = tmp.path().join("pki");
    kelp_net::test_pki::generate(&pki);
    let args = upstairs(&[
        flag("nbd-tls-psk", good.clone()),
        flag("nbd-tls-cert", pki.join("server-cert.pem")),
        flag("nbd-tls-key", pki.join("server-key.pem")),
    ]);
    let out = kelp_cmd(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot be used with"), "{err}");

    // A good file others may read: loaded, with a warning.
    let log = tmp.path().join("shared.log");
    let child = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(upstairs(&[flag("nbd-tls-psk", good)]))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut up = Kelp {
        child,
        ports: serde_json::Value::Null,
        log,
    };
    wait_until("the upstairs to load its keys", DEADLINE, || {
        up.log_text().contains("TLS-PSK keys loaded").then_some(())
    });
    up.kill9();
    let text = up.log_text();
    assert!(
        text.contains("pre-shared key file is readable by others"),
        "{text}"
    );
}
