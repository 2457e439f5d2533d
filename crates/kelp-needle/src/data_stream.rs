//! Reading a large needle's data in pieces instead of all at once.
//!
//! `Volume::read` holds a whole needle in memory, which is what a small
//! blob wants. A server sending a 64 MiB blob to 16 clients would hold a
//! GiB that way, so it opens the needle with `Volume::open_data` instead:
//! the fields come from two small reads (the header and DataSize, then
//! what follows the data), and the data comes piece by piece from a
//! `DataStream`, which hashes what it hands out. The piece that completes
//! the data is handed out only if the checksum of the whole matches, so a
//! reader never receives every byte of a corrupt needle.

use std::sync::Arc;

use bytes::Bytes;
use kelp_core::buffers::{self, PooledBuf};

use crate::error::VolumeError;
use crate::needle::{self, Needle};
use crate::volume::{Files, Volume};

/// The data of one needle, read in pieces from the volume's files as they
/// were when it was opened (a compaction meanwhile does not move it).
pub struct DataStream {
    files: Arc<Files>,
    key: u64,
    /// Where the needle starts in `.dat`.
    needle_offset: u64,
    /// Absolute offsets of the next data byte and of the data's end.
    pos: u64,
    end: u64,
    len: u64,
    crc: u32,
    stored_checksum: u32,
}

impl Volume {
    /// The live needle for `key` with empty data, and a stream of its
    /// data. The caller compares cookies and expiry as for `read`.
    pub fn open_data(&self, key: u64) -> Result<(Needle, DataStream), VolumeError> {
        let (v, files) = {
            let map = self.map.read();
            (map.get(key), self.files())
        };
        let v = v.ok_or(VolumeError::NotFound { key })?;
        let version = self.layout.version;
        let corrupt = |why: String| Self::corrupt(key, v.offset, why);
        let mut prefix = [0u8; needle::HEADER_SIZE + 4];
        let prefix = &mut prefix[..needle::data_prefix_len(version)];
        files
            .dat
            .read_exact_at(prefix, v.offset)
            .map_err(|e| corrupt(format!("reading header: {e}")))?;
        let head: [u8; 16] = prefix[..16].try_into().unwrap_or([0; 16]);
        let (_, id, size) = needle::parse_header(&head);
        if id != key || size != v.size {
            return Err(corrupt(format!(
                "header says id {id:x} size {size}, index says id {key:x} size {}",
                v.size
            )));
        }
        let span = Needle::data_span(prefix, version).map_err(|e| corrupt(e.to_string()))?;
        // Fields, checksum and AppendAtNs; not the padding.
        let total = needle::actual_size(size, version) - needle::padding_len(size, version);
        let mut rest = vec![0u8; (total - span.end()) as usize];
        files
            .dat
            .read_exact_at(&mut rest, v.offset + span.end())
            .map_err(|e| corrupt(format!("reading the fields after the data: {e}")))?;
        let (n, span) = Needle::decode_without_data(prefix, &rest, version)
            .map_err(|e| corrupt(e.to_string()))?;
        let stream = DataStream {
            key,
            needle_offset: v.offset,
            pos: v.offset + span.start,
            end: v.offset + span.end(),
            len: span.len,
            crc: 0,
            stored_checksum: n.checksum,
            files,
        };
        Ok((n, stream))
    }
}

impl DataStream {
    /// Bytes of data in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next piece of at most `max` bytes (`max` > 0), or `None` once
    /// all data was handed out. The piece that completes the data is
    /// returned only if the checksum of the whole data matches; otherwise
    /// `VolumeError::Corrupt`. May wait for the disk.
    pub fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>, VolumeError> {
        let Some(mut buf) = self.piece_buf(max) else {
            return Ok(None);
        };
        self.files
            .dat
            .read_exact_at(buf.as_mut(), self.pos)
            .map_err(|e| self.read_failed(e))?;
        self.consume(buf).map(Some)
    }

    /// `next_piece` for a thread that must not wait for the disk: the
    /// piece only if all of it is in the page cache, else
    /// `Piece::NotCached` (nothing consumed; read it with `next_piece`
    /// where waiting is fine).
    pub fn next_cached_piece(&mut self, max: usize) -> Result<Piece, VolumeError> {
        let Some(mut buf) = self.piece_buf(max) else {
            return Ok(Piece::End);
        };
        let cached = self
            .files
            .dat
            .read_cached_at(buf.as_mut(), self.pos)
            .map_err(|e| self.read_failed(e))?;
        if !cached {
            return Ok(Piece::NotCached);
        }
        self.consume(buf).map(Piece::Data)
    }

    /// A buffer for the next piece (reused, `kelp_core::buffers`), `None`
    /// once all data was handed out.
    fn piece_buf(&self, max: usize) -> Option<PooledBuf> {
        let left = self.end.checked_sub(self.pos).filter(|&l| l > 0)?;
        Some(buffers::take_zeroed(left.min(max.max(1) as u64) as usize))
    }

    fn read_failed(&self, e: std::io::Error) -> VolumeError {
        Volume::corrupt(
            self.key,
            self.needle_offset,
            format!("reading data at {}: {e}", self.pos),
        )
    }

    /// Hashes a piece just read and moves past it; the piece that
    /// completes the data must bring the checksum to the stored one.
    fn consume(&mut self, buf: PooledBuf) -> Result<Bytes, VolumeError> {
        self.crc = ::crc32c::crc32c_append(self.crc, buf.as_ref());
        self.pos += buf.len() as u64;
        if self.pos == self.end && !needle::checksum_matches(self.stored_checksum, self.crc) {
            return Err(Volume::corrupt(
                self.key,
                self.needle_offset,
                format!(
                    "CRC mismatch: stored {:08x}, computed {:08x}",
                    self.stored_checksum, self.crc
                ),
            ));
        }
        Ok(buf.freeze())
    }
}

/// What `DataStream::next_cached_piece` got.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    /// All data was handed out.
    End,
    /// Not all in the page cache; nothing was consumed.
    NotCached,
}
