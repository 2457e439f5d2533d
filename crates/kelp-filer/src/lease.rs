//! File ids for chunks, reserved from the master in batches ([`Lease`]).
//!
//! One assign with `count = N` reserves N consecutive keys. The lease is
//! recorded in the store (durably) before the first of them is handed
//! out, so that after a crash every id that might have been uploaded but
//! never committed is known: at start the filer queues each id of its
//! leftover leases that no entry references for the collector. A lease is
//! dropped once each of its ids is committed in an entry or queued as
//! garbage; the drop rides on the next commit.

use std::sync::Arc;

use kelp_client::{AssignRequest, Client};
use parking_lot::Mutex;

use crate::error::FilerError;
use crate::store::{Backend, Lease, Op, Txn};

/// Where one chunk goes.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub fid: String,
    pub url: String,
    pub auth: Option<String>,
    pub lease: u64,
}

struct Active {
    lease: Lease,
    url: String,
    auth: Option<String>,
    /// Ids handed out so far.
    next: u32,
    /// Ids committed or queued as garbage.
    settled: u32,
}

pub struct LeasePool {
    store: Arc<dyn Backend>,
    client: Client,
    assign: AssignRequest,
    size: u32,
    owner: String,
    /// The lease ids are handed out from, and those still being settled.
    active: Mutex<Vec<Active>>,
    /// Leases fully settled, to be dropped with the next commit.
    done: Mutex<Vec<u64>>,
    /// One assign at a time.
    assigning: tokio::sync::Mutex<()>,
}

impl LeasePool {
    pub fn new(
        store: Arc<dyn Backend>,
        client: Client,
        assign: AssignRequest,
        size: u32,
        owner: String,
    ) -> Self {
        Self {
            store,
            client,
            assign,
            size: size.max(1),
            owner,
            active: Mutex::new(Vec::new()),
            done: Mutex::new(Vec::new()),
            assigning: tokio::sync::Mutex::new(()),
        }
    }

    fn take_from_current(&self) -> Option<Ticket> {
        let mut active = self.active.lock();
        let a = active.last_mut()?;
        if a.next >= a.lease.count {
            return None;
        }
        let fids = a.lease.fids();
        let fid = fids.get(a.next as usize)?.clone();
        a.next += 1;
        Some(Ticket {
            fid,
            url: a.url.clone(),
            auth: a.auth.clone(),
            lease: a.lease.id,
        })
    }

    /// A file id to upload one chunk to.
    pub async fn take(&self, now_ns: i64) -> Result<Ticket, FilerError> {
        if let Some(t) = self.take_from_current() {
            return Ok(t);
        }
        let _one = self.assigning.lock().await;
        if let Some(t) = self.take_from_current() {
            return Ok(t);
        }
        let mut req = self.assign.clone();
        req.count = u64::from(self.size);
        let a = self.client.assign(&req).await?;
        // A signed cluster's write token covers the first id only.
        let count = if a.auth.is_some() {
            1
        } else {
            a.count.clamp(1, u64::from(self.size)) as u32
        };
        let mut lease = Lease {
            id: lease_id(now_ns),
            fid: a
                .fid
                .parse::<kelp_core::FileId>()
                .map_err(|e| FilerError::BadRequest(format!("master assigned {:?}: {e}", a.fid)))?
                .to_string(),
            count,
            created_ns: now_ns,
            owner: self.owner.clone(),
        };
        let mut tries = 0;
        loop {
            match self
                .store
                .commit(Txn::one(Op::PutLease(lease.clone())), now_ns)
                .await
            {
                Ok(_) => break,
                // Another filer of the store took this id: take the next.
                Err(FilerError::Exists(_)) if tries < 8 => {
                    tries += 1;
                    lease.id = lease_id(now_ns);
                }
                Err(e) => return Err(e),
            }
        }
        // The first id is this caller's, taken under the same lock that
        // publishes the lease: another task may take the others at once.
        let ticket = Ticket {
            fid: lease.fid.clone(),
            url: a.url.clone(),
            auth: a.auth.clone(),
            lease: lease.id,
        };
        let mut active = self.active.lock();
        active.push(Active {
            lease,
            url: a.url,
            auth: a.auth,
            next: 1,
            settled: 0,
        });
        self.retire_locked(&mut active);
        Ok(ticket)
    }

    /// The ticket's id is committed in an entry or queued as garbage.
    pub fn settle(&self, t: &Ticket) {
        let mut active = self.active.lock();
        if let Some(a) = active.iter_mut().find(|a| a.lease.id == t.lease) {
            a.settled += 1;
        }
        self.retire_locked(&mut active);
    }

    /// Stops handing out ids of the current lease (its volume failed); the
    /// ids never handed out count as settled.
    pub fn abandon(&self, lease: u64) {
        let mut active = self.active.lock();
        if let Some(a) = active.iter_mut().find(|a| a.lease.id == lease) {
            a.settled += a.lease.count - a.next;
            a.next = a.lease.count;
        }
        self.retire_locked(&mut active);
    }

    fn retire_locked(&self, active: &mut Vec<Active>) {
        let mut done = self.done.lock();
        active.retain(|a| {
            let finished = a.next >= a.lease.count && a.settled >= a.lease.count;
            if finished {
                done.push(a.lease.id);
            }
            !finished
        });
    }

    /// Leases to drop with the next commit.
    pub fn drain_done(&self) -> Vec<u64> {
        std::mem::take(&mut *self.done.lock())
    }

    /// Leases [`Self::drain_done`] gave whose commit failed: they ride on
    /// a later one. (Dropping a lease twice is harmless.)
    pub fn undrain(&self, ids: Vec<u64>) {
        self.done.lock().extend(ids);
    }
}

/// Lease ids are their creation time in nanoseconds, made unique in this
/// process (the store refuses an id another filer already holds).
fn lease_id(now_ns: i64) -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let want = now_ns.max(0) as u64;
    let mut last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        let id = want.max(last + 1);
        match LAST.compare_exchange(
            last,
            id,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => return id,
            Err(l) => last = l,
        }
    }
}
