//! Reads, writes and deletes of needles in a `Volume`.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::VolumeError;
use crate::idx::IdxEntry;
use crate::needle::{self, Needle, PADDING};
use crate::needle_map::NeedleValue;
use crate::volume::{DeleteOutcome, Files, Volume, WriteOutcome};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Volume {
    pub(crate) fn corrupt(key: u64, offset: u64, reason: impl ToString) -> VolumeError {
        VolumeError::Corrupt {
            key,
            offset,
            reason: reason.to_string(),
        }
    }

    fn read_header(
        &self,
        f: &Files,
        key: u64,
        v: NeedleValue,
    ) -> Result<(u32, u64, u32), VolumeError> {
        let mut h = [0u8; 16];
        f.dat
            .read_exact_at(&mut h, v.offset)
            .map_err(|e| Self::corrupt(key, v.offset, format!("reading header: {e}")))?;
        Ok(needle::parse_header(&h))
    }

    fn read_value(&self, f: &Files, key: u64, v: NeedleValue) -> Result<Needle, VolumeError> {
        let total = needle::actual_size(v.size, self.layout.version);
        let mut buf = vec![0u8; total as usize];
        f.dat
            .read_exact_at(&mut buf, v.offset)
            .map_err(|e| Self::corrupt(key, v.offset, format!("reading {total} bytes: {e}")))?;
        let head: [u8; 16] = buf[..16].try_into().unwrap_or([0; 16]);
        let (_, id, size) = needle::parse_header(&head);
        if id != key || size != v.size {
            return Err(Self::corrupt(
                key,
                v.offset,
                format!(
                    "header says id {id:x} size {size}, index says id {key:x} size {}",
                    v.size
                ),
            ));
        }
        Needle::decode_vec(buf, self.layout.version).map_err(|e| Self::corrupt(key, v.offset, e))
    }

    /// Reads the live needle for `key`, CRC-checked. The caller compares cookies.
    pub fn read(&self, key: u64) -> Result<Needle, VolumeError> {
        // The offset and the file it is an offset into come from the same
        // generation: the files are cloned under the map lock.
        let (v, f) = {
            let map = self.map.read();
            (map.get(key), self.files())
        };
        let v = v.ok_or(VolumeError::NotFound { key })?;
        self.read_value(&f, key, v)
    }

    /// Where the live needle for `key` is, if any.
    pub fn lookup(&self, key: u64) -> Option<NeedleValue> {
        self.map.read().get(key)
    }

    /// Appends `n` (setting its checksum and AppendAtNs). An existing key
    /// must have the same cookie; identical content is not rewritten.
    pub fn write(&self, n: &mut Needle) -> Result<WriteOutcome, VolumeError> {
        self.append_needle(n, true)
    }

    /// `write`, optionally without comparing the cookie of an existing
    /// copy: a copy from a healthy replica replaces a local one whose
    /// header may be the corrupt part.
    pub(crate) fn append_needle(
        &self,
        n: &mut Needle,
        check_existing: bool,
    ) -> Result<WriteOutcome, VolumeError> {
        if self.is_read_only() {
            return Err(VolumeError::ReadOnly);
        }
        n.checksum = needle::crc32c(&n.data);
        let mut w = self.writer.lock();
        // Stable while the writer lock is held: a commit takes it to swap.
        let f = self.files();
        let existing = self.map.read().get(n.id).filter(|_| check_existing);
        if let Some(old) = existing {
            let (cookie, _, _) = self.read_header(&f, n.id, old)?;
            if cookie != n.cookie {
                return Err(VolumeError::CookieMismatch {
                    key: n.id,
                    stored: cookie,
                    given: n.cookie,
                });
            }
            if let Ok(o) = self.read_value(&f, n.id, old)
                && o.checksum == n.checksum
                && o.data == n.data
            {
                return Ok(WriteOutcome {
                    seq: w.seq,
                    size: old.size,
                    unchanged: true,
                });
            }
        }
        n.append_at_ns = now_ns().max(w.last_append_at_ns + 1);
        let (head, tail) = n.encode_header_and_tail(self.layout.version)?;
        let size = needle::parse_header(head[..16].try_into().unwrap_or(&[0; 16])).2;
        let total = (head.len() + n.data.len() + tail.len()) as u64;
        let offset = w.dat_end;
        self.check_room(offset, total)?;
        self.prefill(&mut w, &f, total);
        let entry = IdxEntry::new(n.id, offset / PADDING, size);
        let mut idx_bytes = Vec::with_capacity(17);
        entry.encode(self.layout.width, &mut idx_bytes)?;
        f.dat
            .write_all_vectored_at(&[&head, &n.data, &tail], offset)
            .and_then(|()| f.idx.write_all_at(&idx_bytes, w.idx_end))
            .map_err(|e| self.write_failed(e))?;
        self.map.write().put(n.id, offset, size);
        self.advance(&mut w, total, idx_bytes.len() as u64, n.append_at_ns);
        Ok(WriteOutcome {
            seq: w.seq,
            size,
            unchanged: false,
        })
    }

    /// Appends a tombstone for `key` (original cookie and id, the deleted
    /// needle's CRC) and a tombstone `.idx` entry.
    pub fn delete(&self, key: u64, cookie: u32) -> Result<DeleteOutcome, VolumeError> {
        if self.is_read_only() {
            return Err(VolumeError::ReadOnly);
        }
        let mut w = self.writer.lock();
        let f = self.files();
        let old = self
            .map
            .read()
            .get(key)
            .ok_or(VolumeError::NotFound { key })?;
        let (stored, _, _) = self.read_header(&f, key, old)?;
        if stored != cookie {
            return Err(VolumeError::CookieMismatch {
                key,
                stored,
                given: cookie,
            });
        }
        let mut crc = [0u8; 4];
        f.dat
            .read_exact_at(&mut crc, old.offset + 16 + old.size as u64)
            .map_err(|e| Self::corrupt(key, old.offset, format!("reading checksum: {e}")))?;
        let ns = now_ns().max(w.last_append_at_ns + 1);
        let t = Needle::encode_tombstone(
            stored,
            key,
            u32::from_be_bytes(crc),
            ns,
            self.layout.version,
        );
        let offset = w.dat_end;
        self.check_room(offset, t.len() as u64)?;
        self.prefill(&mut w, &f, t.len() as u64);
        let mut idx_bytes = Vec::with_capacity(17);
        IdxEntry::new(key, offset / PADDING, IdxEntry::TOMBSTONE_SIZE)
            .encode(self.layout.width, &mut idx_bytes)?;
        f.dat
            .write_all_at(&t, offset)
            .and_then(|()| f.idx.write_all_at(&idx_bytes, w.idx_end))
            .map_err(|e| self.write_failed(e))?;
        self.map.write().delete(key);
        self.advance(&mut w, t.len() as u64, idx_bytes.len() as u64, ns);
        Ok(DeleteOutcome {
            seq: w.seq,
            size: old.size,
        })
    }

    fn check_room(&self, offset: u64, total: u64) -> Result<(), VolumeError> {
        let limit = self.layout.width.max_dat_size();
        if offset + total > limit {
            return Err(VolumeError::Full {
                size: offset + total,
                limit,
            });
        }
        Ok(())
    }

    fn advance(&self, w: &mut crate::volume::WriterState, dat: u64, idx: u64, ns: u64) {
        w.dat_end += dat;
        w.idx_end += idx;
        w.last_append_at_ns = ns;
        w.seq += 1;
        self.written_seq.store(w.seq, Ordering::Release);
        self.modified_at
            .store(ns / 1_000_000_000, Ordering::Relaxed);
    }
}
