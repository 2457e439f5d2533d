//! The upstairs: one task owns all replication state. It takes one event at
//! a time (a guest request, a downstairs message, a (dis)connection, a
//! tick) and applies it synchronously (`state.rs`); connections and the
//! guest talk to it through channels.
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
//!   rewritten.

pub mod client;
pub mod jobs;
mod repair;
mod state;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::context::block_crc;
use crate::error::{BlockError, Result};
use crate::frame::{FrameReader, Message};
use crate::transport::{ReadHalf, WriteHalf};
use client::Handshake;
pub use client::Security;
use jobs::Reply;

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

pub(crate) enum GuestOp {
    Read {
        start: u64,
        count: u64,
        reply: Reply<Bytes>,
    },
    Write {
        start: u64,
        crcs: Vec<u32>,
        data: Bytes,
        fua: bool,
        reply: Reply<()>,
    },
    WriteZeroes {
        start: u64,
        count: u64,
        fua: bool,
        reply: Reply<()>,
    },
    Flush {
        reply: Reply<()>,
    },
    /// A flush acknowledged only once all three downstairs have it.
    FlushAll {
        reply: Reply<()>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// Puts the downstairs at `new` in the place of the failed one at
    /// `old`; it is live-repaired.
    Replace {
        old: String,
        new: String,
        reply: Reply<()>,
    },
}

pub(crate) enum Event {
    Ds {
        client: usize,
        conn: u64,
        msg: Message,
    },
    Gone {
        client: usize,
        conn: u64,
        error: String,
    },
    Connected {
        client: usize,
        /// Where it connected: a connection to an address the client no
        /// longer has (it was replaced meanwhile) is dropped.
        addr: String,
        reader: Box<FrameReader<ReadHalf>>,
        writer: WriteHalf,
        hs: Handshake,
    },
    Refused {
        client: usize,
        error: BlockError,
    },
    Tick,
}

/// A snapshot of the upstairs for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Per downstairs: "active", "offline", "faulted", "repair", "init".
    pub modes: Vec<String>,
    pub jobs: usize,
    pub fenced: bool,
    pub next_flush: u64,
}

/// The guest's handle on an activated volume. Cheap to clone; all clones
/// feed the one upstairs task.
#[derive(Clone)]
pub struct Volume {
    tx: mpsc::UnboundedSender<GuestOp>,
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

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> GuestOp) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| BlockError::Shutdown)?;
        rx.await.map_err(|_| BlockError::Shutdown)?
    }

    pub async fn read(&self, start: u64, count: u64) -> Result<Bytes> {
        self.check(start, count)?;
        if count == 0 {
            return Ok(Bytes::new());
        }
        self.call(|reply| GuestOp::Read {
            start,
            count,
            reply,
        })
        .await
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
        self.call(|reply| GuestOp::Write {
            start,
            crcs,
            data,
            fua,
            reply,
        })
        .await
    }

    pub async fn write_zeroes(&self, start: u64, count: u64, fua: bool) -> Result<()> {
        self.check(start, count)?;
        if count == 0 {
            return if fua { self.flush().await } else { Ok(()) };
        }
        self.call(|reply| GuestOp::WriteZeroes {
            start,
            count,
            fua,
            reply,
        })
        .await
    }

    pub async fn flush(&self) -> Result<()> {
        self.call(|reply| GuestOp::Flush { reply }).await
    }

    /// Flushes and waits until all three downstairs have acknowledged a
    /// flush (every replica in sync), retrying until `timeout`.
    pub async fn drain(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.call(|reply| GuestOp::FlushAll { reply }).await;
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
        self.call(|reply| GuestOp::Replace { old, new, reply })
            .await
    }

    pub async fn status(&self) -> Result<Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(GuestOp::Status { reply: tx })
            .map_err(|_| BlockError::Shutdown)?;
        rx.await.map_err(|_| BlockError::Shutdown)
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
    let st = state::Upstairs::new(cfg, tx, ready_tx);
    tokio::spawn(st.run(rx, grx));
    let (block_size, total_blocks) = ready_rx.await.map_err(|_| BlockError::Shutdown)??;
    Ok(Volume {
        tx: gtx,
        block_size,
        total_blocks,
    })
}
