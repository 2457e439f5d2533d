//! Each downstairs' lifecycle: connecting and negotiating, its messages,
//! dropping out (offline, and replayed when back), faults (live repair),
//! and being fenced by a newer generation. Mode rules are in `state.rs`.

use super::client::Handshake;
use super::jobs::{Kind, On};
use super::state::{Action, Mode, Phase, Upstairs};
use crate::error::BlockError;
use crate::frame::{ErrorCode, Message};

impl Upstairs {
    pub(super) fn on_message(&mut self, c: usize, msg: Message) {
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
                births,
                saved,
                data,
            } => self.on_extent_data(
                c,
                job,
                super::jobs::Image {
                    version,
                    contexts,
                    births,
                    saved,
                    data,
                },
            ),
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
        let (taken, deleted) = match &j.kind {
            Kind::Flush {
                snapshot: Some(s), ..
            } => (Some(s.clone()), None),
            Kind::SnapshotDelete { name } => (None, Some(name.clone())),
            Kind::SnapshotRecord { snapshot } => (Some(snapshot.clone()), None),
            _ => (None, None),
        };
        match (taken, deleted) {
            (Some(s), _) => {
                let cl = &mut self.clients[c];
                cl.flush_mark = cl.flush_mark.max(s.flush);
                if cl.snapshots.iter().all(|x| x.name != s.name) {
                    // A recorded one may be older than some it holds.
                    let at = cl.snapshots.partition_point(|x| x.flush < s.flush);
                    cl.snapshots.insert(at, s);
                }
            }
            (None, Some(name)) => {
                self.clients[c].snapshots.retain(|x| x.name != name);
            }
            (None, None) => {}
        }
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
        // A snapshot delete the downstairs refused as asked (a clone still
        // reads the snapshot) is an answer, not a failure of the
        // downstairs: every replica checks the same holds.
        let refusal = code == ErrorCode::Invalid as u16
            && matches!(
                self.table.get(id).map(|j| &j.kind),
                Some(Kind::SnapshotDelete { .. })
            );
        if refusal {
            if let Some(j) = self.table.get_mut(id) {
                j.on[c] = On::Skipped;
                j.refused = Some(message.to_string());
            }
            self.check_job(id);
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

    // ---- connections ----

    pub(super) fn reconnect(&mut self, c: usize) {
        if self.phase == Phase::Halted || self.clients[c].connecting {
            return;
        }
        self.clients[c].connecting = true;
        self.actions.push(Action::Connect {
            client: c,
            addr: self.clients[c].addr.clone(),
        });
    }

    pub(super) fn on_connected(&mut self, c: usize, conn: u64, hs: Handshake) {
        self.clients[c].connecting = false;
        if self.phase == Phase::Halted {
            self.actions.push(Action::Close { client: c, conn });
            return;
        }
        match self.def {
            Some(d) if !d.same_geometry(&hs.region) => {
                let e = BlockError::RegionMismatch(format!(
                    "downstairs {} has {:?}, expected {:?}",
                    self.clients[c].addr, hs.region, d
                ));
                tracing::error!(error = %e, "refusing downstairs");
                self.actions.push(Action::Close { client: c, conn });
                if self.ready_pending {
                    self.ready_pending = false;
                    self.actions.push(Action::Ready(Err(e)));
                }
                return;
            }
            Some(_) => {}
            None => self.def = Some(hs.region),
        }
        // A connection it still holds (it reconnected before the loss of
        // the old one was noticed, e.g. killed and restarted at once) is
        // replaced; an active downstairs has dropped out with it, and is
        // replayed below like any other, so that the jobs sent on the old
        // connection are not left waiting for it.
        if self.clients[c].conn.is_some()
            && self.phase == Phase::Running
            && self.clients[c].mode == Mode::Active
        {
            tracing::warn!(
                client = c,
                "reconnected before its old connection was seen to drop"
            );
            self.went_offline(c);
        }
        self.close(c);
        tracing::info!(client = c, addr = %self.clients[c].addr, mode = ?self.clients[c].mode, "downstairs connected");
        self.clients[c].conn = Some(conn);
        self.clients[c].last_heard = self.now;
        self.clients[c].versions = hs.versions;
        self.clients[c].flush_mark = hs.flush_mark;
        self.clients[c].snapshots = hs.snapshots;
        if self.phase == Phase::Running && hs.flush_mark >= self.next_flush {
            // A replacement that has seen later flush numbers than ours: go
            // on above them, or it would refuse the next snapshot.
            self.next_flush = hs.flush_mark + 1;
        }
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

    pub(super) fn on_disconnect(&mut self, c: usize, error: &str) {
        tracing::warn!(client = c, addr = %self.clients[c].addr, error, "downstairs disconnected");
        self.close(c);
        match self.phase {
            Phase::WaitAll => {}
            Phase::Reconciling => self.abort_reconcile(),
            Phase::Running => match self.clients[c].mode {
                Mode::Active => self.went_offline(c),
                Mode::Repair | Mode::Init => self.fault(c, error),
                Mode::Offline | Mode::Faulted => {}
            },
            Phase::Halted => return,
        }
        self.reconnect(c);
    }

    /// An active downstairs dropped out: it is offline (replayed when
    /// back), its reads go elsewhere and a repair it was the source of
    /// stops.
    fn went_offline(&mut self, c: usize) {
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

    /// Replays, in order, every job since the last flush `c` ran: the
    /// last it acknowledged, or a later one whose acknowledgement was lost
    /// (`count_lost_acks`).
    fn replay(&mut self, c: usize) {
        self.count_lost_acks(c);
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
    pub(super) fn fault(&mut self, c: usize, why: &str) {
        if self.phase != Phase::Running {
            if self.phase == Phase::Reconciling {
                self.abort_reconcile();
            }
            self.close(c);
            self.reconnect(c);
            return;
        }
        tracing::warn!(client = c, addr = %self.clients[c].addr, why, "downstairs faulted; it will be live-repaired");
        let was_source = self.clients[c].mode == Mode::Active;
        self.clients[c].mode = Mode::Faulted;
        self.close(c);
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

    /// A returning downstairs may have run jobs whose acknowledgements were
    /// lost with the connection. Its extent versions say which flushes of
    /// this generation it ran: every job sent to it up to the newest such
    /// flush ran there before it (a flush runs after every earlier job it
    /// was given) and is durable, so it counts as done. Replaying those
    /// instead would roll its blocks back to older data for a while, marked
    /// dirty — and an activation after a crash in that window prefers a
    /// dirty copy, losing data whose flush was acknowledged.
    fn count_lost_acks(&mut self, c: usize) {
        let generation = self.cfg.generation;
        // Its newest snapshot counts too: a snapshot of a clean region
        // stamps no extent, but it is recorded only once its flush ran.
        // (A snapshot's flush number equal to one in the table is of this
        // generation: numbering started above every flush mark.)
        let Some(stamped) = self.clients[c]
            .versions
            .iter()
            .filter(|v| v.generation == generation)
            .map(|v| v.flush)
            .chain(self.clients[c].snapshots.last().map(|s| s.flush))
            .max()
        else {
            return;
        };
        // A snapshot flush ran only if its snapshot is recorded there: its
        // extents may be stamped while the catalog write was lost with the
        // crash. From the first such flush on, jobs are sent again (and
        // the snapshot request fails on this replica rather than count it).
        let snaps = &self.clients[c].snapshots;
        let unrecorded = self
            .table
            .iter()
            .filter(|j| {
                j.on[c] == On::Sent
                    && matches!(&j.kind, Kind::Flush { flush, snapshot: Some(s), .. }
                        if *flush <= stamped && !snaps.iter().any(|h| h.guid == s.guid))
            })
            .map(|j| j.id)
            .min();
        let Some(upto) = self
            .table
            .iter()
            .filter(|j| {
                j.on[c] == On::Sent
                    && unrecorded.is_none_or(|u| j.id < u)
                    && matches!(j.kind, Kind::Flush { flush, .. } if flush <= stamped)
            })
            .map(|j| j.id)
            .max()
        else {
            return;
        };
        let ids: Vec<u64> = self
            .table
            .iter()
            .filter(|j| j.id <= upto && j.on[c] == On::Sent && !j.kind.is_read())
            .map(|j| j.id)
            .collect();
        tracing::info!(
            client = c,
            jobs = ids.len(),
            upto_job = upto,
            "the returning downstairs ran these jobs before it dropped out"
        );
        for &id in &ids {
            if let Some(j) = self.table.get_mut(id) {
                j.on[c] = On::Done;
            }
        }
        let lf = &mut self.clients[c].last_flush_done;
        *lf = (*lf).max(upto);
        for id in ids {
            self.check_job(id);
        }
    }
}
