//! Replica digests: what a volume holds, compact enough to compare two
//! replicas of it, and the raw needle copy that brings one up to date.
//!
//! Wire format of a digest: a sequence of 17-byte records sorted by key,
//! one per key the volume has seen and not compacted away:
//!
//! ```text
//!   0..8    key    u64 big-endian
//!   8       state  u8  1 = live, 2 = deleted (tombstone is the last entry)
//!   9..13   size   u32 big-endian, the needle's Size (0 when deleted)
//!   13..17  crc    u32 big-endian, the stored CRC32-C (0 when deleted)
//! ```
//!
//! A raw needle is the needle's bytes exactly as in `.dat` (header, body,
//! checksum, timestamp, padding); the receiver decodes and CRC-checks it
//! with the volume's version before appending it.

use std::collections::{HashMap, HashSet};

use crate::error::{NeedleError, VolumeError};
use crate::idx::IdxEntry;
use crate::needle::{self, Needle};
use crate::volume::{Volume, WriteOutcome};

pub const RECORD_LEN: usize = 17;
const LIVE: u8 = 1;
const DELETED: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Live { size: u32, crc: u32 },
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestEntry {
    pub key: u64,
    pub state: KeyState,
}

pub fn encode(entries: &[DigestEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * RECORD_LEN);
    for e in entries {
        out.extend_from_slice(&e.key.to_be_bytes());
        let (state, size, crc) = match e.state {
            KeyState::Live { size, crc } => (LIVE, size, crc),
            KeyState::Deleted => (DELETED, 0, 0),
        };
        out.push(state);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// Parses a digest received from another server. Refuses a length that is
/// not whole records, an unknown state, and keys out of order.
pub fn decode(bytes: &[u8]) -> Result<Vec<DigestEntry>, NeedleError> {
    if !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(NeedleError::Replica(format!(
            "digest of {} bytes is not whole {RECORD_LEN}-byte records",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(bytes.len() / RECORD_LEN);
    let mut prev: Option<u64> = None;
    for r in bytes.chunks_exact(RECORD_LEN) {
        let be32 = |at: usize| u32::from_be_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
        let key = u64::from_be_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
        if prev.is_some_and(|p| p >= key) {
            return Err(NeedleError::Replica(format!(
                "digest keys out of order at {key:x}"
            )));
        }
        prev = Some(key);
        let state = match r[8] {
            LIVE => KeyState::Live {
                size: be32(9),
                crc: be32(13),
            },
            DELETED => KeyState::Deleted,
            s => {
                return Err(NeedleError::Replica(format!(
                    "digest state {s} for key {key:x}"
                )));
            }
        };
        out.push(DigestEntry { key, state });
    }
    Ok(out)
}

impl Volume {
    /// Every key this volume has seen, live (with size and CRC) or deleted,
    /// sorted by key.
    pub fn digest(&self) -> Result<Vec<DigestEntry>, VolumeError> {
        let (f, idx_end, live) = {
            // The writer lock makes the map and `.idx` length agree.
            let w = self.writer.lock();
            (self.files(), w.idx_end, self.entries())
        };
        let es = self.layout.width.entry_size();
        let mut deleted = HashSet::new();
        let mut buf = vec![0u8; 64 * 1024 * es];
        let mut pos = 0u64;
        while pos < idx_end {
            let n = ((idx_end - pos) as usize).min(buf.len());
            f.idx.read_exact_at(&mut buf[..n], pos)?;
            for c in buf[..n].chunks_exact(es) {
                let e = IdxEntry::decode(c, self.layout.width)?;
                if e.is_deletion() {
                    deleted.insert(e.key);
                } else {
                    deleted.remove(&e.key);
                }
            }
            pos += n as u64;
        }
        let mut out: HashMap<u64, KeyState> = deleted
            .into_iter()
            .map(|k| (k, KeyState::Deleted))
            .collect();
        for (key, v) in live {
            let mut crc = [0u8; 4];
            f.dat
                .read_exact_at(&mut crc, v.offset + 16 + u64::from(v.size))
                .map_err(|e| Self::corrupt(key, v.offset, format!("reading checksum: {e}")))?;
            out.insert(
                key,
                KeyState::Live {
                    size: v.size,
                    crc: u32::from_be_bytes(crc),
                },
            );
        }
        let mut entries: Vec<DigestEntry> = out
            .into_iter()
            .map(|(key, state)| DigestEntry { key, state })
            .collect();
        entries.sort_unstable_by_key(|e| e.key);
        Ok(entries)
    }

    /// The live needle for `key` exactly as stored in `.dat`, CRC-checked.
    pub fn raw_needle(&self, key: u64) -> Result<Vec<u8>, VolumeError> {
        let (v, f) = {
            let map = self.map.read();
            (map.get(key), self.files())
        };
        let v = v.ok_or(VolumeError::NotFound { key })?;
        let total = needle::actual_size(v.size, self.layout.version);
        let mut buf = vec![0u8; total as usize];
        f.dat
            .read_exact_at(&mut buf, v.offset)
            .map_err(|e| Self::corrupt(key, v.offset, format!("reading {total} bytes: {e}")))?;
        Needle::decode(&buf, self.layout.version).map_err(|e| Self::corrupt(key, v.offset, e))?;
        Ok(buf)
    }

    /// Appends a needle copied from another replica (bytes as returned by
    /// `raw_needle` there); it replaces any local copy of the key, without
    /// comparing cookies (the local header may be what is corrupt).
    /// Refuses bytes that do not decode or fail their CRC, and a needle for
    /// another key.
    pub fn import_needle(&self, key: u64, raw: Vec<u8>) -> Result<WriteOutcome, VolumeError> {
        let mut n = Needle::decode_vec(raw, self.layout.version)?;
        if n.id != key {
            return Err(VolumeError::Format(NeedleError::Replica(format!(
                "asked for needle {key:x}, got {:x}",
                n.id
            ))));
        }
        self.append_needle(&mut n, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let e = vec![
            DigestEntry {
                key: 1,
                state: KeyState::Live { size: 9, crc: 7 },
            },
            DigestEntry {
                key: 5,
                state: KeyState::Deleted,
            },
        ];
        let b = encode(&e);
        assert_eq!(b.len(), 2 * RECORD_LEN);
        assert_eq!(decode(&b).unwrap(), e);
        assert!(decode(&b[..20]).is_err());
        let mut swapped = b[RECORD_LEN..].to_vec();
        swapped.extend_from_slice(&b[..RECORD_LEN]);
        assert!(decode(&swapped).is_err(), "keys out of order");
        let mut bad = b.clone();
        bad[8] = 9;
        assert!(decode(&bad).is_err(), "unknown state");
    }
}
