//! Polling with a deadline: a test that waits for something to happen asks
//! for it again and again until it does, and fails naming what it waited
//! for when the deadline passes. No fixed sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for anything by default.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(20);

/// Calls `f` until it returns `Some`, for at most `deadline`; panics
/// naming `what` when time runs out.
pub fn until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`until`] for async checks: awaits `f()` until it yields `Some`.
pub async fn until_async<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = until("n to reach 3", DEADLINE, || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for nothing")]
    fn names_what_it_waited_for() {
        until::<()>("nothing", Duration::from_millis(50), || None);
    }
}
