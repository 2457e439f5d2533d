//! `.idx` entries: the append-only log of needle-map changes.

use crate::error::NeedleError;

/// Width of the offset field in `.idx` entries (SeaweedFS build flavour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OffsetWidth {
    /// 16-byte entries, volumes up to 32 GiB (standard `weed` build).
    Four,
    /// 17-byte entries, volumes up to 8 TiB (`5BytesOffset` / large-disk build).
    #[default]
    Five,
}

impl OffsetWidth {
    pub fn entry_size(self) -> usize {
        match self {
            Self::Four => 16,
            Self::Five => 17,
        }
    }

    /// The `.vif` `bytesOffset` value.
    pub fn bytes_offset(self) -> u32 {
        match self {
            Self::Four => 4,
            Self::Five => 5,
        }
    }

    pub fn from_bytes_offset(b: u32) -> Option<Self> {
        match b {
            4 => Some(Self::Four),
            5 => Some(Self::Five),
            _ => None,
        }
    }

    /// Largest offset, in 8-byte units, an entry can hold.
    pub fn max_offset_units(self) -> u64 {
        match self {
            Self::Four => u32::MAX as u64,
            Self::Five => (1u64 << 40) - 1,
        }
    }

    /// Largest `.dat` size addressable with this width.
    pub fn max_dat_size(self) -> u64 {
        (self.max_offset_units() + 1) * crate::needle::PADDING
    }
}

/// One `.idx` entry. `offset_units` is the needle offset divided by 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdxEntry {
    pub key: u64,
    pub offset_units: u64,
    pub size: u32,
}

impl IdxEntry {
    /// Size written for deletions (`-1` as int32).
    pub const TOMBSTONE_SIZE: u32 = 0xFFFF_FFFF;

    pub fn new(key: u64, offset_units: u64, size: u32) -> Self {
        Self {
            key,
            offset_units,
            size,
        }
    }

    pub fn byte_offset(&self) -> u64 {
        self.offset_units * crate::needle::PADDING
    }

    /// A deletion: tombstone size (any negative int32), or offset 0 (remote
    /// tier deletes write offset-0 entries; offset 0 is the superblock).
    pub fn is_deletion(&self) -> bool {
        self.offset_units == 0 || self.size >= 0x8000_0000
    }

    /// Layout, big-endian:
    ///
    /// ```text
    /// 4-byte width (16 bytes): key u64 | offset/8 u32          | size u32
    /// 5-byte width (17 bytes): key u64 | offset/8 bits 0-31 u32
    ///                                  | offset/8 bits 32-39 u8 | size u32
    /// ```
    /// Size is the needle's `Size` field, 0xFFFFFFFF for a tombstone.
    pub fn encode(&self, width: OffsetWidth, out: &mut Vec<u8>) -> Result<(), NeedleError> {
        if self.offset_units > width.max_offset_units() {
            return Err(NeedleError::OffsetOverflow(self.offset_units));
        }
        out.extend_from_slice(&self.key.to_be_bytes());
        out.extend_from_slice(&(self.offset_units as u32).to_be_bytes());
        if width == OffsetWidth::Five {
            out.push((self.offset_units >> 32) as u8);
        }
        out.extend_from_slice(&self.size.to_be_bytes());
        Ok(())
    }

    pub fn to_bytes(&self, width: OffsetWidth) -> Result<Vec<u8>, NeedleError> {
        let mut v = Vec::with_capacity(width.entry_size());
        self.encode(width, &mut v)?;
        Ok(v)
    }

    /// Decodes one entry from the first `width.entry_size()` bytes.
    pub fn decode(b: &[u8], width: OffsetWidth) -> Result<Self, NeedleError> {
        let es = width.entry_size();
        let b = b.get(..es).ok_or(NeedleError::Truncated {
            what: ".idx entry",
            need: es as u64,
            have: b.len() as u64,
        })?;
        let mut key = [0u8; 8];
        key.copy_from_slice(&b[..8]);
        let low = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as u64;
        let (high, s) = match width {
            OffsetWidth::Four => (0u64, &b[12..16]),
            OffsetWidth::Five => (b[12] as u64, &b[13..17]),
        };
        Ok(Self {
            key: u64::from_be_bytes(key),
            offset_units: high << 32 | low,
            size: u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        })
    }
}

/// Iterates the entries of a whole `.idx` image; errors if its length is
/// not a multiple of the entry size.
pub fn decode_all(
    bytes: &[u8],
    width: OffsetWidth,
) -> Result<impl Iterator<Item = IdxEntry> + '_, NeedleError> {
    let es = width.entry_size();
    if !bytes.len().is_multiple_of(es) {
        return Err(NeedleError::Truncated {
            what: ".idx file",
            need: bytes.len().next_multiple_of(es) as u64,
            have: bytes.len() as u64,
        });
    }
    Ok(bytes
        .chunks_exact(es)
        .filter_map(move |c| IdxEntry::decode(c, width).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn golden_observed_entries() {
        let w = OffsetWidth::Five;
        let put = hex("0000000000000001 00000001 00 00000033");
        let e = IdxEntry::decode(&put, w).unwrap();
        assert_eq!(e, IdxEntry::new(1, 1, 51));
        assert_eq!(e.byte_offset(), 8);
        assert!(!e.is_deletion());
        assert_eq!(e.to_bytes(w).unwrap(), put);

        let del = hex("0000000000000001 0000000b 00 ffffffff");
        let e = IdxEntry::decode(&del, w).unwrap();
        assert_eq!(e, IdxEntry::new(1, 11, IdxEntry::TOMBSTONE_SIZE));
        assert_eq!(e.byte_offset(), 88);
        assert!(e.is_deletion());
        assert_eq!(e.to_bytes(w).unwrap(), del);

        let four = IdxEntry::new(1, 1, 51).to_bytes(OffsetWidth::Four).unwrap();
        assert_eq!(four, hex("0000000000000001 00000001 00000033"));
        // High byte goes after the low 32 bits.
        let big = IdxEntry::new(2, 0x07_0000_0003, 9).to_bytes(w).unwrap();
        assert_eq!(big, hex("0000000000000002 00000003 07 00000009"));
        assert!(
            IdxEntry::new(2, 1 << 32, 9)
                .to_bytes(OffsetWidth::Four)
                .is_err()
        );
        assert!(IdxEntry::new(0, 0, 5).is_deletion());
    }

    proptest! {
        #[test]
        fn round_trip(key: u64, off in 0u64..(1 << 40), size: u32, five: bool) {
            let w = if five { OffsetWidth::Five } else { OffsetWidth::Four };
            let off = off.min(w.max_offset_units());
            let e = IdxEntry::new(key, off, size);
            let b = e.to_bytes(w).unwrap();
            prop_assert_eq!(b.len(), w.entry_size());
            prop_assert_eq!(IdxEntry::decode(&b, w).unwrap(), e);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            for w in [OffsetWidth::Four, OffsetWidth::Five] {
                let _ = IdxEntry::decode(&bytes, w);
                if let Ok(it) = decode_all(&bytes, w) { it.count(); }
            }
        }
    }
}
