//! A simulated downstairs: the real region (`Region`), the real
//! activation rule (`downstairs::admit`), dependency queue
//! (`downstairs::work::Queue`) and job execution (`work::execute`), run in
//! line instead of on threads. It answers each message when it is
//! delivered; its replies go back through the simulated network.
//!
//! Storage: each downstairs' region lives on its own in-memory page-cache
//! model (`kelp_storage::Memory`, one per simulated host). A process kill
//! keeps every write it made, synced or not (the page cache outlives the
//! process); a power cut (`power_cut`) keeps every synced byte and a
//! seeded random subset of the unsynced writes, each possibly torn at
//! 512-byte sectors, and only the directory changes a directory sync made
//! durable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kelp_block::downstairs::admit;
use kelp_block::downstairs::work::{Job, Op, Queue, execute};
use kelp_block::frame::Message;
use kelp_block::upstairs::client::Handshake;
use kelp_block::{BlockError, Region};
use kelp_storage::Memory;

struct Session {
    queue: Queue,
    generation: u64,
}

pub struct SimDownstairs {
    /// This host's disk and page cache.
    disk: Memory,
    dir: PathBuf,
    /// None while the process is down.
    pub region: Option<Region>,
    /// In memory, as in the real server: lost on restart.
    act_session: u64,
    act_upstairs: Option<u128>,
    act_generation: u64,
    occupied: Option<u64>,
    sessions: HashMap<u64, Session>,
    /// The highest generation ever admitted here (survives restarts; the
    /// simulator's own record for the fencing invariant).
    pub highest_admitted: u64,
}

/// What handling a message produced.
pub struct Outcome {
    pub replies: Vec<Message>,
    /// A modifying job ran for a session whose generation is below the
    /// highest admitted here: a fenced upstairs wrote.
    pub fenced_write: Option<String>,
}

impl SimDownstairs {
    pub fn new() -> Self {
        let disk = Memory::new();
        let dir = Path::new("region").to_path_buf();
        let region =
            Region::create_in(disk.storage(), &dir, 512, 4, 2, false).expect("create region");
        SimDownstairs {
            disk,
            dir,
            region: Some(region),
            act_session: 0,
            act_upstairs: None,
            act_generation: 0,
            occupied: None,
            sessions: HashMap::new(),
            highest_admitted: 0,
        }
    }

    pub fn up(&self) -> bool {
        self.region.is_some()
    }

    /// The process dies: its sessions and activation state go with it.
    pub fn kill(&mut self) {
        self.region = None;
        self.sessions.clear();
        self.act_session = 0;
        self.act_upstairs = None;
        self.act_generation = 0;
        self.occupied = None;
    }

    /// The host loses power (the process must be dead already): unsynced
    /// writes are kept, lost or torn as `seed` says.
    pub fn power_cut(&mut self, seed: u64) {
        assert!(!self.up(), "power cut under a running downstairs");
        self.disk.crash(seed);
    }

    /// The process starts again and opens its region. Err: it cannot (the
    /// caller reports it; a region must always reopen after a crash).
    pub fn restart(&mut self) -> Result<(), BlockError> {
        self.region = Some(Region::open_in(self.disk.storage(), &self.dir, false)?);
        Ok(())
    }

    /// Hello, Activate, ExtentVersionsPlease on connection `conn`, as the
    /// upstairs' negotiate does. Err: refused for good (fenced). On success
    /// returns the connection it displaced (the caller sends it `Fenced`
    /// and closes it).
    pub fn negotiate(
        &mut self,
        conn: u64,
        upstairs_id: u128,
        generation: u64,
    ) -> Result<(Handshake, Option<u64>), BlockError> {
        let region = self
            .region
            .as_mut()
            .expect("negotiate with a live downstairs");
        let current = region.generation().max(self.act_generation);
        let same = self.act_upstairs == Some(upstairs_id);
        admit(current, self.occupied.is_some(), same, generation)?;
        region.set_generation(generation)?;
        // The displaced session lives on until its connection closes; its
        // queued jobs are refused by the check before every job.
        let displaced = self.occupied.filter(|&c| c != conn);
        self.act_session = conn;
        self.act_upstairs = Some(upstairs_id);
        self.act_generation = generation;
        self.occupied = Some(conn);
        self.highest_admitted = self.highest_admitted.max(generation);
        self.sessions.insert(
            conn,
            Session {
                queue: Queue::default(),
                generation,
            },
        );
        let hs = Handshake {
            region: *region.def(),
            versions: region.versions(),
            flush_mark: region.flush_mark(),
            snapshots: region.snapshots().to_vec(),
        };
        Ok((hs, displaced))
    }

    /// The connection ended (either side).
    pub fn hangup(&mut self, conn: u64) {
        self.sessions.remove(&conn);
        if self.occupied == Some(conn) {
            self.occupied = None;
        }
    }

    /// Sessions with jobs waiting (ready or not) for the worker.
    pub fn busy_sessions(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.queue.pending_len() > 0)
            .map(|(&c, _)| c)
            .collect();
        v.sort_unstable();
        v
    }

    /// One message from the upstairs on connection `conn`: a ping is
    /// answered at once, a job is queued for the worker (`work`).
    pub fn deliver(&mut self, conn: u64, msg: Message) -> Outcome {
        let mut out = Outcome {
            replies: vec![],
            fenced_write: None,
        };
        if self.region.is_none() {
            return out;
        }
        let Some(session) = self.sessions.get_mut(&conn) else {
            return out;
        };
        let job = match msg {
            Message::Ping(n) => {
                out.replies.push(Message::Pong(n));
                return out;
            }
            other => match Job::from_message(other) {
                Some(job) => job,
                None => {
                    let e = BlockError::protocol("unexpected message from upstairs");
                    out.replies.push(Message::error(&e));
                    return out;
                }
            },
        };
        session.queue.push(job);
        out
    }

    /// The session's worker runs its next ready job, if any (the real
    /// worker is a thread of its own, so this happens at any time after
    /// the job arrived, and goes on for a session displaced by a newer
    /// generation until its connection closes).
    pub fn work(&mut self, conn: u64) -> Outcome {
        let mut out = Outcome {
            replies: vec![],
            fenced_write: None,
        };
        let Some(region) = self.region.as_mut() else {
            return out;
        };
        let Some(session) = self.sessions.get_mut(&conn) else {
            return out;
        };
        if let Some(job) = session.queue.next_ready(|_| true) {
            let is_flush = matches!(job.op, Op::Flush { .. });
            // The real worker's check, under the region lock, before
            // every job.
            let reply = if self.act_session != conn {
                Message::job_error(job.id, &BlockError::Fenced(region.generation()))
            } else {
                let modifies = !matches!(
                    job.op,
                    Op::Read { .. } | Op::ReadSnapshot { .. } | Op::ExtentFetch { .. }
                );
                if modifies && session.generation < self.highest_admitted {
                    out.fenced_write = Some(format!(
                        "job {} ({:?}) of generation {} applied after generation {} was admitted",
                        job.id,
                        op_name(&job.op),
                        session.generation,
                        self.highest_admitted
                    ));
                }
                let result = match &job.op {
                    Op::Flush {
                        flush,
                        generation,
                        snapshot: None,
                    } => region
                        .flush(*flush, *generation)
                        .map(|()| Message::Ack { job: job.id }),
                    _ => execute(region, &job),
                };
                result.unwrap_or_else(|e| Message::job_error(job.id, &e))
            };
            session.queue.complete(job.id, is_flush);
            out.replies.push(reply);
        }
        out
    }

    /// Every block's data and every extent's version, for comparing
    /// replicas.
    pub fn contents(&self) -> Option<(Vec<u8>, Vec<kelp_block::ExtentVersion>)> {
        let r = self.region.as_ref()?;
        let total = r.def().total_blocks();
        let (_, data) = r.read(0, total).ok()?;
        Some((data, r.versions()))
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Write { .. } => "write",
        Op::WriteZeroes { .. } => "write-zeroes",
        Op::Read { .. } => "read",
        Op::Flush { .. } => "flush",
        Op::ReadSnapshot { .. } => "read-snapshot",
        Op::SnapshotDelete { .. } => "snapshot-delete",
        Op::SnapshotRecord { .. } => "snapshot-record",
        Op::ExtentFetch { .. } => "extent-fetch",
        Op::ExtentReplace { .. } => "extent-replace",
        Op::ExtentStamp { .. } => "extent-stamp",
    }
}
