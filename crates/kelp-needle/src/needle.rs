//! The needle: one stored blob (or tombstone) inside a `.dat`.

use kelp_core::Ttl;

use crate::error::NeedleError;

pub const VERSION1: u8 = 1;
pub const VERSION2: u8 = 2;
pub const VERSION3: u8 = 3;
/// The version Kelp writes for new volumes.
pub const CURRENT_VERSION: u8 = VERSION3;

pub const HEADER_SIZE: usize = 16;
pub const CHECKSUM_SIZE: usize = 4;
pub const TIMESTAMP_SIZE: usize = 8;
/// Needles start on 8-byte boundaries; `.idx` offsets are in these units.
pub const PADDING: u64 = 8;

pub const FLAG_GZIP: u8 = 0x01;
pub const FLAG_NAME: u8 = 0x02;
pub const FLAG_MIME: u8 = 0x04;
pub const FLAG_LAST_MODIFIED: u8 = 0x08;
pub const FLAG_TTL: u8 = 0x10;
pub const FLAG_PAIRS: u8 = 0x20;
pub const FLAG_CHUNK_MANIFEST: u8 = 0x80;

/// Largest body (`Size` field). SeaweedFS keeps sizes in an int32 whose
/// negative values mean "deleted", so a body must stay below 2^31.
pub const MAX_BODY_SIZE: u64 = i32::MAX as u64;

/// A decoded needle. `checksum` is the raw CRC32-Castagnoli of `data`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needle {
    pub cookie: u32,
    pub id: u64,
    /// Shares the buffer it was read into: a read slices, never copies.
    pub data: bytes::Bytes,
    pub name: Vec<u8>,
    pub mime: Vec<u8>,
    /// Unix seconds; 0 means absent. Only the low 40 bits are stored.
    pub last_modified: u64,
    pub ttl: Ttl,
    /// Raw JSON object; empty means absent.
    pub pairs: Vec<u8>,
    pub compressed: bool,
    pub chunk_manifest: bool,
    pub append_at_ns: u64,
    pub checksum: u32,
}

/// CRC32-Castagnoli of the stored data bytes.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// The value volume servers before SeaweedFS 3.09 stored instead of the raw CRC.
pub fn legacy_checksum(c: u32) -> u32 {
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Whether a stored checksum field matches `computed`, in either encoding.
pub fn checksum_matches(stored: u32, computed: u32) -> bool {
    stored == computed || stored == legacy_checksum(computed)
}

/// Bytes before a needle's data: the header, and DataSize in versions 2
/// and 3.
pub fn data_prefix_len(version: u8) -> usize {
    if version == VERSION1 {
        HEADER_SIZE
    } else {
        HEADER_SIZE + 4
    }
}

/// Where a needle's data lies (`Needle::data_span`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSpan {
    /// The needle's Size field.
    pub size: u32,
    /// Offset of the data from the needle start.
    pub start: u64,
    pub len: u64,
}

impl DataSpan {
    /// Offset, from the needle start, of the bytes after the data.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Padding after a needle: `8 - ((16 + size + 4 [+8 in v3]) % 8)`, so 1..=8, never 0.
pub fn padding_len(size: u32, version: u8) -> u64 {
    let unpadded = HEADER_SIZE as u64 + size as u64 + CHECKSUM_SIZE as u64 + ts_len(version);
    PADDING - unpadded % PADDING
}

/// Bytes a needle with body `size` occupies on disk, padding included.
pub fn actual_size(size: u32, version: u8) -> u64 {
    HEADER_SIZE as u64
        + size as u64
        + CHECKSUM_SIZE as u64
        + ts_len(version)
        + padding_len(size, version)
}

fn ts_len(version: u8) -> u64 {
    if version == VERSION3 {
        TIMESTAMP_SIZE as u64
    } else {
        0
    }
}

/// Splits the 16-byte header: `cookie u32 | id u64 | size u32`.
pub fn parse_header(h: &[u8; 16]) -> (u32, u64, u32) {
    let cookie = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[4..12]);
    let size = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    (cookie, u64::from_be_bytes(id), size)
}

fn header_bytes(cookie: u32, id: u64, size: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&cookie.to_be_bytes());
    h[4..12].copy_from_slice(&id.to_be_bytes());
    h[12..].copy_from_slice(&size.to_be_bytes());
    h
}

/// Checksum, optional AppendAtNs and zero padding.
fn push_trailer(out: &mut Vec<u8>, size: u32, checksum: u32, append_at_ns: u64, version: u8) {
    out.extend_from_slice(&checksum.to_be_bytes());
    if version == VERSION3 {
        out.extend_from_slice(&append_at_ns.to_be_bytes());
    }
    out.resize(out.len() + padding_len(size, version) as usize, 0);
}

/// Layout, big-endian, offsets relative to the needle start (8-aligned):
///
/// ```text
/// 0       4  cookie
/// 4       8  needle id
/// 12      4  Size: length of the body; 0 = no body (tombstone / empty)
/// -- body, versions 2 and 3 (Size bytes) --
/// 16      4  DataSize
/// 20      N  data (gzip if flag 0x01)
/// 20+N    1  flags
///         1+M  name len u8 + name        iff flag 0x02
///         1+K  mime len u8 + mime        iff flag 0x04
///         5    last modified, low 5 bytes of u64 seconds  iff 0x08
///         2    ttl count, unit           iff 0x10
///         2+P  pairs len u16 + JSON      iff 0x20
/// -- body, version 1: the data itself --
/// 16+Size 4  checksum: CRC32-C of data (raw, or legacy transform on read)
/// 20+Size 8  AppendAtNs (version 3 only)
///         pad 1..=8 bytes so the total is a multiple of 8; Kelp writes
///             zeros, readers ignore the content
/// ```
///
/// Kelp sets the name/mime/last-modified/ttl/pairs flags only for non-empty
/// fields and always writes a body (Size > 0) for uploads, so Size 0 means
/// tombstone in Kelp-written files.
impl Needle {
    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.compressed {
            f |= FLAG_GZIP;
        }
        if !self.name.is_empty() {
            f |= FLAG_NAME;
        }
        if !self.mime.is_empty() {
            f |= FLAG_MIME;
        }
        if self.last_modified != 0 {
            f |= FLAG_LAST_MODIFIED;
        }
        if !self.ttl.is_empty() {
            f |= FLAG_TTL;
        }
        if !self.pairs.is_empty() {
            f |= FLAG_PAIRS;
        }
        if self.chunk_manifest {
            f |= FLAG_CHUNK_MANIFEST;
        }
        f
    }

    fn name_len(&self) -> usize {
        self.name.len().min(255)
    }

    fn mime_len(&self) -> usize {
        self.mime.len().min(255)
    }

    /// Size field for versions 2 and 3 (always > 0).
    pub fn body_size(&self) -> u64 {
        let mut s = 4 + self.data.len() as u64 + 1;
        if !self.name.is_empty() {
            s += 1 + self.name_len() as u64;
        }
        if !self.mime.is_empty() {
            s += 1 + self.mime_len() as u64;
        }
        if self.last_modified != 0 {
            s += 5;
        }
        if !self.ttl.is_empty() {
            s += 2;
        }
        if !self.pairs.is_empty() {
            s += 2 + self.pairs.len() as u64;
        }
        s
    }

    fn checked_size(&self, version: u8) -> Result<u32, NeedleError> {
        if version != VERSION2 && version != VERSION3 {
            return Err(NeedleError::UnsupportedVersion(version));
        }
        if self.pairs.len() > u16::MAX as usize {
            return Err(NeedleError::TooLarge("pairs must be under 64 KiB"));
        }
        let size = self.body_size();
        if size > MAX_BODY_SIZE {
            return Err(NeedleError::TooLarge("body must be under 2 GiB"));
        }
        Ok(size as u32)
    }

    /// Encodes everything except `data`: `header` (cookie, id, Size,
    /// DataSize) goes before the data and `tail` (flags .. padding) after it,
    /// so a writer can issue three writes without copying the data.
    /// Writes `self.checksum` as is; the caller sets it.
    pub fn encode_header_and_tail(&self, version: u8) -> Result<(Vec<u8>, Vec<u8>), NeedleError> {
        let size = self.checked_size(version)?;
        let mut head = Vec::with_capacity(20);
        head.extend_from_slice(&header_bytes(self.cookie, self.id, size));
        head.extend_from_slice(&(self.data.len() as u32).to_be_bytes());

        let mut tail = Vec::with_capacity(size as usize - self.data.len() + 24);
        tail.push(self.flags());
        if !self.name.is_empty() {
            tail.push(self.name_len() as u8);
            tail.extend_from_slice(&self.name[..self.name_len()]);
        }
        if !self.mime.is_empty() {
            tail.push(self.mime_len() as u8);
            tail.extend_from_slice(&self.mime[..self.mime_len()]);
        }
        if self.last_modified != 0 {
            tail.extend_from_slice(&self.last_modified.to_be_bytes()[3..]);
        }
        if !self.ttl.is_empty() {
            tail.extend_from_slice(&self.ttl.to_bytes());
        }
        if !self.pairs.is_empty() {
            tail.extend_from_slice(&(self.pairs.len() as u16).to_be_bytes());
            tail.extend_from_slice(&self.pairs);
        }
        push_trailer(&mut tail, size, self.checksum, self.append_at_ns, version);
        Ok((head, tail))
    }

    /// Whole encoded needle in one buffer (tests, small needles).
    pub fn encode(&self, version: u8) -> Result<Vec<u8>, NeedleError> {
        let (mut head, tail) = self.encode_header_and_tail(version)?;
        head.reserve(self.data.len() + tail.len());
        head.extend_from_slice(&self.data);
        head.extend_from_slice(&tail);
        Ok(head)
    }

    /// A delete marker: header with Size 0, the checksum field (SeaweedFS
    /// keeps the deleted needle's CRC there), AppendAtNs in v3, padding.
    pub fn encode_tombstone(
        cookie: u32,
        id: u64,
        checksum: u32,
        append_at_ns: u64,
        version: u8,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(actual_size(0, version) as usize);
        out.extend_from_slice(&header_bytes(cookie, id, 0));
        push_trailer(&mut out, 0, checksum, append_at_ns, version);
        out
    }

    /// Decodes a needle from `bytes`, which start at the needle and hold at
    /// least its actual size. Verifies the checksum of non-empty needles.
    pub fn decode(bytes: &[u8], version: u8) -> Result<Needle, NeedleError> {
        let (mut n, range, _) = Self::decode_meta(bytes, version)?;
        n.data = bytes::Bytes::copy_from_slice(&bytes[range]);
        Ok(n)
    }

    /// Like `decode`, but also refuses a body longer than the fields its
    /// flags declare. Every writer (SeaweedFS's and Kelp's) sets Size to
    /// exactly those fields; a longer body is what a torn append looks
    /// like when the header reached the disk and the rest did not: zeros
    /// parse as empty data with a zero checksum, which the CRC (it covers
    /// only the data) cannot catch. Crash recovery judges tails with this.
    pub fn decode_exact(bytes: &[u8], version: u8) -> Result<Needle, NeedleError> {
        let (mut n, range, exact) = Self::decode_meta(bytes, version)?;
        if !exact {
            return Err(NeedleError::Malformed(
                "body is longer than its fields (a torn write?)",
            ));
        }
        n.data = bytes::Bytes::copy_from_slice(&bytes[range]);
        Ok(n)
    }

    /// Like `decode`, but reuses `buf` for the data instead of copying it.
    pub fn decode_vec(mut buf: Vec<u8>, version: u8) -> Result<Needle, NeedleError> {
        let (mut n, range, _) = Self::decode_meta(&buf, version)?;
        buf.truncate(range.end);
        n.data = bytes::Bytes::from(buf).slice(range.start..);
        Ok(n)
    }

    /// Parses everything but copies no data; returns the data's byte range
    /// and whether the fields fill the body exactly.
    fn decode_meta(
        bytes: &[u8],
        version: u8,
    ) -> Result<(Needle, std::ops::Range<usize>, bool), NeedleError> {
        if !(VERSION1..=VERSION3).contains(&version) {
            return Err(NeedleError::UnsupportedVersion(version));
        }
        let head: &[u8; 16] = bytes
            .get(..HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(NeedleError::Truncated {
                what: "needle header",
                need: HEADER_SIZE as u64,
                have: bytes.len() as u64,
            })?;
        let (cookie, id, size) = parse_header(head);
        let total = actual_size(size, version);
        if (bytes.len() as u64) < total - padding_len(size, version) {
            return Err(NeedleError::Truncated {
                what: "needle",
                need: total,
                have: bytes.len() as u64,
            });
        }
        let body_end = HEADER_SIZE + size as usize;
        let body = &bytes[HEADER_SIZE..body_end];
        let checksum = be_u32(&bytes[body_end..body_end + 4]);
        let append_at_ns = if version == VERSION3 {
            be_u64(&bytes[body_end + 4..body_end + 12])
        } else {
            0
        };
        let mut n = Needle {
            cookie,
            id,
            checksum,
            append_at_ns,
            ..Needle::default()
        };
        let (range, exact) = if version == VERSION1 {
            (HEADER_SIZE..body_end, true)
        } else {
            decode_body(body, &mut n)?
        };
        if size > 0 {
            let computed = crc32c(&bytes[range.clone()]);
            if !checksum_matches(checksum, computed) {
                return Err(NeedleError::BadChecksum {
                    stored: checksum,
                    computed,
                });
            }
            n.checksum = computed;
        }
        Ok((n, range, exact))
    }

    /// Where a needle's data lies, from its first `data_prefix_len`
    /// bytes: the needle's Size and the data's offset and length relative
    /// to the needle start. For reading the data in pieces (a large
    /// needle) with `decode_without_data`.
    pub fn data_span(prefix: &[u8], version: u8) -> Result<DataSpan, NeedleError> {
        if !(VERSION1..=VERSION3).contains(&version) {
            return Err(NeedleError::UnsupportedVersion(version));
        }
        let need = data_prefix_len(version);
        let prefix = prefix.get(..need).ok_or(NeedleError::Truncated {
            what: "needle header and DataSize",
            need: need as u64,
            have: prefix.len() as u64,
        })?;
        let head: &[u8; 16] = prefix[..HEADER_SIZE]
            .try_into()
            .map_err(|_| NeedleError::Malformed("needle header"))?;
        let (_, _, size) = parse_header(head);
        if version == VERSION1 || size == 0 {
            return Ok(DataSpan {
                size,
                start: HEADER_SIZE as u64,
                len: if version == VERSION1 {
                    u64::from(size)
                } else {
                    0
                },
            });
        }
        let len = u64::from(be_u32(&prefix[HEADER_SIZE..]));
        if len + 4 > u64::from(size) {
            return Err(NeedleError::Truncated {
                what: "data",
                need: len + 4,
                have: u64::from(size),
            });
        }
        Ok(DataSpan {
            size,
            start: (HEADER_SIZE + 4) as u64,
            len,
        })
    }

    /// Decodes a needle without reading its data: `prefix` is its first
    /// `data_prefix_len` bytes and `rest` every byte after the data (the
    /// fields, checksum and AppendAtNs; padding optional). The needle comes
    /// back with empty data and the *stored* checksum: the caller hashes
    /// the data as it reads it and compares with `checksum_matches`.
    pub fn decode_without_data(
        prefix: &[u8],
        rest: &[u8],
        version: u8,
    ) -> Result<(Needle, DataSpan), NeedleError> {
        let span = Self::data_span(prefix, version)?;
        let head: &[u8; 16] = prefix[..HEADER_SIZE]
            .try_into()
            .map_err(|_| NeedleError::Malformed("needle header"))?;
        let (cookie, id, size) = parse_header(head);
        let fields_len = if version == VERSION1 || size == 0 {
            0
        } else {
            (u64::from(size) - 4 - span.len) as usize
        };
        let need = fields_len + CHECKSUM_SIZE + ts_len(version) as usize;
        if rest.len() < need {
            return Err(NeedleError::Truncated {
                what: "needle after its data",
                need: need as u64,
                have: rest.len() as u64,
            });
        }
        let mut n = Needle {
            cookie,
            id,
            checksum: be_u32(&rest[fields_len..]),
            append_at_ns: if version == VERSION3 {
                be_u64(&rest[fields_len + CHECKSUM_SIZE..])
            } else {
                0
            },
            ..Needle::default()
        };
        decode_fields(&rest[..fields_len], &mut n)?;
        Ok((n, span))
    }

    /// TTL counts from AppendAtNs, or from last-modified when that is 0.
    pub fn is_expired(&self, now_secs: u64) -> bool {
        if self.ttl.is_empty() {
            return false;
        }
        let start = if self.append_at_ns != 0 {
            self.append_at_ns / 1_000_000_000
        } else {
            self.last_modified
        };
        start != 0 && now_secs >= start.saturating_add(self.ttl.seconds())
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Parses a v2/v3 body into `n` (all but data); returns the data range
/// relative to the needle start. Like SeaweedFS, optional fields are read
/// only while body bytes remain, so short legacy bodies are accepted; a
/// field whose length runs past the body is an error.
/// Returns the data's byte range and whether the fields fill `body`.
fn decode_body(body: &[u8], n: &mut Needle) -> Result<(std::ops::Range<usize>, bool), NeedleError> {
    if body.is_empty() {
        return Ok((HEADER_SIZE..HEADER_SIZE, true));
    }
    let mut r = Reader { b: body, pos: 0 };
    let data_size = be_u32(r.take(4, "DataSize")?) as usize;
    let start = HEADER_SIZE + r.pos;
    r.take(data_size, "data")?;
    let range = start..start + data_size;
    let exact = decode_fields(&body[r.pos..], n)?;
    Ok((range, exact))
}

/// Parses the fields a v2/v3 body holds after its data (flags, name, mime,
/// last modified, ttl, pairs) into `n`; returns whether they fill
/// `fields` exactly.
fn decode_fields(fields: &[u8], n: &mut Needle) -> Result<bool, NeedleError> {
    let mut r = Reader { b: fields, pos: 0 };
    if r.done() {
        return Ok(true);
    }
    let flags = r.take(1, "flags")?[0];
    n.compressed = flags & FLAG_GZIP != 0;
    n.chunk_manifest = flags & FLAG_CHUNK_MANIFEST != 0;
    if !r.done() && flags & FLAG_NAME != 0 {
        let len = r.take(1, "name length")?[0] as usize;
        n.name = r.take(len, "name")?.to_vec();
    }
    if !r.done() && flags & FLAG_MIME != 0 {
        let len = r.take(1, "mime length")?[0] as usize;
        n.mime = r.take(len, "mime")?.to_vec();
    }
    if !r.done() && flags & FLAG_LAST_MODIFIED != 0 {
        let b = r.take(5, "last modified")?;
        n.last_modified = b.iter().fold(0u64, |acc, x| acc << 8 | *x as u64);
    }
    if !r.done() && flags & FLAG_TTL != 0 {
        let b = r.take(2, "ttl")?;
        n.ttl = Ttl::from_bytes([b[0], b[1]]);
    }
    if !r.done() && flags & FLAG_PAIRS != 0 {
        let b = r.take(2, "pairs length")?;
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        n.pairs = r.take(len, "pairs")?.to_vec();
    }
    Ok(r.done())
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], NeedleError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.b.len())
            .ok_or(NeedleError::Truncated {
                what,
                need: (self.pos as u64).saturating_add(len as u64),
                have: self.b.len() as u64,
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A torn append whose header reached the disk and whose body did not
    /// (zeros) parses as empty data with a zero checksum; only the exact
    /// decode recovery uses refuses it. Whole needles pass both.
    #[test]
    fn decode_exact_refuses_a_zeroed_body() {
        let n = Needle {
            id: 7,
            cookie: 9,
            data: vec![5; 300].into(),
            checksum: crc32c(&[5; 300]),
            name: b"a.txt".to_vec(),
            ..Needle::default()
        };
        for version in [2, 3] {
            let mut b = n.encode(version).unwrap();
            assert_eq!(Needle::decode_exact(&b, version).unwrap().data, n.data);
            let empty = Needle {
                data: Default::default(),
                checksum: 0,
                ..n.clone()
            }
            .encode(version)
            .unwrap();
            assert!(Needle::decode_exact(&empty, version).is_ok());
            b[HEADER_SIZE..].fill(0);
            assert!(
                Needle::decode(&b, version).is_ok(),
                "the format cannot tell"
            );
            assert!(
                Needle::decode_exact(&b, version).is_err(),
                "version {version}"
            );
        }
    }
    use proptest::prelude::*;

    pub(crate) fn hello() -> Needle {
        Needle {
            cookie: 0x1848da59,
            id: 1,
            data: b"hello seaweed world\n".to_vec().into(),
            name: b"hello.txt".to_vec(),
            mime: b"text/plain".to_vec(),
            last_modified: 0x006b03ab8e,
            append_at_ns: 0x18ea8d2feb71f62b,
            checksum: crc32c(b"hello seaweed world\n"),
            ..Needle::default()
        }
    }

    /// Bytes of reference 1.4's worked example (the needle at .dat offset 8).
    const GOLDEN: &str = "1848da59 0000000000000001 00000033
        00000014 68656c6c6f207365617765656420776f726c640a
        0e 09 68656c6c6f2e747874 0a 746578742f706c61696e 006b03ab8e
        6e46b898 18ea8d2feb71f62b 00";

    pub(crate) fn golden_bytes() -> Vec<u8> {
        let s: String = GOLDEN.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn golden_hello_txt() {
        let n = hello();
        assert_eq!(n.checksum, 0x6e46b898);
        assert_eq!(n.body_size(), 51);
        let bytes = n.encode(VERSION3).unwrap();
        assert_eq!(bytes, golden_bytes());
        assert_eq!(bytes.len(), 0x58 - 8);
        assert_eq!(actual_size(51, VERSION3), 80);
        assert_eq!(Needle::decode(&bytes, VERSION3).unwrap(), n);
        assert_eq!(Needle::decode_vec(bytes.clone(), VERSION3).unwrap(), n);
        assert_eq!(
            parse_header(bytes[..16].try_into().unwrap()),
            (0x1848da59, 1, 51)
        );
        // Padding content is ignored, and a missing pad is tolerated.
        let mut junk = bytes.clone();
        *junk.last_mut().unwrap() = 0x34;
        assert_eq!(Needle::decode(&junk, VERSION3).unwrap(), n);
        assert_eq!(Needle::decode(&bytes[..79], VERSION3).unwrap(), n);
        assert!(Needle::decode(&bytes[..78], VERSION3).is_err());
    }

    #[test]
    fn padding_is_never_zero() {
        assert_eq!(padding_len(52, VERSION3), 8);
        assert_eq!(padding_len(51, VERSION3), 1);
        assert_eq!(padding_len(0, VERSION3), 4);
        assert_eq!(actual_size(0, VERSION3), 32);
        for s in 0..64 {
            for v in 1..=3 {
                let p = padding_len(s, v);
                assert!((1..=8).contains(&p));
                assert_eq!(actual_size(s, v) % 8, 0);
            }
        }
    }

    #[test]
    fn legacy_checksum_and_bad_crc() {
        let mut bytes = golden_bytes();
        let legacy = legacy_checksum(0x6e46b898).to_be_bytes();
        bytes[67..71].copy_from_slice(&legacy);
        let n = Needle::decode(&bytes, VERSION3).unwrap();
        assert_eq!(n.checksum, 0x6e46b898);
        bytes[67] ^= 1;
        assert!(matches!(
            Needle::decode(&bytes, VERSION3),
            Err(NeedleError::BadChecksum { .. })
        ));
        let mut bytes = golden_bytes();
        bytes[25] ^= 0x20; // flip a data bit
        assert!(Needle::decode(&bytes, VERSION3).is_err());
    }

    #[test]
    fn tombstone_and_empty_blob() {
        let t = Needle::encode_tombstone(0x1848da59, 1, 0x6e46b898, 7, VERSION3);
        assert_eq!(t.len(), 32);
        let n = Needle::decode(&t, VERSION3).unwrap();
        assert_eq!(
            (n.cookie, n.id, n.data.len(), n.append_at_ns),
            (0x1848da59, 1, 0, 7)
        );
        assert_eq!(Needle::encode_tombstone(1, 1, 0, 0, VERSION2).len(), 24);
        // Kelp writes empty uploads with a body.
        let e = Needle {
            cookie: 5,
            id: 9,
            name: b"e".to_vec(),
            ..Needle::default()
        };
        let bytes = e.encode(VERSION3).unwrap();
        assert_eq!(parse_header(bytes[..16].try_into().unwrap()).2, 4 + 1 + 2);
        assert_eq!(Needle::decode(&bytes, VERSION3).unwrap(), e);
    }

    #[test]
    fn version1_and_2() {
        let n = hello();
        let v2 = n.encode(VERSION2).unwrap();
        assert_eq!(v2.len() as u64, actual_size(51, VERSION2));
        let back = Needle::decode(&v2, VERSION2).unwrap();
        assert_eq!(
            back,
            Needle {
                append_at_ns: 0,
                ..n.clone()
            }
        );
        // Version 1: cookie|id|size|data|crc|pad.
        let mut v1 = header_bytes(3, 4, 5).to_vec();
        v1.extend_from_slice(b"abcde");
        push_trailer(&mut v1, 5, crc32c(b"abcde"), 0, VERSION1);
        assert_eq!(v1.len() as u64, actual_size(5, VERSION1));
        let n1 = Needle::decode(&v1, VERSION1).unwrap();
        assert_eq!((n1.cookie, n1.id, &n1.data[..]), (3, 4, &b"abcde"[..]));
        assert!(n.encode(VERSION1).is_err());
    }

    #[test]
    fn expiry() {
        let mut n = hello();
        assert!(!n.is_expired(u64::MAX));
        n.ttl = "1m".parse().unwrap();
        let start = n.append_at_ns / 1_000_000_000;
        assert!(!n.is_expired(start + 59));
        assert!(n.is_expired(start + 60));
        n.append_at_ns = 0;
        assert!(n.is_expired(n.last_modified + 60));
        assert!(!n.is_expired(n.last_modified + 59));
    }

    fn arb_needle() -> impl Strategy<Value = Needle> {
        (
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..20),
            0u64..(1 << 40),
            (0u8..4, 0u8..8),
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<(bool, bool, u64)>(),
        )
            .prop_map(
                |(cookie, id, data, name, mime, lm, (tc, tu), pairs, (gz, cm, ts))| {
                    let mut n = Needle {
                        cookie,
                        id,
                        checksum: crc32c(&data),
                        data: data.into(),
                        name: name.into_iter().take(255).collect(),
                        mime,
                        last_modified: lm,
                        ttl: Ttl::from_bytes([tc, tu]),
                        pairs,
                        compressed: gz,
                        chunk_manifest: cm,
                        append_at_ns: ts,
                    };
                    if n.name.len() > 255 {
                        n.name.truncate(255);
                    }
                    n
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(n in arb_needle()) {
            let bytes = n.encode(VERSION3).unwrap();
            prop_assert_eq!(bytes.len() as u64, actual_size(n.body_size() as u32, VERSION3));
            prop_assert_eq!(bytes.len() % 8, 0);
            prop_assert_eq!(Needle::decode(&bytes, VERSION3).unwrap(), n.clone());
            let (h, t) = n.encode_header_and_tail(VERSION3).unwrap();
            prop_assert_eq!([&h[..], &n.data[..], &t[..]].concat(), bytes);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), v in 0u8..5) {
            let _ = Needle::decode(&bytes, v);
            let _ = Needle::decode_vec(bytes, v);
        }

        #[test]
        fn never_panics_on_mutated_golden(i in 0usize..80, b: u8) {
            let mut bytes = golden_bytes();
            bytes[i] = b;
            let _ = Needle::decode(&bytes, VERSION3);
        }
    }
}
