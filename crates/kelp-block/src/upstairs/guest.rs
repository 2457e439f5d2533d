//! Guest requests: each becomes a job (or is answered at once), and is
//! acknowledged when its rule is met — a write once two downstairs that
//! count have applied it, a flush once two have acknowledged it (all three
//! for `FlushAll`).

use std::ops::Range;

use super::jobs::{CLIENTS, Kind, Waiter};
use super::reads::ReadRetry;
use super::state::{GuestOp, Mode, Output, Phase, Upstairs};
use crate::catalog::Snapshot;
use crate::error::{BlockError, Result};

/// What a snapshot job does, for its error message; None for other jobs.
fn snapshot_op(kind: &Kind) -> Option<String> {
    match kind {
        Kind::Flush {
            snapshot: Some(s), ..
        } => Some(format!("snapshot {}", s.name)),
        Kind::SnapshotDelete { name } => Some(format!("deleting snapshot {name}")),
        _ => None,
    }
}

impl Upstairs {
    pub(super) fn guest(&mut self, req: u64, op: GuestOp) {
        let waiter = Waiter::Guest(req);
        if let GuestOp::Status = op {
            let status = self.status();
            self.answer(waiter, Ok(Output::Status(status)));
            return;
        }
        if self.phase == Phase::Halted {
            self.answer(waiter, Err(BlockError::Fenced(self.cfg.generation)));
            return;
        }
        match op {
            GuestOp::Read { start, count } => {
                self.submit_read(start, count, None, waiter, ReadRetry::default())
            }
            GuestOp::ReadSnapshot { name, start, count } => {
                self.submit_read(start, count, Some(name), waiter, ReadRetry::default())
            }
            GuestOp::Snapshot {
                name,
                guid,
                created,
            } => self.submit_snapshot(name, guid, created, waiter),
            GuestOp::Snapshots => {
                let r = match self.any_active() {
                    Some(c) => Ok(Output::Snapshots(self.clients[c].snapshots.clone())),
                    None => Err(BlockError::NoQuorum(
                        "no active downstairs to list the snapshots of".into(),
                    )),
                };
                self.answer(waiter, r);
            }
            GuestOp::SnapshotDelete { name } => self.submit_snapshot_delete(name, waiter),
            GuestOp::Write {
                start,
                crcs,
                data,
                fua,
            } => {
                let count = crcs.len() as u64;
                self.submit_modify(
                    Kind::Write { start, crcs, data },
                    start..start + count,
                    fua,
                    waiter,
                );
            }
            GuestOp::WriteZeroes { start, count, fua } => self.submit_modify(
                Kind::WriteZeroes { start, count },
                start..start + count,
                fua,
                waiter,
            ),
            GuestOp::Flush => {
                self.submit_flush(waiter, None);
            }
            GuestOp::FlushAll => {
                if self.clients.iter().any(|c| c.mode != Mode::Active) {
                    self.answer(
                        waiter,
                        Err(BlockError::NoQuorum(
                            "not every downstairs is active".into(),
                        )),
                    );
                    return;
                }
                let id = self.submit_flush(waiter, None);
                if let Some(j) = self.table.get_mut(id) {
                    j.need_all = true;
                }
                self.check_job(id);
            }
            GuestOp::Replace { old, new } => {
                let r = self.replace(&old, &new).map(|()| Output::Done);
                self.answer(waiter, r);
            }
            GuestOp::Status => {}
        }
    }

    /// Points the client at `old` to `new` and live-repairs whatever
    /// answers there.
    fn replace(&mut self, old: &str, new: &str) -> Result<()> {
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
        // Stop whichever attempt is still dialling the old address.
        self.actions
            .push(super::state::Action::StopConnecting { client: c });
        self.close(c);
        self.clients[c].addr = new.to_string();
        self.clients[c].region_uuid = None;
        self.clients[c].connecting = false;
        self.reconnect(c);
        Ok(())
    }

    fn submit_modify(&mut self, kind: Kind, range: Range<u64>, fua: bool, waiter: Waiter) {
        let on = self.targets(Some(&range));
        let possible = (0..CLIENTS)
            .filter(|&c| self.counts(c) && on[c].outstanding())
            .count();
        if possible < 2 {
            self.answer(
                waiter,
                Err(BlockError::NoQuorum(format!(
                    "only {possible} downstairs can take writes"
                ))),
            );
            return;
        }
        self.unflushed_writes = true;
        if fua {
            let id = self.table.create(kind, Some(range), on, Waiter::None);
            self.dispatch(id);
            self.submit_flush(waiter, None);
        } else {
            let id = self.table.create(kind, Some(range), on, waiter);
            self.dispatch(id);
        }
    }

    /// Queues a flush behind every earlier job; with `snapshot` (name,
    /// GUID, time) it also takes that snapshot at its flush number, and
    /// needs every downstairs.
    pub(super) fn submit_flush(&mut self, waiter: Waiter, snapshot: Option<Snapshot>) -> u64 {
        let on = self.targets(None);
        let flush = self.next_flush;
        self.next_flush += 1;
        self.unflushed_writes = false;
        self.last_flush_at = self.now;
        let need_all = snapshot.is_some();
        let id = self.table.create(
            Kind::Flush {
                flush,
                generation: self.cfg.generation,
                snapshot: snapshot.map(|s| Snapshot { flush, ..s }),
            },
            None,
            on,
            waiter,
        );
        if let Some(j) = self.table.get_mut(id) {
            j.need_all = need_all;
        }
        self.dispatch(id);
        self.check_job(id);
        id
    }

    /// Why a snapshot operation cannot start now: not every downstairs is
    /// active (it must be taken, or deleted, by all three).
    fn not_all_active(&self, what: &str) -> Option<BlockError> {
        let missing: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, cl)| cl.mode != Mode::Active || cl.conn.is_none())
            .map(|(c, cl)| {
                format!(
                    "downstairs {c} ({}) is {}",
                    cl.addr,
                    format!("{:?}", cl.mode).to_lowercase()
                )
            })
            .collect();
        if self.phase != Phase::Running {
            return Some(BlockError::NoQuorum(format!(
                "cannot {what}: the volume is not running"
            )));
        }
        (!missing.is_empty()).then(|| {
            BlockError::NoQuorum(format!(
                "cannot {what}: every downstairs must take part, but {}",
                missing.join(", ")
            ))
        })
    }

    fn submit_snapshot(&mut self, name: String, guid: u128, created: u64, waiter: Waiter) {
        if let Err(e) = crate::catalog::check_name(&name) {
            self.answer(waiter, Err(e));
            return;
        }
        let in_flight = self.table.iter().any(|j| {
            matches!(&j.kind, Kind::Flush { snapshot: Some(s), .. } if s.name == name) && !j.acked
        });
        let exists = self
            .clients
            .iter()
            .any(|cl| cl.snapshots.iter().any(|s| s.name == name));
        if exists || in_flight {
            self.answer(waiter, Err(BlockError::SnapshotExists(name)));
            return;
        }
        if let Some(e) = self.not_all_active(&format!("take snapshot {name}")) {
            self.answer(waiter, Err(e));
            return;
        }
        tracing::info!(snapshot = %name, flush = self.next_flush, "taking a snapshot");
        let s = Snapshot {
            name,
            guid,
            flush: 0,
            created,
        };
        self.submit_flush(waiter, Some(s));
    }

    fn submit_snapshot_delete(&mut self, name: String, waiter: Waiter) {
        let known = self
            .clients
            .iter()
            .any(|cl| cl.snapshots.iter().any(|s| s.name == name));
        if !known {
            self.answer(waiter, Err(BlockError::NoSuchSnapshot(name)));
            return;
        }
        if let Some(e) = self.not_all_active(&format!("delete snapshot {name}")) {
            self.answer(waiter, Err(e));
            return;
        }
        let on = self.targets(None);
        let id = self
            .table
            .create(Kind::SnapshotDelete { name }, None, on, waiter);
        if let Some(j) = self.table.get_mut(id) {
            j.need_all = true;
        }
        self.dispatch(id);
        self.check_job(id);
    }

    /// Acknowledges the guest once the job's rule is met (or can no longer
    /// be met).
    pub(super) fn check_job(&mut self, id: u64) {
        let Some(j) = self.table.get(id) else { return };
        if j.acked
            || j.kind.is_read()
            || matches!(
                j.kind,
                Kind::ExtentReplace { .. } | Kind::ExtentStamp { .. } | Kind::SnapshotRecord { .. }
            )
        {
            return;
        }
        let need = if j.need_all { CLIENTS } else { 2 };
        let done = (0..CLIENTS)
            .filter(|&c| self.counts(c) && j.on[c] == super::jobs::On::Done)
            .count();
        let possible = (0..CLIENTS)
            .filter(|&c| {
                self.counts(c)
                    && matches!(
                        j.on[c],
                        super::jobs::On::Done | super::jobs::On::Sent | super::jobs::On::Queued
                    )
            })
            .count();
        let result = if done >= need {
            Ok(match &j.kind {
                Kind::Flush {
                    snapshot: Some(s), ..
                } => Output::Snapshot(s.clone()),
                _ => Output::Done,
            })
        } else if possible < need
            && let Some(why) = &j.refused
        {
            Err(BlockError::SnapshotConflict(why.clone()))
        } else if possible < need
            && let Some(what) = snapshot_op(&j.kind)
        {
            let took: Vec<String> = (0..CLIENTS)
                .filter(|&c| j.on[c] == super::jobs::On::Done)
                .map(|c| format!("{c} ({})", self.clients[c].addr))
                .collect();
            let missing: Vec<String> = (0..CLIENTS)
                .filter(|&c| j.on[c] != super::jobs::On::Done)
                .map(|c| {
                    format!(
                        "{c} ({}, {})",
                        self.clients[c].addr,
                        format!("{:?}", self.clients[c].mode).to_lowercase()
                    )
                })
                .collect();
            Err(BlockError::NoQuorum(format!(
                "{what} failed: not every downstairs took it; missing downstairs {}{}",
                missing.join(", "),
                if took.is_empty() {
                    String::new()
                } else {
                    format!("; downstairs {} did and keep it that way", took.join(", "))
                }
            )))
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
        let waiter = std::mem::replace(&mut j.waiter, Waiter::None);
        self.answer(waiter, result);
    }
}
