//! In-memory index of a volume: needle key -> (offset, size) of its live
//! version, with the counters SeaweedFS reports for a volume.
//!
//! Memory layout, chosen to stay near 16 bytes per live needle:
//! * `main`: a `Vec` of packed 16-byte slots `(key u64, offset/8 low 32
//!   bits u32, size u32)`, sorted by key, binary searched. Keys come from
//!   the master's sequencer and mostly arrive in increasing order, so most
//!   inserts are a push. The Vec grows by 1/8 (not doubling), and deleted
//!   keys are first marked dead (size = `DEAD`) and squeezed out in place
//!   once they are more than 1/8 of the slots.
//! * `overlay`: a small `BTreeMap` for out-of-order keys, merged into
//!   `main` in place (backwards, no second buffer) once it exceeds 1/16 of
//!   `main` (at least `merge_min` entries).
//! * `high`: offsets of 2^32 units (32 GiB) and more exist only in 5-byte
//!   volumes; their upper bits live in this rarely used side map.
//!
//! Invariant: a key is in at most one of `main` (live or dead) and `overlay`.

use std::collections::BTreeMap;

use crate::idx::IdxEntry;
use crate::needle::PADDING;

const DEAD: u32 = u32::MAX;
const OVERLAY_ENTRY_COST: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Slot {
    key: u64,
    offset_low: u32,
    size: u32,
}

/// Where the live version of a needle is: byte offset in `.dat` and its
/// `Size` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleValue {
    pub offset: u64,
    pub size: u32,
}

/// Volume counters, SeaweedFS style: `file_count` counts every put and
/// `delete_count` every put or delete that made an older version garbage,
/// so live needles = file_count - delete_count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapCounters {
    pub file_count: u64,
    pub delete_count: u64,
    pub deleted_bytes: u64,
    pub content_bytes: u64,
    pub max_file_key: u64,
}

#[derive(Debug, Clone)]
pub struct NeedleMap {
    main: Vec<Slot>,
    dead: usize,
    overlay: BTreeMap<u64, (u64, u32)>,
    high: BTreeMap<u64, u32>,
    live: usize,
    counters: MapCounters,
    merge_min: usize,
}

impl Default for NeedleMap {
    fn default() -> Self {
        Self::new()
    }
}

impl NeedleMap {
    pub fn new() -> Self {
        Self::with_merge_min(4096)
    }

    /// Test hook: a small `merge_min` exercises merges with few keys.
    #[doc(hidden)]
    pub fn with_merge_min(merge_min: usize) -> Self {
        Self {
            main: Vec::new(),
            dead: 0,
            overlay: BTreeMap::new(),
            high: BTreeMap::new(),
            live: 0,
            counters: MapCounters::default(),
            merge_min: merge_min.max(1),
        }
    }

    /// Number of live needles.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn counters(&self) -> MapCounters {
        self.counters
    }

    pub(crate) fn set_counters(&mut self, c: MapCounters) {
        self.counters = c;
    }

    /// Heap bytes used, approximately (overlay and side-map nodes estimated).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.main.capacity() * std::mem::size_of::<Slot>()
            + (self.overlay.len() + self.high.len()) * OVERLAY_ENTRY_COST
    }

    fn find_main(&self, key: u64) -> Result<usize, usize> {
        match self.main.last() {
            None => Err(0),
            Some(last) if key > last.key => Err(self.main.len()),
            _ => self.main.binary_search_by_key(&key, |s| s.key),
        }
    }

    fn slot_value(&self, s: &Slot) -> NeedleValue {
        let hi = if self.high.is_empty() {
            0
        } else {
            self.high.get(&s.key).copied().unwrap_or(0)
        };
        NeedleValue {
            offset: ((hi as u64) << 32 | s.offset_low as u64) * PADDING,
            size: s.size,
        }
    }

    fn set_high(&mut self, key: u64, units: u64) {
        let hi = (units >> 32) as u32;
        if hi != 0 {
            self.high.insert(key, hi);
        } else if !self.high.is_empty() {
            self.high.remove(&key);
        }
    }

    pub fn get(&self, key: u64) -> Option<NeedleValue> {
        if let Some(&(units, size)) = self.overlay.get(&key) {
            return Some(NeedleValue {
                offset: units * PADDING,
                size,
            });
        }
        match self.find_main(key) {
            Ok(i) if self.main[i].size != DEAD => Some(self.slot_value(&self.main[i])),
            _ => None,
        }
    }

    /// Records a live needle at byte `offset` (a multiple of 8) and updates
    /// counters; returns the version it replaces.
    pub fn put(&mut self, key: u64, offset: u64, size: u32) -> Option<NeedleValue> {
        let old = self.set(key, offset / PADDING, size);
        let c = &mut self.counters;
        c.file_count += 1;
        c.content_bytes += size as u64;
        c.max_file_key = c.max_file_key.max(key);
        if let Some(o) = old {
            c.delete_count += 1;
            c.deleted_bytes += o.size as u64;
        }
        old
    }

    /// Removes a key and updates counters; returns the removed version.
    pub fn delete(&mut self, key: u64) -> Option<NeedleValue> {
        let old = self.remove(key);
        let c = &mut self.counters;
        c.max_file_key = c.max_file_key.max(key);
        if let Some(o) = old {
            c.delete_count += 1;
            c.deleted_bytes += o.size as u64;
        }
        old
    }

    /// Replays one `.idx` entry: last entry wins, deletions remove.
    pub fn apply(&mut self, e: &IdxEntry) {
        if e.is_deletion() {
            self.delete(e.key);
        } else {
            self.put(e.key, e.byte_offset(), e.size);
        }
    }

    fn set(&mut self, key: u64, units: u64, size: u32) -> Option<NeedleValue> {
        debug_assert!(size != DEAD);
        if let Some(v) = self.overlay.get_mut(&key) {
            let old = NeedleValue {
                offset: v.0 * PADDING,
                size: v.1,
            };
            *v = (units, size);
            return Some(old);
        }
        let slot = Slot {
            key,
            offset_low: units as u32,
            size,
        };
        match self.find_main(key) {
            Ok(i) => {
                let prev = self.main[i];
                let old = (prev.size != DEAD).then(|| self.slot_value(&prev));
                if old.is_none() {
                    self.dead -= 1;
                    self.live += 1;
                }
                self.main[i] = slot;
                self.set_high(key, units);
                old
            }
            Err(i) if i == self.main.len() => {
                if self.main.len() == self.main.capacity() {
                    self.main.reserve_exact((self.main.len() / 8).max(1024));
                }
                self.main.push(slot);
                self.set_high(key, units);
                self.live += 1;
                None
            }
            Err(_) => {
                self.overlay.insert(key, (units, size));
                self.live += 1;
                if self.overlay.len() > self.merge_min.max(self.main.len() / 16) {
                    self.merge();
                }
                None
            }
        }
    }

    fn remove(&mut self, key: u64) -> Option<NeedleValue> {
        if let Some((units, size)) = self.overlay.remove(&key) {
            self.live -= 1;
            return Some(NeedleValue {
                offset: units * PADDING,
                size,
            });
        }
        let i = self.find_main(key).ok()?;
        if self.main[i].size == DEAD {
            return None;
        }
        let old = self.slot_value(&self.main[i]);
        self.main[i].size = DEAD;
        if !self.high.is_empty() {
            self.high.remove(&key);
        }
        self.dead += 1;
        self.live -= 1;
        if self.dead > self.merge_min.max(self.main.len() / 8) {
            self.squeeze();
        }
        Some(old)
    }

    /// Drops dead slots in place.
    fn squeeze(&mut self) {
        self.main.retain(|s| s.size != DEAD);
        self.dead = 0;
    }

    /// Merges the overlay into `main` in place, from the back.
    fn merge(&mut self) {
        self.squeeze();
        let n = self.overlay.len();
        if n == 0 {
            return;
        }
        let old_len = self.main.len();
        self.main.reserve_exact(n);
        let filler = Slot {
            key: 0,
            offset_low: 0,
            size: DEAD,
        };
        self.main.resize(old_len + n, filler);
        let overlay = std::mem::take(&mut self.overlay);
        let mut ov = overlay.into_iter().rev().peekable();
        let (mut i, mut w) = (old_len, old_len + n);
        while let Some(&(k, (units, size))) = ov.peek() {
            w -= 1;
            if i > 0 && self.main[i - 1].key > k {
                self.main[w] = self.main[i - 1];
                i -= 1;
            } else {
                self.main[w] = Slot {
                    key: k,
                    offset_low: units as u32,
                    size,
                };
                self.set_high(k, units);
                ov.next();
            }
        }
    }

    /// Merges side structures and releases spare capacity (after loading).
    pub fn shrink_to_fit(&mut self) {
        self.merge();
        self.squeeze();
        self.main.shrink_to_fit();
    }

    /// Live entries in increasing key order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, NeedleValue)> + '_ {
        self.range_from(0)
    }

    /// Live entries with keys ≥ `start`, in increasing key order (so a
    /// walk over a big volume can go in bounded pieces).
    pub fn range_from(&self, start: u64) -> impl Iterator<Item = (u64, NeedleValue)> + '_ {
        let from = match self.find_main(start) {
            Ok(i) | Err(i) => i,
        };
        let mut main = self.main[from..]
            .iter()
            .filter(|s| s.size != DEAD)
            .map(|s| (s.key, self.slot_value(s)))
            .peekable();
        let mut ov = self
            .overlay
            .range(start..)
            .map(|(k, (u, s))| {
                (
                    *k,
                    NeedleValue {
                        offset: u * PADDING,
                        size: *s,
                    },
                )
            })
            .peekable();
        std::iter::from_fn(move || match (main.peek(), ov.peek()) {
            (Some(a), Some(b)) if a.0 < b.0 => main.next(),
            (Some(_), Some(_)) | (None, _) => ov.next(),
            (Some(_), None) => main.next(),
        })
    }

    /// Preallocates for `n` more pushes (checkpoint load).
    pub(crate) fn reserve_exact(&mut self, n: usize) {
        self.main.reserve_exact(n);
    }

    /// The entry whose needle starts at the highest offset.
    pub fn max_offset_entry(&self) -> Option<(u64, NeedleValue)> {
        self.iter().max_by_key(|(_, v)| v.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u64, u64, u32),
        Del(u64),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = prop_oneof![0u64..64, 0u64..4096, any::<u64>()];
        let units = prop_oneof![1u64..1000, (1u64 << 32)..(1u64 << 40)];
        prop_oneof![
            6 => (key.clone(), units, 0u32..0x7fff_ffff).prop_map(|(k, u, s)| Op::Put(k, u * 8, s)),
            3 => key.prop_map(Op::Del),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreemap_oracle(seq_start in 0u64..100, ops in proptest::collection::vec(op(), 0..400), mm in 1usize..20) {
            let mut m = NeedleMap::with_merge_min(mm);
            let mut oracle: BTreeMap<u64, NeedleValue> = BTreeMap::new();
            let mut c = MapCounters::default();
            // A run of sequencer keys first, then random operations.
            let ops = (seq_start..seq_start + 50).map(|k| Op::Put(k, k * 8 + 8, k as u32)).chain(ops);
            for op in ops {
                match op {
                    Op::Put(k, off, s) => {
                        let old = oracle.insert(k, NeedleValue { offset: off, size: s });
                        prop_assert_eq!(m.put(k, off, s), old);
                        c.file_count += 1;
                        c.content_bytes += s as u64;
                        c.max_file_key = c.max_file_key.max(k);
                        if let Some(o) = old { c.delete_count += 1; c.deleted_bytes += o.size as u64; }
                    }
                    Op::Del(k) => {
                        let old = oracle.remove(&k);
                        prop_assert_eq!(m.delete(k), old);
                        c.max_file_key = c.max_file_key.max(k);
                        if let Some(o) = old { c.delete_count += 1; c.deleted_bytes += o.size as u64; }
                    }
                    Op::Shrink => m.shrink_to_fit(),
                }
                prop_assert_eq!(m.len(), oracle.len());
            }
            prop_assert_eq!(m.counters(), c);
            for (k, v) in &oracle {
                prop_assert_eq!(m.get(*k), Some(*v));
            }
            let got: Vec<_> = m.iter().collect();
            let want: Vec<_> = oracle.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(got, want);
            for start in [0, seq_start + 25, 2048, u64::MAX] {
                let got: Vec<_> = m.range_from(start).take(30).collect();
                let want: Vec<_> = oracle.range(start..).take(30).map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(got, want, "range_from({})", start);
            }
            prop_assert_eq!(m.max_offset_entry().map(|e| e.1.offset), oracle.values().map(|v| v.offset).max());
        }
    }

    #[test]
    fn sixteen_bytes_per_needle() {
        let mut m = NeedleMap::new();
        for k in 1..=100_000u64 {
            m.put(k, k * 8, 100);
        }
        m.shrink_to_fit();
        let per = m.memory_bytes() as f64 / 100_000.0;
        assert!(per < 16.1, "{per} bytes per needle");
    }
}
