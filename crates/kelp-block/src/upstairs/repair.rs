//! Extent repair, both at activation (reconciliation) and while IO goes on
//! (live repair). Either way an extent is repaired by three jobs in the
//! ordinary job table, so they are ordered against guest IO like any other:
//!
//! 1. `ExtentFetch` on the source (a read of the whole extent);
//! 2. `ExtentReplace` on each destination, queued until the fetched image
//!    arrives, then sent (the destination holds later jobs for that extent
//!    until it has run);
//! 3. at activation, `ExtentStamp` on a dirty source, so all copies end
//!    with the same clean (generation, flush).
//!
//! Reconciliation compares every extent's (generation, flush, dirty) on the
//! three downstairs. An extent that differs anywhere, or is dirty anywhere,
//! is copied from the freshest copy — highest generation, then highest
//! flush, then dirty, ties to the lowest client — to the other two, one
//! extent at a time, before any guest IO is served.
//!
//! Live repair brings a faulted downstairs back: extents 0, 1, 2, ... are
//! copied from an active downstairs in turn. Once the copy of extent `e`
//! has been queued, guest writes touching extents `≤ e` go to the repairing
//! downstairs too (ordered after the copy); writes entirely above `e` skip
//! it, since the copy will bring them. It gets no flushes (so an extent it
//! has not been given yet is never stamped as current) and does not count
//! towards quorum until every extent is done.

use std::collections::VecDeque;

use bytes::Bytes;

use super::jobs::{CLIENTS, Image, Kind, On, Waiter};
use super::state::{Mode, Phase, Upstairs};
use crate::context::BlockContext;
use crate::error::BlockError;
use crate::extent::ExtentVersion;

#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    extent: u32,
    source: usize,
    fetch: u64,
    replace: u64,
    stamp: Option<u64>,
    /// At activation the copies take this version; live repair copies the
    /// source's version as fetched.
    target: Option<ExtentVersion>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    extent: u32,
    source: usize,
    dests: [bool; CLIENTS],
    target: ExtentVersion,
    stamp: bool,
}

#[derive(Debug, Default)]
pub(super) enum RepairState {
    #[default]
    None,
    Reconcile {
        plan: VecDeque<Plan>,
        step: Option<Step>,
    },
    Live {
        client: usize,
        /// Extents below this have had their copy queued.
        next: u32,
        step: Option<Step>,
    },
}

impl RepairState {
    pub fn repaired_below(&self, c: usize) -> u32 {
        match self {
            RepairState::Live { client, next, .. } if *client == c => *next,
            _ => 0,
        }
    }

    fn step(&self) -> Option<Step> {
        match self {
            RepairState::Reconcile { step, .. } | RepairState::Live { step, .. } => *step,
            RepairState::None => None,
        }
    }
}

/// Which extents need repair, from each downstairs' extent versions.
#[allow(clippy::needless_range_loop)] // e indexes the inner vectors of all three
pub(super) fn plan(versions: &[Vec<ExtentVersion>; CLIENTS]) -> VecDeque<Plan> {
    let n = versions.iter().map(|v| v.len()).min().unwrap_or(0);
    let mut out = VecDeque::new();
    for e in 0..n {
        let vs: [ExtentVersion; CLIENTS] = std::array::from_fn(|c| versions[c][e]);
        if vs.iter().all(|v| *v == vs[0] && !v.dirty) {
            continue;
        }
        let source = (0..CLIENTS)
            .max_by_key(|&c| (vs[c].freshness(), std::cmp::Reverse(c)))
            .unwrap_or(0);
        let target = ExtentVersion {
            dirty: false,
            ..vs[source]
        };
        out.push_back(Plan {
            extent: e as u32,
            source,
            dests: std::array::from_fn(|c| c != source),
            target,
            stamp: vs[source].dirty,
        });
    }
    out
}

impl Upstairs {
    fn submit_step(
        &mut self,
        extent: u32,
        source: usize,
        dests: [bool; CLIENTS],
        target: Option<ExtentVersion>,
        stamp: bool,
    ) -> Step {
        let range = self.extent_range(extent);
        let mut on = [On::NotFor; CLIENTS];
        on[source] = On::Sent;
        let fetch = self.table.create(
            Kind::ExtentFetch { extent },
            Some(range.clone()),
            on,
            Waiter::None,
        );
        self.send(source, fetch);
        let on_r = std::array::from_fn(|c| if dests[c] { On::Queued } else { On::NotFor });
        let replace = self.table.create(
            Kind::ExtentReplace {
                extent,
                image: None,
            },
            Some(range.clone()),
            on_r,
            Waiter::None,
        );
        let stamp = match (stamp, target) {
            (true, Some(t)) => {
                let id = self.table.create(
                    Kind::ExtentStamp {
                        extent,
                        flush: t.flush,
                        generation: t.generation,
                    },
                    Some(range),
                    on,
                    Waiter::None,
                );
                self.send(source, id);
                Some(id)
            }
            _ => None,
        };
        Step {
            extent,
            source,
            fetch,
            replace,
            stamp,
            target,
        }
    }

    pub(super) fn start_reconcile(&mut self) {
        let versions: [Vec<ExtentVersion>; CLIENTS] =
            std::array::from_fn(|c| self.clients[c].versions.clone());
        let all = versions.iter().flatten();
        let max_gen = all.clone().map(|v| v.generation).max().unwrap_or(0);
        let max_flush = all.map(|v| v.flush).max().unwrap_or(0);
        if self.cfg.generation < max_gen {
            self.become_fenced(BlockError::GenerationTooLow {
                offered: self.cfg.generation,
                current: max_gen,
            });
            return;
        }
        self.next_flush = max_flush + 1;
        for c in &mut self.clients {
            c.mode = Mode::Active;
            c.last_flush_done = 0;
        }
        let plan = plan(&versions);
        tracing::info!(
            extents_to_repair = plan.len(),
            next_flush = self.next_flush,
            generation = self.cfg.generation,
            "all three downstairs activated; reconciling"
        );
        self.phase = Phase::Reconciling;
        self.repair = RepairState::Reconcile { plan, step: None };
        self.next_reconcile_step();
    }

    fn next_reconcile_step(&mut self) {
        let RepairState::Reconcile { plan, .. } = &mut self.repair else {
            return;
        };
        match plan.pop_front() {
            Some(p) => {
                tracing::debug!(extent = p.extent, source = p.source, "reconciling extent");
                let step = self.submit_step(p.extent, p.source, p.dests, Some(p.target), p.stamp);
                if let RepairState::Reconcile { step: s, .. } = &mut self.repair {
                    *s = Some(step);
                }
            }
            None => {
                self.repair = RepairState::None;
                self.phase = Phase::Running;
                tracing::info!("reconciliation done; serving IO");
                // Retires the repair jobs and starts the replay horizon.
                self.submit_flush(Waiter::None);
                self.set_ready();
            }
        }
    }

    /// A downstairs dropped out while reconciling: start over from fresh
    /// extent versions once all three are back.
    pub(super) fn abort_reconcile(&mut self) {
        tracing::warn!("a downstairs dropped out during reconciliation; starting over");
        self.phase = Phase::WaitAll;
        self.repair = RepairState::None;
        for id in self.table.ids() {
            self.table.remove(id);
        }
        for c in 0..CLIENTS {
            self.clients[c].mode = Mode::Init;
            self.clients[c].conn = None;
            self.reconnect(c);
        }
    }

    pub(super) fn on_extent_data(
        &mut self,
        c: usize,
        id: u64,
        version: ExtentVersion,
        contexts: Vec<BlockContext>,
        data: Bytes,
    ) {
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        if j.on[c] != On::Sent || !matches!(j.kind, Kind::ExtentFetch { .. }) {
            return;
        }
        j.on[c] = On::Done;
        let Some(step) = self
            .repair
            .step()
            .filter(|s| s.fetch == id && s.source == c)
        else {
            return;
        };
        let bs = self.block_size() as usize;
        let es = self.extent_range(0).end as usize;
        let ok = contexts.len() == es
            && data.len() == es * bs
            && contexts
                .iter()
                .zip(data.chunks(bs))
                .all(|(ctx, blk)| ctx.verify(blk));
        if !ok {
            tracing::error!(
                client = c,
                extent = step.extent,
                "repair source sent an extent that fails its contexts"
            );
            match self.phase {
                Phase::Reconciling => self.abort_reconcile(),
                _ => self.fault(c, "bad extent image"),
            }
            return;
        }
        let image = Image {
            version: step.target.unwrap_or(version),
            contexts,
            data,
        };
        let Some(r) = self.table.get_mut(step.replace) else {
            return;
        };
        if let Kind::ExtentReplace { image: slot, .. } = &mut r.kind {
            *slot = Some(image);
        }
        let mut to_send = vec![];
        for (d, o) in r.on.iter_mut().enumerate() {
            if *o == On::Queued {
                *o = On::Sent;
                to_send.push(d);
            }
        }
        for d in to_send {
            self.send(d, step.replace);
        }
        self.repair_progress(id);
    }

    /// Called on every acknowledgement: moves repair on when the current
    /// step is final everywhere.
    pub(super) fn repair_progress(&mut self, id: u64) {
        let Some(step) = self.repair.step() else {
            return;
        };
        if id != step.fetch && id != step.replace && Some(id) != step.stamp {
            return;
        }
        let finished = |id: u64| {
            self.table
                .get(id)
                .is_none_or(|j| j.on.iter().all(|o| o.is_final()))
        };
        if !finished(step.fetch) || !finished(step.replace) || !step.stamp.is_none_or(finished) {
            return;
        }
        match self.repair {
            RepairState::Reconcile { .. } => self.next_reconcile_step(),
            RepairState::Live { client, next, .. } => {
                let total = self.def.map(|d| d.extent_count).unwrap_or(0);
                if next >= total {
                    tracing::info!(client, "live repair finished; downstairs is active again");
                    self.clients[client].mode = Mode::Active;
                    self.clients[client].last_flush_done = 0;
                    self.repair = RepairState::None;
                    self.maybe_start_live_repair();
                } else {
                    self.live_step(client, next);
                }
            }
            RepairState::None => {}
        }
    }

    fn live_step(&mut self, client: usize, extent: u32) {
        let Some(source) = self.any_active() else {
            self.fault(client, "no active downstairs to repair from");
            return;
        };
        let mut dests = [false; CLIENTS];
        dests[client] = true;
        // Advance first: jobs created from now on that touch this extent go
        // to the repairing downstairs, after the copy.
        self.repair = RepairState::Live {
            client,
            next: extent + 1,
            step: None,
        };
        let step = self.submit_step(extent, source, dests, None, false);
        if let RepairState::Live { step: s, .. } = &mut self.repair {
            *s = Some(step);
        }
    }

    /// Starts live repair of a faulted, connected downstairs if none is
    /// under way.
    pub(super) fn maybe_start_live_repair(&mut self) {
        if self.phase != Phase::Running || !matches!(self.repair, RepairState::None) {
            return;
        }
        let Some(c) = (0..CLIENTS)
            .find(|&c| self.clients[c].mode == Mode::Faulted && self.clients[c].conn.is_some())
        else {
            return;
        };
        if self.any_active().is_none() {
            return;
        }
        tracing::info!(client = c, "starting live repair");
        self.clients[c].mode = Mode::Repair;
        self.live_step(c, 0);
    }

    /// The repairing downstairs was faulted: drop the repair (it restarts
    /// from extent 0 when the downstairs is back).
    pub(super) fn repair_client_lost(&mut self, c: usize) {
        if let RepairState::Live { client, .. } = self.repair
            && client == c
        {
            self.repair = RepairState::None;
        }
    }

    /// The repair source went away: its fetch will never finish, so the
    /// repairing downstairs is faulted and repaired again later.
    pub(super) fn source_lost(&mut self, c: usize) {
        // Fetches are not replayed; mark them done with.
        let fetches: Vec<u64> = self
            .table
            .iter()
            .filter(|j| j.on[c].outstanding() && matches!(j.kind, Kind::ExtentFetch { .. }))
            .map(|j| j.id)
            .collect();
        for id in fetches {
            if let Some(j) = self.table.get_mut(id) {
                j.on[c] = On::Skipped;
            }
        }
        if let RepairState::Live {
            client,
            step: Some(s),
            ..
        } = self.repair
            && s.source == c
        {
            self.fault(client, "repair source went away");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(generation: u64, flush: u64, dirty: bool) -> ExtentVersion {
        ExtentVersion {
            generation,
            flush,
            dirty,
        }
    }

    #[test]
    fn plan_picks_freshest() {
        let versions = [
            vec![
                v(1, 5, false),
                v(1, 5, false),
                v(2, 1, false),
                v(1, 1, false),
            ],
            vec![
                v(1, 5, false),
                v(1, 6, false),
                v(1, 9, false),
                v(1, 1, true),
            ],
            vec![
                v(1, 5, false),
                v(1, 5, false),
                v(1, 9, false),
                v(1, 1, true),
            ],
        ];
        let p = plan(&versions);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].extent, p[0].source), (1, 1));
        assert_eq!((p[1].extent, p[1].source), (2, 0), "generation beats flush");
        assert_eq!(
            (p[2].extent, p[2].source),
            (3, 1),
            "dirty beats clean, ties to lowest"
        );
        assert!(p[2].stamp && !p[0].stamp);
        assert_eq!(p[2].dests, [true, false, true]);
    }
}
