//! `kelp benchmark`: the workload of `weed benchmark`, spoken over the
//! SeaweedFS HTTP API only (`/dir/assign`, `/dir/lookup`, volume POST, GET,
//! DELETE), so one client measures Kelp and SeaweedFS alike.
//!
//! Write phase: `n` files, each `size + rand(0..63)` bytes, spread over `c`
//! workers; each is an assign followed by a multipart POST. A share of the
//! written files (`delete_percent`) is deleted again; the rest are listed in
//! the list file. Read phase: `n` random picks (with replacement) from the
//! list, each resolved through a cached `/dir/lookup` and fetched with GET.
//!
//! [`s3`] is the same kind of load over the S3 API (`kelp benchmark -s3`).

mod report;
pub mod s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kelp_client::{AssignRequest, Client, ClientOptions, UploadOptions};
use parking_lot::Mutex;
use rand::Rng;

pub use report::{PhaseReport, Report};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Master HTTP address, `host:port`.
    pub master: String,
    /// Total number of files to write (and of reads).
    pub n: u64,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Base file size; each file adds rand(0..63) bytes.
    pub size: usize,
    pub collection: String,
    pub replication: String,
    /// Percent of written files deleted again.
    pub delete_percent: u32,
    pub read_only: bool,
    pub write_only: bool,
    /// Ask volume servers to fsync each write (`?fsync=true`).
    pub fsync: bool,
    /// File of written file ids, one per line (written, then read).
    pub list: PathBuf,
    /// How to show progress while a phase runs.
    pub progress: Progress,
    /// HTTPS settings (`[https.client]` of security.toml), as `weed
    /// benchmark` reads them.
    pub security: kelp_core::SecurityConfig,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            master: "localhost:9333".into(),
            n: 1024 * 1024,
            concurrency: 16,
            size: 1024,
            collection: "benchmark".into(),
            replication: "000".into(),
            delete_percent: 0,
            read_only: false,
            write_only: false,
            fsync: false,
            list: std::env::temp_dir().join("benchmark_list.txt"),
            progress: Progress::Lines,
            security: kelp_core::SecurityConfig::default(),
        }
    }
}

/// Counters shared by the workers of one phase.
struct Phase {
    name: &'static str,
    total: u64,
    next: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    latencies: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Phase {
    fn new(name: &'static str, total: u64) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            total,
            next: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            // Microseconds, 1 µs .. 1 hour, 3 significant digits.
            latencies: Mutex::new(hdrhistogram::Histogram::new_with_bounds(
                1,
                3_600_000_000,
                3,
            )?),
        })
    }

    /// Claims the next request index, or None when the phase is done.
    fn claim(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }

    fn record(&self, started: Instant, result: Result<u64, ()>) {
        match result {
            Ok(bytes) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                let us = started.elapsed().as_micros().max(1) as u64;
                let _ = self.latencies.lock().record(us.min(3_600_000_000));
            }
            Err(()) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn done(&self) -> u64 {
        self.completed.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// How progress is shown while a phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing (scripts, `--json`).
    Off,
    /// `weed benchmark`'s line once a second: `Completed X of T requests, P% R/s MB/s`.
    Lines,
    /// A progress bar, for a terminal.
    Bar,
}

/// Reports a phase's progress once a second until it finishes.
async fn progress(phase: Arc<Phase>, started: Instant, mode: Progress) {
    let bar = (mode == Progress::Bar).then(|| {
        let bar = indicatif::ProgressBar::new(phase.total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>5} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.name);
        bar
    });
    let mut last = (0u64, 0u64, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(if bar.is_some() {
        200
    } else {
        1000
    }));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = phase.done();
        let bytes = phase.bytes.load(Ordering::Relaxed);
        if let Some(bar) = &bar {
            bar.set_position(done);
            bar.set_message(format!("{} failed", phase.failed.load(Ordering::Relaxed)));
            if done >= phase.total {
                bar.finish();
                return;
            }
            continue;
        }
        let dt = last.2.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "Completed {} of {} requests, {:.1}% {:.1}/s {:.1}MB/s ({} phase, {:.0}s)",
            done,
            phase.total,
            done as f64 * 100.0 / phase.total.max(1) as f64,
            (done - last.0) as f64 / dt,
            (bytes - last.1) as f64 / dt / 1e6,
            phase.name,
            started.elapsed().as_secs_f64(),
        );
        last = (done, bytes, Instant::now());
        if done >= phase.total {
            return;
        }
    }
}

fn finish(phase: &Phase, concurrency: usize, elapsed: Duration) -> PhaseReport {
    let h = phase.latencies.lock();
    PhaseReport::from_histogram(
        phase.name,
        concurrency,
        elapsed,
        phase.completed.load(Ordering::Relaxed),
        phase.failed.load(Ordering::Relaxed),
        phase.bytes.load(Ordering::Relaxed),
        &h,
    )
}

async fn run_phase<F, Fut>(
    phase: Arc<Phase>,
    concurrency: usize,
    show: Progress,
    work: F,
) -> PhaseReport
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, ()>> + Send,
{
    let started = Instant::now();
    let ticker =
        (show != Progress::Off).then(|| tokio::spawn(progress(phase.clone(), started, show)));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let phase = phase.clone();
            let work = work.clone();
            tokio::spawn(async move {
                while let Some(i) = phase.claim() {
                    let t = Instant::now();
                    let r = work(i).await;
                    phase.record(t, r);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    if let Some(t) = ticker {
        t.abort();
    }
    finish(&phase, concurrency, started.elapsed())
}

/// Runs the configured phases and returns their figures.
pub async fn run(cfg: BenchConfig) -> anyhow::Result<Report> {
    let api = Client::new(
        std::slice::from_ref(&cfg.master),
        &cfg.security,
        ClientOptions {
            pool_max_idle_per_host: cfg.concurrency.max(1) * 2,
            timeout: Some(Duration::from_secs(60)),
            ..ClientOptions::default()
        },
    )?;
    let assign = Arc::new(AssignRequest {
        collection: cfg.collection.clone(),
        replication: cfg.replication.clone(),
        ..AssignRequest::default()
    });
    // Shaped like `weed benchmark`'s uploads: one multipart part named
    // `file`, filename `.`, type `image/bench` (so nothing is gzipped).
    let upload = Arc::new(UploadOptions {
        name: ".".to_string(),
        mime: "image/bench".to_string(),
        fsync: cfg.fsync,
        ..UploadOptions::default()
    });
    let mut report = Report::default();

    if !cfg.read_only {
        let written = Arc::new(Mutex::new(Vec::<String>::new()));
        let deletes = Arc::new(Mutex::new(Vec::<String>::new()));
        let phase = Arc::new(Phase::new("write", cfg.n)?);
        let (api2, cfg2, written2, deletes2) =
            (api.clone(), cfg.clone(), written.clone(), deletes.clone());
        let write = move |i: u64| {
            let (api, cfg, written, deletes, assign, upload) = (
                api2.clone(),
                cfg2.clone(),
                written2.clone(),
                deletes2.clone(),
                assign.clone(),
                upload.clone(),
            );
            async move {
                let len = cfg.size + rand::rng().random_range(0..64);
                let mut body = vec![0u8; len];
                rand::rng().fill(&mut body[..]);
                let id_bytes = i.to_le_bytes();
                let k = id_bytes.len().min(len);
                body[..k].copy_from_slice(&id_bytes[..k]);
                let a = api
                    .assign(&assign)
                    .await
                    .map_err(|e| tracing::debug!("{e}"))?;
                api.upload(&a, body, &upload)
                    .await
                    .map_err(|e| tracing::debug!("{e}"))?;
                if rand::rng().random_range(0..100) < cfg.delete_percent {
                    deletes.lock().push(a.fid);
                } else {
                    written.lock().push(a.fid);
                }
                Ok(len as u64)
            }
        };
        report
            .phases
            .push(run_phase(phase, cfg.concurrency, cfg.progress, write).await);

        let to_delete = std::mem::take(&mut *deletes.lock());
        for fid in to_delete {
            if let Err(e) = api.delete(&fid).await {
                tracing::warn!("{e}");
                report.delete_failures += 1;
            }
        }
        let list = written.lock().join("\n");
        std::fs::write(&cfg.list, list + "\n")
            .with_context(|| format!("cannot write list file {}", cfg.list.display()))?;
    }

    if !cfg.write_only {
        let text = std::fs::read_to_string(&cfg.list)
            .with_context(|| format!("cannot read list file {}", cfg.list.display()))?;
        let fids: Arc<Vec<String>> = Arc::new(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
        );
        anyhow::ensure!(
            !fids.is_empty(),
            "list file {} names no files",
            cfg.list.display()
        );
        let phase = Arc::new(Phase::new("read", cfg.n)?);
        let api2 = api.clone();
        let read = move |_i: u64| {
            let (api, fids) = (api2.clone(), fids.clone());
            async move {
                let fid = &fids[rand::rng().random_range(0..fids.len())];
                api.read(fid)
                    .await
                    .map(|body| body.len() as u64)
                    .map_err(|e| tracing::debug!("{e}"))
            }
        };
        report
            .phases
            .push(run_phase(phase, cfg.concurrency, cfg.progress, read).await);
    }
    Ok(report)
}
