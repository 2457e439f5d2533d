//! The 8-byte superblock at offset 0 of every `.dat`.

use kelp_core::{ReplicaPlacement, Ttl};

use crate::error::NeedleError;

/// Layout (big-endian):
///
/// ```text
/// byte 0     needle version (1, 2 or 3)
/// byte 1     replica placement byte, x*100 + y*10 + z
/// bytes 2-3  TTL: count, unit
/// bytes 4-5  compaction revision, u16
/// bytes 6-7  extra size, u16; for versions 2 and 3 that many bytes of
///            `SuperBlockExtra` protobuf follow and the first needle starts
///            at 8 + extra size. Version 1 has no extra.
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperBlock {
    pub version: u8,
    pub replica_placement: ReplicaPlacement,
    pub ttl: Ttl,
    pub compaction_revision: u16,
    /// Opaque extra bytes (kept so a rewrite preserves them).
    pub extra: Vec<u8>,
}

impl SuperBlock {
    pub const HEADER_SIZE: usize = 8;

    pub fn new(version: u8, replica_placement: ReplicaPlacement, ttl: Ttl) -> Self {
        Self {
            version,
            replica_placement,
            ttl,
            compaction_revision: 0,
            extra: Vec::new(),
        }
    }

    /// Where the first needle starts.
    pub fn block_size(&self) -> u64 {
        Self::HEADER_SIZE as u64 + self.extra.len() as u64
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.block_size() as usize);
        out.push(self.version);
        out.push(self.replica_placement.to_byte());
        out.extend_from_slice(&self.ttl.to_bytes());
        out.extend_from_slice(&self.compaction_revision.to_be_bytes());
        // Extra never exceeds u16 because decode and callers build it from a u16 length.
        let extra_len = u16::try_from(self.extra.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&extra_len.to_be_bytes());
        out.extend_from_slice(&self.extra[..extra_len as usize]);
        out
    }

    /// Parses the fixed 8 bytes; returns the superblock (without extra) and
    /// the number of extra bytes that follow.
    pub fn decode_header(b: &[u8; 8]) -> Result<(Self, usize), NeedleError> {
        let version = b[0];
        if !(1..=3).contains(&version) {
            return Err(NeedleError::SuperBlock(format!(
                "needle version {version} is not 1, 2 or 3"
            )));
        }
        let replica_placement = ReplicaPlacement::from_byte(b[1])
            .map_err(|e| NeedleError::SuperBlock(e.to_string()))?;
        let extra = if version == 1 {
            0
        } else {
            u16::from_be_bytes([b[6], b[7]]) as usize
        };
        Ok((
            Self {
                version,
                replica_placement,
                ttl: Ttl::from_bytes([b[2], b[3]]),
                compaction_revision: u16::from_be_bytes([b[4], b[5]]),
                extra: Vec::new(),
            },
            extra,
        ))
    }

    /// Parses a whole superblock, extra bytes included.
    pub fn decode(bytes: &[u8]) -> Result<Self, NeedleError> {
        let head: &[u8; 8] =
            bytes
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or(NeedleError::Truncated {
                    what: "superblock",
                    need: 8,
                    have: bytes.len() as u64,
                })?;
        let (mut sb, extra) = Self::decode_header(head)?;
        let extra_bytes = bytes.get(8..8 + extra).ok_or(NeedleError::Truncated {
            what: "superblock extra",
            need: 8 + extra as u64,
            have: bytes.len() as u64,
        })?;
        sb.extra = extra_bytes.to_vec();
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        let sb = SuperBlock::new(3, "000".parse().unwrap(), Ttl::EMPTY);
        assert_eq!(sb.encode(), [3, 0, 0, 0, 0, 0, 0, 0]);
        let mut sb = SuperBlock::new(3, "001".parse().unwrap(), Ttl::EMPTY);
        assert_eq!(sb.encode(), [3, 1, 0, 0, 0, 0, 0, 0]);
        sb.replica_placement = "000".parse().unwrap();
        sb.compaction_revision = 1;
        assert_eq!(sb.encode(), [3, 0, 0, 0, 0, 1, 0, 0]);
        let sb = SuperBlock::new(3, "200".parse().unwrap(), "3d".parse().unwrap());
        assert_eq!(sb.encode(), [3, 200, 3, 3, 0, 0, 0, 0]);
        assert_eq!(SuperBlock::decode(&sb.encode()).unwrap(), sb);
    }

    #[test]
    fn extra_is_skipped() {
        let bytes = [2, 0, 0, 0, 0, 7, 0, 3, 0xaa, 0xbb, 0xcc, 0xdd];
        let sb = SuperBlock::decode(&bytes).unwrap();
        assert_eq!(sb.block_size(), 11);
        assert_eq!(sb.compaction_revision, 7);
        assert_eq!(sb.extra, [0xaa, 0xbb, 0xcc]);
        assert!(SuperBlock::decode(&bytes[..10]).is_err());
        assert!(SuperBlock::decode(&[4, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(version in 1u8..=3, rp in 0u8..=255, count in 1u8.., unit in 1u8..=6, rev: u16,
                      extra in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut sb = SuperBlock::new(version, ReplicaPlacement::from_byte(rp).unwrap(),
                                         Ttl::from_bytes([count, unit]));
            sb.compaction_revision = rev;
            if version > 1 { sb.extra = extra; }
            let bytes = sb.encode();
            let back = SuperBlock::decode(&bytes).unwrap();
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back.version, version);
            prop_assert_eq!(back.compaction_revision, rev);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = SuperBlock::decode(&bytes);
        }
    }
}
