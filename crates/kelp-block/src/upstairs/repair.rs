//! Extent repair, both at activation (reconciliation) and while IO goes on
//! (live repair). Either way an extent is repaired by three jobs in the
//! ordinary job table, so they are ordered against guest IO like any other:
//!
//! 1. `ExtentFetch` on the source (a read of the whole extent);
//! 2. `ExtentReplace` on each destination, queued until the fetched image
//!    arrives, then sent (the destination holds later jobs for that extent
//!    until it has run);
//! 3. at activation, `ExtentStamp` on a dirty source, so all copies end
//!    with the same clean (generation, flush) — sent only once every
//!    destination has acknowledged its copy, so an interrupted activation
//!    leaves the source dirty (still the freshest) rather than clean and
//!    indistinguishable from a destination holding older data.
//!
//! Reconciliation compares every extent's (generation, flush, dirty) on the
//! three downstairs. An extent that differs anywhere, or is dirty anywhere,
//! is copied from the freshest copy — highest generation, then highest
//! flush, then dirty, ties to the lowest client — to the other two, one
//! extent at a time, before any guest IO is served.
//!
//! Every fetched image is checked against its block contexts before it is
//! copied anywhere. When a source's image fails (a corrupt block on its
//! disk) or its fetch fails, the extent is fetched again from the next
//! source in line — at activation the next freshest copy, in live repair
//! another active downstairs — and the failed source becomes a destination
//! at activation. When every source has failed, the copy is put together
//! block by block from the failed images (`merge`): each block from the
//! first image in which it is intact. A block intact nowhere cannot be
//! repaired: activation fails with an error naming it, and a live repair
//! gives up on that downstairs for a while (`LIVE_REPAIR_BACKOFF`).
//!
//! Live repair brings a faulted downstairs back: extents 0, 1, 2, ... are
//! copied from an active downstairs in turn. Once the copy of extent `e`
//! has been queued, guest writes touching extents `≤ e` go to the repairing
//! downstairs too (ordered after the copy); writes entirely above `e` skip
//! it, since the copy will bring them. First of all, each extent that is
//! dirty on it is stamped clean at version (0, 0), the stalest there is;
//! after that it gets every flush. A flush stamps only dirty extents, which
//! on the repairing downstairs are the ones it has been given, so an extent
//! it has not been given yet is never stamped as current, and one it has
//! been given goes through the same flushes as its source and ends with the
//! same version. It does not count towards quorum until every extent is
//! done.
//!
//! # Snapshots of a replica that was away
//!
//! Extent copies carry every block's birth and the saved versions
//! snapshots keep, but not the snapshot catalog: a downstairs that was away
//! (down, faulted, or replaced) when a snapshot was taken or deleted is
//! brought to the others' list by `SnapshotDelete` and `SnapshotRecord`
//! jobs sent to it alone. The list it is brought to (`truth`):
//!
//! - at activation, every snapshot held by a downstairs with the highest
//!   flush mark: those took part in the latest flushes. A snapshot only
//!   some of them hold was taken or deleted by a request that failed (a
//!   downstairs dropped out during it), which promised nothing; it is
//!   kept, as the replicas that took it keep it (delete it again to drop
//!   it). A snapshot a downstairs with a lower flush mark lacks is one it
//!   missed, and one only it holds was deleted while it was away;
//! - in live repair, every snapshot an active downstairs holds.
//!
//! (Entries are taken in client order; one clashing in name, GUID or
//! flush with an entry already taken is left out.)
//!
//! A downstairs holding a snapshot not in that list (deleted while it was
//! away, or another snapshot under the same name) has it deleted, before
//! anything is recorded, so a record never clashes. A record is sent only
//! where the data already matches: at activation after the extent copies
//! (an extent is also copied, from a downstairs holding the list, wherever
//! the lagging downstairs wrote or stamped it at or after the oldest
//! snapshot it lacks, since its writes then kept no saved versions for
//! it; an extent it has not touched since holds the snapshot's data
//! already). In live repair the records and deletes go first, before any
//! extent copy, followed by a flush: every extent is copied anyway, and
//! guest writes reaching the repairing downstairs must already be born
//! after every snapshot and keep the versions those snapshots need, as on
//! the source. The downstairs adds a record without a flush and raises its
//! flush mark to the snapshot's flush; a record it already holds is
//! acknowledged, so a replayed one is harmless.

use std::collections::VecDeque;

use bytes::Bytes;

use super::jobs::{CLIENTS, Image, Kind, On, Waiter};
use super::state::{Mode, Phase, Upstairs};
use crate::catalog::Snapshot;
use crate::error::BlockError;
use crate::extent::ExtentVersion;

#[derive(Debug)]
pub(super) struct Step {
    extent: u32,
    source: usize,
    /// The fetch from `source`; None once the copy has been put together
    /// from failed images.
    fetch: Option<u64>,
    /// The one replace job of this extent. It keeps its place in the job
    /// order when the image comes from a later source: every guest write
    /// after it also goes to its destinations after it, so an image
    /// fetched later (which may already hold those writes) is still right
    /// once they are applied again on top.
    replace: u64,
    /// At activation, the source to stamp with `target` once every
    /// destination holds its copy: a dirty freshest source, or a fallback
    /// source (possibly older than `target`). Never earlier: a source
    /// stamped clean before the copies landed, if activation is then
    /// interrupted, looks as fresh as a destination that still holds older
    /// data under the same (generation, flush), and the next reconciliation
    /// would see nothing to repair.
    stamp: Option<usize>,
    /// That stamp, once sent.
    stamp_job: Option<u64>,
    /// At activation the copies take this version; live repair copies the
    /// source's version as fetched.
    target: Option<ExtentVersion>,
    /// Sources still to try, best first, if this one's image fails.
    fallbacks: Vec<usize>,
    /// Images that failed their contexts, in the order they were fetched.
    rejected: Vec<Image>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    extent: u32,
    /// Every downstairs, freshest copy first: the first is the source.
    order: [usize; CLIENTS],
    target: ExtentVersion,
    stamp: bool,
}

/// How long live repair leaves a downstairs alone after finding an extent
/// that no source holds intact.
pub(super) const LIVE_REPAIR_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
pub(super) enum RepairState {
    #[default]
    None,
    Reconcile {
        plan: VecDeque<Plan>,
        step: Option<Step>,
        /// The snapshots every downstairs holds once the extents are
        /// copied (module comment).
        truth: Vec<Snapshot>,
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

    fn step(&self) -> Option<&Step> {
        match self {
            RepairState::Reconcile { step, .. } | RepairState::Live { step, .. } => step.as_ref(),
            RepairState::None => None,
        }
    }

    fn step_mut(&mut self) -> Option<&mut Step> {
        match self {
            RepairState::Reconcile { step, .. } | RepairState::Live { step, .. } => step.as_mut(),
            RepairState::None => None,
        }
    }
}

/// Every snapshot in the lists given, in flush order; an entry clashing
/// in name, GUID or flush with one taken from an earlier list is left out.
pub(super) fn union_snapshots(lists: &[&[Snapshot]]) -> Vec<Snapshot> {
    let mut out: Vec<Snapshot> = vec![];
    for s in lists.iter().flat_map(|l| l.iter()) {
        if out
            .iter()
            .all(|o| o.name != s.name && o.guid != s.guid && o.flush != s.flush)
        {
            out.push(s.clone());
        }
    }
    out.sort_by_key(|s| s.flush);
    out
}

/// What brings catalog `have` to `truth`: the names to delete (held but
/// not in `truth` as they are), then the snapshots to record.
pub(super) fn catalog_diff(have: &[Snapshot], truth: &[Snapshot]) -> (Vec<String>, Vec<Snapshot>) {
    let delete = have
        .iter()
        .filter(|s| !truth.contains(s))
        .map(|s| s.name.clone())
        .collect();
    let record = truth
        .iter()
        .filter(|s| !have.contains(s))
        .cloned()
        .collect();
    (delete, record)
}

/// Which extents need repair, from each downstairs' extent versions.
/// `holds` marks the downstairs that hold the true snapshot list (sources
/// are taken from them when copies are equally fresh); `lacks` is, per
/// downstairs, the flush of the oldest true snapshot it lacks: its extents
/// written or stamped at or after it are copied too (module comment).
#[allow(clippy::needless_range_loop)] // e indexes the inner vectors of all three
pub(super) fn plan(
    versions: &[Vec<ExtentVersion>; CLIENTS],
    holds: [bool; CLIENTS],
    lacks: [Option<u64>; CLIENTS],
) -> VecDeque<Plan> {
    let n = versions.iter().map(|v| v.len()).min().unwrap_or(0);
    let mut out = VecDeque::new();
    for e in 0..n {
        let vs: [ExtentVersion; CLIENTS] = std::array::from_fn(|c| versions[c][e]);
        let stale = (0..CLIENTS).any(|c| lacks[c].is_some_and(|f| vs[c].flush >= f));
        if vs.iter().all(|v| *v == vs[0] && !v.dirty) && !stale {
            continue;
        }
        let mut order: [usize; CLIENTS] = std::array::from_fn(|c| c);
        order.sort_by_key(|&c| {
            std::cmp::Reverse((vs[c].freshness(), holds[c], std::cmp::Reverse(c)))
        });
        let source = order[0];
        let target = ExtentVersion {
            dirty: false,
            ..vs[source]
        };
        out.push_back(Plan {
            extent: e as u32,
            order,
            target,
            stamp: vs[source].dirty,
        });
    }
    out
}

/// Puts an extent together from images that each failed their contexts:
/// every block comes from the first image, in `images` order, in which it is
/// intact. Returns the first block intact in none of them.
pub(super) fn merge(
    images: &[Image],
    version: ExtentVersion,
    block_size: usize,
) -> Result<Image, u64> {
    let Some(n) = images.iter().map(|i| i.contexts.len()).min() else {
        return Err(0);
    };
    let mut contexts = Vec::with_capacity(n);
    let mut births = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n * block_size);
    for b in 0..n {
        let range = b * block_size..(b + 1) * block_size;
        let good = images.iter().find(|i| {
            i.data
                .get(range.clone())
                .is_some_and(|blk| i.contexts[b].verify(blk))
        });
        let Some(img) = good else {
            return Err(b as u64);
        };
        contexts.push(img.contexts[b]);
        births.push(img.births.get(b).copied().unwrap_or(0));
        data.extend_from_slice(&img.data[range]);
    }
    // Saved versions are checked as a whole by the destination; take the
    // first image's (all sources ran the same jobs).
    let saved = images.first().map(|i| i.saved.clone()).unwrap_or_default();
    Ok(Image {
        version,
        contexts,
        births,
        saved,
        data: Bytes::from(data),
    })
}

impl Upstairs {
    /// Queues one extent's copy from `source` to `dests`: a fetch, the
    /// replace waiting for its image and, at activation, a stamp of a dirty
    /// source.
    fn submit_step(
        &mut self,
        extent: u32,
        source: usize,
        dests: [bool; CLIENTS],
        target: Option<ExtentVersion>,
        stamp: bool,
        fallbacks: Vec<usize>,
    ) -> Step {
        let range = self.extent_range(extent);
        let fetch = self.submit_fetch(extent, source);
        let on_r = std::array::from_fn(|c| if dests[c] { On::Queued } else { On::NotFor });
        let replace = self.table.create(
            Kind::ExtentReplace {
                extent,
                image: None,
            },
            Some(range),
            on_r,
            Waiter::None,
        );
        Step {
            extent,
            source,
            fetch: Some(fetch),
            replace,
            stamp: (stamp && target.is_some()).then_some(source),
            stamp_job: None,
            target,
            fallbacks,
            rejected: vec![],
        }
    }

    fn submit_fetch(&mut self, extent: u32, source: usize) -> u64 {
        self.submit_to(source, extent, Kind::ExtentFetch { extent })
    }

    fn submit_stamp(&mut self, extent: u32, c: usize, t: ExtentVersion) -> u64 {
        let kind = Kind::ExtentStamp {
            extent,
            flush: t.flush,
            generation: t.generation,
        };
        self.submit_to(c, extent, kind)
    }

    /// Queues a job on extent `extent` for downstairs `c` alone and sends it.
    fn submit_to(&mut self, c: usize, extent: u32, kind: Kind) -> u64 {
        let mut on = [On::NotFor; CLIENTS];
        on[c] = On::Sent;
        let range = self.extent_range(extent);
        let id = self.table.create(kind, Some(range), on, Waiter::None);
        self.send(c, id);
        id
    }

    pub(super) fn start_reconcile(&mut self) {
        let versions: [Vec<ExtentVersion>; CLIENTS] =
            std::array::from_fn(|c| self.clients[c].versions.clone());
        let all = versions.iter().flatten();
        let max_gen = all.clone().map(|v| v.generation).max().unwrap_or(0);
        // Flush numbers go on above every flush any downstairs has begun:
        // a snapshot's flush may have stamped no extent, and the writes
        // after it must be born later than it.
        let max_flush = all
            .map(|v| v.flush)
            .chain(self.clients.iter().map(|c| c.flush_mark))
            .max()
            .unwrap_or(0);
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
        // The snapshots every downstairs ends with (module comment).
        let top = self.clients.iter().map(|c| c.flush_mark).max().unwrap_or(0);
        let lists: Vec<&[Snapshot]> = (0..CLIENTS)
            .filter(|&c| self.clients[c].flush_mark == top)
            .map(|c| self.clients[c].snapshots.as_slice())
            .collect();
        let truth = union_snapshots(&lists);
        let lacks: [Option<u64>; CLIENTS] = std::array::from_fn(|c| {
            catalog_diff(&self.clients[c].snapshots, &truth)
                .1
                .iter()
                .map(|s| s.flush)
                .min()
        });
        let holds: [bool; CLIENTS] = std::array::from_fn(|c| lacks[c].is_none());
        let plan = plan(&versions, holds, lacks);
        tracing::info!(
            extents_to_repair = plan.len(),
            next_flush = self.next_flush,
            generation = self.cfg.generation,
            "all three downstairs activated; reconciling"
        );
        self.phase = Phase::Reconciling;
        self.repair = RepairState::Reconcile {
            plan,
            step: None,
            truth,
        };
        self.next_reconcile_step();
    }

    fn next_reconcile_step(&mut self) {
        let RepairState::Reconcile { plan, .. } = &mut self.repair else {
            return;
        };
        match plan.pop_front() {
            Some(p) => {
                let source = p.order[0];
                tracing::debug!(extent = p.extent, source, "reconciling extent");
                let dests = std::array::from_fn(|c| c != source);
                let step = self.submit_step(
                    p.extent,
                    source,
                    dests,
                    Some(p.target),
                    p.stamp,
                    p.order[1..].to_vec(),
                );
                if let RepairState::Reconcile { step: s, .. } = &mut self.repair {
                    *s = Some(step);
                }
            }
            None => {
                let truth = match std::mem::take(&mut self.repair) {
                    RepairState::Reconcile { truth, .. } => truth,
                    _ => vec![],
                };
                self.phase = Phase::Running;
                // Every extent now matches a downstairs holding `truth`:
                // bring the catalogs to it, before the flush below.
                for c in 0..CLIENTS {
                    self.sync_catalog(c, &truth);
                }
                tracing::info!("reconciliation done; serving IO");
                // Retires the repair jobs and starts the replay horizon.
                self.submit_flush(Waiter::None, None);
                self.set_ready();
            }
        }
    }

    /// Sends downstairs `c` the deletes and records that bring its
    /// snapshot catalog to `truth`, deletes first; each is a job for `c`
    /// alone over the whole volume, so it runs after every earlier job
    /// sent to `c` and before every later one.
    pub(super) fn sync_catalog(&mut self, c: usize, truth: &[Snapshot]) {
        let (delete, record) = catalog_diff(&self.clients[c].snapshots, truth);
        if delete.is_empty() && record.is_empty() {
            return;
        }
        tracing::info!(
            client = c,
            delete = ?delete,
            record = ?record.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "bringing a downstairs' snapshots to the others'"
        );
        let kinds = delete
            .into_iter()
            .map(|name| Kind::SnapshotDelete { name })
            .chain(
                record
                    .into_iter()
                    .map(|snapshot| Kind::SnapshotRecord { snapshot }),
            );
        for kind in kinds {
            let mut on = [On::NotFor; CLIENTS];
            on[c] = On::Sent;
            let id = self.table.create(kind, None, on, Waiter::None);
            self.send(c, id);
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
            self.close(c);
            self.reconnect(c);
        }
    }

    /// True if `id` is the fetch of the current repair step, sent to `c`.
    pub(super) fn is_repair_fetch(&self, c: usize, id: u64) -> bool {
        self.repair
            .step()
            .is_some_and(|s| s.fetch == Some(id) && s.source == c)
    }

    pub(super) fn on_extent_data(&mut self, c: usize, id: u64, fetched: Image) {
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        if j.on[c] != On::Sent || !matches!(j.kind, Kind::ExtentFetch { .. }) {
            return;
        }
        j.on[c] = On::Done;
        let Some(step) = self.repair.step().filter(|_| self.is_repair_fetch(c, id)) else {
            return;
        };
        let bs = self.block_size() as usize;
        let es = self.extent_range(0).end as usize;
        let image = Image {
            version: step.target.unwrap_or(fetched.version),
            ..fetched
        };
        let whole =
            image.contexts.len() == es && image.births.len() == es && image.data.len() == es * bs;
        let intact = whole
            && image
                .contexts
                .iter()
                .zip(image.data.chunks(bs))
                .all(|(ctx, blk)| ctx.verify(blk));
        if !intact {
            self.source_failed(c, whole.then_some(image));
            return;
        }
        let replace = step.replace;
        self.give_image(replace, image);
        self.repair_progress(id);
    }

    /// Attaches the image to the step's replace job and sends it to every
    /// destination waiting for it.
    fn give_image(&mut self, replace: u64, image: Image) {
        let Some(r) = self.table.get_mut(replace) else {
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
            self.send(d, replace);
        }
    }

    /// The current step's source `c` sent an image that fails its contexts
    /// (`image`, kept for merging) or could not read the extent (None).
    /// The extent is fetched from the next source for the same replace
    /// job; at activation the failed source becomes one of its
    /// destinations and the new source is stamped once its image is intact.
    pub(super) fn source_failed(&mut self, c: usize, image: Option<Image>) {
        let reconciling = matches!(self.repair, RepairState::Reconcile { .. });
        let Some(step) = self.repair.step_mut().filter(|s| s.source == c) else {
            return;
        };
        step.rejected.extend(image);
        if step.fallbacks.is_empty() {
            self.finish_by_merging();
            return;
        }
        let next = step.fallbacks.remove(0);
        let (extent, replace) = (step.extent, step.replace);
        tracing::warn!(
            client = c,
            extent,
            next_source = next,
            "repair source's copy of the extent is damaged; fetching it from another downstairs"
        );
        if reconciling && let Some(r) = self.table.get_mut(replace) {
            // Not yet sent anywhere: the image has not arrived.
            r.on[c] = On::Queued;
            r.on[next] = On::NotFor;
        }
        let fetch = self.submit_fetch(extent, next);
        if let Some(s) = self.repair.step_mut() {
            s.source = next;
            s.fetch = Some(fetch);
            s.stamp = reconciling.then_some(next);
        }
    }

    /// No source holds the extent intact: build the copy block by block
    /// from the failed images, each block from the first fetched (at
    /// activation the freshest) image in which it is intact, and give it to
    /// the replace job — at activation for all three downstairs.
    fn finish_by_merging(&mut self) {
        let reconciling = matches!(self.repair, RepairState::Reconcile { .. });
        let bs = self.block_size() as usize;
        let Some(step) = self.repair.step_mut() else {
            return;
        };
        step.fetch = None;
        // At activation the merged copy goes to all three: nothing to stamp.
        step.stamp = None;
        let (extent, replace, sources) = (step.extent, step.replace, step.rejected.len());
        let version = step
            .target
            .or(step.rejected.first().map(|i| i.version))
            .unwrap_or_default();
        match merge(&step.rejected, version, bs) {
            Ok(image) => {
                tracing::warn!(
                    extent,
                    sources,
                    "no downstairs holds the extent intact; copying it block by block from the intact blocks of each"
                );
                if reconciling && let Some(r) = self.table.get_mut(replace) {
                    r.on = [On::Queued; CLIENTS];
                }
                self.give_image(replace, image);
            }
            Err(b) => {
                let e = if sources == 0 {
                    BlockError::corrupt(format!("extent {extent}"), "no downstairs could read it")
                } else {
                    BlockError::corrupt(
                        format!("block {}", self.extent_range(extent).start + b),
                        format!("damaged on every downstairs that holds it (extent {extent})"),
                    )
                };
                if reconciling {
                    self.halt(e);
                } else {
                    let RepairState::Live { client, .. } = self.repair else {
                        return;
                    };
                    tracing::error!(client, error = %e, "live repair cannot complete; retrying later");
                    self.clients[client].repair_after = Some(self.now + LIVE_REPAIR_BACKOFF);
                    self.fault(client, "live repair found a block no source holds intact");
                }
            }
        }
    }

    /// Called on every acknowledgement: moves repair on when the current
    /// step is final everywhere.
    pub(super) fn repair_progress(&mut self, id: u64) {
        let Some(step) = self.repair.step() else {
            return;
        };
        if Some(id) != step.fetch && id != step.replace && Some(id) != step.stamp_job {
            return;
        }
        let mut ids = [step.fetch, Some(step.replace), step.stamp_job]
            .into_iter()
            .flatten();
        let finished = |id: u64| {
            self.table
                .get(id)
                .is_none_or(|j| j.on.iter().all(|o| o.is_final()))
        };
        if !ids.all(finished) {
            return;
        }
        if let (Some(source), Some(target)) = (step.stamp, step.target) {
            // Every destination holds the copy: only now may the source
            // claim the version the copies took.
            let extent = step.extent;
            let job = self.submit_stamp(extent, source, target);
            if let Some(s) = self.repair.step_mut() {
                s.stamp = None;
                s.stamp_job = Some(job);
            }
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
        let mut sources = (0..CLIENTS).filter(|&c| self.clients[c].mode == Mode::Active);
        let Some(source) = sources.next() else {
            self.fault(client, "no active downstairs to repair from");
            return;
        };
        let fallbacks = sources.collect();
        let mut dests = [false; CLIENTS];
        dests[client] = true;
        // Advance first: jobs created from now on that touch this extent go
        // to the repairing downstairs, after the copy.
        self.repair = RepairState::Live {
            client,
            next: extent + 1,
            step: None,
        };
        let step = self.submit_step(extent, source, dests, None, false, fallbacks);
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
        let now = self.now;
        let Some(c) = (0..CLIENTS).find(|&c| {
            let cl = &self.clients[c];
            cl.mode == Mode::Faulted
                && cl.conn.is_some()
                && cl.repair_after.is_none_or(|t| now >= t)
        }) else {
            return;
        };
        if self.any_active().is_none() {
            return;
        }
        tracing::info!(client = c, "starting live repair");
        self.clients[c].mode = Mode::Repair;
        let dirty: Vec<u32> = (0..)
            .zip(&self.clients[c].versions)
            .filter(|(_, v)| v.dirty)
            .map(|(e, _)| e)
            .collect();
        for e in dirty {
            self.submit_stamp(e, c, ExtentVersion::default());
        }
        // Its snapshots first, then a flush that only raises its flush
        // mark to the others' (nothing on it is dirty now): guest writes
        // it gets from now on are born as on the source, after every
        // snapshot, and keep what those snapshots need (module comment).
        let active: Vec<&[Snapshot]> = (0..CLIENTS)
            .filter(|&a| self.clients[a].mode == Mode::Active)
            .map(|a| self.clients[a].snapshots.as_slice())
            .collect();
        let truth = union_snapshots(&active);
        self.sync_catalog(c, &truth);
        self.submit_flush(Waiter::None, None);
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
        } = &self.repair
            && s.source == c
        {
            let client = *client;
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
        let p = plan(&versions, [true; CLIENTS], [None; CLIENTS]);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].extent, p[0].order), (1, [1, 0, 2]));
        assert_eq!(
            (p[1].extent, p[1].order),
            (2, [0, 1, 2]),
            "generation beats flush"
        );
        assert_eq!(
            (p[2].extent, p[2].order),
            (3, [1, 2, 0]),
            "dirty beats clean, ties to lowest"
        );
        assert!(p[2].stamp && !p[0].stamp);
        assert_eq!(p[2].target, v(1, 1, false));
    }

    /// A downstairs lacking a snapshot has every extent it wrote or
    /// stamped since that snapshot copied from one that holds it.
    #[test]
    fn plan_copies_what_a_replica_lacking_a_snapshot_wrote_since() {
        let same = vec![v(1, 3, false), v(1, 6, false), v(1, 9, false)];
        let versions = [same.clone(), same.clone(), same];
        assert!(plan(&versions, [true; CLIENTS], [None; CLIENTS]).is_empty());
        let p = plan(&versions, [false, true, true], [Some(6), None, None]);
        assert_eq!(p.iter().map(|p| p.extent).collect::<Vec<_>>(), vec![1, 2]);
        assert!(p.iter().all(|p| p.order[0] == 1), "from a holder");
        let union =
            union_snapshots(&[&[snap("a", 2), snap("b", 4)], &[snap("a", 2), snap("c", 3)]]);
        assert_eq!(
            union.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["a", "c", "b"]
        );
        let (delete, record) = catalog_diff(&[snap("a", 2), snap("x", 5)], &union);
        assert_eq!(delete, vec!["x".to_string()]);
        assert_eq!(record, vec![snap("c", 3), snap("b", 4)]);
    }

    fn snap(name: &str, flush: u64) -> Snapshot {
        Snapshot {
            name: name.into(),
            guid: flush as u128,
            flush,
            created: 0,
        }
    }

    fn image(blocks: &[&[u8]], bs: usize, damaged: &[usize]) -> Image {
        let mut data = vec![];
        let mut contexts = vec![];
        for (i, b) in blocks.iter().enumerate() {
            let mut blk = vec![0u8; bs];
            blk[..b.len()].copy_from_slice(b);
            contexts.push(crate::context::BlockContext::Data(
                crate::context::block_crc(&blk),
            ));
            if damaged.contains(&i) {
                blk[bs - 1] ^= 0xff;
            }
            data.extend_from_slice(&blk);
        }
        Image {
            version: v(1, 1, false),
            births: vec![0; contexts.len()],
            contexts,
            saved: vec![],
            data: Bytes::from(data),
        }
    }

    #[test]
    fn merge_takes_each_block_from_the_first_image_holding_it_intact() {
        let bs = 16;
        let a = image(&[b"a0", b"a1", b"a2"], bs, &[1]);
        let b = image(&[b"b0", b"b1", b"b2"], bs, &[0, 2]);
        let m = merge(&[a.clone(), b.clone()], v(3, 4, false), bs).unwrap();
        assert_eq!(m.version, v(3, 4, false));
        assert_eq!(&m.data[..2], b"a0");
        assert_eq!(&m.data[bs..bs + 2], b"b1");
        assert_eq!(&m.data[2 * bs..2 * bs + 2], b"a2");
        assert!(
            m.contexts
                .iter()
                .zip(m.data.chunks(bs))
                .all(|(c, d)| c.verify(d))
        );
        // In the other order the second image wins where both are intact.
        let m = merge(&[b, a], v(3, 4, false), bs).unwrap();
        assert_eq!(&m.data[bs..bs + 2], b"b1");
        assert_eq!(&m.data[..2], b"a0");
    }

    #[test]
    fn merge_names_a_block_damaged_everywhere() {
        let bs = 16;
        let a = image(&[b"a0", b"a1", b"a2"], bs, &[2]);
        let b = image(&[b"b0", b"b1", b"b2"], bs, &[1, 2]);
        assert_eq!(merge(&[a, b], v(1, 1, false), bs).err(), Some(2));
        assert_eq!(merge(&[], v(1, 1, false), bs).err(), Some(0));
    }
}
