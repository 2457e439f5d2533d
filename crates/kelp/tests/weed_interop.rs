//! Volume files move both ways between Kelp and the real SeaweedFS: a
//! directory written by `weed volume` (with deletes) opens in `kelp volume`
//! and every live blob reads back byte-identical while deleted ones stay
//! deleted; and the same in the other direction.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use reqwest::StatusCode;

struct Written {
    live: Vec<(String, String, Vec<u8>)>,
    deleted: Vec<String>,
}

/// Uploads blobs of assorted sizes (empty, tiny, across the 8-byte padding
/// boundary, large) through `master`, then deletes every fifth one.
fn write_blobs(client: &reqwest::blocking::Client, master: &str) -> Written {
    let sizes = [
        0usize, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 4096, 65_537, 300_000,
    ];
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..40u64 {
        let a = assign(client, master, "");
        let len = sizes[i as usize % sizes.len()];
        let data = blob(i + 1, len);
        let name = format!("file-{i}.bin");
        let r = upload(client, &a.url, &a.fid, &name, &data).expect("upload");
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "upload of {} to {}",
            a.fid,
            a.url
        );
        if i % 5 == 4 {
            let r = delete(client, &a.url, &a.fid).expect("delete");
            assert_eq!(r.status(), StatusCode::ACCEPTED, "delete {}", a.fid);
            deleted.push(a.fid);
        } else {
            live.push((a.fid, name, data));
        }
    }
    Written { live, deleted }
}

fn check_blobs(client: &reqwest::blocking::Client, url: &str, written: &Written) {
    for (fid, name, data) in &written.live {
        let r = get(client, url, fid).expect("get");
        assert_eq!(r.status(), StatusCode::OK, "GET {fid} from {url}");
        let disposition = r
            .headers()
            .get("content-disposition")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let body = r.bytes().expect("body");
        assert_eq!(body.len(), data.len(), "length of {fid}");
        assert!(body.as_ref() == data.as_slice(), "content of {fid} differs");
        if !data.is_empty() {
            assert!(
                disposition.contains(name),
                "{fid}: disposition {disposition:?} lacks {name}"
            );
        }
    }
    for fid in &written.deleted {
        let r = get(client, url, fid).expect("get");
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "deleted {fid} must stay deleted"
        );
    }
}

struct Weed {
    master: Proc,
    volume: Proc,
    master_port: u16,
    volume_port: u16,
}

fn start_weed(weed: &Path, root: &Path, volume_dir: &Path) -> Weed {
    let master_port = free_port_pair();
    let volume_port = free_port_pair();
    let mdir = root.join("weed-master");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::create_dir_all(volume_dir).unwrap();
    let log = |name: &str| std::fs::File::create(root.join(name)).unwrap();
    let master = Proc(
        Command::new(weed)
            .args([
                "master",
                "-ip=127.0.0.1",
                &format!("-port={master_port}"),
                &format!("-mdir={}", mdir.display()),
                "-telemetry=false",
                "-volumeSizeLimitMB=100",
            ])
            .stdout(Stdio::null())
            .stderr(log("weed-master.log"))
            .spawn()
            .expect("start weed master"),
    );
    let volume = Proc(
        Command::new(weed)
            .args([
                "volume",
                "-ip=127.0.0.1",
                &format!("-port={volume_port}"),
                &format!("-dir={}", volume_dir.display()),
                &format!("-mserver=127.0.0.1:{master_port}"),
                "-max=8",
            ])
            .stdout(Stdio::null())
            .stderr(log("weed-volume.log"))
            .spawn()
            .expect("start weed volume"),
    );
    Weed {
        master,
        volume,
        master_port,
        volume_port,
    }
}

#[test]
fn weed_volume_dir_opens_in_kelp() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let vdir = tmp.path().join("weed-data");
    let client = http();

    let mut w = start_weed(&weed, tmp.path(), &vdir);
    let written = write_blobs(&client, &format!("http://127.0.0.1:{}", w.master_port));
    check_blobs(&client, &format!("127.0.0.1:{}", w.volume_port), &written);
    w.volume.stop();
    w.master.stop();

    let dir_arg = format!("-dir={}", vdir.display());
    let kelp = Kelp::start(
        &[
            "volume",
            &dir_arg,
            "-port=0",
            "-ip=127.0.0.1",
            "-mserver=127.0.0.1:1",
        ],
        &tmp.path().join("logs"),
    );
    let url = format!("127.0.0.1:{}", kelp.port("volume_port"));
    check_blobs(&client, &url, &written);
}

#[test]
fn kelp_volume_dir_opens_in_weed() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let kdir = tmp.path().join("kelp-data");
    std::fs::create_dir_all(&kdir).unwrap();
    let client = http();

    let mut kelp = kelp_server(&kdir, &[]);
    let written = write_blobs(&client, &kelp.master_url());
    kelp.stop();
    // Only the volume files go to weed; the master's own state stays behind.
    let vdir = tmp.path().join("for-weed");
    std::fs::create_dir_all(&vdir).unwrap();
    for entry in std::fs::read_dir(&kdir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), vdir.join(entry.file_name())).unwrap();
        }
    }

    let w = start_weed(&weed, tmp.path(), &vdir);
    let url = format!("127.0.0.1:{}", w.volume_port);
    wait_until("weed volume to serve", DEADLINE, || {
        client
            .get(format!("http://{url}/status"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    check_blobs(&client, &url, &written);
}
