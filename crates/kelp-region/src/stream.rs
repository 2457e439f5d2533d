//! The send stream: a snapshot of a block volume (a full stream) or the
//! change between two snapshots (an incremental one) as a byte stream, for
//! `kelp block send | kelp block receive` between hosts (issue 16). This
//! module is the codec; the commands that read snapshots into it and apply
//! it to regions build on it.
//!
//! # Layout (little-endian)
//!
//! Header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `KELPSEND` |
//! | 8 | 2 | version (1) |
//! | 10 | 2 | flags: bit 0 = write payloads are zstd-compressed; others 0 |
//! | 12 | 4 | block size (bytes) |
//! | 16 | 8 | total blocks of the volume |
//! | 24 | 16 | GUID of the base snapshot (all zero: a full stream) |
//! | 40 | 16 | GUID of the target snapshot |
//! | 56 | 2 | length N of the target's name (at most 255) |
//! | 58 | N | the target's name, UTF-8 |
//! | 58+N | 4 | CRC32-C of the header before it |
//!
//! Then records, each:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 1 = write run, 2 = zero run, 3 = end |
//! | 1 | 3 | reserved, 0 |
//! | 4 | 8 | first block (end: the number of records before it) |
//! | 12 | 4 | block count (end: 0) |
//! | 16 | 4 | payload length P |
//! | 20 | P | payload: a write run's blocks (zstd-compressed when the flag is set); nothing for a zero run; the end's 32-byte content digest |
//! | 20+P | 4 | running CRC32-C |
//!
//! The running CRC32-C covers the header's CRC and every byte of every
//! record so far (kind to payload): a flipped bit, a dropped, repeated or
//! reordered record, or a record from another stream fails at the first
//! record it touches, and a stream cut short fails for want of its end.
//! Blocks a stream does not name are holes: unchanged since the base (or
//! zeros in a full stream). The end's digest is the target snapshot's
//! [`content_digest`], computed from block contexts alone, so neither side
//! reads the whole volume to prove the receiver holds exactly the sender's
//! data.

use std::io::{Read, Write};

use crate::context::BlockContext;

pub const MAGIC: &[u8; 8] = b"KELPSEND";
pub const VERSION: u16 = 1;
const FLAG_ZSTD: u16 = 1;
const HEADER_FIXED: usize = 58;
const RECORD_HEAD: usize = 20;
/// The most blocks' worth of bytes one write run carries (before
/// compression), and so the most a reader allocates for one record.
pub const MAX_RUN_BYTES: usize = 8 << 20;
const KIND_WRITE: u8 = 1;
const KIND_ZERO: u8 = 2;
const KIND_END: u8 = 3;
const ZSTD_LEVEL: i32 = 1;

/// What a stream carries, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub block_size: u32,
    pub total_blocks: u64,
    /// The base snapshot of an incremental stream; `None` for a full one.
    pub from: Option<[u8; 16]>,
    pub to: [u8; 16],
    /// The target snapshot's name.
    pub name: String,
    /// Write payloads are zstd-compressed.
    pub compressed: bool,
}

/// One record of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `data` (whole blocks) written from block `start` on.
    Write { start: u64, data: Vec<u8> },
    /// `count` blocks from `start` on read as zeros.
    Zero { start: u64, count: u32 },
    /// The last record: the target snapshot's content digest.
    End { digest: [u8; 32] },
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a Kelp send stream (magic {0:02x?})")]
    BadMagic([u8; 8]),
    #[error("send stream version {found} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion { found: u16 },
    #[error("the stream ends early, inside {0}")]
    Truncated(&'static str),
    #[error("checksum mismatch in {what}: the stream is damaged")]
    BadChecksum { what: String },
    #[error("malformed send stream: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, StreamError>;

impl StreamHeader {
    fn encode(&self) -> Result<Vec<u8>> {
        if self.name.len() > 255 {
            return Err(StreamError::Invalid(format!(
                "snapshot name of {} bytes (at most 255)",
                self.name.len()
            )));
        }
        if self.block_size == 0 {
            return Err(StreamError::Invalid("block size 0".into()));
        }
        let mut b = Vec::with_capacity(HEADER_FIXED + self.name.len() + 4);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if self.compressed { FLAG_ZSTD } else { 0 };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.total_blocks.to_le_bytes());
        b.extend_from_slice(&self.from.unwrap_or([0; 16]));
        b.extend_from_slice(&self.to);
        b.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        b.extend_from_slice(self.name.as_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Ok(b)
    }
}

/// Writes a stream: the header at once, then records, then `finish`.
pub struct StreamWriter<W: Write> {
    out: W,
    header: StreamHeader,
    chain: u32,
    records: u64,
    /// Blocks must come in increasing order; this is the first block a
    /// record may name next.
    next_block: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(mut out: W, header: StreamHeader) -> Result<Self> {
        let bytes = header.encode()?;
        out.write_all(&bytes)?;
        let chain = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap_or([0; 4]));
        Ok(StreamWriter {
            out,
            header,
            chain,
            records: 0,
            next_block: 0,
        })
    }

    fn check_run(&self, start: u64, count: u64) -> Result<()> {
        if count == 0 {
            return Err(StreamError::Invalid("a run of 0 blocks".into()));
        }
        if start < self.next_block {
            return Err(StreamError::Invalid(format!(
                "block {start} comes after block {} already sent",
                self.next_block - 1
            )));
        }
        if start
            .checked_add(count)
            .is_none_or(|end| end > self.header.total_blocks)
        {
            return Err(StreamError::Invalid(format!(
                "blocks {start}+{count} pass the volume's end ({} blocks)",
                self.header.total_blocks
            )));
        }
        Ok(())
    }

    /// Whole blocks written from `start` on; long runs are split.
    pub fn write(&mut self, start: u64, data: &[u8]) -> Result<()> {
        let bs = self.header.block_size as usize;
        if data.is_empty() || !data.len().is_multiple_of(bs) {
            return Err(StreamError::Invalid(format!(
                "{} bytes are not whole {bs}-byte blocks",
                data.len()
            )));
        }
        self.check_run(start, (data.len() / bs) as u64)?;
        let per_record = (MAX_RUN_BYTES / bs).max(1) * bs;
        for (i, piece) in data.chunks(per_record).enumerate() {
            let first = start + (i * per_record / bs) as u64;
            let payload = if self.header.compressed {
                zstd::bulk::compress(piece, ZSTD_LEVEL)
                    .map_err(|e| StreamError::Invalid(format!("zstd: {e}")))?
            } else {
                piece.to_vec()
            };
            self.record(KIND_WRITE, first, (piece.len() / bs) as u32, &payload)?;
        }
        self.next_block = start + (data.len() / bs) as u64;
        Ok(())
    }

    /// The output written to.
    pub fn output(&self) -> &W {
        &self.out
    }

    /// `count` blocks from `start` on read as zeros.
    pub fn zero(&mut self, start: u64, count: u64) -> Result<()> {
        self.check_run(start, count)?;
        let mut done = 0;
        while done < count {
            let n = (count - done).min(u32::MAX as u64);
            self.record(KIND_ZERO, start + done, n as u32, &[])?;
            done += n;
        }
        self.next_block = start + count;
        Ok(())
    }

    /// Writes the end record with the target's content digest and returns
    /// the output.
    pub fn finish(mut self, digest: [u8; 32]) -> Result<W> {
        let records = self.records;
        self.record(KIND_END, records, 0, &digest)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn record(&mut self, kind: u8, first: u64, count: u32, payload: &[u8]) -> Result<()> {
        let mut head = [0u8; RECORD_HEAD];
        head[0] = kind;
        head[4..12].copy_from_slice(&first.to_le_bytes());
        head[12..16].copy_from_slice(&count.to_le_bytes());
        head[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c_append(self.chain, &head), payload);
        self.out.write_all(&head)?;
        self.out.write_all(payload)?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.chain = crc;
        self.records += 1;
        Ok(())
    }
}

/// Reads a stream: `new` reads and checks the header, `next` yields records
/// until the end record (then `None`). Every length is checked before
/// anything is allocated; nothing is returned that failed its checksum.
pub struct StreamReader<R: Read> {
    input: R,
    header: StreamHeader,
    chain: u32,
    records: u64,
    next_block: u64,
    ended: bool,
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StreamError::Truncated(what)
        } else {
            StreamError::Io(e)
        }
    })
}

impl<R: Read> StreamReader<R> {
    pub fn new(mut input: R) -> Result<Self> {
        let mut fixed = [0u8; HEADER_FIXED];
        read_exact(&mut input, &mut fixed[..8], "the header")?;
        let magic: [u8; 8] = fixed[..8].try_into().unwrap_or_default();
        if &magic != MAGIC {
            return Err(StreamError::BadMagic(magic));
        }
        read_exact(&mut input, &mut fixed[8..], "the header")?;
        let u16_at = |o: usize| u16::from_le_bytes([fixed[o], fixed[o + 1]]);
        let version = u16_at(8);
        if version != VERSION {
            return Err(StreamError::UnsupportedVersion { found: version });
        }
        let flags = u16_at(10);
        let name_len = u16_at(56) as usize;
        let mut rest = vec![0u8; name_len + 4];
        read_exact(&mut input, &mut rest, "the header")?;
        let (name, crc) = rest.split_at(name_len);
        let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        let computed = crc32c::crc32c_append(crc32c::crc32c(&fixed), name);
        if stored != computed {
            return Err(StreamError::BadChecksum {
                what: "the header".into(),
            });
        }
        if flags & !FLAG_ZSTD != 0 {
            return Err(StreamError::Malformed(format!("unknown flags {flags:#x}")));
        }
        let block_size = u32::from_le_bytes(fixed[12..16].try_into().unwrap_or_default());
        if block_size == 0 || block_size as usize > MAX_RUN_BYTES {
            return Err(StreamError::Malformed(format!("block size {block_size}")));
        }
        let from: [u8; 16] = fixed[24..40].try_into().unwrap_or_default();
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| StreamError::Malformed("the snapshot name is not UTF-8".into()))?;
        let header = StreamHeader {
            block_size,
            total_blocks: u64::from_le_bytes(fixed[16..24].try_into().unwrap_or_default()),
            from: (from != [0; 16]).then_some(from),
            to: fixed[40..56].try_into().unwrap_or_default(),
            name,
            compressed: flags & FLAG_ZSTD != 0,
        };
        Ok(StreamReader {
            input,
            header,
            chain: stored,
            records: 0,
            next_block: 0,
            ended: false,
        })
    }

    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The next record, or `None` after the end record.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.ended {
            return Ok(None);
        }
        let n = self.records;
        let mut head = [0u8; RECORD_HEAD];
        read_exact(&mut self.input, &mut head, "a record")?;
        let kind = head[0];
        let first = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
        let count = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[16..20].try_into().unwrap_or_default()) as usize;
        let bad = |why: String| StreamError::Malformed(format!("record {n}: {why}"));
        if head[1..4] != [0, 0, 0] {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let bs = self.header.block_size as usize;
        let max_len = match kind {
            KIND_WRITE => MAX_RUN_BYTES + MAX_RUN_BYTES / 8 + 1024,
            KIND_ZERO => 0,
            KIND_END => 32,
            other => return Err(bad(format!("unknown kind {other}"))),
        };
        if len > max_len {
            return Err(bad(format!("payload of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        read_exact(&mut self.input, &mut payload, "a record")?;
        let mut crc = [0u8; 4];
        read_exact(&mut self.input, &mut crc, "a record")?;
        let computed = crc32c::crc32c_append(crc32c::crc32c_append(self.chain, &head), &payload);
        if u32::from_le_bytes(crc) != computed {
            return Err(StreamError::BadChecksum {
                what: format!("record {n}"),
            });
        }
        self.chain = computed;
        self.records += 1;
        if kind == KIND_END {
            if first != n || count != 0 || len != 32 {
                return Err(bad("the end record does not close this stream".into()));
            }
            self.ended = true;
            let digest = payload.try_into().unwrap_or([0; 32]);
            return Ok(Some(Record::End { digest }));
        }
        if count == 0 || (kind == KIND_WRITE && count as usize > MAX_RUN_BYTES / bs) {
            return Err(bad(format!("a run of {count} blocks")));
        }
        if first < self.next_block
            || first
                .checked_add(count as u64)
                .is_none_or(|end| end > self.header.total_blocks)
        {
            return Err(bad(format!(
                "blocks {first}+{count} are out of order or past the volume's {} blocks",
                self.header.total_blocks
            )));
        }
        self.next_block = first + count as u64;
        if kind == KIND_ZERO {
            return Ok(Some(Record::Zero {
                start: first,
                count,
            }));
        }
        let want = count as usize * bs;
        let data = if self.header.compressed {
            let data =
                zstd::bulk::decompress(&payload, want).map_err(|e| bad(format!("zstd: {e}")))?;
            if data.len() != want {
                return Err(bad(format!(
                    "{} bytes inflated, {want} expected",
                    data.len()
                )));
            }
            data
        } else if payload.len() != want {
            return Err(bad(format!("{len} bytes for {count} blocks")));
        } else {
            payload
        };
        Ok(Some(Record::Write { start: first, data }))
    }
}

/// The digest of a snapshot's content, from its blocks' contexts in order:
/// SHA-256 over, per block, a kind byte (0 reads as zeros, 1 data) and for
/// data its CRC32-C. Never-written and zeroed blocks are the same content.
/// Sender and receiver both compute it from contexts, which every read
/// checks against the data, so the whole volume is never read for it.
pub fn content_digest(blocks: impl IntoIterator<Item = BlockContext>) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for c in blocks {
        match c {
            BlockContext::Unwritten | BlockContext::Zero => h.update(&[0]),
            BlockContext::Data(crc) => {
                h.update(&[1]);
                h.update(&crc.to_le_bytes());
            }
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// Fuzzing entry point: decodes `data` as a stream to its end; every
/// decoded record must re-encode into a stream that decodes the same.
pub fn fuzz_decode(data: &[u8]) {
    let Ok(mut r) = StreamReader::new(data) else {
        return;
    };
    let header = r.header().clone();
    let mut records = Vec::new();
    while let Ok(Some(rec)) = r.next_record() {
        records.push(rec);
    }
    let Ok(mut w) = StreamWriter::new(Vec::new(), header) else {
        return;
    };
    for rec in &records {
        let ok = match rec {
            Record::Write { start, data } => w.write(*start, data).is_ok(),
            Record::Zero { start, count } => w.zero(*start, *count as u64).is_ok(),
            Record::End { digest } => {
                let bytes = w.finish(*digest).expect("re-encoding a decoded stream");
                let mut again = StreamReader::new(bytes.as_slice()).expect("re-encoded header");
                let mut back = Vec::new();
                while let Some(rec) = again.next_record().expect("re-encoded record") {
                    back.push(rec);
                }
                assert_eq!(
                    back, records,
                    "a decoded stream re-encodes to the same records"
                );
                return;
            }
        };
        assert!(ok, "a decoded record re-encodes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(compressed: bool) -> StreamHeader {
        StreamHeader {
            block_size: 512,
            total_blocks: 64,
            from: Some([1; 16]),
            to: [2; 16],
            name: "s2".into(),
            compressed,
        }
    }

    fn sample(compressed: bool) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), header(compressed)).unwrap();
        w.write(3, &[7u8; 1024]).unwrap();
        w.zero(10, 5).unwrap();
        w.finish([9; 32]).unwrap()
    }

    fn decode(bytes: &[u8]) -> Result<(StreamHeader, Vec<Record>)> {
        let mut r = StreamReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok((r.header().clone(), out))
    }

    #[test]
    fn golden_bytes() {
        let b = sample(false);
        let mut want = Vec::new();
        want.extend_from_slice(b"KELPSEND");
        want.extend_from_slice(&[1, 0, 0, 0]); // version 1, no flags
        want.extend_from_slice(&512u32.to_le_bytes());
        want.extend_from_slice(&64u64.to_le_bytes());
        want.extend_from_slice(&[1; 16]);
        want.extend_from_slice(&[2; 16]);
        want.extend_from_slice(&[2, 0]);
        want.extend_from_slice(b"s2");
        assert_eq!(&b[..want.len()], want.as_slice());
        let header_crc = crc32c::crc32c(&want);
        assert_eq!(&b[want.len()..want.len() + 4], &header_crc.to_le_bytes());
        let rec = &b[want.len() + 4..];
        assert_eq!(&rec[..4], &[1, 0, 0, 0]);
        assert_eq!(&rec[4..12], &3u64.to_le_bytes());
        assert_eq!(&rec[12..16], &2u32.to_le_bytes());
        assert_eq!(&rec[16..20], &1024u32.to_le_bytes());
        assert_eq!(&rec[20..1044], &[7u8; 1024][..]);
        let chained = crc32c::crc32c_append(header_crc, &rec[..1044]);
        assert_eq!(&rec[1044..1048], &chained.to_le_bytes());
        // zero run (24 bytes) and end (20 + 32 + 4)
        assert_eq!(rec.len(), 1048 + 24 + 56);
        assert_eq!(rec[1048], 2);
        assert_eq!(rec[1072], 3);
        assert_eq!(&rec[1076..1084], &2u64.to_le_bytes());
    }

    #[test]
    fn round_trip_plain_and_compressed() {
        for compressed in [false, true] {
            let (h, recs) = decode(&sample(compressed)).unwrap();
            assert_eq!(h, header(compressed));
            assert_eq!(
                recs,
                vec![
                    Record::Write {
                        start: 3,
                        data: vec![7; 1024]
                    },
                    Record::Zero {
                        start: 10,
                        count: 5
                    },
                    Record::End { digest: [9; 32] },
                ]
            );
        }
        assert!(
            sample(true).len() < sample(false).len(),
            "zstd shrinks repeated bytes"
        );
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_an_error() {
        for compressed in [false, true] {
            let good = sample(compressed);
            for cut in 0..good.len() {
                assert!(decode(&good[..cut]).is_err(), "cut at {cut} decoded");
            }
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[i] ^= 1 << bit;
                    assert!(
                        decode(&bad).is_err(),
                        "bit {bit} of byte {i} flipped decoded"
                    );
                }
            }
        }
    }

    #[test]
    fn clear_errors() {
        let good = sample(false);
        let mut other = good.clone();
        other[0] = b'X';
        assert!(matches!(decode(&other), Err(StreamError::BadMagic(_))));
        let mut v2 = good.clone();
        v2[8] = 2;
        let e = decode(&v2).unwrap_err();
        assert!(
            matches!(e, StreamError::UnsupportedVersion { found: 2 }),
            "{e}"
        );
        assert!(e.to_string().contains("version 2") && e.to_string().contains("version 1"));
        assert!(matches!(
            decode(&good[..good.len() - 3]),
            Err(StreamError::Truncated(_))
        ));
    }

    #[test]
    fn a_writer_refuses_runs_out_of_order_or_past_the_end() {
        let mut w = StreamWriter::new(Vec::new(), header(false)).unwrap();
        w.write(10, &[1; 512]).unwrap();
        assert!(w.write(5, &[1; 512]).is_err());
        assert!(w.zero(63, 2).is_err());
        assert!(w.write(20, &[1; 100]).is_err());
    }

    #[test]
    fn long_runs_are_split_into_records() {
        let h = StreamHeader {
            block_size: 4096,
            total_blocks: 8192,
            ..header(true)
        };
        let data: Vec<u8> = (0..(MAX_RUN_BYTES * 2 + 8192))
            .map(|i| (i / 4096) as u8)
            .collect();
        let mut w = StreamWriter::new(Vec::new(), h).unwrap();
        w.write(0, &data).unwrap();
        let bytes = w.finish([0; 32]).unwrap();
        let (_, recs) = decode(&bytes).unwrap();
        assert_eq!(recs.len(), 4, "three write records and the end");
        let joined: Vec<u8> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Write { data, .. } => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn the_digest_sees_data_but_not_how_zeros_came_to_be() {
        let a = content_digest([BlockContext::Data(5), BlockContext::Unwritten]);
        let b = content_digest([BlockContext::Data(5), BlockContext::Zero]);
        let c = content_digest([BlockContext::Data(6), BlockContext::Zero]);
        assert_eq!(a, b);
        assert_ne!(b, c);
    }

    #[test]
    fn fuzz_entry_accepts_the_samples() {
        fuzz_decode(&sample(false));
        fuzz_decode(&sample(true));
        fuzz_decode(b"KELPSEND");
    }
}
