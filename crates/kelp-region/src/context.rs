//! Per-block context: what a reader needs to check a block, and the on-disk
//! slot record that makes torn writes detectable.
//!
//! A block's context says whether it was ever written and, if it holds data,
//! the CRC32-C of its bytes. The upstairs computes the CRC when it writes,
//! the downstairs re-checks it before storing, and the upstairs checks it
//! again on every read, so a bit flip anywhere between is caught.

use crate::codec::{Reader, Writer};
use crate::error::{BlockError, Result};

/// CRC32-C of a block's bytes.
pub fn block_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// What a block holds, as returned by a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockContext {
    /// Never written (or only ever trimmed before any write): reads as zeros.
    Unwritten,
    /// Zeroed by WRITE_ZEROES/TRIM: reads as zeros.
    Zero,
    /// Holds data whose CRC32-C is this.
    Data(u32),
}

impl BlockContext {
    /// Wire size of one context.
    pub const WIRE_LEN: usize = 5;

    /// Checks `data` (one block) against this context.
    pub fn verify(&self, data: &[u8]) -> bool {
        match self {
            BlockContext::Unwritten | BlockContext::Zero => data.iter().all(|&b| b == 0),
            BlockContext::Data(crc) => block_crc(data) == *crc,
        }
    }

    /// Wire layout: `kind u8 (0 unwritten, 1 data, 2 zero) | crc32c u32`
    /// (crc is 0 unless kind is data).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            BlockContext::Unwritten => w.u8(0).u32(0),
            BlockContext::Data(c) => w.u8(1).u32(*c),
            BlockContext::Zero => w.u8(2).u32(0),
        };
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let kind = r.u8()?;
        let crc = r.u32()?;
        match kind {
            0 => Ok(BlockContext::Unwritten),
            1 => Ok(BlockContext::Data(crc)),
            2 => Ok(BlockContext::Zero),
            k => Err(BlockError::protocol(format!("bad block context kind {k}"))),
        }
    }
}

/// Slot kinds on disk.
pub const SLOT_DATA: u8 = 1;
pub const SLOT_ZERO: u8 = 2;

/// One context slot in an extent file. Each block has two slots (A and B),
/// each with its own data area; see `extent.rs` for why.
///
/// Byte layout (24 bytes, little-endian):
/// ```text
///  0  u64  seq        0 = slot never used; higher = newer
///  8  u32  data crc32c of the slot's data area (0 for a zero slot)
/// 12  u8   kind       1 = data, 2 = zero (data area not used)
/// 13  u56  birth      the flush that made this version durable: the
///                     region's last flush number + 1 when it was written
///                     (extent format 2; always zero in format 1, which
///                     therefore reads as birth 0, older than any snapshot)
/// 20  u32  crc32c of bytes 0..20
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotCtx {
    pub seq: u64,
    pub crc: u32,
    pub kind: u8,
    pub birth: u64,
}

impl SlotCtx {
    pub const LEN: usize = 24;
    /// Births are stored in 56 bits.
    pub const MAX_BIRTH: u64 = (1 << 56) - 1;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.crc.to_le_bytes());
        b[12] = self.kind;
        b[13..20].copy_from_slice(&self.birth.min(Self::MAX_BIRTH).to_le_bytes()[..7]);
        let c = crc32c::crc32c(&b[0..20]);
        b[20..24].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// None when the slot is unused or its own checksum is wrong (a torn
    /// context write).
    pub fn decode(b: &[u8]) -> Option<SlotCtx> {
        if b.len() < Self::LEN {
            return None;
        }
        let stored = u32::from_le_bytes(b[20..24].try_into().ok()?);
        if crc32c::crc32c(&b[0..20]) != stored {
            return None;
        }
        let seq = u64::from_le_bytes(b[0..8].try_into().ok()?);
        let crc = u32::from_le_bytes(b[8..12].try_into().ok()?);
        let kind = b[12];
        let mut birth = [0u8; 8];
        birth[..7].copy_from_slice(&b[13..20]);
        let birth = u64::from_le_bytes(birth);
        if seq == 0 || !(kind == SLOT_DATA || kind == SLOT_ZERO) {
            return None;
        }
        Some(SlotCtx {
            seq,
            crc,
            kind,
            birth,
        })
    }

    pub fn context(&self) -> BlockContext {
        if self.kind == SLOT_ZERO {
            BlockContext::Zero
        } else {
            BlockContext::Data(self.crc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_golden_bytes() {
        let s = SlotCtx {
            seq: 7,
            crc: 0xdead_beef,
            kind: SLOT_DATA,
            birth: 0x0102_0304_0506_0708 & SlotCtx::MAX_BIRTH,
        };
        let b = s.encode();
        assert_eq!(
            &b[0..20],
            &[
                7, 0, 0, 0, 0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 1, 8, 7, 6, 5, 4, 3, 2
            ]
        );
        assert_eq!(SlotCtx::decode(&b), Some(s));
        let mut torn = b;
        torn[3] ^= 1;
        assert_eq!(SlotCtx::decode(&torn), None);
        assert_eq!(SlotCtx::decode(&[0u8; 24]), None);
    }

    #[test]
    fn context_verify() {
        let z = vec![0u8; 512];
        assert!(BlockContext::Unwritten.verify(&z));
        assert!(BlockContext::Zero.verify(&z));
        let d = vec![1u8; 512];
        assert!(!BlockContext::Zero.verify(&d));
        assert!(BlockContext::Data(block_crc(&d)).verify(&d));
        assert!(!BlockContext::Data(block_crc(&d) ^ 1).verify(&d));
    }
}
