//! The downstairs job queue: jobs run in dependency order on a dedicated
//! blocking thread per session, never on the async reactor.
//!
//! Invariant used for pruning: a flush depends on every job the upstairs
//! sent to this downstairs before it, so once flush `F` has run, every job
//! with an id below `F` that this session will ever be asked to depend on
//! has completed. Ids below the last completed flush are therefore treated
//! as done, and only ids above it are remembered.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{BlockError, Result};
use crate::extent::ExtentImage;
use crate::frame::Message;
use crate::region::Region;

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
            } => (job, deps, Op::Flush { flush, generation }),
            Message::ExtentFetch { job, deps, extent } => (job, deps, Op::ExtentFetch { extent }),
            Message::ExtentReplace {
                job,
                deps,
                extent,
                version,
                contexts,
                data,
            } => (
                job,
                deps,
                Op::ExtentReplace {
                    extent,
                    image: ExtentImage {
                        version,
                        contexts,
                        data: data.to_vec(),
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

    /// Removes and returns the oldest job whose dependencies are all done.
    pub fn next_ready(&mut self) -> Option<Job> {
        let i = self.pending.iter().position(|j| self.ready(j))?;
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
    pub fn ready_writes(&self) -> Vec<(u64, u64)> {
        self.pending
            .iter()
            .filter(|j| self.ready(j))
            .filter_map(|j| match &j.op {
                Op::Write { start, crcs, .. } => Some((*start, crcs.len() as u64)),
                Op::WriteZeroes { start, count } => Some((*start, *count)),
                _ => None,
            })
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
}

fn execute(region: &mut Region, job: &Job) -> Result<Message> {
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
            let (contexts, data) = region.read(*start, *count)?;
            Ok(Message::ReadReply {
                job: job.id,
                contexts,
                data: Bytes::from(data),
            })
        }
        Op::Flush { flush, generation } => {
            region.flush(*flush, *generation)?;
            Ok(Message::Ack { job: job.id })
        }
        Op::ExtentFetch { extent } => {
            let img = region.extent_image(*extent)?;
            Ok(Message::ExtentData {
                job: job.id,
                version: img.version,
                contexts: img.contexts,
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

/// Runs one session's jobs until its channel closes. Each job runs under
/// the region lock and only while this session is still the active one, so
/// a fenced session can never apply another write.
pub fn worker(
    shared: Arc<Shared>,
    session: u64,
    jobs: mpsc::Receiver<Job>,
    replies: UnboundedSender<Message>,
) {
    let mut q = Queue::default();
    loop {
        // The first write to each clean extent waits for its header to be
        // made dirty durably; do that for every write that can run now at
        // once, rather than one fdatasync after another.
        let writes = q.ready_writes();
        if writes.len() > 1 {
            let mut region = super::lock(&shared.region);
            if shared.active_session.load(Ordering::SeqCst) == session
                && let Err(e) = region.prepare_writes(&writes)
            {
                tracing::warn!(error = %e, "marking extents dirty failed");
            }
        }
        while let Some(job) = q.next_ready() {
            let reply = {
                let mut region = super::lock(&shared.region);
                if shared.active_session.load(Ordering::SeqCst) != session {
                    Message::job_error(job.id, &BlockError::Fenced(region.generation()))
                } else {
                    match execute(&mut region, &job) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(job = job.id, error = %e, "job failed");
                            Message::job_error(job.id, &e)
                        }
                    }
                }
            };
            q.complete(job.id, matches!(job.op, Op::Flush { .. }));
            if replies.send(reply).is_err() {
                return;
            }
        }
        match jobs.recv() {
            Ok(job) => q.push(job),
            Err(_) => return,
        }
        // Take everything already queued before running, so dependency
        // order is judged over all that has arrived.
        while let Ok(job) = jobs.try_recv() {
            q.push(job);
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
        assert_eq!(q.next_ready().unwrap().id, 1);
        q.complete(1, false);
        assert!(q.next_ready().is_none(), "3 waits for 2");
        q.push(j(2, &[1]));
        assert_eq!(q.next_ready().unwrap().id, 2);
        q.complete(2, true);
        assert_eq!(q.next_ready().unwrap().id, 3);
        q.complete(3, false);
        q.push(j(5, &[1, 3]));
        assert_eq!(q.next_ready().unwrap().id, 5, "1 is below the flush floor");
        assert_eq!(q.pending_len(), 0);
    }
}
