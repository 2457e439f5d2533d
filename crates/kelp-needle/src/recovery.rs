//! Crash recovery at open: cut a torn tail of `.dat` and `.idx` back to
//! the last complete, checksum-valid needle, so the volume stays writable
//! and nothing acknowledged is lost.
//!
//! Writers append the needle to `.dat`, then its entry to `.idx`; a write
//! is acknowledged only after group commit fdatasyncs `.dat` (`.idx` is
//! fdatasynced only before a watermark, a checkpoint or a close). A
//! *trusted point* (the `.kwm` watermark or the `.knm` checkpoint, both
//! written only after both files were fdatasynced) says `.idx` up to
//! `idx_len` and `.dat` up to `dat_len` are durable. At open:
//!
//! 1. `.idx` is cut to a whole number of entries.
//! 2. With a trusted point, every entry after it is verified in order
//!    (needle inside `.dat`, header id and size match, CRC valid,
//!    tombstones read with Size 0). At the first bad entry `.idx` is cut;
//!    the needles of later entries are after it in `.dat`, where step 3
//!    finds them again.
//!    Without one (a SeaweedFS volume, or a first crash), the tail is cut
//!    at the first of the last 1024 entries that points outside `.dat`,
//!    then entries are verified backwards from there until one is valid.
//! 3. After the map is loaded, the needles in `.dat` after the furthest
//!    one any entry references are scanned: each whole, checksum-valid
//!    needle gets its `.idx` entry back (a Size-0 needle is a tombstone),
//!    up to the first invalid one, where `.dat` is cut (trailing garbage).
//!    Group commit fdatasyncs only `.dat` per batch, so this is how the
//!    `.idx` entries of acknowledged writes that a crash lost come back;
//!    with an empty `.idx` it rebuilds the whole index (like `weed fix`).
//!
//! Residual risks: a bit flip in an acknowledged needle after the trusted
//! point cuts that needle and everything after it; the watermark moves at
//! least every second under load, which bounds that window. Without a
//! trusted point (both `.kwm` slots lost; one is written at every open,
//! before any write) a lost `.idx` entry followed by one that survived is
//! not noticed, and that needle is not re-indexed.

use std::io;

use kelp_storage::File;

use crate::idx::{IdxEntry, OffsetWidth};
use crate::needle::{self, Needle, VERSION3};
use crate::needle_map::NeedleMap;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub version: u8,
    pub width: OffsetWidth,
    pub sb_size: u64,
}

pub(crate) fn file_len(f: &File) -> io::Result<u64> {
    f.len()
}

/// The `.idx` entry bytes ending at `idx_len` (empty for 0).
pub(crate) fn fingerprint(idx: &File, width: OffsetWidth, idx_len: u64) -> io::Result<Vec<u8>> {
    let es = width.entry_size() as u64;
    if idx_len < es {
        return Ok(Vec::new());
    }
    let mut b = vec![0u8; es as usize];
    idx.read_exact_at(&mut b, idx_len - es)?;
    Ok(b)
}

/// Bytes an entry's needle occupies: (offset, size in the header).
fn extent(e: &IdxEntry, version: u8) -> Option<(u64, u32, u64)> {
    if e.offset_units == 0 {
        return None;
    }
    let size = if e.is_deletion() { 0 } else { e.size };
    Some((e.byte_offset(), size, needle::actual_size(size, version)))
}

/// Checks the needle an entry points at; returns the end of that needle.
pub(crate) fn verify_entry(
    dat: &File,
    dat_len: u64,
    l: &Layout,
    e: &IdxEntry,
) -> io::Result<Option<u64>> {
    let Some((off, size, total)) = extent(e, l.version) else {
        // Offset-0 deletions are legal, but an all-zero entry is what a
        // torn append looks like (file extended, data never written).
        return Ok((e.size == IdxEntry::TOMBSTONE_SIZE).then_some(0));
    };
    if off < l.sb_size || off.saturating_add(total) > dat_len {
        return Ok(None);
    }
    let mut buf = vec![0u8; total as usize];
    dat.read_exact_at(&mut buf, off)?;
    let head: [u8; 16] = buf[..16].try_into().unwrap_or([0; 16]);
    let (_, id, hsize) = needle::parse_header(&head);
    if id != e.key || hsize != size {
        return Ok(None);
    }
    Ok(Needle::decode_exact(&buf, l.version)
        .ok()
        .map(|_| off + total))
}

/// Steps 1 and 2: returns the `.idx` length to keep (and cuts the file).
pub(crate) fn cut_idx(
    dat: &File,
    idx: &File,
    l: &Layout,
    trusted_idx_len: Option<u64>,
) -> io::Result<u64> {
    let es = l.width.entry_size() as u64;
    let idx_len = file_len(idx)?;
    let dat_len = file_len(dat)?;
    let whole = idx_len - idx_len % es;
    let good = match trusted_idx_len {
        Some(mut good) => {
            let mut buf = vec![0u8; (64 * 1024 * es) as usize];
            'outer: while good < whole {
                let n = ((whole - good) as usize).min(buf.len());
                idx.read_exact_at(&mut buf[..n], good)?;
                for c in buf[..n].chunks_exact(es as usize) {
                    let e = IdxEntry::decode(c, l.width).map_err(io::Error::other)?;
                    if verify_entry(dat, dat_len, l, &e)?.is_none() {
                        break 'outer;
                    }
                    good += es;
                }
            }
            good
        }
        None => {
            let mut good = first_out_of_bounds(idx, l, whole, dat_len)?;
            let mut b = vec![0u8; es as usize];
            while good > 0 {
                idx.read_exact_at(&mut b, good - es)?;
                let e = IdxEntry::decode(&b, l.width).map_err(io::Error::other)?;
                if verify_entry(dat, dat_len, l, &e)?.is_some() {
                    break;
                }
                good -= es;
            }
            good
        }
    };
    if good < idx_len {
        // Name the first dropped entry: when a cut surprises, this is what
        // an operator (or a failing durability test) needs to know.
        let first = if good < whole {
            let mut b = vec![0u8; es as usize];
            idx.read_exact_at(&mut b, good)?;
            IdxEntry::decode(&b, l.width)
                .map(|e| {
                    format!(
                        "key {} at offset {} size {}",
                        e.key,
                        e.byte_offset(),
                        e.size
                    )
                })
                .unwrap_or_else(|e| e.to_string())
        } else {
            "none (partial entry only)".to_string()
        };
        tracing::warn!(
            idx_len,
            kept = good,
            dropped_entries = (whole - good) / es,
            torn_bytes = idx_len - whole,
            dat_len,
            first_dropped = %first,
            "cutting torn or unverifiable .idx tail"
        );
        idx.set_len(good)?;
        idx.sync_all()?;
    }
    Ok(good)
}

/// Entries that point past the end of `.dat` cannot be intact. Among the
/// last `SUSPECT_WINDOW` entries, returns the offset of the first such one
/// (everything from it on is a torn tail); `whole` if there is none. An
/// out-of-bounds entry deeper in the file is left alone: the volume then
/// opens read-only, as SeaweedFS does, rather than risk cutting good data.
fn first_out_of_bounds(idx: &File, l: &Layout, whole: u64, dat_len: u64) -> io::Result<u64> {
    let es = l.width.entry_size() as u64;
    let start = whole.saturating_sub(SUSPECT_WINDOW * es);
    let mut buf = vec![0u8; (whole - start) as usize];
    idx.read_exact_at(&mut buf, start)?;
    for (i, c) in buf.chunks_exact(es as usize).enumerate() {
        let e = IdxEntry::decode(c, l.width).map_err(io::Error::other)?;
        if let Some((off, _, total)) = extent(&e, l.version)
            && (off < l.sb_size || off.saturating_add(total) > dat_len)
        {
            return Ok(start + i as u64 * es);
        }
    }
    Ok(whole)
}

const SUSPECT_WINDOW: u64 = 1024;

/// What a replay saw: the furthest needle end and the entry reaching it.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub max_end: u64,
    pub tail: Option<IdxEntry>,
}

/// Applies `.idx` bytes `[from, to)` to `map`.
pub(crate) fn replay(
    idx: &File,
    l: &Layout,
    from: u64,
    to: u64,
    map: &mut NeedleMap,
) -> io::Result<Replay> {
    let es = l.width.entry_size();
    let mut r = Replay::default();
    let mut buf = vec![0u8; 64 * 1024 * es];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        idx.read_exact_at(&mut buf[..n], pos)?;
        for c in buf[..n].chunks_exact(es) {
            let e = IdxEntry::decode(c, l.width).map_err(io::Error::other)?;
            if let Some((off, _, total)) = extent(&e, l.version)
                && off + total > r.max_end
            {
                r.max_end = off + total;
                r.tail = Some(e);
            }
            map.apply(&e);
        }
        pos += n as u64;
    }
    Ok(r)
}

/// AppendAtNs of the needle an entry points at (0 if unknown or < v3).
pub(crate) fn append_at_ns(dat: &File, l: &Layout, e: &IdxEntry) -> u64 {
    let Some((off, size, _)) = extent(e, l.version) else {
        return 0;
    };
    if l.version != VERSION3 {
        return 0;
    }
    let mut b = [0u8; 8];
    match dat.read_exact_at(&mut b, off + 16 + size as u64 + 4) {
        Ok(()) => u64::from_be_bytes(b),
        Err(_) => 0,
    }
}

/// The cookie SeaweedFS gives the tombstones its compaction appends for
/// deletes made while it ran (`makeupDiff`).
const COMPACTION_TOMBSTONE_COOKIE: u32 = 0x1234_5678;

/// Whether a Size-0 needle found by `index_tail` is a real tombstone: it
/// must delete a needle that is live at that point, with that needle's
/// cookie (or SeaweedFS's compaction cookie). A Size-0 needle carries no
/// checksum of its own, so without this a run of zeros (a torn write) or
/// stray bytes would parse as a chain of deletes.
fn deletes_live_needle(dat: &File, map: &NeedleMap, cookie: u32, id: u64) -> io::Result<bool> {
    let Some(live) = map.get(id) else {
        return Ok(false);
    };
    if cookie == COMPACTION_TOMBSTONE_COOKIE {
        return Ok(true);
    }
    let mut head = [0u8; 16];
    dat.read_exact_at(&mut head, live.offset)?;
    Ok(needle::parse_header(&head).0 == cookie)
}

/// Whether `dat[from..to)` is all zero bytes (zeroed ahead of appends by
/// `prefill.rs`, rather than a torn or damaged tail).
pub(crate) fn all_zero(dat: &File, mut from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while from < to {
        let n = (to - from).min(buf.len() as u64) as usize;
        dat.read_exact_at(&mut buf[..n], from)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        from += n as u64;
    }
    Ok(true)
}

/// What `index_tail` added.
#[derive(Debug)]
pub(crate) struct Tail {
    /// `.idx` length after the appended entries.
    pub idx_len: u64,
    /// End of the last needle scanned (where `.dat` should end).
    pub dat_end: u64,
    pub last: Option<IdxEntry>,
}

/// Step 3: indexes the needles in `.dat` from `from` (the end of the
/// furthest indexed needle) up to the first one that is not whole and
/// checksum-valid, appending their entries to `.idx` at `idx_len` and
/// applying them to `map`. A Size-0 needle is a tombstone, taken only
/// when it deletes a live needle (`deletes_live_needle`). A needle whose
/// bytes are all zero ends the scan: it is the space a durable volume
/// zeroes ahead of its appends (`prefill.rs`), never a write; read as a
/// tombstone it would delete a live needle of key 0 and cookie 0.
///
/// Group commit fdatasyncs only `.dat` for a batch, so after a crash
/// `.idx` can lack entries of acknowledged writes; their needles are in
/// `.dat`, contiguous after the last entry kept, and come back here. It
/// also rebuilds a missing `.idx` whole (`from` = the superblock's end),
/// like `weed fix`.
pub(crate) fn index_tail(
    dat: &File,
    idx: &File,
    l: &Layout,
    from: u64,
    idx_len: u64,
    map: &mut NeedleMap,
) -> io::Result<Tail> {
    let dat_len = file_len(dat)?;
    let mut pos = from.max(l.sb_size);
    let mut out = Vec::new();
    let mut last = None;
    let mut count = 0u64;
    while pos + 16 <= dat_len {
        let mut head = [0u8; 16];
        dat.read_exact_at(&mut head, pos)?;
        let (cookie, id, size) = needle::parse_header(&head);
        let total = needle::actual_size(size, l.version);
        if size as u64 > needle::MAX_BODY_SIZE || pos + total > dat_len {
            break;
        }
        let mut buf = vec![0u8; total as usize];
        dat.read_exact_at(&mut buf, pos)?;
        if buf.iter().all(|&b| b == 0)
            || Needle::decode_exact(&buf, l.version).is_err()
            || (size == 0 && !deletes_live_needle(dat, map, cookie, id)?)
        {
            break;
        }
        let size = if size == 0 {
            IdxEntry::TOMBSTONE_SIZE
        } else {
            size
        };
        let e = IdxEntry::new(id, pos / needle::PADDING, size);
        if e.encode(l.width, &mut out).is_err() {
            break;
        }
        map.apply(&e);
        last = Some(e);
        count += 1;
        pos += total;
    }
    if count > 0 {
        tracing::warn!(
            needles = count,
            from,
            scanned_to = pos,
            dat_len,
            "indexed needles of .dat that .idx did not list"
        );
        idx.set_len(idx_len)?;
        idx.write_all_at(&out, idx_len)?;
        idx.sync_all()?;
    }
    Ok(Tail {
        idx_len: idx_len + out.len() as u64,
        dat_end: pos,
        last,
    })
}
