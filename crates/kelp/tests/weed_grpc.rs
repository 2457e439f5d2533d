//! The real SeaweedFS tools and daemons against Kelp over `master_pb` gRPC
//! (issue 4):
//!
//! - `weed benchmark` (KeepConnected + Assign) against `kelp server`;
//! - `weed upload` (GetMasterConfiguration + Assign, chunked with a
//!   manifest above `-maxMB`) and `weed download` (LookupVolume);
//! - a `weed volume` joining a Kelp master (SendHeartbeat, AllocateVolume),
//!   and leaving it;
//! - a Kelp volume server joining a `weed master`.
//!
//! Every test starts its own processes on loopback ports and polls with
//! deadlines. Without `weed` a test is skipped, except under CI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

/// Generous bound for one `weed` tool run on a loaded two-core machine.
const TOOL_DEADLINE: Duration = Duration::from_secs(90);
/// How soon a master must stop routing to a volume server that went away.
const FORGET_DEADLINE: Duration = Duration::from_secs(5);

/// One phase's summary from `weed benchmark` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    completed: u64,
    failed: u64,
}

/// Reads the "Completed requests:" / "Failed requests:" pairs (write phase
/// first, then read) from `weed benchmark` output. Older versions print
/// "Complete requests:".
fn bench_phases(out: &str) -> Vec<Phase> {
    let number = |line: &str| {
        line.split(':')
            .nth(1)
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    let mut phases = Vec::new();
    let mut completed = None;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Completed requests:") || line.starts_with("Complete requests:") {
            completed = number(line);
        } else if line.starts_with("Failed requests:")
            && let (Some(c), Some(f)) = (completed.take(), number(line))
        {
            phases.push(Phase {
                completed: c,
                failed: f,
            });
        }
    }
    phases
}

/// Runs `weed benchmark` against the master at `127.0.0.1:<port>` and
/// checks both phases; returns the file ids it listed as written.
fn run_benchmark(
    weed: &Path,
    master_port: u16,
    n: u64,
    concurrency: u32,
    delete_percent: u32,
    dir: &Path,
) -> Vec<String> {
    run_benchmark_in(weed, master_port, n, concurrency, delete_percent, dir, None)
}

/// [`run_benchmark`] with `weed` running in `cwd` (for its `security.toml`).
fn run_benchmark_in(
    weed: &Path,
    master_port: u16,
    n: u64,
    concurrency: u32,
    delete_percent: u32,
    dir: &Path,
    cwd: Option<&Path>,
) -> Vec<String> {
    let list = dir.join(format!(
        "bench-list-{}.txt",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let master = format!("-master=127.0.0.1:{master_port}");
    let list_arg = format!("-list={}", list.display());
    let weed_benchmark = |extra: &[String]| {
        let mut cmd = Command::new(weed);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd.args(["benchmark", &master, &list_arg, &format!("-n={n}")])
            .arg(format!("-c={concurrency}"))
            .args(extra);
        run_tool(&mut cmd, &dir.join("logs"), TOOL_DEADLINE).expect_success("weed benchmark")
    };
    let run = weed_benchmark(&[format!("-deletePercent={delete_percent}")]);
    let mut phases = bench_phases(&run.stdout);
    let mut read_stdout = String::new();
    // `weed benchmark` starts the goroutine that feeds file ids to readers
    // before it sets the number of reads to make; when that goroutine wins
    // the race it sends none, and the read phase reports 0 completed and 0
    // failed without touching the server. Run the read phase alone again
    // then, over the same list of written files (the race can strike that
    // run too, so up to three times).
    let untouched = |p: &[Phase]| p.len() == 2 && p[1].completed == 0 && p[1].failed == 0;
    for _ in 0..3 {
        if !untouched(&phases) {
            break;
        }
        eprintln!("weed benchmark sent no reads (its own race); running the read phase again");
        let again = weed_benchmark(&["-readOnly".to_string()]);
        if let [read] = bench_phases(&again.stdout)[..] {
            phases[1] = read;
        }
        read_stdout.push_str(&again.stdout);
    }
    let context = || {
        format!(
            "stdout:\n{}{read_stdout}\nstderr tail:\n{}",
            run.stdout,
            last(&run.stderr)
        )
    };
    assert_eq!(
        phases.len(),
        2,
        "expected a write and a read summary; {}",
        context()
    );
    let (write, read) = (phases[0], phases[1]);
    assert_eq!(write.failed, 0, "write phase failures; {}", context());
    assert_eq!(read.failed, 0, "read phase failures; {}", context());
    // Deletes count as requests of the write phase too.
    assert!(write.completed >= n, "write phase completed; {}", context());
    assert_eq!(read.completed, n, "read phase completed; {}", context());
    let fids: Vec<String> = std::fs::read_to_string(&list)
        .expect("benchmark list file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert!(!fids.is_empty(), "benchmark listed no files");
    fids
}

/// Volume id of a file id.
fn vid_of(fid: &str) -> &str {
    fid.split(',').next().unwrap_or(fid)
}

/// The end of a long output, for failure messages.
fn last(s: &str) -> &str {
    let mut start = s.len().saturating_sub(3000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[test]
fn weed_benchmark_against_kelp_server() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (kelp, port) = kelp_server_for_weed(&data, &[]);

    let n = 2000;
    let fids = run_benchmark(&weed, port, n, 8, 0, tmp.path());
    assert_eq!(fids.len() as u64, n, "every written file is listed");

    // Every listed file is really there, on the server the master names.
    let client = http();
    let vurl = format!("127.0.0.1:{}", kelp.port("volume_port"));
    for fid in fids.iter().step_by(97) {
        let r = get(&client, &vurl, fid).unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {fid}");
        assert!(r.bytes().unwrap().len() >= 1024, "{fid} is a full file");
    }
}

#[test]
fn weed_benchmark_with_deletes_against_kelp_server() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (_kelp, port) = kelp_server_for_weed(&data, &[]);

    let n = 2000;
    let fids = run_benchmark(&weed, port, n, 8, 20, tmp.path());
    // About a fifth were deleted instead of listed.
    let listed = fids.len() as u64;
    assert!(
        listed < n && listed > n / 2,
        "{listed} of {n} files listed with -deletePercent=20"
    );
}

#[test]
fn weed_upload_and_download_through_kelp_master() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (kelp, port) = kelp_server_for_weed(&data, &[]);
    let client = http();
    let vurl = format!("127.0.0.1:{}", kelp.port("volume_port"));

    const MB: usize = 1024 * 1024;
    // The last two exceed -maxMB=1: `weed upload` stores their chunks as
    // separate blobs and returns the fid of a chunk manifest (`?cm=true`).
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("small.txt", b"hello from weed upload\n".to_vec()),
        ("mid.bin", blob(3, 300_000)),
        ("exactly-1mb.bin", blob(4, MB)),
        ("just-over-1mb.bin", blob(5, MB + 1)),
        ("big.bin", blob(6, 2 * MB + 500_000)),
    ];
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut args = vec![
        "upload".to_string(),
        format!("-master=127.0.0.1:{port}"),
        "-maxMB=1".to_string(),
    ];
    for (name, bytes) in &files {
        let p = src.join(name);
        std::fs::write(&p, bytes).unwrap();
        args.push(p.display().to_string());
    }
    let run = run_tool(
        Command::new(&weed).args(&args),
        &tmp.path().join("logs"),
        TOOL_DEADLINE,
    )
    .expect_success("weed upload");
    let uploaded = parse_upload(&run.stdout);
    assert_eq!(
        uploaded.len(),
        files.len(),
        "one result per file: {}",
        run.stdout
    );

    // The large files really were split: their fid names a manifest whose
    // chunks add up to the file.
    for (name, bytes) in files.iter().filter(|(_, b)| b.len() > MB) {
        let u = uploaded.iter().find(|u| u.name == *name).expect("uploaded");
        let r = client
            .get(format!("http://{vurl}/{}?cm=false", u.fid))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "manifest {} of {name}", u.fid);
        let manifest: Value = serde_json::from_slice(&r.bytes().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {} is not a chunk manifest: {e}", u.fid));
        let chunks = manifest["chunks"].as_array().expect("chunks");
        assert!(chunks.len() >= 2, "{name} is chunked: {manifest}");
        let total: u64 = chunks.iter().filter_map(|c| c["size"].as_u64()).sum();
        assert_eq!(total, bytes.len() as u64, "{name} chunk sizes");
        assert_eq!(manifest["size"].as_u64(), Some(bytes.len() as u64));
    }

    // `weed download` resolves each fid through the Kelp master
    // (LookupVolume) and saves it under its stored name.
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut mismatches = Vec::new();
    for u in &uploaded {
        let want = &files.iter().find(|(n, _)| *n == u.name).expect("file").1;
        let got = weed_download(&weed, None, port, u, &out, TOOL_DEADLINE);
        if got != *want {
            let head = String::from_utf8_lossy(&got[..got.len().min(120)]).into_owned();
            mismatches.push(format!(
                "{} ({}): {} bytes downloaded, {} uploaded; starts {head:?}",
                u.name,
                u.fid,
                got.len(),
                want.len()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "downloads differ from the uploads (a chunk-manifest fid must be served as the \
         concatenation of its chunks unless ?cm=false):\n{}",
        mismatches.join("\n")
    );
}

/// A `weed volume` on `127.0.0.1:<port>` heartbeating to `mserver`.
fn start_weed_volume(weed: &Path, dir: &Path, mserver: &str, port: u16) -> Proc {
    let vdir = dir.join(format!("weed-volume-{port}"));
    std::fs::create_dir_all(&vdir).unwrap();
    spawn_weed(
        weed,
        &[
            "volume".to_string(),
            "-ip=127.0.0.1".to_string(),
            format!("-port={port}"),
            format!("-dir={}", vdir.display()),
            format!("-mserver={mserver}"),
            "-max=20".to_string(),
        ],
        &dir.join("logs").join(format!("weed-volume-{port}.log")),
    )
}

/// A Kelp master on a `weed`-style port pair.
fn start_kelp_master(dir: &Path) -> (Kelp, u16) {
    let port = free_port_pair();
    let mdir = dir.join("kelp-master");
    let kelp = Kelp::start(
        &[
            "master",
            "-ip=127.0.0.1",
            &format!("-port={port}"),
            &format!("-mdir={}", mdir.display()),
        ],
        &dir.join("logs"),
    );
    wait_healthy(&kelp.master_url());
    (kelp, port)
}

fn lookup_urls(client: &Client, master: &str, vid: &str) -> Option<Vec<String>> {
    let r = client
        .get(format!("{master}/dir/lookup?volumeId={vid}"))
        .send()
        .ok()?;
    if r.status() == StatusCode::NOT_FOUND {
        return Some(Vec::new());
    }
    let v: Value = r.json().ok()?;
    Some(
        v["locations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["url"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

#[test]
fn weed_volume_joins_and_leaves_kelp_master() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let client = http();
    let (kelp, mport) = start_kelp_master(tmp.path());
    let master = kelp.master_url();
    let vport = free_port_pair();
    let vurl = format!("127.0.0.1:{vport}");
    let vlog = tmp
        .path()
        .join("logs")
        .join(format!("weed-volume-{vport}.log"));
    let volume = start_weed_volume(&weed, tmp.path(), &format!("127.0.0.1:{mport}"), vport);

    wait_until(
        "the weed volume server to join the Kelp master",
        DEADLINE,
        || master_lists_node(&client, &master, &vurl).then_some(()),
    );

    // Growth allocates on the weed volume server (its only choice, and
    // pinned as well); blobs written there read back.
    let mut written = Vec::new();
    for i in 0..12u64 {
        let a = assign(&client, &master, &format!("dataNode={vurl}"));
        assert_eq!(a.url, vurl, "assign routes to the weed volume server");
        let data = blob(100 + i, (i as usize) * 777);
        let r = upload(&client, &a.url, &a.fid, "w.bin", &data).unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "upload {} to weed volume: {}",
            a.fid,
            tail(&vlog, 2000)
        );
        written.push((a.fid, data));
    }
    for (fid, data) in &written {
        let r = get(&client, &vurl, fid).unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {fid} from weed volume");
        assert!(
            r.bytes().unwrap().as_ref() == data.as_slice(),
            "{fid} content"
        );
        let vid = vid_of(fid);
        assert_eq!(
            lookup_urls(&client, &master, vid),
            Some(vec![vurl.clone()]),
            "lookup of volume {vid}"
        );
    }

    // SIGTERM: weed stops heartbeating at once but lingers (-preStopSeconds,
    // default 10) before exiting. The master must stop routing to it
    // within a few seconds regardless.
    unsafe {
        libc::kill(volume.0.id() as i32, libc::SIGTERM);
    }
    let vid = vid_of(&written[0].0).to_string();
    wait_until(
        "the Kelp master to drop the stopped weed volume server",
        FORGET_DEADLINE,
        || {
            let gone = lookup_urls(&client, &master, &vid)?.is_empty()
                && !master_lists_node(&client, &master, &vurl);
            gone.then_some(())
        },
    );
    // Nothing else can hold a volume, so assign fails instead of naming it.
    let r = client.get(format!("{master}/dir/assign")).send().unwrap();
    assert!(
        !r.status().is_success(),
        "assign with no volume server left: {} {}",
        r.status(),
        r.text().unwrap_or_default()
    );
    // Dropping `volume` kills it rather than waiting out its pre-stop delay.
}

#[test]
fn weed_benchmark_on_mixed_cluster_and_weed_volume_crash() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let client = http();
    // Room for three layouts' growth (7 + 6 + benchmark) on each server.
    let (kelp, mport) = kelp_server_for_weed(&data, &["-volume.max=30"]);
    let master = kelp.master_url();
    let kurl = format!("127.0.0.1:{}", kelp.port("volume_port"));
    let wport = free_port_pair();
    let wurl = format!("127.0.0.1:{wport}");
    let mut volume = start_weed_volume(&weed, tmp.path(), &format!("127.0.0.1:{mport}"), wport);
    wait_until(
        "the weed volume server to join the Kelp master",
        DEADLINE,
        || master_lists_node(&client, &master, &wurl).then_some(()),
    );

    // The weed volume server asks the Kelp master where volumes live
    // (LookupVolume): to proxy a read of a blob on the Kelp volume server,
    // and to fan a replicated (001) write and delete out to Kelp.
    let a = assign(&client, &master, &format!("dataNode={kurl}"));
    assert_eq!(a.url, kurl);
    let data = blob(300, 5000);
    let r = upload(&client, &kurl, &a.fid, "p.bin", &data).unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&client, &wurl, &a.fid).unwrap();
    assert_eq!(r.status(), StatusCode::OK, "weed proxies {} to kelp", a.fid);
    assert!(r.bytes().unwrap().as_ref() == data.as_slice());

    let a = assign(
        &client,
        &master,
        &format!("replication=001&dataNode={wurl}"),
    );
    assert_eq!(a.url, wurl, "main copy on the pinned weed server");
    let data = blob(301, 7000);
    let r = upload(&client, &wurl, &a.fid, "r.bin", &data).unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "replicated write via weed");
    let r = get(&client, &kurl, &a.fid).unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "weed replicated {} to kelp",
        a.fid
    );
    assert!(r.bytes().unwrap().as_ref() == data.as_slice());
    let r = delete(&client, &wurl, &a.fid).unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "replicated delete via weed"
    );
    let r = get(&client, &kurl, &a.fid).unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "delete reached kelp");

    // Benchmark volumes on both servers, so the run writes to and reads
    // from a Kelp and a SeaweedFS volume server alike.
    for url in [&kurl, &wurl] {
        let r = client
            .get(format!(
                "{master}/vol/grow?collection=benchmark&count=2&dataNode={url}"
            ))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "grow on {url}: {:?}", r.text());
    }
    let fids = run_benchmark(&weed, mport, 800, 8, 10, tmp.path());
    let holder = |fid: &str| {
        let urls = lookup_urls(&client, &master, vid_of(fid)).unwrap_or_default();
        assert_eq!(urls.len(), 1, "one location for {fid}: {urls:?}");
        urls[0].clone()
    };
    let on_weed: Vec<&String> = fids.iter().filter(|f| holder(f) == wurl).collect();
    let on_kelp = fids.len() - on_weed.len();
    assert!(
        !on_weed.is_empty() && on_kelp > 0,
        "{} files on weed, {on_kelp} on kelp",
        on_weed.len()
    );

    // A crash (SIGKILL) ends the heartbeat stream; the master forgets the
    // server's volumes and keeps routing to Kelp only.
    volume.0.kill().unwrap();
    let _ = volume.0.wait();
    let weed_vid = vid_of(on_weed[0]).to_string();
    wait_until(
        "the Kelp master to drop the killed weed volume server",
        FORGET_DEADLINE,
        || {
            lookup_urls(&client, &master, &weed_vid)?
                .is_empty()
                .then_some(())
        },
    );
    for _ in 0..50 {
        let a = assign(&client, &master, "collection=benchmark");
        assert_eq!(a.url, kurl, "assign after the weed volume server died");
    }
    let after = run_benchmark(&weed, mport, 300, 4, 0, tmp.path());
    assert!(after.iter().all(|f| holder(f) == kurl));
}

#[test]
fn kelp_volume_serves_weed_master() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let client = http();
    let mport = free_port_pair();
    let mdir = tmp.path().join("weed-master");
    std::fs::create_dir_all(&mdir).unwrap();
    let _weed_master = spawn_weed(
        &weed,
        &[
            "master".to_string(),
            "-ip=127.0.0.1".to_string(),
            format!("-port={mport}"),
            format!("-mdir={}", mdir.display()),
            "-telemetry=false".to_string(),
            "-volumeSizeLimitMB=64".to_string(),
        ],
        &tmp.path().join("logs").join("weed-master.log"),
    );
    let master = format!("http://127.0.0.1:{mport}");
    let kdir = tmp.path().join("kelp-volume");
    let dir_arg = format!("-dir={}", kdir.display());
    let mserver_arg = format!("-mserver=127.0.0.1:{mport}");
    let kelp = Kelp::start(
        &[
            "volume",
            &dir_arg,
            "-port=0",
            "-ip=127.0.0.1",
            &mserver_arg,
            "-max=16",
        ],
        &tmp.path().join("logs"),
    );
    let vurl = format!("127.0.0.1:{}", kelp.port("volume_port"));
    wait_until(
        "the Kelp volume server to join the weed master",
        DEADLINE,
        || master_lists_node(&client, &master, &vurl).then_some(()),
    );

    // The weed master grows volumes on Kelp (AllocateVolume) and routes
    // writes there; reads and deletes go straight to Kelp.
    for i in 0..10u64 {
        let a = assign(&client, &master, "");
        assert_eq!(a.url, vurl, "weed master routes to the Kelp volume server");
        let data = blob(200 + i, 1 + (i as usize) * 1234);
        let r = upload(&client, &a.url, &a.fid, "k.bin", &data).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "upload {}", a.fid);
        let r = get(&client, &a.url, &a.fid).unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {}", a.fid);
        assert!(
            r.bytes().unwrap().as_ref() == data.as_slice(),
            "{} content",
            a.fid
        );
        let vid = vid_of(&a.fid);
        assert_eq!(
            lookup_urls(&client, &master, vid),
            Some(vec![vurl.clone()]),
            "weed master lookup of volume {vid}"
        );
        if i % 3 == 0 {
            let r = delete(&client, &a.url, &a.fid).unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "DELETE {}", a.fid);
            let r = get(&client, &a.url, &a.fid).unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "deleted {}", a.fid);
        }
    }

    // And the whole `weed benchmark` workload through the weed master.
    run_benchmark(&weed, mport, 500, 4, 10, tmp.path());
}

/// `weed` tools against a Kelp server that checks write tokens: both read
/// the same `security.toml` from their working directory. Uploads (chunked
/// too), downloads and `weed benchmark` with deletes work with the tokens
/// the Kelp master mints; a client without one is refused.
#[test]
fn weed_tools_with_jwt_signing_key() {
    let Some(weed) = weed() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("cwd");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        cwd.join("security.toml"),
        "[jwt.signing]\nkey = \"kelp-weed-test-secret\"\nexpires_after_seconds = 30\n",
    )
    .unwrap();
    let (kelp, port) = kelp_server_for_weed_in(&data, &[], Some(&cwd));
    let client = http();
    let vurl = format!("127.0.0.1:{}", kelp.port("volume_port"));

    // A plain client gets an assignment but cannot use it without the token
    // (retried while the master still waits for the volume server's first
    // heartbeat: 406 right after start).
    let r = wait_until("an assign to succeed", Duration::from_secs(30), || {
        client
            .get(format!("{}/dir/assign", kelp.master_url()))
            .send()
            .ok()
            .filter(|r| r.status() == StatusCode::OK)
    });
    let auth = r
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .expect("assign answers with a token");
    let v: Value = r.json().unwrap();
    let (fid, url) = (v["fid"].as_str().unwrap(), v["url"].as_str().unwrap());
    let r = upload(&client, url, fid, "x.bin", b"no token").unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().unwrap()["error"], "wrong jwt");
    let r = client
        .post(format!("http://{url}/{fid}"))
        .header("Authorization", &auth)
        .body("with token")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = delete(&client, url, fid).unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // weed upload (one file chunked) and weed download.
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("small.txt", b"signed upload\n".to_vec()),
        ("chunked.bin", blob(9, 1024 * 1024 + 4321)),
    ];
    let mut args = vec![
        "upload".to_string(),
        format!("-master=127.0.0.1:{port}"),
        "-maxMB=1".to_string(),
    ];
    for (name, bytes) in &files {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        args.push(p.display().to_string());
    }
    let run = run_tool(
        Command::new(&weed).current_dir(&cwd).args(&args),
        &tmp.path().join("logs"),
        TOOL_DEADLINE,
    )
    .expect_success("weed upload with jwt");
    let uploaded = parse_upload(&run.stdout);
    assert_eq!(uploaded.len(), files.len(), "{}", run.stdout);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for u in &uploaded {
        let want = &files.iter().find(|(n, _)| *n == u.name).expect("file").1;
        let got = weed_download(&weed, Some(&cwd), port, u, &out, TOOL_DEADLINE);
        assert!(got == *want, "{} downloads as uploaded", u.name);
    }
    // Deleting the chunked file through its manifest needs a token too.
    let big = uploaded.iter().find(|u| u.name == "chunked.bin").unwrap();
    let r = delete(&client, &vurl, &big.fid).unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // weed benchmark: signed writes, and deletes signed via LookupVolume.
    let fids = run_benchmark_in(&weed, port, 300, 4, 20, tmp.path(), Some(&cwd));
    assert!((fids.len() as u64) < 300, "some files were deleted");
}
