//! A real PostgreSQL server for a test, from the system's packages
//! (Debian's `postgresql`: binaries under `/usr/lib/postgresql/NN/bin`).
//!
//! Each [`Postgres`] is its own cluster in a fresh directory
//! (`$TMPDIR/kelp-pg-<pid>-<n>/`, `/tmp/…` when root: `data/`, the
//! server's log `log`, and its Unix socket; a directory left by a test
//! process that died is stopped and removed by the next start), listening on 127.0.0.1 on a free port, with trust
//! authentication for the `postgres` user and `fsync=on` (the filer's
//! commits are meant to be durable, so tests see the real cost).
//! PostgreSQL refuses to run as root: when the test runs as root, the
//! directory is given to the `postgres` user and every server command runs
//! as that user (`runuser`). Dropping it stops the server
//! (`pg_ctl stop -m immediate`) and removes the directory.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::tools::{is_root, skip};

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the newest
/// `/usr/lib/postgresql/*/bin`, or wherever `pg_ctl` is on `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let version = d.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = d.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let pg_ctl = crate::which("pg_ctl")?;
    let bin = pg_ctl.parent()?;
    bin.join("initdb").is_file().then(|| bin.to_path_buf())
}

/// A running PostgreSQL server, stopped and removed when dropped.
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
}

impl Postgres {
    /// Starts a server, or skips loudly when PostgreSQL is not installed
    /// (under CI, a failure: see [`crate::tools`]).
    pub fn start_or_skip() -> Option<Postgres> {
        match bin_dir() {
            Some(_) => Some(Postgres::start()),
            None => {
                skip("PostgreSQL is not installed (Debian: apt-get install postgresql)");
                None
            }
        }
    }

    /// Starts a server; panics with its log when it cannot.
    pub fn start() -> Postgres {
        static N: AtomicU32 = AtomicU32::new(0);
        let bin =
            bin_dir().expect("PostgreSQL is not installed (Debian: apt-get install postgresql)");
        let base = base_dir();
        sweep_orphans(&bin, &base);
        let root = base.join(format!(
            "kelp-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let mut pg = Postgres { bin, root, port: 0 };
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.root)
                .output()
                .expect("running chown");
            check("chown", &out);
        }
        // initdb's own fsyncs of the new cluster are skipped (--no-sync):
        // the cluster is new and thrown away; the server runs with fsync=on.
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("running initdb");
        check("initdb", &out);
        // A free port can be taken by someone else before the server binds
        // it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            let opts = format!(
                "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=on \
                 -c max_connections=60 -c shared_buffers=16MB \
                 -c dynamic_shared_memory_type=mmap",
                pg.root.display(),
                pg.port
            );
            let out = pg
                .command("pg_ctl")
                .arg("-D")
                .arg(pg.data())
                .arg("-l")
                .arg(pg.log_path())
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .output()
                .expect("running pg_ctl start");
            if out.status.success() {
                return pg;
            }
            last = format!(
                "pg_ctl start: {}\n{}{}\nserver log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                pg.log_text()
            );
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` with `psql` as the `postgres` user (`CREATE DATABASE …`).
    pub fn psql(&self, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.is_file() {
            psql
        } else {
            crate::which("psql").expect("psql is not installed")
        };
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-c", sql])
            .output()
            .expect("running psql");
        check("psql", &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash
    /// would; the directory stays until drop.
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("log")
    }

    /// A server binary, run as the `postgres` user when we are root.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c.current_dir(&self.root);
            c
        } else {
            Command::new(exe)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port != 0 {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Where servers' directories go: `$TMPDIR`, but `/tmp` when root (the
/// `postgres` user must be able to reach its directory, and root's
/// `$TMPDIR` may be private).
fn base_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    }
}

/// Stops and removes the servers of test processes that died without
/// dropping them (killed, or aborted): their directory names carry the
/// test process's pid.
fn sweep_orphans(bin: &std::path::Path, base: &std::path::Path) {
    let Ok(dirs) = std::fs::read_dir(base) else {
        return;
    };
    for d in dirs.flatten() {
        let name = d.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("kelp-pg-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let orphan = Postgres {
            bin: bin.to_path_buf(),
            root: d.path(),
            port: 1,
        };
        drop(orphan); // pg_ctl stop -m immediate, then remove the directory
    }
}

fn check(what: &str, out: &Output) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn starts_answers_and_cleans_up() {
        let Some(pg) = Postgres::start_or_skip() else {
            return;
        };
        assert_eq!(pg.psql("SHOW fsync").trim(), "on");
        assert_eq!(pg.psql("SELECT 1 + 1").trim(), "2");
        let root: PathBuf = pg.root.clone();
        drop(pg);
        assert!(!Path::new(&root).exists(), "{} left behind", root.display());
    }
}
