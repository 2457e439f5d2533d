//! Running a property over many seeds, reporting and replaying failures.
//!
//! `KELP_CRASH_SEED=N` runs only seed N; `KELP_CRASH_SEEDS=K` runs seeds
//! `0..K` instead of the test's default count.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Runs `case` for seeds `0..count` (or as the environment says). A
/// failing seed is printed with the command that replays it, then the
/// failure is passed on.
pub fn for_each_seed(test: &str, count: u64, mut case: impl FnMut(u64)) {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let seeds = match env("KELP_CRASH_SEED") {
        Some(one) => one..one + 1,
        None => 0..env("KELP_CRASH_SEEDS").unwrap_or(count),
    };
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(seed))) {
            eprintln!(
                "{test}: crash seed {seed} failed; replay it with \
                 KELP_CRASH_SEED={seed} cargo nextest run {test}"
            );
            resume_unwind(panic);
        }
    }
}
