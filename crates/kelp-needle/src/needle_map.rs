//! In-memory index of a volume: needle key -> (offset, size) of its live
//! version, with the counters SeaweedFS reports for a volume.
//!
//! Memory layout, chosen to stay near 2–4 bytes per live needle when keys
//! come from the master's sequencer (increasing, small gaps) and needles are
//! appended to `.dat` in key order:
//!
//! * `blocks`: a `Vec` of 32-byte headers `(first_key u64, data Vec<u8>)`,
//!   sorted by key, one per block of up to 128 entries (`BLOCK_ENTRIES`).
//!   Block `j` holds keys in `[first_key(j), first_key(j+1))`; `first_key`
//!   is the block's first key, or a lower bound if the block was emptied.
//!   A lookup binary searches the headers, then decodes one block from its
//!   start (on average 64 entries, a few hundred nanoseconds at most).
//! * A block's `data` is one exact-size heap allocation (the last block's
//!   may have spare room for appends):
//!
//!   ```text
//!   count u8 | units0 varint | size0 varint | entry 1 | ... | entry count-1
//!   entry i:  h varint = (key_i - key_{i-1} - 1) << 2 | size_changed << 1 | mispredicted
//!             [zigzag(size_i - size_{i-1}) varint]            if size_changed
//!             [zigzag(units_i - predicted_i) varint]          if mispredicted
//!   ```
//!
//!   `units` is the byte offset / 8. The predicted offset of entry `i` is
//!   where entry `i-1`'s needle ends in a version-3 `.dat`
//!   (`units_{i-1} + actual_size(size_{i-1}, 3) / 8`), so a needle written
//!   right after the previous key's needle costs no offset bytes. Other
//!   versions, overwrites and deleted neighbours just cost a few bytes of
//!   residual; every value round-trips exactly (wrapping arithmetic, any
//!   u64 key, any u32 size, any offset). Typical costs: key gap 1–32 with
//!   the same size and predicted offset, 1 byte; sizes of similar blobs, +1;
//!   gaps up to 4095, +1. Random u64 keys cost about 12–15 bytes.
//! * Appends (a key above the last key) encode one entry onto the last
//!   block; when it is full, it gets an exact-size copy and its buffer is
//!   reused for the next block, so sealed blocks leave no slack or holes.
//!   An overwrite, a delete, or an insert into a block with room decodes
//!   and re-encodes that one block.
//! * `overlay`: a small `BTreeMap` for new keys whose block is full (out of
//!   order: replication, repair). Once it exceeds 1/32 of the map (at least
//!   `merge_min` entries), `rebuild` merges it into the blocks in one pass,
//!   re-encoding only the blocks it touches and packing them full; the same
//!   pass coalesces blocks left under half full by deletes (triggered when
//!   blocks average under a third full).
//!
//! Invariants: keys increase across blocks; a key is in at most one of the
//! blocks and `overlay`; `tail` is the last entry of the last block.

use std::collections::BTreeMap;

use crate::idx::IdxEntry;
use crate::needle::{PADDING, VERSION3, actual_size};

/// Most entries in one block (the count is one byte).
pub(crate) const BLOCK_ENTRIES: usize = 128;
/// Estimated heap bytes per overlay entry (B-tree node share).
const OVERLAY_ENTRY_COST: usize = 48;

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

/// One decoded entry: `units` is the byte offset / 8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    key: u64,
    units: u64,
    size: u32,
}

impl Entry {
    fn value(&self) -> NeedleValue {
        NeedleValue {
            offset: self.units * PADDING,
            size: self.size,
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    first_key: u64,
    data: Vec<u8>,
}

impl Block {
    fn len(&self) -> usize {
        self.data.first().map_or(0, |&c| c as usize)
    }
}

#[derive(Debug, Clone)]
pub struct NeedleMap {
    blocks: Vec<Block>,
    /// Heap bytes of all blocks' data, allocator overhead included.
    data_bytes: usize,
    /// Entries held in `blocks`.
    in_blocks: usize,
    /// The last entry of the last block, where appends continue.
    tail: Option<Entry>,
    overlay: BTreeMap<u64, (u64, u32)>,
    counters: MapCounters,
    merge_min: usize,
    /// Entries per block (`BLOCK_ENTRIES` except in tests).
    cap: usize,
}

/// Heap bytes glibc malloc takes for a request of `n` bytes: 8 bytes of
/// header, rounded up to 16, at least 32.
fn heap_cost(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Offset units a version-3 needle of body `size` occupies: the predicted
/// distance to the next needle.
#[inline]
fn step(size: u32) -> u64 {
    actual_size(size, VERSION3) / PADDING
}

fn zigzag64(d: u64) -> u64 {
    let d = d as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

#[inline]
fn unzigzag64(z: u64) -> u64 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

fn zigzag32(d: u32) -> u32 {
    let d = d as i32;
    ((d << 1) ^ (d >> 31)) as u32
}

#[inline]
fn unzigzag32(z: u32) -> u32 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u128) -> usize {
    (128 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A varint that fits 64 bits (offsets, sizes).
#[inline]
fn get_varint(d: &[u8], pos: &mut usize) -> Option<u64> {
    u64::try_from(get_varint128(d, pos)?).ok()
}

/// Decodes a LEB128 varint at `*pos`; None if the data ends first or the
/// value passes 128 bits (a checkpoint's blocks come from disk). The
/// entry header needs 128 bits: a 64-bit key gap plus two flag bits.
#[inline]
fn get_varint128(d: &[u8], pos: &mut usize) -> Option<u128> {
    let b = *d.get(*pos)?;
    *pos += 1;
    if b < 0x80 {
        return Some(b as u128);
    }
    let mut v = (b & 0x7f) as u128;
    let mut shift: u32 = 7;
    loop {
        let b = *d.get(*pos)?;
        *pos += 1;
        let bits = (b & 0x7f) as u128;
        // The 19th byte (shift 126) may carry only the top two bits.
        if shift >= 128 || (shift > 121 && bits >> (128 - shift) != 0) {
            return None;
        }
        v |= bits << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
}

/// The fields of entry `e`, which follows `p` in its block: its header
/// and, if present, its size delta and offset residual.
fn entry_fields(p: &Entry, e: &Entry) -> (u128, Option<u128>, Option<u128>) {
    let predicted = p.units.wrapping_add(step(p.size));
    let size_changed = e.size != p.size;
    let mispredicted = e.units != predicted;
    let h = ((e.key - p.key - 1) as u128) << 2 | (size_changed as u128) << 1 | mispredicted as u128;
    (
        h,
        size_changed.then(|| zigzag32(e.size.wrapping_sub(p.size)) as u128),
        mispredicted.then(|| zigzag64(e.units.wrapping_sub(predicted)) as u128),
    )
}

fn encode_next(out: &mut Vec<u8>, p: &Entry, e: &Entry) {
    let (h, size, units) = entry_fields(p, e);
    put_varint(out, h);
    for v in [size, units].into_iter().flatten() {
        put_varint(out, v);
    }
}

fn next_len(p: &Entry, e: &Entry) -> usize {
    let (h, size, units) = entry_fields(p, e);
    varint_len(h) + size.map_or(0, varint_len) + units.map_or(0, varint_len)
}

fn encoded_len(es: &[Entry]) -> usize {
    match es.first() {
        None => 0,
        Some(e) => {
            1 + varint_len(e.units as u128)
                + varint_len(e.size as u128)
                + es.windows(2).map(|w| next_len(&w[0], &w[1])).sum::<usize>()
        }
    }
}

/// Encodes sorted entries (at most 255) as one block's data.
fn encode_block(es: &[Entry], out: &mut Vec<u8>) {
    let Some(e) = es.first() else { return };
    debug_assert!(es.len() <= u8::MAX as usize);
    out.push(es.len() as u8);
    put_varint(out, e.units as u128);
    put_varint(out, e.size as u128);
    for w in es.windows(2) {
        encode_next(out, &w[0], &w[1]);
    }
}

/// An exact-size encoding of a block.
fn block_of_entries(es: &[Entry]) -> Block {
    let mut data = Vec::with_capacity(encoded_len(es));
    encode_block(es, &mut data);
    Block {
        first_key: es[0].key,
        data,
    }
}

/// Decodes one block's entries in key order.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    left: usize,
    cur: Entry,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a Block) -> Self {
        Self::over(b.first_key, &b.data)
    }

    fn over(first_key: u64, data: &'a [u8]) -> Self {
        Cursor {
            data,
            pos: 0,
            left: data.first().map_or(0, |&c| c as usize),
            cur: Entry {
                key: first_key,
                units: 0,
                size: 0,
            },
        }
    }
}

impl Cursor<'_> {
    /// The next entry, or None if the data is malformed (only a block
    /// read from a checkpoint can be; `push_encoded_block` refuses it).
    #[inline(always)]
    fn decode_next(&mut self) -> Option<Entry> {
        let d = self.data;
        if self.pos == 0 {
            self.pos = 1;
            let units = get_varint(d, &mut self.pos)?;
            let size = u32::try_from(get_varint(d, &mut self.pos)?).ok()?;
            return Some(Entry {
                key: self.cur.key,
                units,
                size,
            });
        }
        let h = get_varint128(d, &mut self.pos)?;
        let p = self.cur;
        let gap = u64::try_from(h >> 2).ok()?;
        let key = p.key.checked_add(gap)?.checked_add(1)?;
        let size = if h & 2 != 0 {
            let z = u32::try_from(get_varint(d, &mut self.pos)?).ok()?;
            p.size.wrapping_add(unzigzag32(z))
        } else {
            p.size
        };
        let predicted = p.units.wrapping_add(step(p.size));
        let units = if h & 1 != 0 {
            predicted.wrapping_add(unzigzag64(get_varint(d, &mut self.pos)?))
        } else {
            predicted
        };
        Some(Entry { key, units, size })
    }
}

impl Iterator for Cursor<'_> {
    type Item = Entry;

    #[inline]
    fn next(&mut self) -> Option<Entry> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.decode_next() {
            Some(e) => {
                self.cur = e;
                Some(e)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Moves `pending` into blocks of at most `cap` entries, as even as
/// possible (so none is under half full unless all of `pending` is).
fn flush(pending: &mut Vec<Entry>, out: &mut Vec<Block>, cap: usize) {
    let n = pending.len();
    let k = n.div_ceil(cap);
    for i in 0..k {
        out.push(block_of_entries(&pending[i * n / k..(i + 1) * n / k]));
    }
    pending.clear();
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

    /// Test hook: a small `merge_min` exercises merges with few keys; it
    /// also caps the entries per block, so blocks split and fill early.
    #[doc(hidden)]
    pub fn with_merge_min(merge_min: usize) -> Self {
        Self {
            blocks: Vec::new(),
            data_bytes: 0,
            in_blocks: 0,
            tail: None,
            overlay: BTreeMap::new(),
            counters: MapCounters::default(),
            merge_min: merge_min.max(1),
            cap: merge_min.clamp(1, BLOCK_ENTRIES),
        }
    }

    /// Number of live needles.
    pub fn len(&self) -> usize {
        self.in_blocks + self.overlay.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counters(&self) -> MapCounters {
        self.counters
    }

    pub(crate) fn set_counters(&mut self, c: MapCounters) {
        self.counters = c;
    }

    /// Heap bytes used: block headers, block data with glibc's per-chunk
    /// overhead, and the overlay's nodes (estimated).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.blocks.capacity() * std::mem::size_of::<Block>()
            + self.data_bytes
            + self.overlay.len() * OVERLAY_ENTRY_COST
    }

    /// The block whose key range holds `key`, if any.
    #[inline]
    fn block_for(&self, key: u64) -> Option<usize> {
        self.blocks
            .partition_point(|b| b.first_key <= key)
            .checked_sub(1)
    }

    pub fn get(&self, key: u64) -> Option<NeedleValue> {
        if !self.overlay.is_empty()
            && let Some(&(units, size)) = self.overlay.get(&key)
        {
            return Some(Entry { key, units, size }.value());
        }
        // A key past the last one is absent: no block to decode. (A new
        // needle's key usually is, and every write looks it up first.)
        if self.tail.is_some_and(|t| key > t.key) {
            return None;
        }
        let j = self.block_for(key)?;
        for e in Cursor::new(&self.blocks[j]) {
            if e.key >= key {
                return (e.key == key).then(|| e.value());
            }
        }
        None
    }

    /// Records a live needle at byte `offset` (a multiple of 8) and updates
    /// counters; returns the version it replaces.
    pub fn put(&mut self, key: u64, offset: u64, size: u32) -> Option<NeedleValue> {
        let old = self.set(Entry {
            key,
            units: offset / PADDING,
            size,
        });
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

    fn set(&mut self, e: Entry) -> Option<NeedleValue> {
        if !self.overlay.is_empty()
            && let Some(v) = self.overlay.get_mut(&e.key)
        {
            let old = Entry {
                key: e.key,
                units: v.0,
                size: v.1,
            };
            *v = (e.units, e.size);
            return Some(old.value());
        }
        if let Some(t) = self.tail
            && e.key > t.key
        {
            self.append(t, e);
            return None;
        }
        if self.blocks.is_empty() {
            self.push_block(e);
            return None;
        }
        // Below the first block's range, block 0 takes the key.
        let j = self.block_for(e.key).unwrap_or(0);
        let mut es = self.entries(j);
        match es.binary_search_by_key(&e.key, |x| x.key) {
            Ok(i) => {
                let old = std::mem::replace(&mut es[i], e);
                self.store(j, &es);
                Some(old.value())
            }
            Err(i) if es.len() < self.cap => {
                es.insert(i, e);
                self.store(j, &es);
                None
            }
            Err(_) => {
                self.overlay.insert(e.key, (e.units, e.size));
                if self.overlay.len() > self.merge_min.max(self.len() / 32) {
                    self.rebuild();
                }
                None
            }
        }
    }

    /// Encodes `e` after `t`, the last entry of the last block.
    fn append(&mut self, t: Entry, e: Entry) {
        let b = self.blocks.last_mut().expect("tail has a block");
        if b.len() >= self.cap {
            self.push_block(e);
            return;
        }
        let before = heap_cost(b.data.capacity());
        encode_next(&mut b.data, &t, &e);
        b.data[0] += 1;
        self.data_bytes = self.data_bytes - before + heap_cost(b.data.capacity());
        self.in_blocks += 1;
        self.tail = Some(e);
    }

    /// Starts a new last block holding `e`. The previous last block gets
    /// an exact-size copy of its data and its buffer is reused.
    fn push_block(&mut self, e: Entry) {
        let mut buf = Vec::new();
        if let Some(last) = self.blocks.last_mut() {
            let exact = last.data.as_slice().to_vec();
            buf = std::mem::replace(&mut last.data, exact);
            self.data_bytes += heap_cost(last.data.capacity());
            buf.clear();
        }
        let before = heap_cost(buf.capacity());
        encode_block(&[e], &mut buf);
        self.data_bytes = self.data_bytes - before + heap_cost(buf.capacity());
        if self.blocks.len() == self.blocks.capacity() {
            self.blocks.reserve_exact((self.blocks.len() / 8).max(64));
        }
        self.blocks.push(Block {
            first_key: e.key,
            data: buf,
        });
        self.in_blocks += 1;
        self.tail = Some(e);
    }

    fn entries(&self, j: usize) -> Vec<Entry> {
        let mut es = Vec::with_capacity(self.blocks[j].len() + 1);
        es.extend(Cursor::new(&self.blocks[j]));
        es
    }

    /// Replaces block `j`'s entries with `es` (sorted, within its range).
    fn store(&mut self, j: usize, es: &[Entry]) {
        let last = j + 1 == self.blocks.len();
        let b = &mut self.blocks[j];
        self.data_bytes -= heap_cost(b.data.capacity());
        self.in_blocks = self.in_blocks - b.len() + es.len();
        if let Some(e) = es.first() {
            b.first_key = e.key;
        }
        if last && !es.is_empty() {
            // The last block keeps its buffer for appends.
            b.data.clear();
            encode_block(es, &mut b.data);
        } else {
            let mut data = Vec::with_capacity(encoded_len(es));
            encode_block(es, &mut data);
            b.data = data;
        }
        self.data_bytes += heap_cost(b.data.capacity());
        if last {
            self.tail = es.last().copied();
        }
    }

    fn remove(&mut self, key: u64) -> Option<NeedleValue> {
        if !self.overlay.is_empty()
            && let Some((units, size)) = self.overlay.remove(&key)
        {
            return Some(Entry { key, units, size }.value());
        }
        let j = self.block_for(key)?;
        if !Cursor::new(&self.blocks[j]).any(|e| e.key == key) {
            return None;
        }
        let mut es = self.entries(j);
        let i = es.binary_search_by_key(&key, |x| x.key).ok()?;
        let old = es.remove(i);
        self.store(j, &es);
        if self.blocks.len() > 4 && self.in_blocks * 3 < self.blocks.len() * self.cap {
            self.rebuild();
        }
        Some(old.value())
    }

    /// Merges the overlay into the blocks and coalesces blocks under half
    /// full, in one pass; blocks it does not touch are kept as they are.
    fn rebuild(&mut self) {
        let cap = self.cap;
        let old = std::mem::take(&mut self.blocks);
        let overlay = std::mem::take(&mut self.overlay);
        let mut out: Vec<Block> = Vec::with_capacity(old.len() + overlay.len() / cap + 1);
        let mut ov = overlay
            .into_iter()
            .map(|(key, (units, size))| Entry { key, units, size })
            .peekable();
        let mut pending: Vec<Entry> = Vec::new();
        let push = |pending: &mut Vec<Entry>, out: &mut Vec<Block>, e: Entry| {
            pending.push(e);
            if pending.len() >= 2 * cap {
                out.push(block_of_entries(&pending[..cap]));
                pending.drain(..cap);
            }
        };
        let mut old = old.into_iter().peekable();
        while let Some(b) = old.next() {
            let upper = old.peek().map(|n| n.first_key);
            let in_range = |k: u64| upper.is_none_or(|u| k < u);
            let n = b.len();
            let clean = n > 0 && n * 2 >= cap && !ov.peek().is_some_and(|o| in_range(o.key));
            if clean && (pending.is_empty() || pending.len() * 2 >= cap) {
                flush(&mut pending, &mut out, cap);
                out.push(b);
                continue;
            }
            let mut cur = Cursor::new(&b).peekable();
            loop {
                let o = ov.peek().copied().filter(|o| in_range(o.key));
                let next = match (cur.peek().copied(), o) {
                    (Some(c), Some(o)) if o.key < c.key => ov.next(),
                    (Some(_), _) => cur.next(),
                    (None, Some(_)) => ov.next(),
                    (None, None) => break,
                };
                push(&mut pending, &mut out, next.expect("peeked"));
            }
        }
        // Overlay keys are left only if there were no blocks.
        for e in ov {
            push(&mut pending, &mut out, e);
        }
        flush(&mut pending, &mut out, cap);
        if out.capacity() > out.len() + out.len() / 8 + 64 {
            out.shrink_to_fit();
        }
        self.blocks = out;
        self.data_bytes = self
            .blocks
            .iter()
            .map(|b| heap_cost(b.data.capacity()))
            .sum();
        self.in_blocks = self.blocks.iter().map(Block::len).sum();
        self.tail = self.blocks.last().and_then(|b| Cursor::new(b).last());
    }

    /// Merges side structures and releases spare capacity (after loading).
    pub fn shrink_to_fit(&mut self) {
        let cap = self.cap;
        let n = self.blocks.len();
        let thin = self.blocks[..n.saturating_sub(1)]
            .iter()
            .any(|b| b.len() * 2 < cap);
        if !self.overlay.is_empty() || thin {
            self.rebuild();
        }
        self.blocks.shrink_to_fit();
        if let Some(b) = self.blocks.last_mut() {
            self.data_bytes -= heap_cost(b.data.capacity());
            b.data.shrink_to_fit();
            self.data_bytes += heap_cost(b.data.capacity());
        }
    }

    /// Live entries in increasing key order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, NeedleValue)> + '_ {
        self.range_from(0)
    }

    /// Live entries with keys ≥ `start`, in increasing key order (so a
    /// walk over a big volume can go in bounded pieces).
    pub fn range_from(&self, start: u64) -> impl Iterator<Item = (u64, NeedleValue)> + '_ {
        let from = self.block_for(start).unwrap_or(0);
        let mut main = self.blocks[from..]
            .iter()
            .flat_map(Cursor::new)
            .skip_while(move |e| e.key < start)
            .map(|e| (e.key, e.value()))
            .peekable();
        let mut ov = self
            .overlay
            .range(start..)
            .map(|(&key, &(units, size))| (key, Entry { key, units, size }.value()))
            .peekable();
        std::iter::from_fn(move || match (main.peek(), ov.peek()) {
            (Some(a), Some(b)) if a.0 < b.0 => main.next(),
            (Some(_), Some(_)) | (None, _) => ov.next(),
            (Some(_), None) => main.next(),
        })
    }

    /// Preallocates block headers for `n` more pushes (checkpoint load).
    pub(crate) fn reserve_exact(&mut self, n: usize) {
        self.blocks.reserve_exact(n.div_ceil(self.cap));
    }

    /// Preallocates headers for `n` more encoded blocks (checkpoint load).
    pub(crate) fn reserve_blocks(&mut self, n: usize) {
        self.blocks.reserve_exact(n);
    }

    /// How many blocks `for_each_encoded_block` hands out.
    pub(crate) fn encoded_block_count(&self) -> usize {
        if self.overlay.is_empty() {
            self.blocks.iter().filter(|b| b.len() > 0).count()
        } else {
            self.len().div_ceil(BLOCK_ENTRIES)
        }
    }

    /// Hands every live entry to `f` as encoded blocks in key order (first
    /// key, block data in the layout above), for a checkpoint: the blocks
    /// themselves, verbatim, when the overlay is empty; otherwise all
    /// entries re-encoded into full blocks.
    pub(crate) fn for_each_encoded_block(
        &self,
        f: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if self.overlay.is_empty() {
            for b in self.blocks.iter().filter(|b| b.len() > 0) {
                f(b.first_key, &b.data)?;
            }
            return Ok(());
        }
        let mut es = Vec::with_capacity(BLOCK_ENTRIES);
        let mut data = Vec::new();
        let mut all = self.iter().map(|(key, v)| Entry {
            key,
            units: v.offset / PADDING,
            size: v.size,
        });
        loop {
            es.clear();
            es.extend(all.by_ref().take(BLOCK_ENTRIES));
            let Some(first) = es.first() else {
                return Ok(());
            };
            data.clear();
            encode_block(&es, &mut data);
            f(first.key, &data)?;
        }
    }

    /// Appends one encoded block read from a checkpoint after every key
    /// in the map (which must have no overlay), checking it first: at
    /// most `BLOCK_ENTRIES` entries that decode exactly to the end of
    /// `data`, keys above the map's last, each a live needle (offset in
    /// 1..2^40 units, size under 2^31). Returns the block's entry count.
    pub(crate) fn push_encoded_block(
        &mut self,
        first_key: u64,
        data: Vec<u8>,
    ) -> Result<usize, &'static str> {
        debug_assert!(self.overlay.is_empty());
        if self.tail.is_some_and(|t| first_key <= t.key) {
            return Err("keys not increasing");
        }
        let count = data.first().map_or(0, |&c| c as usize);
        if count == 0 || count > self.cap {
            return Err("bad block entry count");
        }
        let mut cur = Cursor::over(first_key, &data);
        let (mut decoded, mut last) = (0, None);
        for e in cur.by_ref() {
            if e.units == 0 || e.units >= 1 << 40 || e.size >= 0x8000_0000 {
                return Err("entry is not a live needle");
            }
            decoded += 1;
            last = Some(e);
        }
        // A malformed entry ends the cursor early.
        if decoded != count || cur.pos != data.len() {
            return Err("malformed block");
        }
        self.data_bytes += heap_cost(data.capacity());
        self.in_blocks += count;
        self.tail = last;
        self.blocks.push(Block { first_key, data });
        Ok(count)
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
        /// A sequencer run: `n` keys from `start` with gaps of 1..=`gap`,
        /// appended to `.dat` one after the other.
        Run(u64, usize, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = prop_oneof![
            0u64..64,
            0u64..4096,
            any::<u64>(),
            (u64::MAX - 64)..=u64::MAX
        ];
        let units = prop_oneof![
            4 => 1u64..1000,
            2 => (1u64 << 32)..(1u64 << 40),
            1 => 0u64..(1u64 << 61),
        ];
        let size = prop_oneof![0u32..200, 0u32..0x7fff_ffff, any::<u32>()];
        prop_oneof![
            6 => (key.clone(), units, size).prop_map(|(k, u, s)| Op::Put(k, u * 8, s)),
            3 => key.clone().prop_map(Op::Del),
            1 => Just(Op::Shrink),
            1 => (key, 1usize..300, 1u64..300).prop_map(|(k, n, g)| Op::Run(k, n, g)),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreemap_oracle(
            seq_start in 0u64..100,
            ops in proptest::collection::vec(op(), 0..400),
            mm in 1usize..20,
            starts in proptest::collection::vec(any::<u64>(), 4),
        ) {
            let mut m = NeedleMap::with_merge_min(mm);
            let mut oracle: BTreeMap<u64, NeedleValue> = BTreeMap::new();
            let mut c = MapCounters::default();
            let mut dat_end = 8u64;
            // A run of sequencer keys first, then random operations.
            let ops = std::iter::once(Op::Run(seq_start, 50, 1)).chain(ops);
            let mut puts = Vec::new();
            for op in ops {
                puts.clear();
                match op {
                    Op::Put(k, off, s) => puts.push((k, off, s)),
                    Op::Run(start, n, gap) => {
                        let mut k = start;
                        for i in 0..n {
                            let s = 40 + (k.wrapping_mul(2654435761) % 90) as u32 * (i as u32 % 3);
                            puts.push((k, dat_end, s));
                            dat_end += crate::needle::actual_size(s, VERSION3);
                            k = match k.checked_add(1 + k % gap) { Some(k) => k, None => break };
                        }
                    }
                    Op::Del(k) => {
                        let old = oracle.remove(&k);
                        prop_assert_eq!(m.delete(k), old);
                        c.max_file_key = c.max_file_key.max(k);
                        if let Some(o) = old { c.delete_count += 1; c.deleted_bytes += o.size as u64; }
                    }
                    Op::Shrink => m.shrink_to_fit(),
                }
                for &(k, off, s) in &puts {
                    let old = oracle.insert(k, NeedleValue { offset: off, size: s });
                    prop_assert_eq!(m.put(k, off, s), old);
                    c.file_count += 1;
                    c.content_bytes += s as u64;
                    c.max_file_key = c.max_file_key.max(k);
                    if let Some(o) = old { c.delete_count += 1; c.deleted_bytes += o.size as u64; }
                }
                prop_assert_eq!(m.len(), oracle.len());
            }
            prop_assert_eq!(m.counters(), c);
            for (k, v) in &oracle {
                prop_assert_eq!(m.get(*k), Some(*v));
                prop_assert_eq!(m.get(k.wrapping_add(1)), oracle.get(&k.wrapping_add(1)).copied());
                prop_assert_eq!(m.get(k.wrapping_sub(1)), oracle.get(&k.wrapping_sub(1)).copied());
            }
            for k in &starts {
                prop_assert_eq!(m.get(*k), oracle.get(k).copied());
            }
            let got: Vec<_> = m.iter().collect();
            let want: Vec<_> = oracle.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(got, want);
            let mid = oracle.keys().nth(oracle.len() / 2).copied().unwrap_or(0);
            for start in [0, seq_start + 25, 2048, mid, mid.wrapping_add(1), u64::MAX].into_iter().chain(starts) {
                let got: Vec<_> = m.range_from(start).take(30).collect();
                let want: Vec<_> = oracle.range(start..).take(30).map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(got, want, "range_from({})", start);
            }
            prop_assert_eq!(m.max_offset_entry().map(|e| e.1.offset), oracle.values().map(|v| v.offset).max());
            m.shrink_to_fit();
            let got: Vec<_> = m.iter().collect();
            let want: Vec<_> = oracle.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Varints round-trip up to 128 bits; longer, overflowing or cut-off
    /// ones (from a damaged checkpoint) are refused, never a panic.
    #[test]
    fn varints_refuse_overflow_and_truncation() {
        for v in [
            0u128,
            1,
            127,
            128,
            u64::MAX as u128,
            u128::MAX >> 1,
            u128::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(get_varint128(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
            for cut in 0..b.len() {
                assert_eq!(get_varint128(&b[..cut], &mut 0), None);
            }
        }
        // u128::MAX with its last byte carrying a third bit, and a 20th byte.
        let mut b = vec![0xff; 18];
        b.push(0x07);
        assert_eq!(get_varint128(&b, &mut 0), None);
        let mut b = vec![0x80; 19];
        b.push(0x00);
        assert_eq!(get_varint128(&b, &mut 0), None);
        assert_eq!(
            get_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            None
        );
    }

    /// Deleting the only entry of the last block, then appending past the
    /// deleted key, then past the one before it: every key reads back.
    #[test]
    fn appends_after_the_last_block_is_emptied() {
        for cap_fill in [1usize, 2, 128] {
            let mut m = NeedleMap::new();
            let n = BLOCK_ENTRIES + cap_fill;
            for k in 1..=n as u64 {
                m.put(k * 10, k * 64, 40);
            }
            for k in (n - cap_fill + 1..=n).rev() {
                assert!(m.delete(k as u64 * 10).is_some());
            }
            assert_eq!(m.get(n as u64 * 10), None);
            m.put(n as u64 * 10 + 5, 9 * 64, 41);
            m.put((n - cap_fill) as u64 * 10 + 1, 10 * 64, 42);
            assert_eq!(m.get(n as u64 * 10 + 5).map(|v| v.size), Some(41));
            assert_eq!(
                m.get((n - cap_fill) as u64 * 10 + 1).map(|v| v.size),
                Some(42)
            );
            for k in 1..=(n - cap_fill) as u64 {
                assert_eq!(m.get(k * 10).map(|v| v.offset), Some(k * 64), "key {k}");
            }
            assert_eq!(m.len(), n - cap_fill + 2);
            assert_eq!(m.iter().count(), m.len());
        }
    }

    /// Puts `n` keys from `next_key` with sizes of 64–127 byte blobs (as
    /// the Size field of a small needle) appended to `.dat` in order.
    fn build(n: usize, mut next_key: impl FnMut(u64) -> u64) -> NeedleMap {
        let mut m = NeedleMap::new();
        let (mut offset, mut r) = (8u64, 12345u64);
        for _ in 0..n {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = next_key(r >> 20);
            let size = 64 + (r >> 58) as u32 + 20;
            assert_eq!(m.put(key, offset, size), None);
            offset += actual_size(size, VERSION3);
        }
        m.shrink_to_fit();
        assert_eq!(m.len(), n);
        m
    }

    fn bytes_per_needle(m: &NeedleMap) -> f64 {
        m.memory_bytes() as f64 / m.len() as f64
    }

    #[test]
    fn sequential_keys_take_under_three_bytes() {
        let mut k = 0;
        let m = build(100_000, |_| {
            k += 1;
            k
        });
        let per = bytes_per_needle(&m);
        assert!(per < 3.0, "{per} bytes per needle");
    }

    #[test]
    fn keys_with_gaps_take_under_four_bytes() {
        // Several volumes share a sequencer: each sees gaps of a few to a
        // few hundred.
        let mut k = 0;
        let m = build(100_000, |r| {
            k += 1 + r % 300;
            k
        });
        let per = bytes_per_needle(&m);
        assert!(per < 4.0, "{per} bytes per needle");
    }

    #[test]
    fn random_keys_take_under_twenty_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let m = build(100_000, |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        });
        let per = bytes_per_needle(&m);
        assert!(per < 20.0, "{per} bytes per needle");
    }

    #[test]
    fn overwrites_and_deletes_stay_dense() {
        let mut k = 0;
        let mut m = build(100_000, |_| {
            k += 1;
            k
        });
        let mut offset = 1u64 << 30;
        for k in (1..=100_000u64).step_by(10) {
            assert!(m.put(k, offset, 100).is_some());
            offset += 136;
        }
        for k in (1..=100_000u64).step_by(7) {
            m.delete(k);
        }
        let before = bytes_per_needle(&m);
        assert!(before < 5.0, "{before} bytes per needle");
        // Most of the map deleted: blocks coalesce.
        for k in 1..=100_000u64 {
            if k % 50 != 0 {
                m.delete(k);
            }
        }
        m.shrink_to_fit();
        let after = m.memory_bytes() as f64 / m.len() as f64;
        assert!(m.len() < 2_000 && after < 8.0, "{after} bytes per needle");
    }
}
