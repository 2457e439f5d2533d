//! What the guest may see. Every write gets a sequence number (the order
//! the upstairs took it, which is the order it is applied in) and fills
//! each block with a pattern naming (write tag, block), so a read names
//! the write it returns.
//!
//! Per block, a read must return the initial zeros or a value some write
//! put there, and not older than its floor when the read was issued:
//! - the durable floor: the newest write to the block that was
//!   acknowledged, in the same upstairs incarnation, before a flush that
//!   has since been acknowledged (or a FUA write itself) — every
//!   acknowledged flush survives crashes, restarts and repair;
//! - within one upstairs incarnation, also the newest write it
//!   acknowledged (read your writes).
//!
//! A write that failed, or whose upstairs died, may or may not have
//! happened: its value is allowed but raises no floor.

use std::ops::Range;

pub const BS: usize = 512;

/// The block a write with `tag` puts at `block` (tag 0 = zeros).
pub fn pattern(tag: u32, block: u64) -> Vec<u8> {
    if tag == 0 {
        return vec![0; BS];
    }
    let mut b = vec![(tag as u8) ^ (block as u8) ^ 0x5a; BS];
    b[..4].copy_from_slice(&tag.to_le_bytes());
    b[4..12].copy_from_slice(&block.to_le_bytes());
    b
}

struct Rec {
    seq: u64,
    tag: u32,
}

/// A write as issued.
pub struct Issued {
    pub seq: u64,
    pub range: Range<u64>,
    pub incarnation: u32,
    pub fua: bool,
}

pub struct Oracle {
    next_seq: u64,
    next_tag: u32,
    /// Per block, every write ever issued to it.
    writes: Vec<Vec<Rec>>,
    /// Per block, the durable floor (a sequence number; 0 = the zeros the
    /// region started with still allowed).
    pub durable: Vec<u64>,
    /// Per block, the newest write acknowledged by the current
    /// incarnation.
    acked: Vec<u64>,
    /// Writes of the current incarnation acknowledged so far: (seq, range).
    acked_writes: Vec<(u64, Range<u64>)>,
    pub incarnation: u32,
}

impl Oracle {
    pub fn new(blocks: u64) -> Self {
        Oracle {
            next_seq: 1,
            next_tag: 1,
            writes: (0..blocks).map(|_| vec![]).collect(),
            durable: vec![0; blocks as usize],
            acked: vec![0; blocks as usize],
            acked_writes: vec![],
            incarnation: 0,
        }
    }

    /// A new upstairs took over: its predecessor's acknowledged but
    /// unflushed writes guarantee nothing any more.
    pub fn new_incarnation(&mut self, incarnation: u32) {
        self.incarnation = incarnation;
        self.acked.iter_mut().for_each(|a| *a = 0);
        self.acked_writes.clear();
    }

    pub fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// A write (zeros if `zero`) of `range` is issued by `incarnation`;
    /// returns its tag and record.
    pub fn write(
        &mut self,
        range: Range<u64>,
        zero: bool,
        fua: bool,
        incarnation: u32,
    ) -> (u32, Issued) {
        let seq = self.seq();
        let tag = if zero {
            0
        } else {
            self.next_tag += 1;
            self.next_tag - 1
        };
        for b in range.clone() {
            self.writes[b as usize].push(Rec { seq, tag });
        }
        (
            tag,
            Issued {
                seq,
                range,
                incarnation,
                fua,
            },
        )
    }

    /// A write was acknowledged.
    pub fn write_acked(&mut self, w: &Issued) {
        if w.incarnation != self.incarnation {
            return;
        }
        for b in w.range.clone() {
            let a = &mut self.acked[b as usize];
            *a = (*a).max(w.seq);
            if w.fua {
                let d = &mut self.durable[b as usize];
                *d = (*d).max(w.seq);
            }
        }
        self.acked_writes.push((w.seq, w.range.clone()));
    }

    /// A flush issued as `flush_seq` by `incarnation` was acknowledged:
    /// every write of that incarnation issued before it and acknowledged
    /// is durable.
    pub fn flush_acked(&mut self, flush_seq: u64, incarnation: u32) {
        if incarnation != self.incarnation {
            return;
        }
        for (seq, range) in &self.acked_writes {
            if *seq < flush_seq {
                for b in range.clone() {
                    let d = &mut self.durable[b as usize];
                    *d = (*d).max(*seq);
                }
            }
        }
    }

    /// The floors of `range` for a read issued now.
    pub fn floors(&self, range: Range<u64>) -> Vec<u64> {
        range
            .map(|b| self.durable[b as usize].max(self.acked[b as usize]))
            .collect()
    }

    /// Checks one block a read returned against the floor it had when
    /// issued.
    pub fn check_block(&self, block: u64, data: &[u8], floor: u64) -> Result<(), String> {
        let recs = &self.writes[block as usize];
        let (tag, seq) = if data.iter().all(|&b| b == 0) {
            let newest_zero = recs.iter().filter(|r| r.tag == 0).map(|r| r.seq).max();
            (0, newest_zero.unwrap_or(0))
        } else {
            let tag = u32::from_le_bytes(data[..4].try_into().unwrap());
            let Some(r) = recs.iter().find(|r| r.tag == tag) else {
                return Err(format!(
                    "block {block}: read a value no write put there (tag {tag})"
                ));
            };
            if data != pattern(tag, block).as_slice() {
                return Err(format!("block {block}: torn or mixed data (tag {tag})"));
            }
            (tag, r.seq)
        };
        if seq < floor {
            let want: Vec<_> = recs
                .iter()
                .filter(|r| r.seq >= floor)
                .map(|r| (r.seq, r.tag))
                .collect();
            return Err(format!(
                "block {block}: read write seq {seq} (tag {tag}), older than its floor {floor}; \
                 allowed (seq, tag): {want:?}"
            ));
        }
        Ok(())
    }
}
