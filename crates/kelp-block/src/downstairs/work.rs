//! The downstairs job queue: jobs run in dependency order on a dedicated
//! blocking thread per session, never on the async reactor.
//!
//! A flush runs beside later jobs. Once its dependencies are done the
//! worker begins it (`Region::flush_begin`) and counts it as complete for
//! the jobs that depend on it; its fdatasyncs run on a flusher thread, and
//! it is acknowledged only when that thread reports every dirty extent
//! synced and stamped. Meanwhile reads run, a write runs unless it touches
//! what the flush is persisting (`Region::can_write`), and other flushes and
//! repair jobs wait for it to end. Activation and extent-version queries
//! wait too (`Shared::region_between_flushes`), so reconciliation never sees
//! versions change under it. The acknowledgement rule is unchanged: a FLUSH
//! is acknowledged once everything before it is durable.
//!
//! Invariant used for pruning: a flush depends on every job the upstairs
//! sent to this downstairs before it, so once flush `F` has run, every job
//! with an id below `F` that this session will ever be asked to depend on
//! has completed. Ids below the last completed flush are therefore treated
//! as done, and only ids above it are remembered.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::catalog::Snapshot;
use crate::error::{BlockError, Result};
use crate::extent::{ExtentImage, FlushHandle};
use crate::frame::Message;
use crate::region::{Region, parallel};

/// A job as the worker runs it.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub deps: Vec<u64>,
    pub op: Op,
}

#[derive(Debug)]
pub enum Op {
    Write {
        start: u64,
        crcs: Vec<u32>,
        data: Bytes,
    },
    WriteZeroes {
        start: u64,
        count: u64,
    },
    Read {
        start: u64,
        count: u64,
    },
    Flush {
        flush: u64,
        generation: u64,
        /// The snapshot this flush takes: acknowledged only once recorded.
        snapshot: Option<Snapshot>,
    },
    ReadSnapshot {
        name: String,
        start: u64,
        count: u64,
    },
    SnapshotDelete {
        name: String,
    },
    SnapshotRecord {
        snapshot: Snapshot,
    },
    ExtentFetch {
        extent: u32,
    },
    ExtentReplace {
        extent: u32,
        image: ExtentImage,
    },
    ExtentStamp {
        extent: u32,
        flush: u64,
        generation: u64,
    },
}

impl Op {
    /// The block range (start, count) a write or write-zeroes changes.
    pub fn written(&self) -> Option<(u64, u64)> {
        match self {
            Op::Write { start, crcs, .. } => Some((*start, crcs.len() as u64)),
            Op::WriteZeroes { start, count } => Some((*start, *count)),
            _ => None,
        }
    }
}

impl Job {
    /// Splits a job message into a `Job`; None for any other message.
    pub fn from_message(m: Message) -> Option<Job> {
        let (id, deps, op) = match m {
            Message::Write {
                job,
                deps,
                start,
                crcs,
                data,
            } => (job, deps, Op::Write { start, crcs, data }),
            Message::WriteZeroes {
                job,
                deps,
                start,
                count,
            } => (job, deps, Op::WriteZeroes { start, count }),
            Message::Read {
                job,
                deps,
                start,
                count,
            } => (job, deps, Op::Read { start, count }),
            Message::Flush {
                job,
                deps,
                flush,
                generation,
                snapshot,
            } => (
                job,
                deps,
                Op::Flush {
                    flush,
                    generation,
                    snapshot,
                },
            ),
            Message::ReadSnapshot {
                job,
                deps,
                name,
                start,
                count,
            } => (job, deps, Op::ReadSnapshot { name, start, count }),
            Message::SnapshotDelete { job, deps, name } => (job, deps, Op::SnapshotDelete { name }),
            Message::SnapshotRecord {
                job,
                deps,
                snapshot,
            } => (job, deps, Op::SnapshotRecord { snapshot }),
            Message::ExtentFetch { job, deps, extent } => (job, deps, Op::ExtentFetch { extent }),
            Message::ExtentReplace {
                job,
                deps,
                extent,
                version,
                contexts,
                births,
                saved,
                data,
            } => (
                job,
                deps,
                Op::ExtentReplace {
                    extent,
                    image: ExtentImage {
                        version,
                        contexts,
                        births,
                        data: data.to_vec(),
                        saved,
                    },
                },
            ),
            Message::ExtentStamp {
                job,
                deps,
                extent,
                flush,
                generation,
            } => (
                job,
                deps,
                Op::ExtentStamp {
                    extent,
                    flush,
                    generation,
                },
            ),
            _ => return None,
        };
        Some(Job { id, deps, op })
    }
}

/// Dependency bookkeeping, separate from IO so it can be tested alone.
#[derive(Default)]
pub struct Queue {
    pending: VecDeque<Job>,
    completed: HashSet<u64>,
    floor: u64,
}

impl Queue {
    pub fn push(&mut self, job: Job) {
        self.pending.push_back(job);
    }

    fn ready(&self, job: &Job) -> bool {
        job.deps
            .iter()
            .all(|d| *d < self.floor || self.completed.contains(d))
    }

    /// Removes and returns the oldest job whose dependencies are all done
    /// and that `can_run` lets run now.
    pub fn next_ready(&mut self, can_run: impl Fn(&Job) -> bool) -> Option<Job> {
        let i = self
            .pending
            .iter()
            .position(|j| self.ready(j) && can_run(j))?;
        self.pending.remove(i)
    }

    pub fn complete(&mut self, id: u64, is_flush: bool) {
        if is_flush && id > self.floor {
            self.floor = id;
            let floor = self.floor;
            self.completed.retain(|&c| c >= floor);
        }
        if id >= self.floor {
            self.completed.insert(id);
        }
    }

    /// Block ranges (start, count) of the queued writes that could run now.
    pub fn ready_writes(&self, can_run: impl Fn(&Job) -> bool) -> Vec<(u64, u64)> {
        self.pending
            .iter()
            .filter(|j| self.ready(j) && can_run(j))
            .filter_map(|j| j.op.written())
            .collect()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// State shared by every connection of one downstairs.
pub struct Shared {
    pub region: Mutex<Region>,
    /// Id of the session allowed to run jobs (0 = none).
    pub active_session: AtomicU64,
    /// Signalled when a flush running beside other jobs ends.
    pub flush_ended: Condvar,
}

impl Shared {
    pub fn new(region: Region) -> Shared {
        Shared {
            region: Mutex::new(region),
            active_session: AtomicU64::new(0),
            flush_ended: Condvar::new(),
        }
    }

    /// Locks the region once no flush is under way, so extent versions
    /// hold still (activation, version queries, reconciliation).
    pub fn region_between_flushes(&self) -> MutexGuard<'_, Region> {
        let mut region = super::lock(&self.region);
        while region.flush_in_flight() {
            region = match self.flush_ended.wait(region) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        region
    }
}

/// What a worker waits for.
pub enum Event {
    Job(Job),
    /// The flush begun for job `job` has ended.
    FlushDone {
        job: u64,
        result: Result<()>,
    },
    /// The session has ended.
    Hangup,
}

/// The session's end of a worker: sends it jobs, and stops it when dropped.
/// (The worker keeps a sender of its own for its flusher threads, so the
/// channel closing cannot be what stops it.)
pub struct WorkerHandle(mpsc::Sender<Event>);

impl WorkerHandle {
    /// Starts a worker thread for `session`.
    pub fn spawn(
        shared: Arc<Shared>,
        session: u64,
        replies: UnboundedSender<Message>,
    ) -> Result<WorkerHandle> {
        let (tx, rx) = mpsc::channel();
        let own = tx.clone();
        std::thread::Builder::new()
            .name(format!("ds-session-{session}"))
            .spawn(move || worker(shared, session, own, rx, replies))
            .map_err(|e| BlockError::io("spawn worker", e))?;
        Ok(WorkerHandle(tx))
    }

    /// Queues a job; false once the worker has stopped.
    pub fn send(&self, job: Job) -> bool {
        self.0.send(Event::Job(job)).is_ok()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Hangup);
    }
}

/// Whether `job`, its dependencies done, may run now beside the flush that
/// may be under way (see the module comment).
fn can_run(region: &Region, job: &Job) -> bool {
    match &job.op {
        Op::Read { .. } | Op::ReadSnapshot { .. } => true,
        op => match op.written() {
            Some((start, count)) => region.can_write(start, count),
            None => !region.flush_in_flight(),
        },
    }
}

/// The flusher thread's work: each extent's sync, header, sync, in
/// parallel across extents, taking the region lock only to stamp and end.
fn run_flush(
    shared: &Shared,
    mut handles: Vec<(u32, FlushHandle)>,
    flush: u64,
    generation: u64,
    snapshot: Option<&str>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let extents = handles.len();
    let result = parallel(&mut handles, |(eid, h)| {
        let r = h
            .sync()
            .and_then(|_| super::lock(&shared.region).flush_header(*eid, flush, generation))
            .and_then(|_| h.sync_header());
        let end = super::lock(&shared.region).flush_end(*eid, r.is_ok());
        r.and(end)
    });
    let mut region = super::lock(&shared.region);
    end_flush(shared, &mut region);
    tracing::debug!(
        flush,
        extents,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "flush ended"
    );
    result?;
    snapshot_taken(&region, snapshot)
}

/// A snapshot flush is acknowledged only if its snapshot was recorded.
fn snapshot_taken(region: &Region, snapshot: Option<&str>) -> Result<()> {
    match snapshot {
        Some(name) if !region.snapshot_recorded(name) => {
            Err(BlockError::SnapshotConflict(match region.io_failure() {
                Some(why) => format!("snapshot {name} was not recorded: {why}"),
                None => format!("snapshot {name} was not recorded"),
            }))
        }
        _ => Ok(()),
    }
}

/// Ends the region's flush and wakes whoever waits between flushes.
fn end_flush(shared: &Shared, region: &mut Region) {
    region.flush_finish();
    shared.flush_ended.notify_all();
}

/// A job's reply: its result, or the error it failed with (logged).
fn reply(job: u64, result: Result<Message>) -> Message {
    result.unwrap_or_else(|e| {
        tracing::warn!(job, error = %e, "job failed");
        Message::job_error(job, &e)
    })
}

/// Runs every job but a flush (see `begin_flush`). Public for the
/// simulator (`tests/sim`), which runs jobs in line on a real region.
pub fn execute(region: &mut Region, job: &Job) -> Result<Message> {
    match &job.op {
        Op::Write { start, crcs, data } => {
            region.write(*start, data, crcs)?;
            Ok(Message::Ack { job: job.id })
        }
        Op::WriteZeroes { start, count } => {
            region.write_zeroes(*start, *count)?;
            Ok(Message::Ack { job: job.id })
        }
        Op::Read { start, count } => {
            if *count > (crate::frame::MAX_FRAME_LEN as u64 / 2) / region.def().block_size as u64 {
                return Err(BlockError::protocol(format!(
                    "read of {count} blocks is too large"
                )));
            }
            // A reused buffer (kelp_core::buffers): a fresh one would fault
            // in its pages on every read.
            let mut data =
                kelp_core::buffers::take_zeroed(*count as usize * region.def().block_size as usize);
            let contexts = region.read_into(*start, *count, data.as_mut())?;
            Ok(Message::ReadReply {
                job: job.id,
                contexts,
                data: data.freeze(),
            })
        }
        Op::ReadSnapshot { name, start, count } => {
            if *count > (crate::frame::MAX_FRAME_LEN as u64 / 2) / region.def().block_size as u64 {
                return Err(BlockError::protocol(format!(
                    "read of {count} blocks is too large"
                )));
            }
            let (contexts, data) = region.read_snapshot(name, *start, *count)?;
            Ok(Message::ReadReply {
                job: job.id,
                contexts,
                data: Bytes::from(data),
            })
        }
        // Deleting a snapshot that is already gone succeeds: a replayed
        // delete must not fail a downstairs that ran it before.
        Op::SnapshotDelete { name } => {
            if region.snapshot(name).is_ok() {
                let freed = region.snapshot_delete(name)?;
                tracing::info!(snapshot = %name, freed, "snapshot deleted");
            }
            Ok(Message::Ack { job: job.id })
        }
        // The upstairs sends it once this region's extents match a replica
        // that holds the snapshot; recording it again is not an error.
        Op::SnapshotRecord { snapshot } => {
            region.snapshot_record(snapshot.clone())?;
            tracing::info!(snapshot = %snapshot.name, flush = snapshot.flush, "snapshot recorded from the other replicas");
            Ok(Message::Ack { job: job.id })
        }
        // A flush runs beside later jobs: the worker begins it with
        // `begin_flush` and never passes it here.
        Op::Flush { .. } => Err(BlockError::protocol(
            "a flush is begun by the worker, not executed in line",
        )),
        Op::ExtentFetch { extent } => {
            let img = region.extent_image(*extent)?;
            // An extent travels in one frame: its saved versions must fit
            // beside its data (docs/snapshots.md, "Limits").
            let saved: usize = img.saved.iter().map(|s| s.data.len() + 32).sum();
            let size = img.data.len() + img.contexts.len() * 13 + saved + 4096;
            if size > crate::frame::MAX_FRAME_LEN {
                return Err(BlockError::protocol(format!(
                    "extent {extent} with its snapshots' saved versions is {size} bytes, more \
                     than one repair frame carries ({} bytes): delete old snapshots, then repair",
                    crate::frame::MAX_FRAME_LEN
                )));
            }
            Ok(Message::ExtentData {
                job: job.id,
                version: img.version,
                contexts: img.contexts,
                births: img.births,
                saved: img.saved,
                data: Bytes::from(img.data),
            })
        }
        Op::ExtentReplace { extent, image } => {
            region.extent_replace(*extent, image)?;
            Ok(Message::Ack { job: job.id })
        }
        Op::ExtentStamp {
            extent,
            flush,
            generation,
        } => {
            region.extent_stamp(*extent, *flush, *generation)?;
            Ok(Message::Ack { job: job.id })
        }
    }
}

/// Runs one session's jobs until the session hangs up. Each job runs under
/// the region lock and only while this session is still the active one, so
/// a fenced session can never apply another write.
fn worker(
    shared: Arc<Shared>,
    session: u64,
    own: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    replies: UnboundedSender<Message>,
) {
    let mut q = Queue::default();
    let active = || shared.active_session.load(Ordering::SeqCst) == session;
    loop {
        if q.pending_len() > 1 {
            // The first write to each clean extent waits for its header to
            // be made dirty durably; do that for every write that can run
            // now at once, rather than one fdatasync after another.
            let mut region = super::lock(&shared.region);
            let writes = q.ready_writes(|j| can_run(&region, j));
            if writes.len() > 1
                && active()
                && let Err(e) = region.prepare_writes(&writes)
            {
                tracing::warn!(error = %e, "marking extents dirty failed");
            }
        }
        loop {
            let mut region = super::lock(&shared.region);
            let Some(job) = q.next_ready(|j| can_run(&region, j)) else {
                break;
            };
            let (job_id, is_flush) = (job.id, matches!(job.op, Op::Flush { .. }));
            let reply = if !active() {
                Some(Message::job_error(
                    job.id,
                    &BlockError::Fenced(region.generation()),
                ))
            } else if let Op::Flush {
                flush,
                generation,
                snapshot,
            } = job.op
            {
                let job = FlushJob {
                    job: job.id,
                    flush,
                    generation,
                    snapshot,
                };
                begin_flush(&shared, &mut region, &own, job)
            } else {
                Some(reply(job.id, execute(&mut region, &job)))
            };
            drop(region);
            q.complete(job_id, is_flush);
            if let Some(reply) = reply
                && replies.send(reply).is_err()
            {
                return;
            }
        }
        let mut next = events.recv().ok();
        while let Some(event) = next {
            match event {
                Event::Job(job) => q.push(job),
                Event::FlushDone { job, result } => {
                    if replies
                        .send(reply(job, result.map(|()| Message::Ack { job })))
                        .is_err()
                    {
                        return;
                    }
                }
                Event::Hangup => return,
            }
            // Take everything already queued before running, so dependency
            // order is judged over all that has arrived.
            next = events.try_recv().ok();
        }
    }
}

/// A flush job as `begin_flush` takes it.
struct FlushJob {
    job: u64,
    flush: u64,
    generation: u64,
    snapshot: Option<Snapshot>,
}

/// Begins flush job `job` (taking its snapshot, if it has one). Returns
/// its reply if it is already done (nothing was dirty, or it failed to
/// start); otherwise a flusher thread sends `FlushDone` when it ends.
fn begin_flush(
    shared: &Arc<Shared>,
    region: &mut Region,
    own: &mpsc::Sender<Event>,
    f: FlushJob,
) -> Option<Message> {
    let FlushJob {
        job,
        flush,
        generation,
        snapshot,
    } = f;
    let name = snapshot.as_ref().map(|s| s.name.clone());
    let handles = match region.flush_begin(flush, snapshot) {
        Ok(h) if h.is_empty() => {
            let r = snapshot_taken(region, name.as_deref());
            return Some(reply(job, r.map(|()| Message::Ack { job })));
        }
        Ok(h) => h,
        Err(e) => return Some(reply(job, Err(e))),
    };
    let (sh, tx) = (shared.clone(), own.clone());
    let spawned = std::thread::Builder::new()
        .name("ds-flush".into())
        .spawn(move || {
            let result = run_flush(&sh, handles, flush, generation, name.as_deref());
            let _ = tx.send(Event::FlushDone { job, result });
        });
    match spawned {
        Ok(_) => None,
        Err(e) => {
            end_flush(shared, region);
            Some(reply(job, Err(BlockError::io("spawn flusher thread", e))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(id: u64, deps: &[u64]) -> Job {
        Job {
            id,
            deps: deps.to_vec(),
            op: Op::Read { start: 0, count: 1 },
        }
    }

    #[test]
    fn runs_in_dependency_order() {
        let mut q = Queue::default();
        q.push(j(3, &[2]));
        q.push(j(1, &[]));
        let any = |_: &Job| true;
        assert_eq!(q.next_ready(any).unwrap().id, 1);
        q.complete(1, false);
        assert!(q.next_ready(any).is_none(), "3 waits for 2");
        q.push(j(2, &[1]));
        assert_eq!(q.next_ready(any).unwrap().id, 2);
        q.complete(2, true);
        assert!(q.next_ready(|_| false).is_none(), "held back by can_run");
        assert_eq!(q.next_ready(any).unwrap().id, 3);
        q.complete(3, false);
        q.push(j(5, &[1, 3]));
        assert_eq!(
            q.next_ready(any).unwrap().id,
            5,
            "1 is below the flush floor"
        );
        assert_eq!(q.pending_len(), 0);
    }

    fn write_job(id: u64, deps: &[u64], start: u64, fill: u8) -> Job {
        let data = vec![fill; 512];
        Job {
            id,
            deps: deps.to_vec(),
            op: Op::Write {
                start,
                crcs: vec![crate::context::block_crc(&data)],
                data: Bytes::from(data),
            },
        }
    }

    /// A real worker thread: a write to a block the flush is persisting is
    /// applied only after the flush is acknowledged, other jobs go on, and
    /// the newest data is what reads back.
    #[test]
    fn flush_runs_beside_later_writes() {
        let d = tempfile::tempdir().unwrap();
        let region = Region::create(d.path(), 512, 8, 2).unwrap();
        let shared = Arc::new(Shared::new(region));
        shared.active_session.store(1, Ordering::SeqCst);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = WorkerHandle::spawn(shared.clone(), 1, tx).unwrap();
        let flush = Job {
            id: 2,
            deps: vec![1],
            op: Op::Flush {
                flush: 1,
                generation: 1,
                snapshot: None,
            },
        };
        for job in [
            write_job(1, &[], 0, 0xA1),
            flush,
            write_job(3, &[2], 8, 0xB3),
            write_job(4, &[2], 0, 0xC4),
            Job {
                id: 5,
                deps: vec![4],
                op: Op::Read { start: 0, count: 1 },
            },
        ] {
            assert!(w.send(job));
        }
        let mut order = vec![];
        let mut read = None;
        while order.len() < 5 {
            match rx.blocking_recv().expect("worker replies") {
                Message::Ack { job } => order.push(job),
                Message::ReadReply { job, data, .. } => {
                    order.push(job);
                    read = Some(data);
                }
                other => panic!("unexpected reply {other:?}"),
            }
        }
        let at = |id| order.iter().position(|&j| j == id).unwrap();
        assert!(at(1) < at(2), "{order:?}");
        assert!(at(2) < at(4), "write 4 waits for the flush: {order:?}");
        assert!(at(4) < at(5), "{order:?}");
        assert_eq!(read.unwrap().as_ref(), &[0xC4; 512][..]);
        drop(w);
        let region = shared.region_between_flushes();
        let v = region.versions();
        assert_eq!(v[0].flush, 1);
        assert!(v[0].dirty, "write 4 came after the flush");
        assert_eq!(region.read(8, 1).unwrap().1, vec![0xB3; 512]);
    }
}
