//! [`Entry`]: one file or directory of the namespace, and its byte
//! encoding in the metadata store.
//!
//! The name is not in the value: it is the last part of the store key.
//!
//! Layout (all integers little endian):
//! ```text
//! u8   format = 1
//! u8   kind: 0 file, 1 directory, 2 symlink
//! u32  mode (permission bits), u32 uid, u32 gid
//! i64  mtime_ns, i64 ctime_ns, i64 crtime_ns
//! u64  size (bytes of content)
//! u16+ mime (length-prefixed UTF-8)
//! u8+  md5 (length 0 or 16)
//! u32  ttl_sec
//! u16+ symlink target
//! u64  quota_bytes, u64 quota_entries (0: none; directories only)
//! u32+ inline content (small files kept in the entry; empty otherwise)
//! u32  xattr count, each: u16+ name, u32+ value
//! u32  chunk count, each:
//!      u8+ fid, u64 offset, u64 size, u64 stored (bytes on the volume),
//!      u8 flags (bit 0: zstd), i64 mtime_ns
//! u32  CRC32-C of every byte before it
//! ```
//! `u16+` is a u16 length then that many bytes (`u8+`, `u32+` likewise).
//! A value of another format byte is refused as corrupt with its number.

use std::collections::BTreeMap;

use crate::error::FilerError;

pub const ENTRY_FORMAT: u8 = 1;
/// Go's `os.ModeDir`, which SeaweedFS sets in directory modes.
pub const MODE_DIR: u32 = 1 << 31;
/// Largest encoded entry accepted when decoding (a chunk list of ~80,000
/// chunks, a 300 GiB file at 4 MiB chunks).
pub const MAX_ENTRY_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    File,
    Directory,
    Symlink,
}

/// A piece of a file's content stored as one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub fid: String,
    /// Where the chunk's bytes start in the file.
    pub offset: u64,
    /// Bytes of file content the chunk holds.
    pub size: u64,
    /// Bytes stored on the volume server (less than `size` when compressed).
    pub stored: u64,
    pub zstd: bool,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Last path segment (filled from the key; not encoded).
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub crtime_ns: i64,
    pub size: u64,
    pub mime: String,
    /// MD5 of the content when known (single uploads); the S3 ETag of a
    /// multipart object is kept in `xattrs` instead.
    pub md5: Option<[u8; 16]>,
    pub ttl_sec: u32,
    pub symlink: String,
    pub quota_bytes: u64,
    pub quota_entries: u64,
    pub inline: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub chunks: Vec<Chunk>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Directory
    }

    /// A new directory named `name`, made now.
    pub fn directory(name: &str, now_ns: i64) -> Self {
        Entry {
            name: name.to_string(),
            kind: Kind::Directory,
            mode: 0o755,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            crtime_ns: now_ns,
            ..Default::default()
        }
    }

    /// Bytes stored for this entry on volume servers.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(96 + self.chunks.len() * 48 + self.inline.len());
        w.push(ENTRY_FORMAT);
        w.push(match self.kind {
            Kind::File => 0,
            Kind::Directory => 1,
            Kind::Symlink => 2,
        });
        for v in [self.mode, self.uid, self.gid] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.mtime_ns, self.ctime_ns, self.crtime_ns] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        w.extend_from_slice(&self.size.to_le_bytes());
        put16(&mut w, self.mime.as_bytes());
        match &self.md5 {
            Some(m) => put8(&mut w, m),
            None => put8(&mut w, &[]),
        }
        w.extend_from_slice(&self.ttl_sec.to_le_bytes());
        put16(&mut w, self.symlink.as_bytes());
        w.extend_from_slice(&self.quota_bytes.to_le_bytes());
        w.extend_from_slice(&self.quota_entries.to_le_bytes());
        put32(&mut w, &self.inline);
        w.extend_from_slice(&(self.xattrs.len() as u32).to_le_bytes());
        for (k, v) in &self.xattrs {
            put16(&mut w, k.as_bytes());
            put32(&mut w, v);
        }
        w.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for c in &self.chunks {
            put8(&mut w, c.fid.as_bytes());
            for v in [c.offset, c.size, c.stored] {
                w.extend_from_slice(&v.to_le_bytes());
            }
            w.push(u8::from(c.zstd));
            w.extend_from_slice(&c.mtime_ns.to_le_bytes());
        }
        let crc = crc32c::crc32c(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        w
    }

    pub fn decode(name: &str, b: &[u8]) -> Result<Self, FilerError> {
        let bad = |what: &str| FilerError::Corrupt(format!("entry {name:?}: {what}"));
        if b.len() > MAX_ENTRY_BYTES {
            return Err(bad("longer than the largest entry"));
        }
        if b.len() < 6 {
            return Err(bad("truncated"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader { b: body, at: 0 };
        let format = r.u8().ok_or_else(|| bad("truncated"))?;
        if format != ENTRY_FORMAT {
            return Err(bad(&format!(
                "entry format {format} is not known to this release (it reads format {ENTRY_FORMAT})"
            )));
        }
        decode_body(name, &mut r).ok_or_else(|| bad("truncated or malformed"))
    }
}

fn decode_body(name: &str, r: &mut Reader<'_>) -> Option<Entry> {
    let kind = match r.u8()? {
        0 => Kind::File,
        1 => Kind::Directory,
        2 => Kind::Symlink,
        _ => return None,
    };
    let mut e = Entry {
        name: name.to_string(),
        kind,
        mode: r.u32()?,
        uid: r.u32()?,
        gid: r.u32()?,
        mtime_ns: r.i64()?,
        ctime_ns: r.i64()?,
        crtime_ns: r.i64()?,
        size: r.u64()?,
        mime: r.string16()?,
        ..Default::default()
    };
    let n = r.u8()? as usize;
    let md5 = r.bytes(n)?;
    e.md5 = match md5.len() {
        0 => None,
        16 => Some(md5.try_into().ok()?),
        _ => return None,
    };
    e.ttl_sec = r.u32()?;
    e.symlink = r.string16()?;
    e.quota_bytes = r.u64()?;
    e.quota_entries = r.u64()?;
    let n = r.u32()? as usize;
    e.inline = r.bytes(n)?.to_vec();
    let nx = r.u32()?;
    for _ in 0..nx {
        let k = r.string16()?;
        let n = r.u32()? as usize;
        e.xattrs.insert(k, r.bytes(n)?.to_vec());
    }
    let nc = r.u32()? as usize;
    // Each chunk takes at least 34 bytes: a hostile count cannot allocate.
    if nc > r.remaining() / 34 {
        return None;
    }
    e.chunks.reserve(nc);
    for _ in 0..nc {
        let n = r.u8()? as usize;
        let fid = std::str::from_utf8(r.bytes(n)?).ok()?.to_string();
        e.chunks.push(Chunk {
            fid,
            offset: r.u64()?,
            size: r.u64()?,
            stored: r.u64()?,
            zstd: r.u8()? & 1 == 1,
            mtime_ns: r.i64()?,
        });
    }
    (r.remaining() == 0).then_some(e)
}

fn put8(w: &mut Vec<u8>, b: &[u8]) {
    w.push(b.len() as u8);
    w.extend_from_slice(b);
}

pub(crate) fn put16(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u16).to_le_bytes());
    w.extend_from_slice(b);
}

pub(crate) fn put32(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

/// A bounds-checked cursor: every read returns `None` past the end.
pub struct Reader<'a> {
    pub b: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    pub fn string16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        Some(std::str::from_utf8(self.bytes(n)?).ok()?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut e = Entry {
            name: "a b.txt".into(),
            mode: 0o644,
            uid: 7,
            gid: 8,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 5,
            crtime_ns: -3,
            size: 10 << 20,
            mime: "text/plain".into(),
            md5: Some([9; 16]),
            ttl_sec: 60,
            inline: b"hi".to_vec(),
            ..Default::default()
        };
        e.xattrs.insert("user.color".into(), b"blue".to_vec());
        e.chunks.push(Chunk {
            fid: "3,01637037d6".into(),
            offset: 0,
            size: 8 << 20,
            stored: 1000,
            zstd: true,
            mtime_ns: 11,
        });
        e
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Entry::decode("a b.txt", &e.encode()).unwrap(), e);
        let d = Entry::directory("d", 1);
        assert_eq!(Entry::decode("d", &d.encode()).unwrap(), d);
    }

    /// The bytes of format 1 never drift: a value written by this release
    /// must open in the next.
    #[test]
    fn golden_bytes() {
        let mut e = Entry::directory("d", 0x0102);
        e.quota_entries = 3;
        let hex: String = e.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0101ed0100000000000000000000020100000000000002010000000000000201000000000000000000000000000000000000000000000000000000000000000300000000000000000000000000000000000000a042419e"
        );
    }

    #[test]
    fn refuses_damage() {
        let b = sample().encode();
        for cut in 0..b.len() {
            assert!(Entry::decode("x", &b[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = b.clone();
        flipped[20] ^= 1;
        assert!(Entry::decode("x", &flipped).is_err());
        let mut future = b;
        future[0] = 9;
        let n = future.len() - 4;
        let crc = crc32c::crc32c(&future[..n]);
        future[n..].copy_from_slice(&crc.to_le_bytes());
        let err = Entry::decode("x", &future).unwrap_err().to_string();
        assert!(err.contains("format 9"), "{err}");
    }
}
