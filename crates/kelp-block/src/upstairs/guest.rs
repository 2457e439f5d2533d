//! Guest requests: each becomes a job (or is answered at once), and is
//! acknowledged when its rule is met — a write once two downstairs that
//! count have applied it, a flush once two have acknowledged it (all three
//! for `FlushAll`).

use std::ops::Range;

use super::jobs::{CLIENTS, Kind, Waiter};
use super::reads::ReadRetry;
use super::state::{GuestOp, Mode, Output, Phase, Upstairs};
use crate::error::{BlockError, Result};

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
                self.submit_read(start, count, waiter, ReadRetry::default())
            }
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
                self.submit_flush(waiter);
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
                let id = self.submit_flush(waiter);
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
            self.submit_flush(waiter);
        } else {
            let id = self.table.create(kind, Some(range), on, waiter);
            self.dispatch(id);
        }
    }

    pub(super) fn submit_flush(&mut self, waiter: Waiter) -> u64 {
        let on = self.targets(None);
        let flush = self.next_flush;
        self.next_flush += 1;
        self.unflushed_writes = false;
        self.last_flush_at = self.now;
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

    /// Acknowledges the guest once the job's rule is met (or can no longer
    /// be met).
    pub(super) fn check_job(&mut self, id: u64) {
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
            Ok(Output::Done)
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
