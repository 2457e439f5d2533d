//! External tools and privileges a test needs. Outside CI a test without
//! them says so on stdout (`SKIP: …`) and returns; under CI (`CI` set, as
//! `.ci/run` runs the suite) a missing tool fails the test instead.

use std::path::PathBuf;

/// `tool` on `PATH`, if there.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `found`, or a loud skip (a failure under CI) naming what is missing.
pub fn require_tool(name: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    match found {
        Some(p) => Some(p),
        None => {
            skip(&format!("{name} is not installed"));
            None
        }
    }
}

/// Reports a skipped test on stdout, where it shows in the test's output;
/// under CI every skip fails the run.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("this test cannot be skipped when CI is set: {why}");
    }
    println!("SKIP: {why}");
}

/// Whether the test runs as root (loop mounts, network namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
