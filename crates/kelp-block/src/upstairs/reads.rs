//! Reads: each goes to one active downstairs (round robin) and every block
//! is checked against its context. A read that fails there (a bad block, a
//! job error, the downstairs dropping out) is sent to another active
//! downstairs; good data found after a bad copy is written back to all.

use bytes::Bytes;

use super::jobs::{CLIENTS, JobTable, Kind, On, Waiter};
use super::state::{Mode, Output, Upstairs};
use crate::context::{BlockContext, block_crc};
use crate::error::BlockError;

/// A read that already failed somewhere: where not to send it again, and
/// the block that last failed its context (set means a bad copy needs
/// rewriting once good data is found).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReadRetry {
    pub excluded: [bool; CLIENTS],
    pub damaged: Option<u64>,
}

impl Upstairs {
    pub(super) fn submit_read(
        &mut self,
        start: u64,
        count: u64,
        snapshot: Option<String>,
        waiter: Waiter,
        retry: ReadRetry,
    ) {
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
            self.answer(waiter, Err(e));
            return;
        }
        self.rr = self.rr.wrapping_add(1);
        let c = active[self.rr % active.len()];
        let mut on = [On::NotFor; CLIENTS];
        on[c] = On::Sent;
        let id = self.table.create(
            Kind::Read {
                start,
                count,
                snapshot,
            },
            Some(start..start + count),
            on,
            waiter,
        );
        self.reads.insert(id, retry);
        self.send(c, id);
    }

    pub(super) fn on_read_reply(
        &mut self,
        c: usize,
        id: u64,
        contexts: Vec<BlockContext>,
        data: Bytes,
    ) {
        let bs = self.block_size() as usize;
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        if j.on[c] != On::Sent {
            return;
        }
        let Kind::Read {
            start,
            count,
            ref snapshot,
        } = j.kind
        else {
            return;
        };
        let snapshot = snapshot.clone();
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
            self.submit_read(start, count, snapshot, waiter, retry);
            return;
        }
        j.on[c] = On::Done;
        self.answer(waiter, Ok(Output::Data(data.clone())));
        // A read that has finished is never replayed and nothing depends on
        // it any more; drop it now, or a read-only workload (no flushes, so
        // no retirement) would grow the table without bound.
        if self.table.get(id).is_some_and(JobTable::finished) {
            self.table.remove(id);
            self.reads.remove(&id);
        }
        // (Never for a snapshot read: its data is not the live volume's;
        // a snapshot's damaged copy is left as it is.)
        if retry.damaged.is_some()
            && snapshot.is_none()
            && !self.table.modified_since(id, &(start..start + count))
        {
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

    /// Moves a read that cannot finish on `c` to another downstairs.
    pub(super) fn reroute_read(&mut self, c: usize, id: u64) {
        let Some(j) = self.table.get_mut(id) else {
            return;
        };
        let Kind::Read {
            start,
            count,
            ref snapshot,
        } = j.kind
        else {
            return;
        };
        let snapshot = snapshot.clone();
        if j.on[c] != On::Sent {
            return;
        }
        j.on[c] = On::Skipped;
        let waiter = std::mem::replace(&mut j.waiter, Waiter::None);
        j.acked = true;
        let mut retry = self.reads.get(&id).copied().unwrap_or_default();
        retry.excluded[c] = true;
        self.submit_read(start, count, snapshot, waiter, retry);
    }
}
