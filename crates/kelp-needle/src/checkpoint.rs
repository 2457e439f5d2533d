//! `.knm` checkpoint of the needle map, so opening a big volume does not
//! replay its whole `.idx`. Written atomically (temp, fsync, rename, fsync
//! dir) only for state already fsynced, so it is also a durable point for
//! crash recovery. It is trusted only if the `.idx` still holds the entry
//! it ends at (the fingerprint) and the compaction revision matches.

use std::io::{self, Read};

use crate::error::NeedleError;
use crate::idx::{IdxEntry, OffsetWidth};
use crate::needle_map::{BLOCK_ENTRIES, MapCounters, NeedleMap};

const MAGIC: &[u8; 8] = b"KELPNMAP";
/// Version 2 stores the needle map's encoded blocks; version 1 (releases
/// before it) stored one 17-byte entry per needle and is still read.
const FORMAT_VERSION: u32 = 2;
const FORMAT_V1_ENTRIES: u32 = 1;
const HEADER_LEN: usize = 108;
const ENTRY_LEN: usize = 17;
/// A stored block: first key u64, data length u16.
const BLOCK_HEAD_LEN: usize = 10;
/// The shortest block data: count, one offset and one size byte.
const MIN_BLOCK_DATA: usize = 3;

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

/// Layout, version 2 (big-endian):
///
/// ```text
/// 0    8  magic "KELPNMAP"
/// 8    4  format version (2)
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
/// 108  8  block count b
/// 116  b blocks, keys increasing across and within them, each
///         first key u64 | data length u16 | data
/// end  4  CRC32-C of all preceding bytes
/// ```
///
/// A block's data is the needle map's in-memory block encoding (1 to 128
/// delta-coded entries; layout in `needle_map.rs`), stored verbatim so a
/// load copies blocks instead of re-encoding every entry: about 3 bytes
/// per needle of sequencer keys instead of 17. Changing that encoding
/// changes this format and needs a new version.
///
/// Version 1 has the same header without the block count, then `17*n`
/// live entries in increasing key order, each `key u64 | offset/8 low
/// u32 | offset/8 high u8 | size u32`, then the CRC.
pub fn encode(meta: &CheckpointMeta, map: &NeedleMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + map.memory_bytes() + 4);
    let r: io::Result<()> = encode_to(meta, map, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    });
    debug_assert!(r.is_ok(), "a Vec sink does not fail");
    out
}

/// Bytes gathered before a piece is handed to the sink.
const PIECE_BYTES: usize = 64 << 10;

/// `encode`, handing the bytes to `sink` in pieces of about 64 KiB, so a
/// checkpoint of a big map is written without a copy of it.
pub fn encode_to(
    meta: &CheckpointMeta,
    map: &NeedleMap,
    sink: &mut kelp_storage::Sink<'_>,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(PIECE_BYTES + 4096);
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
    out.extend_from_slice(&(map.encoded_block_count() as u64).to_be_bytes());
    let mut crc = 0u32;
    map.for_each_encoded_block(&mut |first_key, data| {
        if out.len() >= PIECE_BYTES {
            crc = crc32c::crc32c_append(crc, &out);
            sink(&out)?;
            out.clear();
        }
        // Block data is at most about 7 KiB (128 entries of at most 57
        // bytes, counting non-minimal varints a loaded block may hold),
        // far below u16::MAX.
        let len = u16::try_from(data.len())
            .map_err(|_| io::Error::other("needle map block over 64 KiB"))?;
        out.extend_from_slice(&first_key.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        Ok(())
    })?;
    crc = crc32c::crc32c_append(crc, &out);
    out.extend_from_slice(&crc.to_be_bytes());
    sink(&out)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn bad(m: &str) -> NeedleError {
    NeedleError::Checkpoint(m.to_string())
}

fn read_err(e: io::Error) -> NeedleError {
    NeedleError::Checkpoint(format!("reading: {e}"))
}

pub fn decode(bytes: &[u8]) -> Result<(CheckpointMeta, NeedleMap), NeedleError> {
    decode_from(&mut &bytes[..], bytes.len() as u64)
}

/// `decode` from a reader of a `len`-byte checkpoint of either version,
/// a piece at a time: memory is the map being built, not a copy of the
/// file. The map is returned only once the CRC of the whole file checked.
pub fn decode_from(
    r: &mut dyn io::Read,
    len: u64,
) -> Result<(CheckpointMeta, NeedleMap), NeedleError> {
    let mut r = io::BufReader::with_capacity(PIECE_BYTES, r);
    if len < (HEADER_LEN + 4) as u64 {
        return Err(bad("too short"));
    }
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(read_err)?;
    if &head[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
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
    let n = be64(&head, 80);
    let mut crc = crc32c::crc32c(&head);
    // Bytes between the header and the CRC.
    let body = len - (HEADER_LEN + 4) as u64;
    let mut map = match version {
        FORMAT_VERSION => read_blocks(&mut r, body, n, &mut crc)?,
        FORMAT_V1_ENTRIES => read_entries(&mut r, body, n, &mut crc)?,
        v => {
            return Err(NeedleError::Checkpoint(format!(
                "unknown format version {v} (this release reads {FORMAT_V1_ENTRIES} and {FORMAT_VERSION})"
            )));
        }
    };
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored).map_err(read_err)?;
    if crc != u32::from_be_bytes(stored) {
        return Err(bad("checksum mismatch"));
    }
    map.set_counters(counters);
    Ok((meta, map))
}

/// Version 2's body: `body` bytes holding `n` entries in blocks.
fn read_blocks(
    r: &mut dyn io::Read,
    body: u64,
    n: u64,
    crc: &mut u32,
) -> Result<NeedleMap, NeedleError> {
    let mut count = [0u8; 8];
    r.read_exact(&mut count).map_err(read_err)?;
    *crc = crc32c::crc32c_append(*crc, &count);
    let b = u64::from_be_bytes(count);
    // Checked before anything is allocated for `b` blocks.
    let blocks_len = body.checked_sub(8).ok_or_else(|| bad("too short"))?;
    let fits = b
        .checked_mul((BLOCK_HEAD_LEN + MIN_BLOCK_DATA) as u64)
        .is_some_and(|min| min <= blocks_len);
    if !fits || b > n || n > b.saturating_mul(BLOCK_ENTRIES as u64) {
        return Err(bad("block count does not match length"));
    }
    let mut map = NeedleMap::new();
    map.reserve_blocks(b as usize);
    let mut used = 0u64;
    let mut head = [0u8; BLOCK_HEAD_LEN];
    for _ in 0..b {
        r.read_exact(&mut head).map_err(read_err)?;
        let first_key = be64(&head, 0);
        let dlen = u16::from_be_bytes([head[8], head[9]]) as u64;
        used += BLOCK_HEAD_LEN as u64 + dlen;
        if used > blocks_len {
            return Err(bad("block runs past the end"));
        }
        let mut data = vec![0u8; dlen as usize];
        r.read_exact(&mut data).map_err(read_err)?;
        *crc = crc32c::crc32c_append(*crc, &head);
        *crc = crc32c::crc32c_append(*crc, &data);
        map.push_encoded_block(first_key, data).map_err(bad)?;
    }
    if used != blocks_len {
        return Err(bad("bytes after the last block"));
    }
    if map.len() as u64 != n {
        return Err(bad("entry count does not match blocks"));
    }
    Ok(map)
}

/// Version 1's body: `n` 17-byte entries.
fn read_entries(
    r: &mut dyn io::Read,
    body: u64,
    n: u64,
    crc: &mut u32,
) -> Result<NeedleMap, NeedleError> {
    /// Entries read at a time.
    const PIECE_ENTRIES: usize = 4096;
    if n.checked_mul(ENTRY_LEN as u64) != Some(body) {
        return Err(bad("entry count does not match length"));
    }
    let mut map = NeedleMap::new();
    map.reserve_exact(usize::try_from(n).map_err(|_| bad("too many entries"))?);
    let mut prev: Option<u64> = None;
    let mut piece = vec![0u8; PIECE_ENTRIES * ENTRY_LEN];
    let mut left = n;
    while left > 0 {
        let k = left.min(PIECE_ENTRIES as u64) as usize;
        let piece = &mut piece[..k * ENTRY_LEN];
        r.read_exact(piece).map_err(read_err)?;
        *crc = crc32c::crc32c_append(*crc, piece);
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
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            width_bytes: 5,
            compaction_revision: 2,
            idx_len: 68,
            dat_len: 4096,
            last_append_at_ns: 99,
            fingerprint: vec![7; 17],
        }
    }

    fn assert_same(a: &NeedleMap, b: &NeedleMap) {
        assert_eq!(a.counters(), b.counters());
        assert_eq!(a.len(), b.len());
        assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
    }

    #[test]
    fn round_trip_and_corruption() {
        let mut m = NeedleMap::new();
        m.put(1, 8, 51);
        m.put(7, 8 << 33, 3);
        m.put(3, 800, 0);
        m.delete(3);
        let b = encode(&meta(), &m);
        assert_eq!(&b[8..12], &2u32.to_be_bytes());
        let (meta2, m2) = decode(&b).unwrap();
        assert_eq!(meta2, meta());
        assert_same(&m, &m2);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(decode(&c).is_err(), "flip at {i}");
        }
        for l in 0..b.len() {
            assert!(decode(&b[..l]).is_err());
        }
    }

    /// Maps shaped by sequencer runs, random keys, overwrites, deletes
    /// and out-of-order keys (which wait in the overlay) come back equal,
    /// and a map read back keeps taking writes.
    #[test]
    fn maps_of_every_shape_round_trip() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for shape in 0..6 {
            let mut m = NeedleMap::new();
            let mut offset = 8u64;
            for k in 1..=5000u64 {
                let key = match shape {
                    0 => k,
                    1 => k * 1000 + rand() % 300,
                    2 => rand(),
                    _ => k * 10,
                };
                let size = 40 + (rand() % 200) as u32;
                m.put(key, offset, size);
                offset += crate::needle::actual_size(size, crate::needle::VERSION3);
            }
            if shape >= 3 {
                for k in (1..5000u64).step_by(3) {
                    m.put(k * 10 + 5, offset, 77); // into full blocks: overlay
                    offset += 128;
                }
            }
            if shape >= 4 {
                for k in (1..5000u64).step_by(7) {
                    m.delete(k * 10);
                }
                m.put(10 * 2, 1 << 30, 5);
            }
            if shape == 5 {
                m.shrink_to_fit();
            }
            let b = encode(&meta(), &m);
            let (_, mut m2) = decode(&b).unwrap();
            assert_same(&m, &m2);
            // Keeps working as a map: appends, inserts, deletes.
            for k in [u64::MAX, 1, 15, 10 * 3] {
                assert_eq!(m2.put(k, 8 << 20, 9), m.put(k, 8 << 20, 9), "key {k}");
            }
            assert_eq!(m2.delete(10 * 3), m.delete(10 * 3));
            assert_same(&m, &m2);
        }
    }

    /// A checkpoint written by the previous release (format version 1, a
    /// real volume's `.knm` from `kelp volume` at adaf09e) still loads,
    /// and holds what replaying that volume's `.idx` gives.
    #[test]
    fn version_1_from_the_previous_release_loads() {
        let knm = include_bytes!("../tests/fixtures/knm-v1/fx_1.knm");
        let idx = include_bytes!("../tests/fixtures/knm-v1/fx_1.idx");
        assert_eq!(&knm[8..12], &1u32.to_be_bytes());
        let (meta, map) = decode(knm).unwrap();
        assert_eq!(meta.idx_len, idx.len() as u64);
        let mut replayed = NeedleMap::new();
        for e in idx.chunks_exact(ENTRY_LEN) {
            replayed.apply(&IdxEntry::decode(e, OffsetWidth::Five).unwrap());
        }
        assert_eq!(map.len(), 297);
        assert_same(&map, &replayed);
        // Written again, it is version 2 and equal.
        let (meta2, map2) = decode(&encode(&meta, &map)).unwrap();
        assert_eq!(meta2, meta);
        assert_same(&map2, &replayed);
    }

    /// A block emptied by deletes is left out of the checkpoint (and out
    /// of its block count), and the rest reads back.
    #[test]
    fn emptied_blocks_are_left_out() {
        let mut m = NeedleMap::new();
        for k in 1..=300u64 {
            m.put(k, k * 64, 40);
        }
        for k in 129..=256u64 {
            m.delete(k);
        }
        assert_eq!(m.len(), 172);
        let b = encode(&meta(), &m);
        assert_eq!(be64(&b, HEADER_LEN), 2, "blocks written");
        let (_, m2) = decode(&b).unwrap();
        assert_same(&m, &m2);
    }

    /// An entry that is not a live needle (offset 0, or a size with the
    /// deletion bit) is refused, as a version-1 checkpoint refuses it.
    #[test]
    fn entries_that_are_not_live_needles_are_refused() {
        for (offset, size) in [(0u64, 40u32), (64, 0x8000_0000), (8 << 40, 40)] {
            let mut m = NeedleMap::new();
            m.put(1, 64, 40);
            m.put(2, offset, size);
            assert!(decode(&encode(&meta(), &m)).is_err(), "{offset} {size}");
        }
    }

    /// Blocks whose bytes are wrong but whose CRC was recomputed (as a
    /// bug, not a bit flip, would write them) are refused, never a panic
    /// or a map with keys out of order.
    #[test]
    fn malformed_blocks_with_a_valid_crc_are_refused() {
        let mut m = NeedleMap::new();
        for k in 1..=300u64 {
            m.put(k * 3, k * 64, 40 + (k % 5) as u32);
        }
        let b = encode(&meta(), &m);
        // The entry count, the block count and every block.
        let fields = (80..88).chain(HEADER_LEN..b.len() - 4);
        let mut refused = 0;
        for i in fields {
            for bit in [0x01u8, 0x40, 0x80] {
                let mut c = b.clone();
                c[i] ^= bit;
                let n = c.len();
                let crc = crc32c::crc32c(&c[..n - 4]);
                c[n - 4..].copy_from_slice(&crc.to_be_bytes());
                let counts = (80..88).contains(&i) || (HEADER_LEN..HEADER_LEN + 8).contains(&i);
                match decode(&c) {
                    Err(_) => refused += 1,
                    Ok(_) if counts => panic!("a changed count at {i} was accepted"),
                    Ok((_, m2)) => {
                        // Another valid map: consistent with itself.
                        let all: Vec<_> = m2.iter().collect();
                        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "flip at {i}");
                        assert!(all.iter().all(|(k, v)| m2.get(*k) == Some(*v)));
                        assert_eq!(all.len(), m.len());
                    }
                }
            }
        }
        assert!(refused > 0);
    }
}
