//! The process's memory allocator: mimalloc, tuned to give memory back.
//!
//! Why not glibc's malloc: a profile of 1 KiB writes put about 12% of
//! the server's CPU in it (`malloc_consolidate` for every body over
//! 1 KiB, and arena locks whenever a buffer allocated on one runtime
//! thread is freed on another), and as much in the benchmark client's.
//! With mimalloc (and the settings below) the server spent 66–67 µs of
//! CPU per durable 1 KiB write against 70–74, and reads were 2.04×
//! SeaweedFS's against 1.99× (`docs/benchmarks.md`).
//!
//! Why the two settings: with mimalloc's defaults, a volume server
//! holding a million small blobs grew from 8 to 12 bytes per needle
//! while idle and restarted at 15, where glibc stays near 7. Its arenas
//! are advised for transparent huge pages, which the kernel fills in the
//! background, and freed pages are returned only after a delay. So
//! huge pages are off for the process and freed memory goes back at
//! once (mimalloc's default waits a second).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v3, the version
/// libmimalloc-sys builds by default); `purge_delay_is_the_option_we_mean`
/// checks it against the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the settings above. Call first thing in `main`.
pub fn configure() {
    // SAFETY: `mi_option_set` takes any option index and value; purging
    // is read at each purge, so setting it late is fine.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // SAFETY: a prctl with integer arguments and no memory involved.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Not fatal: memory use is then only higher.
        eprintln!(
            "kelp: cannot disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the hard-coded option index across mimalloc upgrades: the
    /// option at that index has purge delay's default in the mimalloc
    /// that libmimalloc-sys 0.1.49 vendors (1000 ms, `options.c`) in a
    /// process that never set it.
    #[test]
    fn purge_delay_is_the_option_we_mean() {
        // SAFETY: reading an option; no memory involved.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
        }
    }
}
