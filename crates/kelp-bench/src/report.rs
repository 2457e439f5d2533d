//! Benchmark figures, printed like `weed benchmark` or as JSON.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The percentiles `weed benchmark` prints.
const PERCENTILES: [f64; 9] = [50.0, 66.0, 75.0, 80.0, 90.0, 95.0, 98.0, 99.0, 100.0];

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub phases: Vec<PhaseReport>,
    pub delete_failures: u64,
}

#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub concurrency: usize,
    pub seconds: f64,
    pub completed: u64,
    pub failed: u64,
    pub bytes: u64,
    pub requests_per_second: f64,
    pub kbytes_per_second: f64,
    /// The same in MiB/s.
    pub mib_per_second: f64,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub std: f64,
    /// (percentile, milliseconds)
    pub percentiles: Vec<(f64, f64)>,
}

impl PhaseReport {
    pub fn from_histogram(
        phase: &str,
        concurrency: usize,
        elapsed: Duration,
        completed: u64,
        failed: u64,
        bytes: u64,
        h: &hdrhistogram::Histogram<u64>,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |us: f64| us / 1000.0;
        let empty = h.is_empty();
        Self {
            phase: phase.to_string(),
            concurrency,
            seconds: secs,
            completed,
            failed,
            bytes,
            requests_per_second: completed as f64 / secs,
            kbytes_per_second: bytes as f64 / 1024.0 / secs,
            mib_per_second: bytes as f64 / (1024.0 * 1024.0) / secs,
            latency_ms: Latency {
                min: if empty { 0.0 } else { ms(h.min() as f64) },
                avg: ms(h.mean()),
                max: if empty { 0.0 } else { ms(h.max() as f64) },
                std: ms(h.stdev()),
                percentiles: PERCENTILES
                    .iter()
                    .map(|p| {
                        (
                            *p,
                            if empty {
                                0.0
                            } else {
                                ms(h.value_at_percentile(*p) as f64)
                            },
                        )
                    })
                    .collect(),
            },
        }
    }
}

impl PhaseReport {
    /// The latency at percentile `p` (one of 50, 66, 75, 80, 90, 95, 98,
    /// 99, 100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.latency_ms
            .percentiles
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(0.0, |(_, v)| *v)
    }
}

impl fmt::Display for PhaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n------------ {} phase ----------", self.phase)?;
        writeln!(f, "Concurrency Level:      {}", self.concurrency)?;
        writeln!(f, "Time taken for tests:   {:.3} seconds", self.seconds)?;
        writeln!(f, "Completed requests:     {}", self.completed)?;
        writeln!(f, "Failed requests:        {}", self.failed)?;
        writeln!(f, "Total transferred:      {} bytes", self.bytes)?;
        writeln!(
            f,
            "Requests per second:    {:.2} [#/sec]",
            self.requests_per_second
        )?;
        writeln!(
            f,
            "Transfer rate:          {:.2} [Kbytes/sec]",
            self.kbytes_per_second
        )?;
        writeln!(f, "\nConnection Times (ms)")?;
        writeln!(f, "              min      avg        max      std")?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "Total:        {:<8.1} {:<10.1} {:<8.1} {:.1}",
            l.min, l.avg, l.max, l.std
        )?;
        writeln!(
            f,
            "\nPercentage of the requests served within a certain time (ms)"
        )?;
        for (p, v) in &l.percentiles {
            writeln!(f, "  {:>3}%    {:.1} ms", *p as u32, v)?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.phases {
            write!(f, "{p}")?;
        }
        if self.delete_failures > 0 {
            writeln!(f, "\nFailed deletes:         {}", self.delete_failures)?;
        }
        Ok(())
    }
}
