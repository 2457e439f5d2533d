//! The upstairs job table: every guest request and every repair step is a
//! job with an id, a block range and dependencies on earlier jobs, tracked
//! per downstairs until it can be retired.
//!
//! Dependency rule (computed once, when the job is created):
//! - a job depends on every earlier unfinished job whose block range
//!   overlaps its own, except that two reads never depend on each other;
//! - a flush depends on every earlier unfinished job, and every later job
//!   depends on the most recent unfinished flush (so a flush is a barrier
//!   and only jobs after it need scanning).
//!
//! When a job is sent to one downstairs its dependency list is cut to the
//! jobs that downstairs has been given and not yet acknowledged (`deps_for`);
//! the downstairs runs a job only after all its listed dependencies.
//!
//! Retirement: once a flush has been acknowledged by every downstairs that
//! takes part, it and every job before it are final everywhere and are
//! dropped. Until then they are kept so a downstairs that drops out briefly
//! can be replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;

use crate::catalog::Snapshot;
use crate::context::BlockContext;
use crate::extent::ExtentVersion;

/// An extent's contents in flight from a repair source to its destinations.
#[derive(Debug, Clone)]
pub struct Image {
    pub version: ExtentVersion,
    pub contexts: Vec<BlockContext>,
    pub births: Vec<u64>,
    pub saved: Vec<crate::saved::SavedVersion>,
    pub data: Bytes,
}

pub const CLIENTS: usize = 3;

/// A job's state on one downstairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// Not meant for this downstairs (a read sent elsewhere, a repair step).
    NotFor,
    /// Meant for it but not sent yet (it is offline, or the data is not
    /// here yet).
    Queued,
    Sent,
    Done,
    /// It failed there, or the downstairs was faulted: it will be repaired
    /// instead.
    Skipped,
}

impl On {
    pub fn is_final(self) -> bool {
        matches!(self, On::NotFor | On::Done | On::Skipped)
    }
    pub fn outstanding(self) -> bool {
        matches!(self, On::Queued | On::Sent)
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    Write {
        start: u64,
        crcs: Vec<u32>,
        data: Bytes,
    },
    WriteZeroes {
        start: u64,
        count: u64,
    },
    /// A read of the live volume, or with `snapshot` of that snapshot.
    Read {
        start: u64,
        count: u64,
        snapshot: Option<String>,
    },
    /// With `snapshot`, a flush that takes that snapshot (at `flush`).
    Flush {
        flush: u64,
        generation: u64,
        snapshot: Option<Snapshot>,
    },
    /// Deletes a snapshot on every downstairs; runs between flushes.
    SnapshotDelete {
        name: String,
    },
    /// Gives one downstairs that was away a snapshot the others hold
    /// (repair.rs, "Snapshots of a replica that was away").
    SnapshotRecord {
        snapshot: Snapshot,
    },
    ExtentFetch {
        extent: u32,
    },
    ExtentReplace {
        extent: u32,
        image: Option<Image>,
    },
    ExtentStamp {
        extent: u32,
        flush: u64,
        generation: u64,
    },
}

impl Kind {
    pub fn is_read(&self) -> bool {
        matches!(self, Kind::Read { .. } | Kind::ExtentFetch { .. })
    }
    pub fn is_flush(&self) -> bool {
        matches!(self, Kind::Flush { .. })
    }
    pub fn modifies(&self) -> bool {
        !self.is_read() && !self.is_flush()
    }
    pub fn bytes(&self) -> usize {
        match self {
            Kind::Write { data, .. } => data.len(),
            Kind::ExtentReplace { image: Some(i), .. } => i.data.len(),
            _ => 0,
        }
    }
}

/// Who is waiting for a job: nobody, or the guest request (its id, given
/// by the driver) that the job answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    None,
    Guest(u64),
}

#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub kind: Kind,
    /// Blocks touched; None = all (a flush).
    pub range: Option<Range<u64>>,
    pub deps: Vec<u64>,
    pub on: [On; CLIENTS],
    pub waiter: Waiter,
    /// Reported to the guest already.
    pub acked: bool,
    /// Acknowledge only when every downstairs has done it (used to drain
    /// before a clean shutdown).
    pub need_all: bool,
    /// A downstairs failed it for lack of space: if it fails, it is ENOSPC.
    pub no_space: bool,
    /// A downstairs refused it as asked (deleting a snapshot a clone still
    /// reads): the guest gets this, and no downstairs is faulted for it.
    pub refused: Option<String>,
}

fn overlaps(a: &Option<Range<u64>>, b: &Option<Range<u64>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.start < b.end && b.start < a.end,
        _ => true,
    }
}

#[derive(Debug, Default)]
pub struct JobTable {
    jobs: BTreeMap<u64, Job>,
    next_id: u64,
    /// Most recent flush still in the table.
    last_flush: Option<u64>,
    /// Ids of jobs that may still be unfinished somewhere: a superset of
    /// the unfinished jobs, pruned lazily by `create`, so the dependency
    /// scan looks only at jobs in flight rather than at everything since
    /// the last flush. A job made outstanding again (replay) is put back
    /// with `reopen`.
    open: BTreeSet<u64>,
}

impl JobTable {
    pub fn new(first_id: u64) -> Self {
        JobTable {
            jobs: BTreeMap::new(),
            next_id: first_id,
            last_flush: None,
            open: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Job> {
        self.jobs.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.jobs.keys().copied().collect()
    }

    pub fn bytes(&self) -> usize {
        self.jobs.values().map(|j| j.kind.bytes()).sum()
    }

    /// Final on every downstairs.
    pub fn finished(j: &Job) -> bool {
        j.on.iter().all(|o| o.is_final())
    }

    /// Creates a job, computing its dependencies; `on` says which
    /// downstairs take part (the caller then sends it).
    pub fn create(
        &mut self,
        kind: Kind,
        range: Option<Range<u64>>,
        on: [On; CLIENTS],
        waiter: Waiter,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let is_flush = kind.is_flush();
        let is_read = kind.is_read();
        let from = self.last_flush.unwrap_or(0);
        let mut deps = Vec::new();
        let mut done = Vec::new();
        for &o in self.open.range(from..) {
            let Some(j) = self.jobs.get(&o).filter(|j| !Self::finished(j)) else {
                done.push(o);
                continue;
            };
            if is_flush
                || j.kind.is_flush()
                || (overlaps(&j.range, &range) && !(is_read && j.kind.is_read()))
            {
                deps.push(o);
            }
        }
        for o in done {
            self.open.remove(&o);
        }
        if is_flush {
            self.last_flush = Some(id);
        }
        self.jobs.insert(
            id,
            Job {
                id,
                kind,
                range,
                deps,
                on,
                waiter,
                acked: false,
                need_all: false,
                no_space: false,
                refused: None,
            },
        );
        self.open.insert(id);
        id
    }

    /// Puts a job that had finished back among those new jobs may depend
    /// on (it was made outstanding again, e.g. replayed).
    pub fn reopen(&mut self, id: u64) {
        if self.jobs.contains_key(&id) {
            self.open.insert(id);
        }
    }

    /// The job's dependencies that downstairs `c` still has outstanding.
    pub fn deps_for(&self, id: u64, c: usize) -> Vec<u64> {
        let Some(j) = self.jobs.get(&id) else {
            return vec![];
        };
        j.deps
            .iter()
            .copied()
            .filter(|d| self.jobs.get(d).is_some_and(|dj| dj.on[c].outstanding()))
            .collect()
    }

    /// Any job created after `after` that modifies blocks in `range`.
    pub fn modified_since(&self, after: u64, range: &Range<u64>) -> bool {
        self.jobs
            .range(after + 1..)
            .any(|(_, j)| j.kind.modifies() && overlaps(&j.range, &Some(range.clone())))
    }

    /// Drops every job up to the newest flush such that it and every job
    /// before it are final on every downstairs. Returns how many were
    /// dropped.
    pub fn retire(&mut self) -> usize {
        let mut upto = None;
        for (&id, j) in &self.jobs {
            if !Self::finished(j) {
                break;
            }
            if j.kind.is_flush() {
                upto = Some(id);
            }
        }
        let Some(upto) = upto else { return 0 };
        let keep = self.jobs.split_off(&(upto + 1));
        let dropped = std::mem::replace(&mut self.jobs, keep);
        self.open = self.open.split_off(&(upto + 1));
        if self.last_flush.is_some_and(|f| f <= upto) {
            self.last_flush = None;
        }
        dropped.len()
    }

    pub fn remove(&mut self, id: u64) -> Option<Job> {
        let j = self.jobs.remove(&id);
        self.open.remove(&id);
        if self.last_flush == Some(id) {
            self.last_flush = None;
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [On; CLIENTS] = [On::Sent; CLIENTS];

    fn w(t: &mut JobTable, r: Range<u64>) -> u64 {
        t.create(
            Kind::WriteZeroes {
                start: r.start,
                count: r.end - r.start,
            },
            Some(r),
            ALL,
            Waiter::None,
        )
    }
    fn rd(t: &mut JobTable, r: Range<u64>) -> u64 {
        t.create(
            Kind::Read {
                start: r.start,
                count: r.end - r.start,
                snapshot: None,
            },
            Some(r),
            [On::Sent, On::NotFor, On::NotFor],
            Waiter::None,
        )
    }
    fn fl(t: &mut JobTable) -> u64 {
        t.create(
            Kind::Flush {
                flush: 1,
                generation: 1,
                snapshot: None,
            },
            None,
            ALL,
            Waiter::None,
        )
    }
    fn done(t: &mut JobTable, id: u64) {
        for o in &mut t.get_mut(id).unwrap().on {
            if *o == On::Sent {
                *o = On::Done;
            }
        }
    }

    #[test]
    fn dependencies() {
        let mut t = JobTable::new(1000);
        let a = w(&mut t, 0..4);
        let b = w(&mut t, 4..8);
        let c = rd(&mut t, 2..6);
        let d = rd(&mut t, 3..4);
        assert_eq!(t.get(c).unwrap().deps, vec![a, b]);
        assert_eq!(
            t.get(d).unwrap().deps,
            vec![a],
            "reads do not wait for reads"
        );
        let e = w(&mut t, 5..6);
        assert_eq!(t.get(e).unwrap().deps, vec![b, c]);
        done(&mut t, a);
        let f = fl(&mut t);
        assert_eq!(t.get(f).unwrap().deps, vec![b, c, d, e]);
        let g = w(&mut t, 100..101);
        assert_eq!(
            t.get(g).unwrap().deps,
            vec![f],
            "later jobs wait for the flush"
        );
        // Per-client: client 1 never got the reads.
        assert_eq!(t.deps_for(e, 1), vec![b]);
        assert_eq!(t.deps_for(e, 0), vec![b, c]);
    }

    #[test]
    fn replayed_jobs_are_dependencies_again() {
        let mut t = JobTable::new(1);
        let a = w(&mut t, 0..4);
        done(&mut t, a);
        let b = w(&mut t, 0..4);
        assert!(t.get(b).unwrap().deps.is_empty(), "a finished");
        done(&mut t, b);
        // Replayed to client 0.
        t.get_mut(a).unwrap().on[0] = On::Sent;
        t.reopen(a);
        let c = w(&mut t, 2..3);
        assert_eq!(t.get(c).unwrap().deps, vec![a]);
    }

    #[test]
    fn retirement() {
        let mut t = JobTable::new(1);
        let a = w(&mut t, 0..1);
        let f = fl(&mut t);
        let b = w(&mut t, 0..1);
        done(&mut t, a);
        assert_eq!(t.retire(), 0);
        done(&mut t, f);
        assert_eq!(t.retire(), 2);
        assert!(t.get(b).is_some());
        assert_eq!(t.get(b).unwrap().deps, vec![f]);
        assert!(t.deps_for(b, 0).is_empty(), "retired deps are dropped");
        assert!(t.modified_since(a, &(0..1)));
    }
}
