//! The upstairs state machine, free of IO: `Upstairs::handle` takes one
//! input (a guest request, a message from a downstairs, a connection made
//! or lost, a tick) with the time it happened, applies it synchronously and
//! returns what to do about it (`Action`: send a frame, connect, drop a
//! connection, answer a guest request). It owns no sockets, tasks, channels
//! or clock; the driver (`driver.rs`, tokio and TCP) and the simulator
//! (`sim`) perform the actions and feed it inputs.
//!
//! The parts, by what they own:
//! - this file: the state, the inputs and actions, dispatching inputs,
//!   ticks, halting, sending jobs;
//! - `guest.rs`: guest requests becoming jobs, and acknowledging them;
//! - `reads.rs`: reads, checked against block contexts and retried
//!   elsewhere;
//! - `lifecycle.rs`: each downstairs' connection and mode (connect,
//!   replay, fault, fence);
//! - `repair.rs`: reconciliation at activation and live repair.
//!
//! Downstairs modes:
//! - `Init`: connected or connecting before activation finished;
//! - `Active`: gets every job, its acks count towards quorum, serves reads;
//! - `Offline`: was active and dropped out; new jobs queue up for it and its
//!   acks so far still count. When it returns, every job since the last
//!   flush it acknowledged is replayed in order. If too much piles up first
//!   it is faulted;
//! - `Faulted`: its jobs are skipped; when it is connected it is brought
//!   back by live repair;
//! - `Repair`: being repaired extent by extent (`repair.rs`); gets jobs for
//!   the extents already repaired and every flush, no reads, and does not
//!   count towards quorum until it is `Active` again.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::client::Handshake;
use super::jobs::{CLIENTS, JobTable, Kind, On, Waiter};
use super::reads::ReadRetry;
use super::repair::RepairState;
use super::{Status, UpstairsConfig};
use crate::catalog::Snapshot;
use crate::error::{BlockError, Result};
use crate::extent::ExtentVersion;
use crate::frame::Message;
use crate::region::RegionDef;

/// Time as the driver measures it: since an epoch of its choosing (the
/// driver's start; zero in the simulator). The core never reads a clock.
pub type Time = Duration;

/// A guest request, as the core takes it (the driver numbers each one and
/// answers it when the core says `Action::Reply`).
#[derive(Debug, Clone)]
pub enum GuestOp {
    Read {
        start: u64,
        count: u64,
    },
    Write {
        start: u64,
        crcs: Vec<u32>,
        data: Bytes,
        fua: bool,
    },
    WriteZeroes {
        start: u64,
        count: u64,
        fua: bool,
    },
    Flush,
    /// A flush acknowledged only once all three downstairs have it.
    FlushAll,
    Status,
    /// Puts the downstairs at `new` in the place of the failed one at
    /// `old`; it is live-repaired.
    Replace {
        old: String,
        new: String,
    },
    /// Takes a snapshot: a flush behind every earlier job, acknowledged
    /// only once every downstairs has recorded it. The caller picks the
    /// GUID and the time (the core has no randomness or clock); the core
    /// picks the flush number.
    Snapshot {
        name: String,
        guid: u128,
        created: u64,
    },
    /// The snapshots, as an active downstairs holds them.
    Snapshots,
    /// Deletes a snapshot on every downstairs.
    SnapshotDelete {
        name: String,
    },
    /// Reads blocks of a snapshot from one active downstairs, checked
    /// against their contexts (another downstairs on a mismatch).
    ReadSnapshot {
        name: String,
        start: u64,
        count: u64,
    },
}

/// What a guest request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A write, write-zeroes, flush or replace is done.
    Done,
    /// A read's data.
    Data(Bytes),
    Status(Status),
    /// A snapshot taken.
    Snapshot(Snapshot),
    Snapshots(Vec<Snapshot>),
}

/// One input to the core. `conn` numbers a connection (the driver's
/// choice, never reused): messages and losses of a connection the core no
/// longer holds are ignored.
#[derive(Debug)]
pub enum Input {
    Guest {
        req: u64,
        op: GuestOp,
    },
    Message {
        client: usize,
        conn: u64,
        msg: Message,
    },
    /// Connecting to `addr` (as `Action::Connect` asked) succeeded:
    /// Hello, Activate and ExtentVersions went through (`hs`).
    Connected {
        client: usize,
        conn: u64,
        addr: String,
        hs: Handshake,
    },
    Disconnected {
        client: usize,
        conn: u64,
        error: String,
    },
    /// The downstairs refused activation for good (a newer generation owns
    /// it); the connect loop has stopped.
    Refused {
        client: usize,
        error: BlockError,
    },
    /// Time passing: pings, IO timeouts, the automatic flush, retries.
    Tick,
}

/// What the core wants done.
#[derive(Debug)]
pub enum Action {
    /// Send `msg` on connection `conn` of downstairs `client` (dropped if
    /// that connection is gone).
    Send {
        client: usize,
        conn: u64,
        msg: Message,
    },
    /// Keep trying to connect to `addr` (and negotiate) until it works or
    /// the downstairs refuses, then report `Connected` or `Refused`.
    Connect { client: usize, addr: String },
    /// Stop the connect attempts of `client` (its address changed).
    StopConnecting { client: usize },
    /// Close connection `conn` of `client`.
    Close { client: usize, conn: u64 },
    /// Answer guest request `req`.
    Reply { req: u64, result: Result<Output> },
    /// Activation finished: the volume's (block size, blocks), or why it
    /// failed (then the core serves nothing).
    Ready(Result<(u32, u64)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    WaitAll,
    Reconciling,
    Running,
    /// No more IO: fenced by a newer generation, or activation failed.
    Halted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Init,
    Active,
    Offline,
    Faulted,
    Repair,
}

pub(super) struct Client {
    pub addr: String,
    pub mode: Mode,
    /// The connection in use.
    pub conn: Option<u64>,
    /// An `Action::Connect` is under way.
    pub connecting: bool,
    pub last_flush_done: u64,
    pub last_heard: Time,
    pub versions: Vec<ExtentVersion>,
    /// The region's flush mark and snapshots as it reported them when it
    /// connected, kept up to date with the snapshot jobs it acknowledges.
    pub flush_mark: u64,
    pub snapshots: Vec<Snapshot>,
    /// The region last seen at this address; a different one (a
    /// replacement) cannot be replayed and is live-repaired instead.
    pub region_uuid: Option<[u8; 16]>,
    /// Live repair of this downstairs waits until then (it last failed on
    /// an extent no source holds intact).
    pub repair_after: Option<Time>,
}

pub struct Upstairs {
    pub(super) cfg: UpstairsConfig,
    pub(super) actions: Vec<Action>,
    /// The time of the input being handled.
    pub(super) now: Time,
    /// `Action::Ready` has not been given yet.
    pub(super) ready_pending: bool,
    pub(super) phase: Phase,
    pub(super) clients: [Client; CLIENTS],
    pub(super) table: JobTable,
    pub(super) def: Option<RegionDef>,
    pub(super) next_flush: u64,
    pub(super) unflushed_writes: bool,
    pub(super) last_flush_at: Time,
    pub(super) rr: usize,
    pub(super) reads: HashMap<u64, ReadRetry>,
    pub(super) repair: RepairState,
}

impl Upstairs {
    /// A core for `cfg` (three targets, generation at least 1; `start`
    /// checks both). Nothing happens until `start`.
    pub fn new(cfg: UpstairsConfig, now: Time) -> Self {
        let clients = std::array::from_fn(|i| Client {
            addr: cfg.targets.get(i).cloned().unwrap_or_default(),
            mode: Mode::Init,
            conn: None,
            connecting: false,
            last_flush_done: 0,
            last_heard: now,
            versions: vec![],
            flush_mark: 0,
            snapshots: vec![],
            region_uuid: None,
            repair_after: None,
        });
        Upstairs {
            cfg,
            actions: vec![],
            now,
            ready_pending: true,
            phase: Phase::WaitAll,
            clients,
            table: JobTable::new(1000),
            def: None,
            next_flush: 1,
            unflushed_writes: false,
            last_flush_at: now,
            rr: 0,
            reads: HashMap::new(),
            repair: RepairState::None,
        }
    }

    /// Begins: connect to all three downstairs.
    pub fn start(&mut self, now: Time) -> Vec<Action> {
        self.now = now;
        for c in 0..CLIENTS {
            self.reconnect(c);
        }
        std::mem::take(&mut self.actions)
    }

    /// Applies one input that happened at `now` and returns what to do.
    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Action> {
        self.now = self.now.max(now);
        match input {
            Input::Guest { req, op } => self.guest(req, op),
            Input::Message { client, conn, msg } => {
                if self.clients[client].conn == Some(conn) {
                    self.clients[client].last_heard = self.now;
                    self.on_message(client, msg);
                }
            }
            Input::Disconnected {
                client,
                conn,
                error,
            } => {
                if self.clients[client].conn == Some(conn) {
                    self.on_disconnect(client, &error);
                }
            }
            Input::Connected {
                client,
                conn,
                addr,
                hs,
            } => {
                // A loop for an address this client no longer has.
                if addr == self.clients[client].addr {
                    self.on_connected(client, conn, hs);
                } else {
                    self.actions.push(Action::Close { client, conn });
                }
            }
            Input::Refused { client, error } => {
                tracing::error!(client, error = %error, "activation refused");
                self.clients[client].connecting = false;
                self.become_fenced(error);
            }
            Input::Tick => self.on_tick(),
        }
        std::mem::take(&mut self.actions)
    }

    /// Guest requests are taken once activation has finished (or failed:
    /// then each is refused); until then they wait with the driver.
    pub fn serving(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Halted)
    }

    /// Fenced by a newer generation, or activation failed.
    pub fn halted(&self) -> bool {
        self.phase == Phase::Halted
    }

    pub fn status(&self) -> Status {
        Status {
            modes: self
                .clients
                .iter()
                .map(|c| format!("{:?}", c.mode).to_lowercase())
                .collect(),
            flushed: self.clients.iter().map(|c| c.last_flush_done).collect(),
            jobs: self.table.len(),
            fenced: self.phase == Phase::Halted,
            next_flush: self.next_flush,
        }
    }

    /// The snapshots the upstairs knows downstairs `c` holds (tests).
    #[cfg(test)]
    pub(super) fn clients_snapshots(&self, c: usize) -> Vec<crate::catalog::Snapshot> {
        self.clients[c].snapshots.clone()
    }

    pub(super) fn block_size(&self) -> u32 {
        self.def.map(|d| d.block_size).unwrap_or(512)
    }

    pub(super) fn counts(&self, c: usize) -> bool {
        matches!(self.clients[c].mode, Mode::Active | Mode::Offline)
    }

    pub(super) fn extent_range(&self, extent: u32) -> Range<u64> {
        let es = self.def.map(|d| d.extent_size as u64).unwrap_or(1);
        extent as u64 * es..(extent as u64 + 1) * es
    }

    pub(super) fn extent_of(&self, block: u64) -> u32 {
        let es = self.def.map(|d| d.extent_size as u64).unwrap_or(1);
        (block / es) as u32
    }

    /// Which downstairs take part in a new job that modifies `range`
    /// (None = a flush).
    pub(super) fn targets(&self, range: Option<&Range<u64>>) -> [On; CLIENTS] {
        std::array::from_fn(|c| match self.clients[c].mode {
            Mode::Active => On::Sent,
            Mode::Offline => On::Queued,
            Mode::Init | Mode::Faulted => On::Skipped,
            Mode::Repair => match range {
                Some(r) if self.repair.repaired_below(c) > self.extent_of(r.start) => On::Sent,
                Some(_) => On::Skipped,
                None => On::Sent,
            },
        })
    }

    /// Answers guest request `waiter` (if the job has one).
    pub(super) fn answer(&mut self, waiter: Waiter, result: Result<Output>) {
        if let Waiter::Guest(req) = waiter {
            self.actions.push(Action::Reply { req, result });
        }
    }

    /// Drops `c`'s connection, if it has one.
    pub(super) fn close(&mut self, c: usize) {
        if let Some(conn) = self.clients[c].conn.take() {
            self.actions.push(Action::Close { client: c, conn });
        }
    }

    // ---- sending ----

    fn message(&self, id: u64, c: usize) -> Option<Message> {
        let j = self.table.get(id)?;
        let deps = self.table.deps_for(id, c);
        Some(match &j.kind {
            Kind::Write { start, crcs, data } => {
                let n = self.blocks_for(c, *start, crcs.len() as u64) as usize;
                let bs = self.block_size() as usize;
                Message::Write {
                    job: id,
                    deps,
                    start: *start,
                    crcs: crcs[..n].to_vec(),
                    data: data.slice(..(n * bs).min(data.len())),
                }
            }
            Kind::WriteZeroes { start, count } => Message::WriteZeroes {
                job: id,
                deps,
                start: *start,
                count: self.blocks_for(c, *start, *count),
            },
            Kind::Read {
                start,
                count,
                snapshot: None,
            } => Message::Read {
                job: id,
                deps,
                start: *start,
                count: *count,
            },
            Kind::Read {
                start,
                count,
                snapshot: Some(name),
            } => Message::ReadSnapshot {
                job: id,
                deps,
                name: name.clone(),
                start: *start,
                count: *count,
            },
            Kind::Flush {
                flush,
                generation,
                snapshot,
            } => Message::Flush {
                job: id,
                deps,
                flush: *flush,
                generation: *generation,
                snapshot: snapshot.clone(),
            },
            Kind::SnapshotDelete { name } => Message::SnapshotDelete {
                job: id,
                deps,
                name: name.clone(),
            },
            Kind::SnapshotRecord { snapshot } => Message::SnapshotRecord {
                job: id,
                deps,
                snapshot: snapshot.clone(),
            },
            Kind::ExtentFetch { extent } => Message::ExtentFetch {
                job: id,
                deps,
                extent: *extent,
            },
            Kind::ExtentReplace { extent, image } => {
                let img = image.as_ref()?;
                Message::ExtentReplace {
                    job: id,
                    deps,
                    extent: *extent,
                    version: img.version,
                    contexts: img.contexts.clone(),
                    births: img.births.clone(),
                    saved: img.saved.clone(),
                    data: img.data.clone(),
                }
            }
            Kind::ExtentStamp {
                extent,
                flush,
                generation,
            } => Message::ExtentStamp {
                job: id,
                deps,
                extent: *extent,
                flush: *flush,
                generation: *generation,
            },
        })
    }

    /// How many of the `count` blocks from `start` of a write go to `c`:
    /// all, except to a downstairs under live repair, which gets only the
    /// blocks of extents whose copy is already queued (the write starts in
    /// one, or it would not be sent there at all). The rest arrive with
    /// the later extents' copies; written now, they would make an extent
    /// it has not been given dirty, and the next flush would stamp it
    /// current — an interrupted repair would then leave it looking as
    /// fresh as its source.
    fn blocks_for(&self, c: usize, start: u64, count: u64) -> u64 {
        if self.clients[c].mode != Mode::Repair {
            return count;
        }
        let es = self.def.map(|d| d.extent_size as u64).unwrap_or(1);
        let limit = self.repair.repaired_below(c) as u64 * es;
        count.min(limit.saturating_sub(start))
    }

    /// Sends job `id` to `c`, if it is connected.
    pub(super) fn send(&mut self, c: usize, id: u64) {
        if let (Some(conn), Some(msg)) = (self.clients[c].conn, self.message(id, c)) {
            self.actions.push(Action::Send {
                client: c,
                conn,
                msg,
            });
        }
    }

    /// Sends a new job to every downstairs it is marked `Sent` for.
    pub(super) fn dispatch(&mut self, id: u64) {
        let Some(j) = self.table.get(id) else { return };
        let on = j.on;
        for (c, o) in on.iter().enumerate() {
            if *o == On::Sent {
                self.send(c, id);
            }
        }
    }

    // ---- time ----

    fn on_tick(&mut self) {
        if self.phase == Phase::Halted {
            return;
        }
        for c in 0..CLIENTS {
            if let Some(conn) = self.clients[c].conn {
                if self.now.saturating_sub(self.clients[c].last_heard) > self.cfg.io_timeout {
                    self.on_disconnect(c, "no reply within the IO timeout");
                    continue;
                }
                self.actions.push(Action::Send {
                    client: c,
                    conn,
                    msg: Message::Ping(0),
                });
            }
        }
        if self.phase != Phase::Running {
            return;
        }
        if self.unflushed_writes
            && self.now.saturating_sub(self.last_flush_at) >= self.cfg.flush_interval
        {
            self.submit_flush(Waiter::None, None);
        }
        // A downstairs can be live-repaired only from an active one: with
        // none active, faulting the offline ones would leave nothing to
        // repair from, and the volume dead until the upstairs restarts;
        // they stay offline and are replayed instead.
        let source = self.any_active().is_some();
        for c in 0..CLIENTS {
            if source
                && self.clients[c].mode == Mode::Offline
                && (self.table.len() > self.cfg.max_replay_jobs
                    || self.table.bytes() > self.cfg.max_replay_bytes)
            {
                self.fault(c, "too many jobs piled up while it was offline");
            }
        }
        self.maybe_start_live_repair();
    }

    // ---- the end ----

    pub(super) fn become_fenced(&mut self, e: BlockError) {
        if self.phase == Phase::Halted {
            return;
        }
        tracing::error!(error = %e, "this upstairs has been fenced by a newer generation; refusing all IO");
        self.halt(e);
    }

    /// Stops all IO for good: drops the connections, fails every waiting
    /// request, and fails activation with `e` if it has not finished.
    pub(super) fn halt(&mut self, e: BlockError) {
        if self.phase == Phase::Halted {
            return;
        }
        if self.ready_pending {
            tracing::error!(error = %e, "activation failed");
        }
        self.phase = Phase::Halted;
        for c in 0..CLIENTS {
            self.close(c);
            if self.clients[c].connecting {
                self.clients[c].connecting = false;
                self.actions.push(Action::StopConnecting { client: c });
            }
        }
        for id in self.table.ids() {
            if let Some(j) = self.table.get_mut(id) {
                let waiter = std::mem::replace(&mut j.waiter, Waiter::None);
                self.answer(waiter, Err(BlockError::Fenced(0)));
            }
        }
        if self.ready_pending {
            self.ready_pending = false;
            self.actions.push(Action::Ready(Err(e)));
        }
    }

    pub(super) fn any_active(&self) -> Option<usize> {
        (0..CLIENTS).find(|&c| self.clients[c].mode == Mode::Active)
    }

    pub(super) fn set_ready(&mut self) {
        if let (true, Some(d)) = (self.ready_pending, self.def) {
            self.ready_pending = false;
            self.actions
                .push(Action::Ready(Ok((d.block_size, d.total_blocks()))));
        }
    }
}
