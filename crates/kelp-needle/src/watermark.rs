//! `.kwm` sync watermark: a point at which `.dat` and `.idx` were both
//! durable. Crash recovery trusts everything before it and verifies only
//! what follows. Two fixed slots are written alternately (pwrite +
//! fdatasync), so a torn slot write leaves the other slot valid; the valid
//! slot with the higher generation wins.

use std::io;
use std::path::Path;

use kelp_storage::{File, Open, Storage};

const MAGIC: &[u8; 4] = b"KWM1";
const SLOT: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermark {
    pub generation: u64,
    pub dat_len: u64,
    pub idx_len: u64,
    pub last_append_at_ns: u64,
    pub compaction_revision: u16,
    /// The `.idx` entry ending at `idx_len` (empty when `idx_len` is 0).
    pub fingerprint: Vec<u8>,
}

impl Watermark {
    /// Slot layout (big-endian):
    ///
    /// ```text
    /// 0   4  magic "KWM1"
    /// 4   4  reserved (0)
    /// 8   8  generation
    /// 16  8  dat_len
    /// 24  8  idx_len
    /// 32  8  last AppendAtNs
    /// 40  2  compaction revision
    /// 42  1  fingerprint length (0, 16 or 17)
    /// 43  17 fingerprint: the .idx entry ending at idx_len, zero padded
    /// 60  4  CRC32-C of bytes 0..60
    /// ```
    pub fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[..4].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_be_bytes());
        b[16..24].copy_from_slice(&self.dat_len.to_be_bytes());
        b[24..32].copy_from_slice(&self.idx_len.to_be_bytes());
        b[32..40].copy_from_slice(&self.last_append_at_ns.to_be_bytes());
        b[40..42].copy_from_slice(&self.compaction_revision.to_be_bytes());
        let l = self.fingerprint.len().min(17);
        b[42] = l as u8;
        b[43..43 + l].copy_from_slice(&self.fingerprint[..l]);
        let crc = crc32c::crc32c(&b[..60]);
        b[60..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let b = b.get(..SLOT)?;
        if &b[..4] != MAGIC || crc32c::crc32c(&b[..60]).to_be_bytes() != b[60..64] {
            return None;
        }
        let u = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(a)
        };
        let l = (b[42] as usize).min(17);
        Some(Self {
            generation: u(8),
            dat_len: u(16),
            idx_len: u(24),
            last_append_at_ns: u(32),
            compaction_revision: u16::from_be_bytes([b[40], b[41]]),
            fingerprint: b[43..43 + l].to_vec(),
        })
    }
}

pub struct WatermarkFile {
    file: File,
    generation: u64,
}

impl WatermarkFile {
    /// Opens (creating if needed) and returns the newest valid watermark.
    pub fn open(storage: &Storage, path: &Path) -> io::Result<(Self, Option<Watermark>)> {
        let existed = storage.exists(path)?;
        let file = storage.open(path, Open::CREATE)?;
        if !existed {
            storage.sync_parent(path)?;
        }
        let mut buf = [0u8; 2 * SLOT];
        let n = read_up_to(&file, &mut buf)?;
        let best = [0, SLOT]
            .iter()
            .filter(|s| **s + SLOT <= n)
            .filter_map(|s| Watermark::decode(&buf[*s..]))
            .max_by_key(|w| w.generation);
        let generation = best.as_ref().map_or(0, |w| w.generation);
        Ok((Self { file, generation }, best))
    }

    /// Durably records `w` (its generation is assigned here).
    pub fn write(&mut self, w: &Watermark) -> io::Result<()> {
        let generation = self.generation + 1;
        let slot = (generation % 2) * SLOT as u64;
        let w = Watermark {
            generation,
            ..w.clone()
        };
        self.file.write_all_at(&w.encode(), slot)?;
        self.file.sync_data()?;
        self.generation = generation;
        Ok(())
    }
}

fn read_up_to(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            r => n += r,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_slots_survive_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1.kwm");
        let (mut f, w) = WatermarkFile::open(&Storage::real(), &p).unwrap();
        assert!(w.is_none());
        let mut w = Watermark {
            dat_len: 8,
            fingerprint: vec![1; 17],
            ..Watermark::default()
        };
        f.write(&w).unwrap();
        w.dat_len = 88;
        f.write(&w).unwrap();
        drop(f);
        let (_, got) = WatermarkFile::open(&Storage::real(), &p).unwrap();
        assert_eq!(
            got.as_ref().map(|w| (w.generation, w.dat_len)),
            Some((2, 88))
        );
        // Tear the newest slot (generation 2 lives in slot 0).
        let f = Storage::real().open(&p, Open::WRITE).unwrap();
        f.write_all_at(&[0xff; 10], 20).unwrap();
        let (_, got) = WatermarkFile::open(&Storage::real(), &p).unwrap();
        assert_eq!(got.map(|w| (w.generation, w.dat_len)), Some((1, 8)));
    }
}
