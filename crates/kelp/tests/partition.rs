//! Network partition: a master and three volume servers, each in its own
//! network namespace joined by veth pairs to a private bridge (10.201.0.0/24,
//! reachable only from this machine). Under a write load one volume server
//! is cut off (its veth goes down: packets to and from it are lost, no
//! connection is closed), then healed. Afterwards every acknowledged blob
//! is on every copy of its volume, every acknowledged delete is applied on
//! every copy, and no volume stays diverged. Needs root and `ip`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cluster::{disagreements, fid_on, local, locations};
use common::*;
use reqwest::StatusCode;
use reqwest::blocking::Client;

const SUBNET: &str = "10.201.0";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, bridge and links, removed when dropped.
struct Net {
    tag: String,
    hosts: usize,
}

impl Net {
    fn create(hosts: usize) -> Net {
        let tag = format!("{}", std::process::id() % 100_000);
        let net = Net { tag, hosts };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", &format!("{SUBNET}.254/24"), "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for i in 0..hosts {
            let ns = net.ns(i);
            let (outer, inner) = (net.outer(i), format!("ki{}x{i}", net.tag));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &br]);
            ip(&["link", "set", &outer, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("kbr{}", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("kns{}x{i}", self.tag)
    }

    fn outer(&self, i: usize) -> String {
        format!("ko{}x{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Cuts host `i` off (or reconnects it): its link to the bridge goes
    /// down, so its packets are lost without any connection being closed.
    fn set_cut(&self, i: usize, cut: bool) {
        ip(&[
            "link",
            "set",
            &self.outer(i),
            if cut { "down" } else { "up" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with
        // it the pair; the `link del` is for a namespace that failed to go.
        for i in 0..self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &self.outer(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

fn tools_present() -> bool {
    let root = is_root();
    let ok = root && which("ip").is_some() && std::path::Path::new("/var/run").exists();
    require_tool(
        "root and iproute2 (ip netns, veth, bridge)",
        ok.then(PathBuf::new),
    )
    .is_some()
}

/// Writes one blob and returns it with the servers holding its copies.
/// (Which servers get a volume is the master's choice, so the test cuts
/// off one that holds this blob rather than a fixed one.)
fn write_replicated_blob(client: &Client, master: &str) -> (Attempt, Vec<String>) {
    let a = assign(client, master, "replication=001");
    let (seed, len) = (1, 101);
    let r = upload(client, &a.url, &a.fid, "v.bin", &blob(seed, len)).unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let holders = locations(client, master, &a.fid);
    assert_eq!(holders.len(), 2, "a 001 blob has two copies: {holders:?}");
    (Attempt::new(a.fid, seed, len), holders)
}

#[test]
fn a_cut_off_server_converges_after_the_partition_heals() {
    if !tools_present() {
        return;
    }
    let net = Net::create(4);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let maddr = net.addr(0);
    let master = Kelp::start_netns(
        &net.ns(0),
        &[
            "master",
            &format!("-ip={maddr}"),
            "-port=9333",
            &format!("-mdir={}", tmp.path().join("m").display()),
            "-defaultReplication=001",
            "-pulseSeconds=1",
            "-replicationGraceSeconds=0",
        ],
        &logs,
    );
    let master_url = format!("http://{maddr}:9333");
    let _keep_master = master;
    wait_healthy(&master_url);
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for i in 1..4 {
        let addr = net.addr(i);
        let dir = tmp.path().join(format!("v{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        servers.push(Kelp::start_netns(
            &net.ns(i),
            &[
                "volume",
                &format!("-ip={addr}"),
                "-port=8080",
                &format!("-dir={}", dir.display()),
                &format!("-mserver={maddr}:9333"),
                "-max=12",
                "-pulseSeconds=1",
                "-antiEntropySeconds=1",
            ],
            &logs,
        ));
        let url = format!("{addr}:8080");
        wait_until("the volume server to join", DEADLINE, || {
            master_lists_node(&http(), &master_url, &url).then_some(())
        });
        urls.push(url);
    }

    let client = http();
    // A blob, one server holding it (to be cut off) and its other holder:
    // during the cut the holder gets a write and a delete that cannot reach
    // the cut-off server, which make the copies diverge.
    let (victim, holders) = write_replicated_blob(&client, &master_url);
    let (cut_url, holder) = (holders[0].clone(), holders[1].clone());
    let cut = 1 + urls
        .iter()
        .position(|u| *u == cut_url)
        .expect("the blob is on one of the volume servers");
    let vid: u32 = victim.fid.split(',').next().unwrap().parse().unwrap();

    // Load before, during and after the cut.
    let stop = AtomicBool::new(false);
    let (mut history, extra) = std::thread::scope(|s| {
        let load = s.spawn(|| write_load(&master_url, 4, 1 << 40, &stop));
        std::thread::sleep(Duration::from_secs(2));
        net.set_cut(cut, true);
        let extra = Attempt::new(fid_on(&client, &master_url, vid), 4242, 2000);
        let r = upload(&client, &holder, &extra.fid, "x.bin", &blob(4242, 2000));
        assert!(
            r.as_ref().map_or(true, |r| !r.status().is_success()),
            "a write that cannot reach a copy was acknowledged"
        );
        let r = delete(&client, &holder, &victim.fid);
        assert!(
            r.as_ref().map_or(true, |r| !r.status().is_success()),
            "a delete that cannot reach a copy was acknowledged"
        );
        std::thread::sleep(Duration::from_secs(4));
        net.set_cut(cut, false);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        (load.join().unwrap(), extra)
    });
    eprintln!(
        "{} acknowledged, {} unacknowledged, {} deleted",
        history.acked.len(),
        history.unacked.len(),
        history.deleted.len()
    );
    assert!(history.acked.len() > 50, "too little load got through");

    // A failed write or delete may end up applied everywhere or nowhere,
    // never on some copies only. The victim's delete failed, so it is no
    // longer promised to read back.
    history.acked.retain(|a| a.fid != victim.fid);
    let consistent = |fid: &str| {
        let copies: Vec<_> = locations(&client, &master_url, fid)
            .iter()
            .map(|u| local(&client, u, fid).map(|r| r.0))
            .collect();
        copies.windows(2).all(|w| w[0] == w[1])
    };
    // Cheap checks first, until the replicas have caught up ...
    wait_until("the replicas to converge", Duration::from_secs(60), || {
        let read_only = disagreements(&client, &master_url, &urls, &History::default());
        (read_only.is_empty() && consistent(&extra.fid) && consistent(&victim.fid)).then_some(())
    });
    // ... then every acknowledged blob and delete on every copy.
    let problems = disagreements(&client, &master_url, &urls, &history);
    assert!(
        problems.is_empty(),
        "{} disagreements after healing, e.g.:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(servers);
}
