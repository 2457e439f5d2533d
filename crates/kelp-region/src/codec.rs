//! Bounds-checked little-endian readers and writers for Kelp's block formats
//! (region file, extent headers, wire frames). Every read checks length and
//! returns an error instead of panicking, so decoders built on this are safe
//! to feed network or disk bytes.

use crate::error::{BlockError, Result};

/// Cursor over a byte slice; every accessor fails on short input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(BlockError::corrupt(
                self.what,
                format!(
                    "truncated at byte {}: need {n} more, have {}",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(BlockError::corrupt(self.what, format!("bad bool {v}"))),
        }
    }

    /// A count prefix (u32) that must not promise more than `max` items or
    /// more items of `item_size` bytes than remain, so a hostile count cannot
    /// make us allocate.
    pub fn count(&mut self, item_size: usize, max: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(item_size.max(1)) > self.remaining() {
            return Err(BlockError::corrupt(
                self.what,
                format!("count {n} exceeds limit or remaining bytes"),
            ));
        }
        Ok(n)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(BlockError::corrupt(
                self.what,
                format!("{} trailing bytes", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// Appends little-endian values to a Vec.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
}

/// Ends a file body with the CRC32-C of every byte before it.
pub fn seal(mut w: Writer) -> Vec<u8> {
    let c = crc32c::crc32c(&w.buf);
    w.u32(c);
    w.buf
}

/// Opens a sealed file (`seal`) that starts with `magic` and a u32 format
/// `version`: checks the trailing CRC, the magic and the version, and
/// returns a reader of the body after them (the CRC not included).
pub fn unseal<'a>(
    b: &'a [u8],
    magic: &[u8; 8],
    what: &'static str,
    version: u32,
) -> Result<Reader<'a>> {
    if b.len() < 16 {
        return Err(BlockError::corrupt(what, "too short"));
    }
    let (body, tail) = b.split_at(b.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(BlockError::corrupt(what, "checksum mismatch"));
    }
    let mut r = Reader::new(body, what);
    if r.bytes(8)? != magic {
        return Err(BlockError::corrupt(what, "bad magic"));
    }
    let v = r.u32()?;
    if v != version {
        return Err(BlockError::UnsupportedVersion { what, version: v });
    }
    Ok(r)
}
