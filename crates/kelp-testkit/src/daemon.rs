//! Real server processes for tests. A [`Daemon`] is started with
//! `--ready-file=F` (every `kelp` command that serves writes its bound
//! ports there as JSON once it listens on them, so tests use port 0 and
//! never guess) and is killed when dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wait::{DEADLINE, until};

/// How to start a daemon.
#[derive(Clone, Copy)]
pub struct Spawn<'a> {
    /// The binary (`env!("CARGO_BIN_EXE_kelp")` in kelp's tests).
    pub bin: &'a Path,
    pub args: &'a [&'a str],
    /// Where its stderr log and ready file go.
    pub log_dir: &'a Path,
    /// Working directory (where kelp looks for `./security.toml`).
    pub cwd: Option<&'a Path>,
    /// Run inside this network namespace (`ip netns exec`, which execs in
    /// place: the pid is the daemon's).
    pub netns: Option<&'a str>,
    /// Extra environment (an `LD_PRELOAD` fault shim, say).
    pub env: &'a [(&'a str, &'a OsStr)],
}

impl<'a> Spawn<'a> {
    pub fn new(bin: &'a Path, args: &'a [&'a str], log_dir: &'a Path) -> Self {
        Spawn {
            bin,
            args,
            log_dir,
            cwd: None,
            netns: None,
            env: &[],
        }
    }
}

/// A running daemon, killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    /// What it wrote to its ready file (`{"master_port": …, …}`).
    pub ports: Value,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `bin args --ready-file=F` and waits until it has written F.
    /// If it exits first, returns its log.
    pub fn spawn(s: Spawn<'_>) -> Result<Daemon, String> {
        std::fs::create_dir_all(s.log_dir)
            .map_err(|e| format!("creating {}: {e}", s.log_dir.display()))?;
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let ready = s.log_dir.join(format!("ready-{n}.json"));
        let log = s.log_dir.join(format!("daemon-{n}.log"));
        let out =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut cmd = match s.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(s.bin);
                c
            }
            None => Command::new(s.bin),
        };
        if let Some(dir) = s.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(s.args)
            .arg(format!("--ready-file={}", ready.display()))
            .env("RUST_LOG", "info")
            .envs(s.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", s.bin.display()))?;
        let mut d = Daemon {
            child,
            ports: Value::Null,
            log,
        };
        let ports = until("the daemon's ready file", DEADLINE, || {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Some(Err(format!(
                    "{} exited early with {status}: {}",
                    s.bin.display(),
                    d.log_text()
                )));
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str::<Value>(&text).ok().map(Ok)
        })?;
        d.ports = ports;
        Ok(d)
    }

    /// The port it reported under `name` in its ready file.
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

    /// The log once `done` holds for it. A daemon may log what it did
    /// after its client has had the answer (a refused handshake, say), so
    /// a test that checks the log right after the client returns races
    /// with the daemon; this waits (up to the deadline) instead.
    pub fn log_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if done(&text) {
                return text;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what} in the log: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP, then waits until every thread has stopped. A thread inside
    /// a system call (an fdatasync, say) stops when the call returns, so
    /// once this returns no call is in flight and nothing more is answered.
    pub fn freeze(&mut self) {
        let pid = self.child.id();
        signal(pid, libc::SIGSTOP);
        until(&format!("pid {pid} to stop on SIGSTOP"), DEADLINE, || {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default();
            tasks
                .iter()
                .all(|t| {
                    let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
                    // The state is the first field after the parenthesised name.
                    let state = stat
                        .rsplit_once(") ")
                        .and_then(|(_, rest)| rest.chars().next());
                    matches!(state, Some('T') | Some('t') | None)
                })
                .then_some(())
        });
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after the deadline).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Any child process (a `weed`, say), killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// SIGTERM and wait for a clean exit (SIGKILL after the deadline).
    pub fn stop(&mut self) {
        stop_child(&mut self.0);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test started; errors are harmless.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn stop_child(child: &mut Child) {
    signal(child.id(), libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
