//! Replicated writes across separate processes: a `kelp master` and several
//! `kelp volume` servers on one machine, replication `001` (two copies on
//! different servers of one rack). Every acknowledged blob is on every
//! replica; losing a server keeps reads and writes going; a replica that
//! fails mid-write turns into an error for the client and a read-only
//! volume, never a silent success.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cluster::{disagreements, fid_on};
use common::*;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

struct Cluster {
    master: Kelp,
    master_grpc: u16,
    volumes: Vec<Option<Kelp>>,
    ports: Vec<u16>,
    root: std::path::PathBuf,
    /// Extra flags for every volume server.
    extra: Vec<String>,
}

impl Cluster {
    fn start(root: &Path, servers: usize) -> Cluster {
        Self::start_with(root, servers, &[])
    }

    fn start_with(root: &Path, servers: usize, extra: &[&str]) -> Cluster {
        Self::start_full(root, servers, extra, "0")
    }

    /// `grace`: the master's `-replicationGraceSeconds` (0: no
    /// re-replication).
    fn start_full(root: &Path, servers: usize, extra: &[&str], grace: &str) -> Cluster {
        let master = Kelp::start(
            &[
                "master",
                "-ip=127.0.0.1",
                "-port=0",
                &format!("-mdir={}", root.join("master").display()),
                "-defaultReplication=001",
                "-volumeSizeLimitMB=64",
                &format!("-replicationGraceSeconds={grace}"),
            ],
            &root.join("logs"),
        );
        wait_healthy(&master.master_url());
        let master_grpc = master.port("master_grpc_port");
        let mut c = Cluster {
            master,
            master_grpc,
            volumes: Vec::new(),
            ports: Vec::new(),
            root: root.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..servers {
            c.ports.push(free_port_pair());
            c.volumes.push(None);
            c.start_volume(i);
        }
        c
    }

    fn start_volume(&mut self, i: usize) {
        let dir = self.root.join(format!("v{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec![
            "volume".to_string(),
            "-ip=127.0.0.1".to_string(),
            format!("-port={}", self.ports[i]),
            format!("-dir={}", dir.display()),
            format!(
                "-mserver=127.0.0.1:{}.{}",
                self.master.port("master_port"),
                self.master_grpc
            ),
            "-max=12".to_string(),
            "-pulseSeconds=1".to_string(),
            "-antiEntropySeconds=1".to_string(),
        ];
        // The scrub is off unless a test turns it on: it would repair what
        // a test corrupts before the test reads it.
        if !self.extra.iter().any(|a| a.starts_with("-scrubMBps")) {
            args.push("-scrubMBps=0".to_string());
        }
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kelp = Kelp::start(&args, &self.root.join("logs"));
        let url = self.url(i);
        let master = self.master.master_url();
        wait_until("the volume server to join", DEADLINE, || {
            master_lists_node(&http(), &master, &url).then_some(())
        });
        self.volumes[i] = Some(kelp);
    }

    fn url(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut k) = self.volumes[i].take() {
            k.kill9();
        }
        let url = self.url(i);
        let master = self.master.master_url();
        wait_until("the master to drop the dead server", DEADLINE, || {
            (!master_lists_node(&http(), &master, &url)).then_some(())
        });
    }

    fn locations(&self, client: &Client, fid: &str) -> Vec<String> {
        let vid = fid.split(',').next().unwrap();
        let v: Value = client
            .get(format!(
                "{}/dir/lookup?volumeId={vid}",
                self.master.master_url()
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["locations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["url"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Assigns and uploads `n` blobs; every upload must be acknowledged.
fn write_blobs(client: &Client, master: &str, seed0: u64, n: u64) -> Vec<Attempt> {
    (0..n)
        .map(|i| {
            let seed = seed0 + i;
            let len = (seed % 5000) as usize + 1;
            let a = assign(client, master, "replication=001");
            let r = upload(client, &a.url, &a.fid, "r.bin", &blob(seed, len)).unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "upload {}", a.fid);
            Attempt::new(a.fid, seed, len)
        })
        .collect()
}

fn read_is(client: &Client, url: &str, a: &Attempt) -> Result<(), String> {
    let r = get(client, url, &a.fid).map_err(|e| format!("GET {} from {url}: {e}", a.fid))?;
    if r.status() != StatusCode::OK {
        return Err(format!("GET {} from {url}: {}", a.fid, r.status()));
    }
    let body = r.bytes().map_err(|e| e.to_string())?;
    if body.as_ref() != blob(a.seed, a.len).as_slice() {
        return Err(format!("GET {} from {url}: wrong bytes", a.fid));
    }
    Ok(())
}

#[test]
fn replicated_blobs_survive_a_lost_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start(tmp.path(), 3);
    let client = http();
    let master = cl.master.master_url();

    let mut blobs = write_blobs(&client, &master, 1, 150);
    // Every acknowledged blob is on both of its replicas.
    for a in &blobs {
        let locs = cl.locations(&client, &a.fid);
        assert_eq!(locs.len(), 2, "{} lives on {locs:?}", a.fid);
        for url in &locs {
            read_is(&client, url, a).unwrap();
        }
    }
    // A delete reaches both replicas too.
    let deleted: Vec<Attempt> = blobs.drain(..15).collect();
    for a in &deleted {
        let locs = cl.locations(&client, &a.fid);
        let r = delete(&client, &locs[0], &a.fid).unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "delete {}", a.fid);
        for url in &locs {
            let r = get(&client, url, &a.fid).unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{} on {url}", a.fid);
        }
    }

    // Lose a server: every blob still reads through either survivor (a
    // server without the volume proxies to a live replica, skipping the
    // dead one), and writes go on, to volumes whose replicas are all live.
    cl.kill(2);
    let dead = cl.url(2);
    for a in &blobs {
        for i in 0..2 {
            read_is(&client, &cl.url(i), a).unwrap();
        }
    }
    let more = write_blobs(&client, &master, 10_000, 60);
    for a in &more {
        let locs = cl.locations(&client, &a.fid);
        assert!(
            !locs.contains(&dead),
            "{} assigned to the dead server",
            a.fid
        );
        for url in &locs {
            read_is(&client, url, a).unwrap();
        }
    }

    // Back again: it serves what it holds, and deleted blobs stay deleted.
    cl.start_volume(2);
    blobs.extend(more);
    for a in &blobs {
        for i in 0..3 {
            read_is(&client, &cl.url(i), a).unwrap();
        }
    }
    for a in &deleted {
        for i in 0..3 {
            let r = get(&client, &cl.url(i), &a.fid).unwrap();
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "{} on {}",
                a.fid,
                cl.url(i)
            );
        }
    }
}

/// Marks `vid` read-only (or writable again) on the volume server whose
/// gRPC port is `grpc`, as an operator would.
fn set_read_only(grpc: u16, vid: u32, read_only: bool) {
    use kelp_proto::volume_server_pb::volume_server_client::VolumeServerClient;
    use kelp_proto::volume_server_pb::{VolumeMarkReadonlyRequest, VolumeMarkWritableRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = VolumeServerClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .unwrap();
        if read_only {
            c.volume_mark_readonly(VolumeMarkReadonlyRequest {
                volume_id: vid,
                ..Default::default()
            })
            .await
            .unwrap();
        } else {
            c.volume_mark_writable(VolumeMarkWritableRequest { volume_id: vid })
                .await
                .unwrap();
        }
    });
}

fn volume_read_only(client: &Client, url: &str, vid: u32) -> bool {
    let v: Value = client
        .get(format!("http://{url}/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["Volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|x| x["Id"].as_u64() == Some(vid as u64) && x["ReadOnly"] == Value::Bool(true))
}

#[test]
fn a_replica_failing_mid_write_is_an_error_and_stops_writes_to_the_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let cl = Cluster::start(tmp.path(), 2);
    let client = http();
    let master = cl.master.master_url();
    let first = write_blobs(&client, &master, 1, 1).remove(0);
    let vid: u32 = first.fid.split(',').next().unwrap().parse().unwrap();

    // Server 1's copy refuses writes; a write sent to server 0 is applied
    // there but cannot reach the second copy.
    let grpc1 = cl.volumes[1].as_ref().unwrap().port("volume_grpc_port");
    set_read_only(grpc1, vid, true);
    let fid = fid_on(&client, &master, vid);
    let r = upload(&client, &cl.url(0), &fid, "x.bin", b"not on every replica").unwrap();
    assert!(
        r.status().is_server_error(),
        "a write one replica refused was answered {}",
        r.status()
    );
    let body = r.text().unwrap();
    assert!(body.contains("replicat"), "unclear error: {body}");

    // Server 0 stopped taking writes for the volume and the master hears it.
    assert!(volume_read_only(&client, &cl.url(0), vid));
    wait_until("the master to stop assigning the volume", DEADLINE, || {
        let picks: Vec<String> = (0..20)
            .map(|_| assign(&client, &master, "replication=001").fid)
            .collect();
        picks
            .iter()
            .all(|f| !f.starts_with(&format!("{vid},")))
            .then_some(())
    });
    // What was acknowledged before is still on both copies.
    for i in 0..2 {
        read_is(&client, &cl.url(i), &first).unwrap();
    }
}

/// Flips one byte of `a`'s content inside the `.dat` files under `dir`.
fn corrupt_on_disk(dir: &Path, a: &Attempt) {
    use std::os::unix::fs::FileExt;
    let content = blob(a.seed, a.len);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "dat") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(content.len()).position(|w| w == content) {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&[content[0] ^ 0x40], at as u64).unwrap();
            return;
        }
    }
    panic!("{} not found under {}", a.fid, dir.display());
}

#[test]
fn a_corrupt_copy_is_read_from_another_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start(tmp.path(), 2);
    let client = http();
    let master = cl.master.master_url();
    let blobs = write_blobs(&client, &master, 7, 3);
    let a = &blobs[1];
    corrupt_on_disk(&tmp.path().join("v0"), a);
    // Server 0's copy fails its checksum; the reader still gets the blob.
    read_is(&client, &cl.url(0), a).unwrap();
    read_is(&client, &cl.url(1), a).unwrap();
    let metrics = client
        .get(format!("http://{}/metrics", cl.url(0)))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kelp_volume_corrupt_reads_total") && !l.ends_with(" 0")),
        "the corrupt read is not counted:\n{metrics}"
    );
    // With the other replica gone there is no good copy: an error, not bad bytes.
    cl.kill(1);
    let r = get(&client, &cl.url(0), &a.fid).unwrap();
    assert!(r.status().is_server_error(), "answered {}", r.status());
}

fn local_status(client: &Client, url: &str, fid: &str) -> StatusCode {
    client
        .get(format!("http://{url}/{fid}?proxied=true"))
        .send()
        .unwrap()
        .status()
}

#[test]
fn diverged_replicas_converge_and_the_volume_takes_writes_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cl = Cluster::start(tmp.path(), 2);
    let client = http();
    let master = cl.master.master_url();
    let first = write_blobs(&client, &master, 1, 1).remove(0);
    let vid: u32 = first.fid.split(',').next().unwrap().parse().unwrap();
    let grpc1 = cl.volumes[1].as_ref().unwrap().port("volume_grpc_port");

    // A write reaches server 0 only: the client is told it failed.
    set_read_only(grpc1, vid, true);
    let extra = Attempt::new(fid_on(&client, &master, vid), 77, 3000);
    let r = upload(&client, &cl.url(0), &extra.fid, "e.bin", &blob(77, 3000)).unwrap();
    assert!(r.status().is_server_error(), "answered {}", r.status());
    assert!(volume_read_only(&client, &cl.url(0), vid));
    assert_eq!(
        local_status(&client, &cl.url(1), &extra.fid),
        StatusCode::NOT_FOUND
    );

    // Server 1 takes writes again: anti-entropy copies the needle over and
    // server 0 lifts its read-only mark.
    set_read_only(grpc1, vid, false);
    wait_until("the replicas to converge", DEADLINE, || {
        (local_status(&client, &cl.url(1), &extra.fid) == StatusCode::OK
            && !volume_read_only(&client, &cl.url(0), vid))
        .then_some(())
    });
    for i in 0..2 {
        read_is(&client, &cl.url(i), &extra).unwrap();
    }

    // A delete reaches server 0 only; anti-entropy deletes it on server 1.
    set_read_only(grpc1, vid, true);
    let r = delete(&client, &cl.url(0), &first.fid).unwrap();
    assert!(r.status().is_server_error(), "answered {}", r.status());
    assert_eq!(
        local_status(&client, &cl.url(1), &first.fid),
        StatusCode::OK
    );
    set_read_only(grpc1, vid, false);
    wait_until("the delete to reach server 1", DEADLINE, || {
        (local_status(&client, &cl.url(1), &first.fid) == StatusCode::NOT_FOUND
            && !volume_read_only(&client, &cl.url(0), vid))
        .then_some(())
    });

    // The volume takes replicated writes again.
    let again = Attempt::new(fid_on(&client, &master, vid), 78, 100);
    let r = upload(&client, &cl.url(1), &again.fid, "a.bin", &blob(78, 100)).unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for i in 0..2 {
        read_is(&client, &cl.url(i), &again).unwrap();
    }
}

fn scrub_counts(client: &Client, url: &str) -> Value {
    let v: Value = client
        .get(format!("http://{url}/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["Scrub"].clone()
}

#[test]
fn scrub_finds_a_flipped_bit_and_repairs_it_from_a_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start_with(tmp.path(), 2, &["-scrubMBps=64", "-scrubIntervalSeconds=1"]);
    let client = http();
    let master = cl.master.master_url();
    let blobs = write_blobs(&client, &master, 11, 20);
    let a = &blobs[7];
    corrupt_on_disk(&tmp.path().join("v0"), a);
    wait_until("the scrub to repair the needle", DEADLINE, || {
        let s = scrub_counts(&client, &cl.url(0));
        (s["Repaired"].as_u64() >= Some(1)).then_some(s)
    });
    let s = scrub_counts(&client, &cl.url(0));
    assert!(s["Corrupt"].as_u64() >= Some(1), "{s}");
    assert!(s["NeedlesChecked"].as_u64() >= Some(1), "{s}");
    // Repaired in place: with the other replica gone, server 0 alone
    // serves the right bytes.
    cl.kill(1);
    for b in &blobs {
        read_is(&client, &cl.url(0), b).unwrap();
    }
}

#[test]
fn a_lost_servers_copies_are_made_again_on_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start_full(tmp.path(), 3, &[], "1");
    let client = http();
    let master = cl.master.master_url();
    let blobs = write_blobs(&client, &master, 100, 120);
    // The server holding the most copies is lost. (Which servers a growth
    // picks is random, and a server can be left out of all of them.)
    let locations: Vec<Vec<String>> = blobs
        .iter()
        .map(|a| cl.locations(&client, &a.fid))
        .collect();
    let held: Vec<usize> = (0..3)
        .map(|i| locations.iter().filter(|l| l.contains(&cl.url(i))).count())
        .collect();
    let victim = (0..3).max_by_key(|&i| held[i]).unwrap();
    let dead = cl.url(victim);
    assert!(held[victim] > 0, "no blob had a copy anywhere");
    cl.kill(victim);
    // Every blob is on two live servers again, each holding it locally.
    wait_until("placement to be restored", Duration::from_secs(60), || {
        blobs
            .iter()
            .all(|a| {
                let locs = cl.locations(&client, &a.fid);
                locs.len() == 2 && !locs.contains(&dead)
            })
            .then_some(())
    });
    for a in &blobs {
        for url in cl.locations(&client, &a.fid) {
            assert_eq!(
                local_status(&client, &url, &a.fid),
                StatusCode::OK,
                "{} on {url}",
                a.fid
            );
            read_is(&client, &url, a).unwrap();
        }
    }
    // And the restored volumes take replicated writes again.
    let more = write_blobs(&client, &master, 5_000, 30);
    for a in &more {
        for url in cl.locations(&client, &a.fid) {
            read_is(&client, &url, a).unwrap();
        }
    }

    // The lost server comes back with stale copies of the re-replicated
    // volumes: the master removes them, leaving exactly two copies.
    cl.start_volume(victim);
    let all: Vec<&Attempt> = blobs.iter().chain(&more).collect();
    wait_until(
        "stale copies to be removed",
        Duration::from_secs(60),
        || {
            all.iter()
                .all(|a| cl.locations(&client, &a.fid).len() == 2)
                .then_some(())
        },
    );
    for a in &all {
        for i in 0..3 {
            read_is(&client, &cl.url(i), a).unwrap();
        }
    }
    let last = write_blobs(&client, &master, 9_000, 20);
    for a in &last {
        for url in cl.locations(&client, &a.fid) {
            read_is(&client, &url, a).unwrap();
        }
    }
}

#[test]
fn servers_killed_and_restarted_under_load_lose_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = Cluster::start(tmp.path(), 3);
    let client = http();
    let master = cl.master.master_url();
    let urls: Vec<String> = (0..3).map(|i| cl.url(i)).collect();
    let stop = AtomicBool::new(false);
    let history = std::thread::scope(|s| {
        let load = s.spawn(|| write_load(&master, 4, 1 << 41, &stop));
        for victim in [1, 2] {
            std::thread::sleep(Duration::from_millis(1500));
            cl.kill(victim);
            std::thread::sleep(Duration::from_millis(1000));
            cl.start_volume(victim);
        }
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    eprintln!(
        "{} acknowledged, {} unacknowledged, {} deleted",
        history.acked.len(),
        history.unacked.len(),
        history.deleted.len()
    );
    assert!(history.acked.len() > 50, "too little load got through");
    // Anti-entropy settles copies that a kill left half-written ...
    wait_until("every copy to agree", Duration::from_secs(60), || {
        disagreements(&client, &master, &urls, &History::default())
            .is_empty()
            .then_some(())
    });
    // ... and every acknowledged blob and delete is on every copy.
    let problems = disagreements(&client, &master, &urls, &history);
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
