//! Waiting for durability without a thread per waiter.
//!
//! `Volume::durable(seq)` is a future that resolves once every write up
//! to `seq` is fdatasynced. Waiters park their wakers here; one syncer
//! thread per volume runs the group commit (`force_sync_through`) for
//! everything written so far, then wakes the waiters it covered. While it
//! syncs, new writes queue up and the next sync takes them all at once,
//! so a batch is whatever arrived during one fdatasync.
//!
//! The thread is started by the first waiter and ends after
//! `IDLE_EXIT` without work. It holds only a `Weak` to the volume between
//! syncs, so closing a volume (which needs the last `Arc`) never waits
//! for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::VolumeError;
use crate::volume::{SyncMode, Volume};

/// How long an idle syncer thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(2);

/// Shared by a volume, its waiters and its syncer thread (which holds
/// this, not the volume, while it waits for work).
#[derive(Default)]
pub(crate) struct Syncer {
    state: Mutex<SyncerState>,
    wake: Condvar,
}

#[derive(Default)]
struct SyncerState {
    /// Highest seq a waiter asked for.
    wanted: u64,
    /// Highest seq the syncer thread has made durable.
    done: u64,
    /// Whether a syncer thread is alive for this volume.
    running: bool,
    waiters: Vec<(u64, Waker)>,
}

/// Resolves once the volume's writes up to `seq` are durable (or the
/// volume cannot make them so).
pub struct Durable {
    vol: Arc<Volume>,
    seq: u64,
    /// Sync even in `SyncMode::None`.
    force: bool,
}

impl Volume {
    /// A future that resolves once every write/delete with sequence ≤
    /// `seq` is durable; at once in `SyncMode::None`. Nothing blocks
    /// while it waits: a per-volume syncer thread does the fdatasync.
    pub fn durable(self: &Arc<Self>, seq: u64) -> Durable {
        Durable {
            vol: self.clone(),
            seq,
            force: false,
        }
    }

    /// `durable`, but fdatasyncs in `SyncMode::None` too (a client asked
    /// for this write to be synced).
    pub fn synced(self: &Arc<Self>, seq: u64) -> Durable {
        Durable {
            vol: self.clone(),
            seq,
            force: true,
        }
    }

    fn durable_now(&self, seq: u64, force: bool) -> Option<Result<(), VolumeError>> {
        if (self.sync_mode == SyncMode::None && !force)
            || self.synced_seq.load(Ordering::Acquire) >= seq
        {
            return Some(Ok(()));
        }
        self.sync_failure
            .lock()
            .clone()
            .map(|why| Err(VolumeError::SyncFailed(why)))
    }
}

impl Future for Durable {
    type Output = Result<(), VolumeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let vol = &self.vol;
        if let Some(done) = vol.durable_now(self.seq, self.force) {
            return Poll::Ready(done);
        }
        let mut st = vol.syncer.state.lock();
        // Looked at again under the lock: the syncer publishes before it
        // takes the lock to wake, so no wake-up is lost in between.
        if let Some(done) = vol.durable_now(self.seq, self.force) {
            return Poll::Ready(done);
        }
        match st
            .waiters
            .iter_mut()
            .find(|(s, w)| *s == self.seq && w.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => st.waiters.push((self.seq, cx.waker().clone())),
        }
        st.wanted = st.wanted.max(self.seq);
        if st.running {
            vol.syncer.wake.notify_one();
        } else {
            st.running = true;
            let weak = Arc::downgrade(vol);
            let syncer = vol.syncer.clone();
            let name = format!("kelp-sync-{}", vol.id);
            if let Err(e) = std::thread::Builder::new()
                .name(name)
                .spawn(move || run(&syncer, &weak))
            {
                st.running = false;
                tracing::error!(volume = vol.id, error = %e, "cannot start the syncer thread");
                st.waiters.clear();
                drop(st);
                return Poll::Ready(Err(VolumeError::SyncFailed(format!(
                    "cannot start the syncer thread: {e}"
                ))));
            }
        }
        Poll::Pending
    }
}

/// The syncer thread: sync whatever is wanted, wake who it covered,
/// repeat; exit when idle for `IDLE_EXIT` or when the volume is gone.
fn run(syncer: &Syncer, weak: &Weak<Volume>) {
    yield_on_wakeup();
    loop {
        {
            let mut st = syncer.state.lock();
            while st.wanted <= st.done {
                if syncer.wake.wait_for(&mut st, IDLE_EXIT).timed_out() && st.wanted <= st.done {
                    st.running = false;
                    return;
                }
            }
        }
        let Some(vol) = weak.upgrade() else {
            syncer.state.lock().running = false;
            return;
        };
        // Everything written so far, not only what was asked: writes that
        // landed meanwhile ride along.
        let target = vol.written_seq.load(Ordering::Acquire);
        let result = vol.force_sync_through(target);
        if let Err(e) = &result {
            tracing::warn!(volume = vol.id, error = %e, "group commit failed");
        }
        let synced = vol.synced_seq.load(Ordering::Acquire);
        drop(vol);
        let woken: Vec<Waker> = {
            let mut st = syncer.state.lock();
            st.done = st.done.max(synced);
            let failed = result.is_err();
            if failed {
                // The volume is poisoned: its waiters see `sync_failure`.
                st.wanted = st.done;
                st.running = false;
            }
            let mut woken = Vec::new();
            st.waiters.retain(|(seq, w)| {
                let done = *seq <= synced || failed;
                if done {
                    woken.push(w.clone());
                }
                !done
            });
            woken
        };
        for w in woken {
            w.wake();
        }
        if result.is_err() {
            return;
        }
    }
}

/// Puts the calling thread in `SCHED_BATCH`: when it wakes (work arrived,
/// or an fdatasync's I/O completed) it waits for the running thread's
/// time slice instead of preempting it. The threads it would preempt
/// are the ones serving requests; a syncer that runs a little later
/// finds more writes to cover in one fdatasync. With writers and clients
/// sharing two cores, this made 1 KiB durable writes 13–20% faster and
/// cut the server's CPU per write by a sixth (`docs/benchmarks.md`).
/// Best effort: where the policy is refused, the thread stays as it is.
fn yield_on_wakeup() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid
    // `sched_param` that outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "syncer thread stays in the default scheduling policy"
        );
    }
}
