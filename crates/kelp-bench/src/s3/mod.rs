//! `kelp benchmark -s3`: load over the S3 API, for Kelp's gateway and
//! SeaweedFS's `weed s3` alike.
//!
//! - put: `n` objects `<prefix><i:010>` of exactly `size` bytes, spread
//!   over `c` workers (the bucket is created first if missing);
//! - get: `n` random picks (with replacement) of those keys, each body
//!   checked byte for byte;
//! - list: the whole bucket (under the prefix) with ListObjectsV2 pages of
//!   1000 keys, one after another, counting the keys.
//!
//! An object's content is a function of the run's size and its index (a
//! seeded random buffer whose first 8 bytes are the index), so a later
//! `-readOnly` run checks what an earlier run wrote.

mod client;
mod listing;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub use client::S3Client;
pub use listing::{ListPage, parse_list_page};

use crate::{Phase, PhaseReport, Progress, finish, run_phase};

/// Keys per ListObjectsV2 page.
pub const LIST_PAGE: u32 = 1000;
/// Error messages kept in the report (the count is always exact).
const KEPT_ERRORS: usize = 10;

#[derive(Debug, Clone)]
pub struct S3BenchConfig {
    /// `http://host:port` of the S3 gateway.
    pub endpoint: String,
    /// Empty: anonymous requests.
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key.
    pub prefix: String,
    /// Objects to PUT, and GETs to make.
    pub n: u64,
    pub concurrency: usize,
    /// Object size in bytes.
    pub size: usize,
    pub put: bool,
    pub get: bool,
    pub list: bool,
    pub progress: Progress,
}

impl Default for S3BenchConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:8333".into(),
            access_key: String::new(),
            secret_key: String::new(),
            region: "us-east-1".into(),
            bucket: "bench".into(),
            prefix: String::new(),
            n: 10_000,
            concurrency: 16,
            size: 4096,
            put: true,
            get: true,
            list: false,
            progress: Progress::Lines,
        }
    }
}

/// The figures of one run.
#[derive(Debug, Default, Serialize)]
pub struct S3Report {
    pub endpoint: String,
    pub bucket: String,
    pub object_size: usize,
    /// `put`, `get`, `list` (for `list`, one request is one page).
    pub phases: Vec<PhaseReport>,
    /// Keys the listing counted.
    pub listed_keys: Option<u64>,
    /// Keys per second of the listing.
    pub listed_keys_per_second: Option<f64>,
    /// Failed requests over all phases.
    pub errors: u64,
    /// The first few failures, as messages.
    pub error_samples: Vec<String>,
}

/// Failures shared by the workers.
#[derive(Default)]
struct Errors {
    samples: Mutex<Vec<String>>,
}

impl Errors {
    fn note(&self, e: &anyhow::Error) {
        tracing::debug!("{e:#}");
        let mut s = self.samples.lock();
        if s.len() < KEPT_ERRORS {
            s.push(format!("{e:#}"));
        }
    }
}

/// The content of object `i` for a run of `base.len()`-byte objects.
fn object_body(base: &[u8], i: u64) -> Bytes {
    let mut body = base.to_vec();
    let id = i.to_le_bytes();
    let k = id.len().min(body.len());
    body[..k].copy_from_slice(&id[..k]);
    Bytes::from(body)
}

fn matches_body(base: &[u8], i: u64, got: &[u8]) -> bool {
    let id = i.to_le_bytes();
    let k = id.len().min(base.len());
    got.len() == base.len() && got[..k] == id[..k] && got[k..] == base[k..]
}

fn key(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:010}")
}

/// Runs the configured phases and returns their figures.
pub async fn run(cfg: S3BenchConfig) -> anyhow::Result<S3Report> {
    let client = S3Client::new(
        &cfg.endpoint,
        &cfg.access_key,
        &cfg.secret_key,
        &cfg.region,
        cfg.concurrency,
    )?;
    // Same seed for every run of a size: a -readOnly run checks the bytes
    // an earlier run wrote.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b65_6c70 ^ cfg.size as u64);
    let mut base = vec![0u8; cfg.size];
    rng.fill(&mut base[..]);
    let base: Arc<[u8]> = base.into();
    let errors = Arc::new(Errors::default());
    let mut report = S3Report {
        endpoint: cfg.endpoint.clone(),
        bucket: cfg.bucket.clone(),
        object_size: cfg.size,
        ..S3Report::default()
    };
    if cfg.put {
        client.ensure_bucket(&cfg.bucket).await?;
        let phase = Arc::new(Phase::new("put", cfg.n)?);
        let (c, b, e, cf) = (client.clone(), base.clone(), errors.clone(), cfg.clone());
        let put = move |i: u64| {
            let (client, base, errors, cfg) = (c.clone(), b.clone(), e.clone(), cf.clone());
            async move {
                let body = object_body(&base, i);
                let len = body.len() as u64;
                match client
                    .put_object(&cfg.bucket, &key(&cfg.prefix, i), body)
                    .await
                {
                    Ok(()) => Ok(len),
                    Err(err) => {
                        errors.note(&err);
                        Err(())
                    }
                }
            }
        };
        let r = run_phase(phase, cfg.concurrency, cfg.progress, put).await;
        report.phases.push(r);
    }
    if cfg.get && cfg.n > 0 {
        let phase = Arc::new(Phase::new("get", cfg.n)?);
        let (c, b, e, cf) = (client.clone(), base.clone(), errors.clone(), cfg.clone());
        let get = move |_: u64| {
            let (client, base, errors, cfg) = (c.clone(), b.clone(), e.clone(), cf.clone());
            async move {
                let i = rand::rng().random_range(0..cfg.n);
                let k = key(&cfg.prefix, i);
                let err = match client.get_object(&cfg.bucket, &k).await {
                    Ok(got) if matches_body(&base, i, &got) => return Ok(got.len() as u64),
                    Ok(got) => anyhow::anyhow!(
                        "GET {k}: {} bytes that are not what was written",
                        got.len()
                    ),
                    Err(err) => err,
                };
                errors.note(&err);
                Err(())
            }
        };
        let r = run_phase(phase, cfg.concurrency, cfg.progress, get).await;
        report.phases.push(r);
    }
    if cfg.list {
        let (r, keys) = list_all(&client, &cfg, &errors).await?;
        report.listed_keys_per_second = Some(keys as f64 / r.seconds.max(1e-9));
        report.listed_keys = Some(keys);
        report.phases.push(r);
    }
    report.errors = report.phases.iter().map(|p| p.failed).sum();
    report.error_samples = std::mem::take(&mut *errors.samples.lock());
    Ok(report)
}

/// Lists the whole bucket page by page; a failed page is retried once,
/// then the listing stops (later pages need its token).
async fn list_all(
    client: &S3Client,
    cfg: &S3BenchConfig,
    errors: &Errors,
) -> anyhow::Result<(PhaseReport, u64)> {
    let phase = Phase::new("list", u64::MAX)?;
    let started = Instant::now();
    let (mut token, mut keys) = (None::<String>, 0u64);
    loop {
        let mut page = None;
        for _ in 0..2 {
            let t = Instant::now();
            match client
                .list_page(&cfg.bucket, &cfg.prefix, token.as_deref(), LIST_PAGE)
                .await
            {
                Ok(p) => {
                    phase.record(t, Ok(p.bytes));
                    page = Some(p);
                    break;
                }
                Err(e) => {
                    errors.note(&e);
                    phase.record(t, Err(()));
                }
            }
        }
        let Some(p) = page else { break };
        keys += p.keys;
        if cfg.progress != Progress::Off && keys % (LIST_PAGE as u64 * 20) == 0 {
            eprintln!(
                "Listed {keys} keys ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
        }
        match p.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok((finish(&phase, 1, started.elapsed()), keys))
}

impl fmt::Display for S3Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.phases {
            write!(f, "{p}")?;
        }
        writeln!(
            f,
            "\n------------ summary ({} bucket {}, {} B objects) ----------",
            self.endpoint, self.bucket, self.object_size
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "{:>4}: {:>9.1} ops/s {:>9.2} MiB/s  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  {} errors",
                p.phase,
                p.requests_per_second,
                p.mib_per_second,
                p.percentile_ms(50.0),
                p.percentile_ms(90.0),
                p.percentile_ms(99.0),
                p.failed
            )?;
        }
        if let (Some(k), Some(r)) = (self.listed_keys, self.listed_keys_per_second) {
            writeln!(f, "list: {k} keys, {r:.0} keys/s")?;
        }
        for e in &self.error_samples {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_index() {
        let base = vec![7u8; 20];
        let b = object_body(&base, 3);
        assert!(matches_body(&base, 3, &b));
        assert!(!matches_body(&base, 4, &b));
        assert!(!matches_body(&base, 3, &b[..19]));
        let tiny = vec![1u8; 2];
        assert!(matches_body(&tiny, 5, &object_body(&tiny, 5)));
        assert!(matches_body(&[], 5, &object_body(&[], 5)));
        assert_eq!(key("p/", 42), "p/0000000042");
    }
}
