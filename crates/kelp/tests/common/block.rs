//! Block volumes for tests: three regions, a `kelp downstairs` on each,
//! an upstairs over them, and the tools tests drive them with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{DEADLINE, Kelp, StartKelp, require_tool, wait_until, which};

pub fn kelp_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .output()
        .expect("run kelp")
}

pub fn tool(name: &str) -> Option<PathBuf> {
    require_tool(
        &format!("{name} (apt-get install qemu-utils libnbd-bin fio)"),
        which(name),
    )
}

pub struct Volume {
    pub root: PathBuf,
    pub dirs: Vec<PathBuf>,
    pub ds: Vec<Kelp>,
    /// More flags for every downstairs (secret, TLS).
    ds_extra: Vec<String>,
}

impl Volume {
    /// Three regions of `extents` × 1 MiB extents (4 KiB blocks) and a
    /// downstairs on each.
    pub fn new(root: &Path, extents: u32) -> Volume {
        Volume::with_ds_args(root, extents, &[])
    }

    /// Like `new`, each downstairs started with `ds_extra` too.
    pub fn with_ds_args(root: &Path, extents: u32, ds_extra: &[String]) -> Volume {
        let mut dirs = vec![];
        for i in 0..3 {
            let d = root.join(format!("region{i}"));
            let out = kelp_cmd(&[
                "block",
                "create",
                &format!("--dir={}", d.display()),
                "--block-size=4096",
                "--extent-size=256",
                &format!("--extent-count={extents}"),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            dirs.push(d);
        }
        let mut v = Volume {
            root: root.to_path_buf(),
            dirs,
            ds: vec![],
            ds_extra: ds_extra.to_vec(),
        };
        for i in 0..3 {
            let k = v.start_ds(i, 0);
            v.ds.push(k);
        }
        v
    }

    /// A downstairs on each of existing regions `dirs`.
    pub fn serve(root: &Path, dirs: &[PathBuf]) -> Volume {
        Volume::serve_with(root, dirs, &[])
    }

    /// Like `serve`, each downstairs started with `ds_extra` too.
    pub fn serve_with(root: &Path, dirs: &[PathBuf], ds_extra: &[&str]) -> Volume {
        let mut v = Volume {
            root: root.to_path_buf(),
            dirs: dirs.to_vec(),
            ds: vec![],
            ds_extra: ds_extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..dirs.len() {
            let k = v.start_ds(i, 0);
            v.ds.push(k);
        }
        v
    }

    /// Stops every downstairs (SIGTERM, waiting for each to exit).
    pub fn stop(&mut self) {
        for d in &mut self.ds {
            d.stop();
        }
    }

    pub fn start_ds(&self, i: usize, port: u16) -> Kelp {
        let mut args = vec![
            "downstairs".to_string(),
            format!("--dir={}", self.dirs[i].display()),
            format!("--port={port}"),
        ];
        args.extend(self.ds_extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        Kelp::start(&refs, &self.root.join("logs"))
    }

    pub fn targets(&self) -> Vec<String> {
        self.ds
            .iter()
            .map(|k| format!("--target=127.0.0.1:{}", k.port("port")))
            .collect()
    }

    pub fn upstairs_args(&self, generation: u64, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["upstairs".to_string()];
        args.extend(self.targets());
        args.push(format!("--gen={generation}"));
        args.push("--nbd=127.0.0.1:0".into());
        args.push("--flush-interval-ms=100".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn upstairs(&self, generation: u64, extra: &[&str]) -> Kelp {
        let args = self.upstairs_args(generation, extra);
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        Kelp::start(&refs, &self.root.join("logs"))
    }

    /// An upstairs that is expected never to become ready: started without
    /// waiting, its log polled until it holds `want`, then killed. Returns
    /// its log.
    pub fn upstairs_refused(&self, extra: &[&str], want: &str) -> String {
        let log_dir = self.root.join("logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("refused-{}.log", self.ds.len() + extra.len()));
        let child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(self.upstairs_args(1, extra))
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
        wait_until("the upstairs to log its refusal", DEADLINE, || {
            up.log_text().contains(want).then_some(())
        });
        up.kill9();
        up.log_text()
    }

    pub fn verify(&mut self) -> String {
        for d in &mut self.ds {
            d.stop();
        }
        let dirs = self
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let out = kelp_cmd(&["block", "verify", &format!("--dir={dirs}")]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "verify failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

pub fn nbd_url(up: &Kelp) -> String {
    format!("nbd://127.0.0.1:{}", up.port("nbd_port"))
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

pub fn random_file(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, super::blob(seed, len)).unwrap();
}
