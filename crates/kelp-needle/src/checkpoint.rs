//! `.knm` checkpoint of the needle map, so opening a big volume does not
//! replay its whole `.idx`. Written atomically (temp, fsync, rename, fsync
//! dir) only for state already fsynced, so it is also a durable point for
//! crash recovery. It is trusted only if the `.idx` still holds the entry
//! it ends at (the fingerprint) and the compaction revision matches.

use std::io;

use crate::error::NeedleError;
use crate::idx::{IdxEntry, OffsetWidth};
use crate::needle_map::{MapCounters, NeedleMap};

const MAGIC: &[u8; 8] = b"KELPNMAP";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 108;
const ENTRY_LEN: usize = 17;

/// What a checkpoint covers besides the map itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointMeta {
    pub width_bytes: u8,
    pub compaction_revision: u16,
    /// `.idx` bytes covered; replay continues from here.
    pub idx_len: u64,
    /// `.dat` length (end of the last needle) at that point.
    pub dat_len: u64,
    pub last_append_at_ns: u64,
    /// The `.idx` entry ending at `idx_len` (empty if `idx_len` is 0).
    pub fingerprint: Vec<u8>,
}

/// Layout (big-endian):
///
/// ```text
/// 0    8  magic "KELPNMAP"
/// 8    4  format version (1)
/// 12   1  .idx offset width (4 or 5)
/// 13   1  reserved (0)
/// 14   2  compaction revision
/// 16   8  idx_len
/// 24   8  dat_len
/// 32   8  last AppendAtNs
/// 40   8  file_count      48  8 delete_count    56  8 deleted_bytes
/// 64   8  content_bytes   72  8 max_file_key    80  8 entry count n
/// 88   17 fingerprint: the .idx entry ending at idx_len, zero padded
/// 105  3  reserved (0)
/// 108  17*n live entries, increasing keys, each
///         key u64 | offset/8 low u32 | offset/8 high u8 | size u32
/// end  4  CRC32-C of all preceding bytes
/// ```
pub fn encode(meta: &CheckpointMeta, map: &NeedleMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + map.len() * ENTRY_LEN + 4);
    let r: io::Result<()> = encode_to(meta, map, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    });
    debug_assert!(r.is_ok(), "a Vec sink does not fail");
    out
}

/// Entries encoded per piece handed to the sink.
const PIECE_ENTRIES: usize = 4096;

/// `encode`, handing the bytes to `sink` in pieces of at most about 70
/// KiB, so a checkpoint of a big map is written without a copy of it.
pub fn encode_to(
    meta: &CheckpointMeta,
    map: &NeedleMap,
    sink: &mut kelp_storage::Sink<'_>,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(HEADER_LEN + PIECE_ENTRIES * ENTRY_LEN + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.push(meta.width_bytes);
    out.push(0);
    out.extend_from_slice(&meta.compaction_revision.to_be_bytes());
    let c = map.counters();
    for v in [
        meta.idx_len,
        meta.dat_len,
        meta.last_append_at_ns,
        c.file_count,
        c.delete_count,
        c.deleted_bytes,
        c.content_bytes,
        c.max_file_key,
        map.len() as u64,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut fp = [0u8; 20];
    let l = meta.fingerprint.len().min(17);
    fp[..l].copy_from_slice(&meta.fingerprint[..l]);
    out.extend_from_slice(&fp);
    let mut crc = 0u32;
    for (i, (key, v)) in map.iter().enumerate() {
        if i > 0 && i % PIECE_ENTRIES == 0 {
            crc = crc32c::crc32c_append(crc, &out);
            sink(&out)?;
            out.clear();
        }
        let e = IdxEntry::new(key, v.offset / crate::needle::PADDING, v.size);
        // Map offsets never exceed 40 bits: they came from .idx entries.
        let _ = e.encode(OffsetWidth::Five, &mut out);
    }
    crc = crc32c::crc32c_append(crc, &out);
    out.extend_from_slice(&crc.to_be_bytes());
    sink(&out)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

pub fn decode(bytes: &[u8]) -> Result<(CheckpointMeta, NeedleMap), NeedleError> {
    decode_from(&mut &bytes[..], bytes.len() as u64)
}

/// `decode` from a reader of a `len`-byte checkpoint, a piece at a time:
/// memory is the map being built, not a copy of the file. The map is
/// returned only once the CRC of the whole file checked.
pub fn decode_from(
    r: &mut dyn io::Read,
    len: u64,
) -> Result<(CheckpointMeta, NeedleMap), NeedleError> {
    let bad = |m: &str| NeedleError::Checkpoint(m.to_string());
    let read_err = |e: io::Error| NeedleError::Checkpoint(format!("reading: {e}"));
    if len < (HEADER_LEN + 4) as u64 {
        return Err(bad("too short"));
    }
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(read_err)?;
    if &head[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    let n = be64(&head, 80);
    if n.checked_mul(ENTRY_LEN as u64) != Some(len - (HEADER_LEN + 4) as u64) {
        return Err(bad("entry count does not match length"));
    }
    if u32::from_be_bytes([head[8], head[9], head[10], head[11]]) != FORMAT_VERSION {
        return Err(bad("unknown format version"));
    }
    let width_bytes = head[12];
    let es = OffsetWidth::from_bytes_offset(width_bytes as u32)
        .ok_or_else(|| bad("bad offset width"))?
        .entry_size();
    let idx_len = be64(&head, 16);
    let meta = CheckpointMeta {
        width_bytes,
        compaction_revision: u16::from_be_bytes([head[14], head[15]]),
        idx_len,
        dat_len: be64(&head, 24),
        last_append_at_ns: be64(&head, 32),
        fingerprint: if idx_len == 0 {
            Vec::new()
        } else {
            head[88..88 + es].to_vec()
        },
    };
    let counters = MapCounters {
        file_count: be64(&head, 40),
        delete_count: be64(&head, 48),
        deleted_bytes: be64(&head, 56),
        content_bytes: be64(&head, 64),
        max_file_key: be64(&head, 72),
    };
    let mut crc = crc32c::crc32c(&head);
    let mut map = NeedleMap::new();
    map.reserve_exact(usize::try_from(n).map_err(|_| bad("too many entries"))?);
    let mut prev: Option<u64> = None;
    let mut piece = vec![0u8; PIECE_ENTRIES * ENTRY_LEN];
    let mut left = n;
    while left > 0 {
        let k = left.min(PIECE_ENTRIES as u64) as usize;
        let piece = &mut piece[..k * ENTRY_LEN];
        r.read_exact(piece).map_err(read_err)?;
        crc = crc32c::crc32c_append(crc, piece);
        for chunk in piece.chunks_exact(ENTRY_LEN) {
            let e = IdxEntry::decode(chunk, OffsetWidth::Five)?;
            if prev.is_some_and(|p| p >= e.key) {
                return Err(bad("keys not increasing"));
            }
            if e.is_deletion() {
                return Err(bad("deleted entry in map"));
            }
            prev = Some(e.key);
            map.apply(&e);
        }
        left -= k as u64;
    }
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored).map_err(read_err)?;
    if crc != u32::from_be_bytes(stored) {
        return Err(bad("checksum mismatch"));
    }
    map.set_counters(counters);
    Ok((meta, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut m = NeedleMap::new();
        m.put(1, 8, 51);
        m.put(7, 8 << 33, 3);
        m.put(3, 800, 0);
        m.delete(3);
        let meta = CheckpointMeta {
            width_bytes: 5,
            compaction_revision: 2,
            idx_len: 68,
            dat_len: 4096,
            last_append_at_ns: 99,
            fingerprint: vec![7; 17],
        };
        let b = encode(&meta, &m);
        let (meta2, m2) = decode(&b).unwrap();
        assert_eq!(meta2, meta);
        assert_eq!(m2.counters(), m.counters());
        assert_eq!(m2.iter().collect::<Vec<_>>(), m.iter().collect::<Vec<_>>());
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(decode(&c).is_err(), "flip at {i}");
        }
        for l in 0..b.len() {
            assert!(decode(&b[..l]).is_err());
        }
    }
}
