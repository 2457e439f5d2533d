//! The upstairs state machine: `run` takes events one at a time and applies
//! them synchronously. Nothing here blocks or awaits except `run` itself.
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
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::client::{self, Conn};
use super::jobs::{CLIENTS, JobTable, Kind, On, Waiter};
use super::repair::RepairState;
use super::{Event, GuestOp, Status, UpstairsConfig};
use crate::context::{BlockContext, block_crc};
use crate::error::{BlockError, Result};
use crate::extent::ExtentVersion;
use crate::frame::{ErrorCode, Message};
use crate::region::RegionDef;

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
    pub conn: Option<Conn>,
    pub connecting: bool,
    pub last_flush_done: u64,
    pub last_heard: Instant,
    pub versions: Vec<ExtentVersion>,
    /// The region last seen at this address; a different one (a
    /// replacement) cannot be replayed and is live-repaired instead.
    pub region_uuid: Option<[u8; 16]>,
    /// Set to stop the running connect loop (the address changed).
    pub connect_cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Live repair of this downstairs waits until then (it last failed on
    /// an extent no source holds intact).
    pub repair_after: Option<Instant>,
}

/// A read that already failed somewhere: where not to send it again, and
/// the block that last failed its context (set means a bad copy needs
/// rewriting once good data is found).
#[derive(Default, Clone, Copy)]
pub(super) struct ReadRetry {
    excluded: [bool; CLIENTS],
    damaged: Option<u64>,
}

pub(super) type Ready = oneshot::Sender<Result<(u32, u64)>>;

pub(super) struct Upstairs {
    pub cfg: UpstairsConfig,
    pub events: mpsc::UnboundedSender<Event>,
    pub ready: Option<Ready>,
    pub phase: Phase,
    pub clients: [Client; CLIENTS],
    pub table: JobTable,
    pub def: Option<RegionDef>,
    pub next_flush: u64,
    pub unflushed_writes: bool,
    pub last_flush_at: Instant,
    pub next_conn: u64,
    pub rr: usize,
    pub reads: HashMap<u64, ReadRetry>,
    pub repair: RepairState,
}

impl Upstairs {
    pub fn new(cfg: UpstairsConfig, events: mpsc::UnboundedSender<Event>, ready: Ready) -> Self {
        let clients = std::array::from_fn(|i| Client {
            addr: cfg.targets[i].clone(),
            mode: Mode::Init,
            conn: None,
            connecting: false,
            connect_cancel: Default::default(),
            last_flush_done: 0,
            last_heard: Instant::now(),
            versions: vec![],
            region_uuid: None,
            repair_after: None,
        });
        Upstairs {
            cfg,
            events,
            ready: Some(ready),
            phase: Phase::WaitAll,
            clients,
            table: JobTable::new(1000),
            def: None,
            next_flush: 1,
            unflushed_writes: false,
            last_flush_at: Instant::now(),
            next_conn: 1,
            rr: 0,
            reads: HashMap::new(),
            repair: RepairState::None,
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut guest: mpsc::UnboundedReceiver<GuestOp>,
    ) {
        for c in 0..CLIENTS {
            self.reconnect(c);
        }
        loop {
            let serving = matches!(self.phase, Phase::Running | Phase::Halted);
            tokio::select! {
                biased;
                ev = rx.recv() => match ev {
                    Some(ev) => self.apply(ev),
                    None => break,
                },
                op = guest.recv(), if serving => match op {
                    Some(op) => self.guest(op),
                    None => break,
                },
            }
            if self.ready.is_some() && self.phase == Phase::Halted {
                break;
            }
        }
        tracing::info!("upstairs stopping");
    }

    pub fn block_size(&self) -> u32 {
        self.def.map(|d| d.block_size).unwrap_or(512)
    }

    fn counts(&self, c: usize) -> bool {
        matches!(self.clients[c].mode, Mode::Active | Mode::Offline)
    }

    pub fn extent_range(&self, extent: u32) -> Range<u64> {
        let es = self.def.map(|d| d.extent_size as u64).unwrap_or(1);
        extent as u64 * es..(extent as u64 + 1) * es
    }

    fn extent_of(&self, block: u64) -> u32 {
        let es = self.def.map(|d| d.extent_size as u64).unwrap_or(1);
        (block / es) as u32
    }

    /// Which downstairs take part in a new job that modifies `range`
    /// (None = a flush).
    fn targets(&self, range: Option<&Range<u64>>) -> [On; CLIENTS] {
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

    // ---- sending ----

    fn message(&self, id: u64, c: usize) -> Option<Message> {
        let j = self.table.get(id)?;
        let deps = self.table.deps_for(id, c);
        Some(match &j.kind {
            Kind::Write { start, crcs, data } => Message::Write {
                job: id,
                deps,
                start: *start,
                crcs: crcs.clone(),
                data: data.clone(),
            },
            Kind::WriteZeroes { start, count } => Message::WriteZeroes {
                job: id,
                deps,
                start: *start,
                count: *count,
            },
            Kind::Read { start, count } => Message::Read {
                job: id,
                deps,
                start: *start,
                count: *count,
            },
            Kind::Flush { flush, generation } => Message::Flush {
                job: id,
                deps,
                flush: *flush,
                generation: *generation,
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

    pub fn send(&self, c: usize, id: u64) {
        if let (Some(conn), Some(m)) = (&self.clients[c].conn, self.message(id, c)) {
            conn.send(m);
        }
    }

    /// Sends a new job to every downstairs it is marked `Sent` for.
    pub fn dispatch(&self, id: u64) {
        let Some(j) = self.table.get(id) else { return };
        let on = j.on;
        for (c, o) in on.iter().enumerate() {
            if *o == On::Sent {
                self.send(c, id);
            }
        }
    }

    // ---- guest requests ----

    fn guest(&mut self, op: GuestOp) {
        if self.phase == Phase::Halted {
            let e = || BlockError::Fenced(self.cfg.generation);
            match op {
                GuestOp::Read { reply, .. } => drop(reply.send(Err(e()))),
                GuestOp::Write { reply, .. }
                | GuestOp::WriteZeroes { reply, .. }
                | GuestOp::Flush { reply }
                | GuestOp::FlushAll { reply } => drop(reply.send(Err(e()))),
                GuestOp::Status { reply } => drop(reply.send(self.status())),
                GuestOp::Replace { reply, .. } => drop(reply.send(Err(e()))),
            }
            return;
        }
        match op {
            GuestOp::Read {
                start,
                count,
                reply,
            } => self.submit_read(start, count, Waiter::Data(reply), ReadRetry::default()),
            GuestOp::Write {
                start,
                crcs,
                data,
                fua,
                reply,
            } => {
                let count = crcs.len() as u64;
                self.submit_modify(
                    Kind::Write { start, crcs, data },
                    start..start + count,
                    fua,
                    reply,
                );
            }
            GuestOp::WriteZeroes {
                start,
                count,
                fua,
                reply,
            } => self.submit_modify(
                Kind::WriteZeroes { start, count },
                start..start + count,
                fua,
                reply,
            ),
            GuestOp::Flush { reply } => {
                self.submit_flush(Waiter::Done(reply));
            }
            GuestOp::FlushAll { reply } => {
                if self.clients.iter().any(|c| c.mode != Mode::Active) {
                    let _ = reply.send(Err(BlockError::NoQuorum(
                        "not every downstairs is active".into(),
                    )));
                    return;
                }
                let id = self.submit_flush(Waiter::Done(reply));
                if let Some(j) = self.table.get_mut(id) {
                    j.need_all = true;
                }
                self.check_job(id);
            }
            GuestOp::Status { reply } => {
                let _ = reply.send(self.status());
            }
            GuestOp::Replace { old, new, reply } => {
                let _ = reply.send(self.replace(&old, &new));
            }
        }
    }

    /// Points the client at `old` to `new` and live-repairs whatever
    /// answers there.
    fn replace(&mut self, old: &str, new: &str) -> Result<(), BlockError> {
        if self.phase != Phase::Running {
            return Err(BlockError::BadOptions(
                "a downstairs can be replaced only once the volume is active".into(),
            ));
        }
        let Some(c) = self.clients.iter().position(|cl| cl.addr == old) else {
            return Err(BlockError::BadOptions(format!("no downstairs at {old}")));
        };
        if self.clients.iter().any(|cl| cl.addr == new) {
            return Err(BlockError::BadOptions(format!(
                "{new} is already one of the downstairs"
            )));
        }
        if self.clients[c].mode == Mode::Active && self.clients[c].conn.is_some() {
            return Err(BlockError::BadOptions(format!(
                "downstairs {old} is active; only a failed one can be replaced"
            )));
        }
        tracing::warn!(
            client = c,
            old,
            new,
            "replacing a downstairs; it will be live-repaired"
        );
        if self.clients[c].mode != Mode::Faulted {
            self.fault(c, "replaced");
        }
        // Stop whichever loop is still dialling the old address.
        self.clients[c]
            .connect_cancel
            .store(true, std::sync::atomic::Ordering::Release);
        self.clients[c].conn = None;
        self.clients[c].addr = new.to_string();
        self.clients[c].region_uuid = None;
        self.clients[c].connecting = false;
        self.reconnect(c);
        Ok(())
    }

    fn status(&self) -> Status {
        Status {
            modes: self
                .clients
                .iter()
                .map(|c| format!("{:?}", c.mode).to_lowercase())
                .collect(),
            jobs: self.table.len(),
            fenced: self.phase == Phase::Halted,
            next_flush: self.next_flush,
        }
    }

    fn submit_modify(
        &mut self,
        kind: Kind,
        range: Range<u64>,
        fua: bool,
        reply: super::jobs::Reply<()>,
    ) {
        let on = self.targets(Some(&range));
        let possible = (0..CLIENTS)
            .filter(|&c| self.counts(c) && on[c].outstanding())
            .count();
        if possible < 2 {
            let _ = reply.send(Err(BlockError::NoQuorum(format!(
                "only {possible} downstairs can take writes"
            ))));
            return;
        }
        self.unflushed_writes = true;
        if fua {
            let id = self.table.create(kind, Some(range), on, Waiter::None);
            self.dispatch(id);
            self.submit_flush(Waiter::Done(reply));
        } else {
            let id = self
                .table
                .create(kind, Some(range), on, Waiter::Done(reply));
            self.dispatch(id);
        }
    }

    pub fn submit_flush(&mut self, waiter: Waiter) -> u64 {
        let on = self.targets(None);
        let flush = self.next_flush;
        self.next_flush += 1;
        self.unflushed_writes = false;
        self.last_flush_at = Instant::now();
        let id = self.table.create(
            Kind::Flush {
                flush,
                generation: self.cfg.generation,
            },
            None,
            on,
            waiter,
        );
        self.dispatch(id);
        self.check_job(id);
        id
    }

    fn submit_read(&mut self, start: u64, count: u64, waiter: Waiter, retry: ReadRetry) {
        let active: Vec<usize> = (0..CLIENTS)
            .filter(|&c| self.clients[c].mode == Mode::Active && !retry.excluded[c])
            .collect();
        if active.is_empty() {
            let e = match retry.damaged {
                Some(b) => BlockError::corrupt(
                    format!("block {b}"),
                    "fails its checksum on every active downstairs",
                ),
                None => BlockError::NoQuorum("no healthy downstairs to read from".into()),
            };
            match waiter {
                Waiter::Data(r) => drop(r.send(Err(e))),
                Waiter::Done(r) => drop(r.send(Err(e))),
                Waiter::None => {}
            }
            return;
        }
        self.rr = self.rr.wrapping_add(1);
        let c = active[self.rr % active.len()];
        let mut on = [On::NotFor; CLIENTS];
        on[c] = On::Sent;
        let id = self.table.create(
            Kind::Read { start, count },
            Some(start..start + count),
            on,
            waiter,
        );
        self.reads.insert(id, retry);
        self.send(c, id);
    }

    // ---- completions ----

    /// Acknowledges the guest once the job's rule is met (or can no longer
    /// be met).
    pub fn check_job(&mut self, id: u64) {
        let Some(j) = self.table.get(id) else { return };
        if j.acked
            || j.kind.is_read()
            || matches!(
                j.kind,
                Kind::ExtentReplace { .. } | Kind::ExtentStamp { .. }
            )
        {
            return;
        }
        let need = if j.need_all { CLIENTS } else { 2 };
        let done = (0..CLIENTS)
            .filter(|&c| self.counts(c) && j.on[c] == On::Done)
            .count();
        let possible = (0..CLIENTS)
            .filter(|&c| self.counts(c) && matches!(j.on[c], On::Done | On::Sent | On::Queued))
            .count();
        let result = if done >= need {
            Ok(())
        } else if possible < need && j.no_space {
            Err(BlockError::NoSpace(format!(
                "job {id}: downstairs out of space"
            )))
        } else if possible < need {
            Err(BlockError::NoQuorum(format!(
                "job {id}: only {possible} downstairs left to complete it"
            )))
        } else {
            return;
        };
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        j.acked = true;
        match std::mem::replace(&mut j.waiter, Waiter::None) {
            Waiter::Done(r) => drop(r.send(result)),
            Waiter::Data(r) => drop(r.send(result.map(|_| Bytes::new()))),
            Waiter::None => {}
        }
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Ds { client, conn, msg } => {
                if self.clients[client].conn.as_ref().map(|c| c.id) != Some(conn) {
                    return;
                }
                self.clients[client].last_heard = Instant::now();
                self.on_message(client, msg);
            }
            Event::Gone {
                client,
                conn,
                error,
            } => {
                if self.clients[client].conn.as_ref().map(|c| c.id) == Some(conn) {
                    self.on_disconnect(client, &error);
                }
            }
            Event::Connected {
                client,
                addr,
                reader,
                writer,
                hs,
            } => {
                // A loop for an address this client no longer has.
                if addr == self.clients[client].addr {
                    self.on_connected(client, *reader, writer, hs);
                }
            }
            Event::Refused { client, error } => {
                tracing::error!(client, error = %error, "activation refused");
                self.clients[client].connecting = false;
                self.become_fenced(error);
            }
            Event::Tick => self.on_tick(),
        }
    }

    fn on_message(&mut self, c: usize, msg: Message) {
        match msg {
            Message::Ack { job } => self.on_ack(c, job),
            Message::ReadReply {
                job,
                contexts,
                data,
            } => self.on_read_reply(c, job, contexts, data),
            Message::ExtentData {
                job,
                version,
                contexts,
                data,
            } => self.on_extent_data(c, job, version, contexts, data),
            Message::JobError { job, code, message } => self.on_job_error(c, job, code, &message),
            Message::Fenced { generation } => {
                self.become_fenced(BlockError::Fenced(generation));
            }
            Message::Pong(_) => {}
            Message::Error { code, message } => {
                let e = BlockError::Remote { code, message };
                if e.is_fenced() {
                    self.become_fenced(e);
                } else {
                    self.fault(c, &e.to_string());
                }
            }
            other => self.fault(c, &format!("unexpected message type {}", other.type_code())),
        }
    }

    fn on_ack(&mut self, c: usize, id: u64) {
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        if j.on[c] != On::Sent {
            return;
        }
        j.on[c] = On::Done;
        let is_flush = j.kind.is_flush();
        if is_flush {
            let lf = &mut self.clients[c].last_flush_done;
            *lf = (*lf).max(id);
        }
        self.check_job(id);
        self.repair_progress(id);
        if is_flush {
            self.table.retire();
            self.reads.retain(|id, _| self.table.get(*id).is_some());
        }
    }

    fn on_read_reply(&mut self, c: usize, id: u64, contexts: Vec<BlockContext>, data: Bytes) {
        let bs = self.block_size() as usize;
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        if j.on[c] != On::Sent {
            return;
        }
        let Kind::Read { start, count } = j.kind else {
            return;
        };
        let bad = if contexts.len() as u64 != count || data.len() as u64 != count * bs as u64 {
            Some(start)
        } else {
            contexts
                .iter()
                .zip(data.chunks(bs))
                .position(|(ctx, blk)| !ctx.verify(blk))
                .map(|k| start + k as u64)
        };
        let retry = self.reads.get(&id).copied().unwrap_or_default();
        let waiter = std::mem::replace(&mut j.waiter, Waiter::None);
        j.acked = true;
        if let Some(block) = bad {
            j.on[c] = On::Skipped;
            tracing::warn!(
                client = c,
                block,
                job = id,
                "read failed its block context; reading another replica"
            );
            let mut retry = retry;
            retry.excluded[c] = true;
            retry.damaged = Some(block);
            self.submit_read(start, count, waiter, retry);
            return;
        }
        j.on[c] = On::Done;
        if let Waiter::Data(r) = waiter {
            let _ = r.send(Ok(data.clone()));
        }
        // A read that has finished is never replayed and nothing depends on
        // it any more; drop it now, or a read-only workload (no flushes, so
        // no retirement) would grow the table without bound.
        if self.table.get(id).is_some_and(JobTable::finished) {
            self.table.remove(id);
            self.reads.remove(&id);
        }
        if retry.damaged.is_some() && !self.table.modified_since(id, &(start..start + count)) {
            // Rewrite the good data everywhere (a no-op on good copies);
            // skipped if a newer write already covers the range.
            tracing::info!(start, count, "repairing blocks that failed their context");
            let crcs = data.chunks(bs).map(block_crc).collect();
            let range = start..start + count;
            let on = self.targets(Some(&range));
            let id = self.table.create(
                Kind::Write { start, crcs, data },
                Some(range),
                on,
                Waiter::None,
            );
            self.dispatch(id);
            self.unflushed_writes = true;
        }
    }

    fn on_job_error(&mut self, c: usize, id: u64, code: u16, message: &str) {
        if code == ErrorCode::Fenced as u16 || code == ErrorCode::GenerationTooLow as u16 {
            self.become_fenced(BlockError::Remote {
                code,
                message: message.to_string(),
            });
            return;
        }
        tracing::warn!(client = c, job = id, code, message, "downstairs job failed");
        if self.is_repair_fetch(c, id) {
            if let Some(j) = self.table.get_mut(id) {
                j.on[c] = On::Skipped;
            }
            self.source_failed(c, None);
            return;
        }
        let is_read = matches!(self.table.get(id).map(|j| &j.kind), Some(Kind::Read { .. }));
        if is_read {
            self.reroute_read(c, id);
        } else {
            if let Some(j) = self.table.get_mut(id) {
                j.no_space |= code == ErrorCode::NoSpace as u16;
            }
            self.fault(c, &format!("job {id} failed: {message}"));
        }
    }

    /// Moves a read that cannot finish on `c` to another downstairs.
    fn reroute_read(&mut self, c: usize, id: u64) {
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        let Kind::Read { start, count } = j.kind else {
            return;
        };
        if j.on[c] != On::Sent {
            return;
        }
        j.on[c] = On::Skipped;
        let waiter = std::mem::replace(&mut j.waiter, Waiter::None);
        j.acked = true;
        let mut retry = self.reads.get(&id).copied().unwrap_or_default();
        retry.excluded[c] = true;
        self.submit_read(start, count, waiter, retry);
    }

    // ---- connections ----

    pub fn reconnect(&mut self, c: usize) {
        if self.phase == Phase::Halted || self.clients[c].connecting {
            return;
        }
        self.clients[c].connecting = true;
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.clients[c].connect_cancel = cancel.clone();
        tokio::spawn(client::connect_loop(
            c,
            self.clients[c].addr.clone(),
            self.cfg.upstairs_id,
            self.cfg.generation,
            self.cfg.security.clone(),
            self.events.clone(),
            cancel,
        ));
    }

    fn on_connected(
        &mut self,
        c: usize,
        reader: crate::frame::FrameReader<crate::transport::ReadHalf>,
        writer: crate::transport::WriteHalf,
        hs: client::Handshake,
    ) {
        self.clients[c].connecting = false;
        if self.phase == Phase::Halted {
            return;
        }
        match self.def {
            Some(d) if !d.same_geometry(&hs.region) => {
                let e = BlockError::RegionMismatch(format!(
                    "downstairs {} has {:?}, expected {:?}",
                    self.clients[c].addr, hs.region, d
                ));
                tracing::error!(error = %e, "refusing downstairs");
                if let Some(r) = self.ready.take() {
                    let _ = r.send(Err(e));
                }
                return;
            }
            Some(_) => {}
            None => self.def = Some(hs.region),
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let conn = client::spawn(c, id, reader, writer, self.events.clone());
        tracing::info!(client = c, addr = %self.clients[c].addr, mode = ?self.clients[c].mode, "downstairs connected");
        self.clients[c].conn = Some(conn);
        self.clients[c].last_heard = Instant::now();
        self.clients[c].versions = hs.versions;
        let replaced = self.clients[c]
            .region_uuid
            .is_some_and(|u| u != hs.region.uuid);
        self.clients[c].region_uuid = Some(hs.region.uuid);
        if replaced && self.clients[c].mode == Mode::Offline {
            tracing::warn!(
                client = c,
                "a different region answered at this address; live-repairing it"
            );
            self.clients[c].mode = Mode::Faulted;
            let ids: Vec<u64> = self
                .table
                .iter()
                .filter(|j| j.on[c].outstanding())
                .map(|j| j.id)
                .collect();
            for id in ids {
                if let Some(j) = self.table.get_mut(id) {
                    j.on[c] = On::Skipped;
                }
                self.check_job(id);
            }
        }
        match self.phase {
            Phase::WaitAll => {
                if self.clients.iter().all(|cl| cl.conn.is_some()) {
                    self.start_reconcile();
                }
            }
            Phase::Running => match self.clients[c].mode {
                Mode::Offline => self.replay(c),
                _ => {
                    self.clients[c].mode = Mode::Faulted;
                    self.maybe_start_live_repair();
                }
            },
            Phase::Reconciling | Phase::Halted => {}
        }
    }

    fn on_disconnect(&mut self, c: usize, error: &str) {
        tracing::warn!(client = c, addr = %self.clients[c].addr, error, "downstairs disconnected");
        self.clients[c].conn = None;
        match self.phase {
            Phase::WaitAll => {}
            Phase::Reconciling => self.abort_reconcile(),
            Phase::Running => match self.clients[c].mode {
                Mode::Active => {
                    self.clients[c].mode = Mode::Offline;
                    let reads: Vec<u64> = self
                        .table
                        .iter()
                        .filter(|j| j.on[c] == On::Sent && j.kind.is_read())
                        .map(|j| j.id)
                        .collect();
                    for id in reads {
                        if matches!(self.table.get(id).map(|j| &j.kind), Some(Kind::Read { .. })) {
                            self.reroute_read(c, id);
                        }
                    }
                    self.source_lost(c);
                }
                Mode::Repair | Mode::Init => self.fault(c, error),
                Mode::Offline | Mode::Faulted => {}
            },
            Phase::Halted => return,
        }
        self.reconnect(c);
    }

    /// Replays, in order, every job since the last flush `c` acknowledged.
    fn replay(&mut self, c: usize) {
        let lf = self.clients[c].last_flush_done;
        let ids: Vec<u64> = self
            .table
            .iter()
            .filter(|j| match j.on[c] {
                On::Sent | On::Queued => true,
                On::Done => j.id > lf && !j.kind.is_read(),
                _ => false,
            })
            .map(|j| j.id)
            .collect();
        tracing::info!(
            client = c,
            jobs = ids.len(),
            since_flush_job = lf,
            "replaying jobs to a returning downstairs"
        );
        for &id in &ids {
            if let Some(j) = self.table.get_mut(id) {
                j.on[c] = On::Sent;
            }
            self.table.reopen(id);
        }
        self.clients[c].mode = Mode::Active;
        for id in ids {
            self.send(c, id);
        }
    }

    /// Gives up on `c`: its outstanding jobs are skipped and it will be
    /// brought back by live repair.
    pub fn fault(&mut self, c: usize, why: &str) {
        if self.phase != Phase::Running {
            if self.phase == Phase::Reconciling {
                self.abort_reconcile();
            }
            self.clients[c].conn = None;
            self.reconnect(c);
            return;
        }
        tracing::warn!(client = c, addr = %self.clients[c].addr, why, "downstairs faulted; it will be live-repaired");
        let was_source = self.clients[c].mode == Mode::Active;
        self.clients[c].mode = Mode::Faulted;
        self.clients[c].conn = None;
        let ids: Vec<u64> = self
            .table
            .iter()
            .filter(|j| j.on[c].outstanding())
            .map(|j| j.id)
            .collect();
        for id in ids {
            let is_read = matches!(self.table.get(id).map(|j| &j.kind), Some(Kind::Read { .. }));
            if is_read {
                self.reroute_read(c, id);
                continue;
            }
            if let Some(j) = self.table.get_mut(id) {
                j.on[c] = On::Skipped;
            }
            self.check_job(id);
        }
        self.repair_client_lost(c);
        if was_source {
            self.source_lost(c);
        }
        self.reconnect(c);
    }

    pub fn become_fenced(&mut self, e: BlockError) {
        if self.phase == Phase::Halted {
            return;
        }
        tracing::error!(error = %e, "this upstairs has been fenced by a newer generation; refusing all IO");
        self.halt(e);
    }

    /// Stops all IO for good: drops the connections, fails every waiting
    /// request, and fails activation with `e` if it has not finished.
    pub fn halt(&mut self, e: BlockError) {
        if self.phase == Phase::Halted {
            return;
        }
        if self.ready.is_some() {
            tracing::error!(error = %e, "activation failed");
        }
        self.phase = Phase::Halted;
        for c in &mut self.clients {
            c.conn = None;
        }
        for id in self.table.ids() {
            if let Some(j) = self.table.get_mut(id) {
                match std::mem::replace(&mut j.waiter, Waiter::None) {
                    Waiter::Done(r) => drop(r.send(Err(BlockError::Fenced(0)))),
                    Waiter::Data(r) => drop(r.send(Err(BlockError::Fenced(0)))),
                    Waiter::None => {}
                }
            }
        }
        if let Some(r) = self.ready.take() {
            let _ = r.send(Err(e));
        }
    }

    fn on_tick(&mut self) {
        if self.phase == Phase::Halted {
            return;
        }
        for c in 0..CLIENTS {
            if let Some(conn) = &self.clients[c].conn {
                if self.clients[c].last_heard.elapsed() > self.cfg.io_timeout {
                    self.on_disconnect(c, "no reply within the IO timeout");
                    continue;
                }
                conn.send(Message::Ping(0));
            }
        }
        if self.phase != Phase::Running {
            return;
        }
        if self.unflushed_writes && self.last_flush_at.elapsed() >= self.cfg.flush_interval {
            self.submit_flush(Waiter::None);
        }
        for c in 0..CLIENTS {
            if self.clients[c].mode == Mode::Offline
                && (self.table.len() > self.cfg.max_replay_jobs
                    || self.table.bytes() > self.cfg.max_replay_bytes)
            {
                self.fault(c, "too many jobs piled up while it was offline");
            }
        }
        self.maybe_start_live_repair();
    }

    pub fn any_active(&self) -> Option<usize> {
        (0..CLIENTS).find(|&c| self.clients[c].mode == Mode::Active)
    }

    pub fn set_ready(&mut self) {
        if let (Some(r), Some(d)) = (self.ready.take(), self.def) {
            let _ = r.send(Ok((d.block_size, d.total_blocks())));
        }
    }
}
