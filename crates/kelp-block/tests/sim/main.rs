//! Deterministic simulation of a block volume: the real upstairs state
//! machine and three downstairs running the real job handling on real
//! regions (on an in-memory page-cache model, so a power cut drops or
//! tears unsynced writes), with one seeded scheduler choosing every interleaving and
//! fault (`world.rs`). Invariants (checked as each step happens, and after
//! healing): every acknowledged flush survives; a read returns a value
//! that was written (or the initial zeros) and not older than what was
//! flushed (or, for the same upstairs, acknowledged) before it was issued;
//! after healing and a flush on all three, the replicas hold identical
//! data and extent versions; a fenced generation never gets a job that
//! changes the region applied.
//!
//! `KELP_SIM_SEEDS=N` runs N seeds (default below, sized to finish well
//! within a minute); `KELP_SIM_SEED=N` runs that one seed with a
//! step-by-step trace (and the upstairs' log at debug level).

mod downstairs;
mod oracle;
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};

use world::World;

/// Seeds per run by default: about 15 s on two cores (a debug build).
const DEFAULT_SEEDS: u64 = 5000;
/// Steps of faults per seed before healing.
const CHAOS_STEPS: u64 = 400;
/// Seeds that once found a bug, run every time: 0 (a dirty reconcile
/// source stamped clean before its copies landed), 71 (all three faulted
/// with nothing to repair from), 203 and 271 (replay rolled a downstairs
/// back behind a flush it had run, and activation then preferred that
/// copy), 8594 and 10242 (a write straddling the live-repair point
/// dirtied an extent not yet copied), 1233, 2612, 3926 and 4155 (a
/// replayed zeroing of blocks already zero left the extent clean on that
/// replica only, so the replicas' version labels parted). The scheduler
/// and the storage model have changed since some of these were found
/// (power cuts now drop unsynced writes, hosts lose power alone), so an
/// older seed may no longer take the path that found its bug.
const REGRESSIONS: &[u64] = &[0, 71, 203, 271, 8594, 10242, 1233, 2612, 3926, 4155];

fn run_seed(seed: u64, trace: bool) -> Result<world::Stats, String> {
    match catch_unwind(AssertUnwindSafe(|| {
        World::new(seed, trace).run(CHAOS_STEPS)
    })) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn seeds() {
    if let Some(seed) = env_u64("KELP_SIM_SEED") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("kelp_block=debug")
            .with_test_writer()
            .try_init();
        match run_seed(seed, true) {
            Ok(s) => eprintln!("seed {seed} passed: {s:?}"),
            Err(e) => panic!("seed {seed} failed: {e}"),
        }
        return;
    }
    let n = env_u64("KELP_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("KELP_SIM_FIRST_SEED").unwrap_or(0);
    let seeds: Vec<u64> = REGRESSIONS
        .iter()
        .copied()
        .chain(first..first + n)
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let started = std::time::Instant::now();
    let results: Vec<(u64, Result<world::Stats, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = &seeds;
                s.spawn(move || {
                    seeds
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&seed| (seed, run_seed(seed, false)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("seed runner"))
            .collect()
    });
    let steps: u64 = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|s| s.steps)
        .sum();
    let upstairs: usize = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|s| s.upstairs)
        .sum();
    let failures: Vec<(u64, String)> = results
        .into_iter()
        .filter_map(|(seed, r)| r.err().map(|e| (seed, e)))
        .collect();
    eprintln!(
        "{} seeds in {:.1?} ({steps} steps, {upstairs} upstairs started), {} failed",
        seeds.len(),
        started.elapsed(),
        failures.len()
    );
    if !failures.is_empty() {
        let mut msg = String::new();
        for (seed, e) in failures.iter().take(10) {
            msg.push_str(&format!("\n  seed {seed}: {e}"));
        }
        panic!(
            "{} of {} seeds failed (replay one with KELP_SIM_SEED=N):{msg}",
            failures.len(),
            seeds.len()
        );
    }
}
