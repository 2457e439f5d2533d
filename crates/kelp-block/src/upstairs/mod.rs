//! The upstairs: a state machine free of IO (`state.rs` and the files it
//! names) takes one input at a time (a guest request, a downstairs message,
//! a (dis)connection, a tick) and returns actions; one task (`driver.rs`)
//! feeds it and performs them over TCP, and the simulator (`crate::sim`)
//! does the same deterministically.
//!
//! Guarantees (see `docs/block.md`):
//! - a write (or write-zeroes) is acknowledged once two downstairs have
//!   applied it;
//! - a flush (and a FUA write, which is a write followed by a flush) is
//!   acknowledged once two downstairs have acknowledged the flush; each runs
//!   it only after every job it was sent before it, so it has made all of
//!   them durable;
//! - a read is served by one downstairs and checked against the block
//!   contexts; on a mismatch it is served from another and the bad copy is
//!   rewritten;
//! - a snapshot is a flush queued behind every earlier job, so it holds
//!   exactly the writes acknowledged before it; it succeeds only once all
//!   three downstairs have recorded it (never two of three), and is
//!   refused unless all three are active. Snapshot reads are checked like
//!   reads, but a bad copy is not rewritten.

pub mod client;
#[cfg(test)]
mod core_tests;
mod driver;
mod guest;
pub mod jobs;
mod lifecycle;
mod reads;
mod repair;
pub mod state;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::catalog::Snapshot;
use crate::context::block_crc;
use crate::error::{BlockError, Result};
pub use client::Security;
use driver::{Event, Request};
pub use state::{Action, GuestOp, Input, Output, Time, Upstairs};

#[derive(Debug, Clone)]
pub struct UpstairsConfig {
    /// Exactly three downstairs addresses (host:port).
    pub targets: Vec<String>,
    /// Activation generation; must exceed that of any earlier upstairs.
    pub generation: u64,
    /// Random unless given; identifies this upstairs to the downstairs.
    pub upstairs_id: u128,
    /// An automatic flush is issued this long after unflushed writes.
    pub flush_interval: Duration,
    /// A downstairs that has been silent this long is dropped.
    pub io_timeout: Duration,
    /// An offline downstairs is replayed when it returns, unless more jobs
    /// (or bytes) than this piled up meanwhile: then it is faulted and
    /// brought back by live repair, extent by extent.
    pub max_replay_jobs: usize,
    pub max_replay_bytes: usize,
    /// How the downstairs are reached (secret, TLS); none by default.
    pub security: Security,
}

impl UpstairsConfig {
    pub fn new(targets: Vec<String>, generation: u64) -> Self {
        UpstairsConfig {
            targets,
            generation,
            upstairs_id: rand::random(),
            flush_interval: Duration::from_millis(500),
            io_timeout: Duration::from_secs(15),
            max_replay_jobs: 20_000,
            max_replay_bytes: 512 << 20,
            security: Security::default(),
        }
    }
}

/// A snapshot of the upstairs for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Per downstairs: "active", "offline", "faulted", "repair", "init".
    pub modes: Vec<String>,
    /// Per downstairs: the job id of the newest flush it has acknowledged
    /// (0 before the first), so a caller can tell when one has caught up.
    pub flushed: Vec<u64>,
    pub jobs: usize,
    pub fenced: bool,
    pub next_flush: u64,
}

/// The guest's handle on an activated volume. Cheap to clone; all clones
/// feed the one upstairs task.
#[derive(Clone)]
pub struct Volume {
    tx: mpsc::UnboundedSender<Request>,
    pub block_size: u32,
    pub total_blocks: u64,
}

impl Volume {
    pub fn size_bytes(&self) -> u64 {
        self.total_blocks * self.block_size as u64
    }

    fn check(&self, start: u64, count: u64) -> Result<()> {
        if start
            .checked_add(count)
            .is_none_or(|e| e > self.total_blocks)
        {
            return Err(BlockError::OutOfRange {
                start,
                end: start.saturating_add(count),
                total: self.total_blocks,
            });
        }
        Ok(())
    }

    async fn call(&self, op: GuestOp) -> Result<Output> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((op, tx)).map_err(|_| BlockError::Shutdown)?;
        rx.await.map_err(|_| BlockError::Shutdown)?
    }

    async fn done(&self, op: GuestOp) -> Result<()> {
        self.call(op).await.map(drop)
    }

    pub async fn read(&self, start: u64, count: u64) -> Result<Bytes> {
        self.check(start, count)?;
        if count == 0 {
            return Ok(Bytes::new());
        }
        match self.call(GuestOp::Read { start, count }).await? {
            Output::Data(d) => Ok(d),
            _ => Err(BlockError::protocol("a read was answered without data")),
        }
    }

    /// Writes whole blocks; acknowledged once two downstairs have them (and,
    /// with `fua`, made them durable).
    pub async fn write(&self, start: u64, data: Bytes, fua: bool) -> Result<()> {
        let bs = self.block_size as usize;
        if !data.len().is_multiple_of(bs) {
            return Err(BlockError::BadLength {
                len: data.len(),
                blocks: (data.len() / bs) as u64,
                block_size: self.block_size,
            });
        }
        let count = (data.len() / bs) as u64;
        self.check(start, count)?;
        if count == 0 {
            return if fua { self.flush().await } else { Ok(()) };
        }
        let crcs = data.chunks(bs).map(block_crc).collect();
        self.done(GuestOp::Write {
            start,
            crcs,
            data,
            fua,
        })
        .await
    }

    pub async fn write_zeroes(&self, start: u64, count: u64, fua: bool) -> Result<()> {
        self.check(start, count)?;
        if count == 0 {
            return if fua { self.flush().await } else { Ok(()) };
        }
        self.done(GuestOp::WriteZeroes { start, count, fua }).await
    }

    pub async fn flush(&self) -> Result<()> {
        self.done(GuestOp::Flush).await
    }

    /// Flushes and waits until all three downstairs have acknowledged a
    /// flush (every replica in sync), retrying until `timeout`.
    pub async fn drain(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.done(GuestOp::FlushAll).await;
            if r.is_ok() || tokio::time::Instant::now() >= deadline {
                return r;
            }
            if matches!(r, Err(ref e) if e.is_fenced()) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replaces the failed downstairs at `old` with the one at `new` (a
    /// fresh region of the same geometry, or any copy): it is brought up
    /// to date by live repair while IO goes on. Refused while the one at
    /// `old` is active.
    pub async fn replace(&self, old: &str, new: &str) -> Result<()> {
        let (old, new) = (old.to_string(), new.to_string());
        self.done(GuestOp::Replace { old, new }).await
    }

    /// Takes snapshot `name` of the volume: it holds exactly the writes
    /// acknowledged before this call and none after. Succeeds only once
    /// every downstairs has recorded it; fails (NoQuorum) when one is not
    /// active or fails it, naming it (the ones that took it keep it).
    pub async fn create_snapshot(&self, name: &str) -> Result<Snapshot> {
        let op = GuestOp::Snapshot {
            name: name.to_string(),
            guid: rand::random(),
            created: crate::catalog::now_secs(),
        };
        match self.call(op).await? {
            Output::Snapshot(s) => Ok(s),
            _ => Err(BlockError::protocol("a snapshot was answered without one")),
        }
    }

    /// The snapshots, by ascending flush, as an active downstairs holds them.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        match self.call(GuestOp::Snapshots).await? {
            Output::Snapshots(s) => Ok(s),
            _ => Err(BlockError::protocol(
                "a snapshot list was answered without one",
            )),
        }
    }

    /// Deletes snapshot `name` on every downstairs.
    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.done(GuestOp::SnapshotDelete {
            name: name.to_string(),
        })
        .await
    }

    /// Reads `count` blocks from `start` of snapshot `name`.
    pub async fn read_snapshot(&self, name: &str, start: u64, count: u64) -> Result<Bytes> {
        self.check(start, count)?;
        if count == 0 {
            return Ok(Bytes::new());
        }
        let op = GuestOp::ReadSnapshot {
            name: name.to_string(),
            start,
            count,
        };
        match self.call(op).await? {
            Output::Data(d) => Ok(d),
            _ => Err(BlockError::protocol("a read was answered without data")),
        }
    }

    pub async fn status(&self) -> Result<Status> {
        match self.call(GuestOp::Status).await? {
            Output::Status(s) => Ok(s),
            _ => Err(BlockError::protocol(
                "a status request was answered without one",
            )),
        }
    }
}

/// Starts the upstairs: connects to the three downstairs, activates with
/// the configured generation, reconciles, and returns a handle once the
/// volume is ready for IO. The upstairs task runs until every handle is
/// dropped (then it drops its connections).
pub async fn start(cfg: UpstairsConfig) -> Result<Volume> {
    if cfg.targets.len() != jobs::CLIENTS {
        return Err(BlockError::BadOptions(format!(
            "need exactly {} downstairs targets, got {}",
            jobs::CLIENTS,
            cfg.targets.len()
        )));
    }
    if cfg.generation == 0 {
        return Err(BlockError::BadOptions(
            "generation must be at least 1".into(),
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (gtx, grx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let tick = cfg.flush_interval.min(Duration::from_millis(100));
    let ticker = tx.clone();
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(tick);
        loop {
            iv.tick().await;
            if ticker.send(Event::Tick).is_err() {
                return;
            }
        }
    });
    let driver = driver::Driver::new(cfg, tx, ready_tx);
    tokio::spawn(driver.run(rx, grx));
    let (block_size, total_blocks) = ready_rx.await.map_err(|_| BlockError::Shutdown)??;
    Ok(Volume {
        tx: gtx,
        block_size,
        total_blocks,
    })
}
