//! Chunk manifests: the JSON a client stores (`?cm=true`) in place of a
//! file too large for one upload, `{"name","mime","size","chunks":[{"fid",
//! "offset","size"}]}`. The logical file is the chunks' contents in offset
//! order; this module parses a manifest and maps byte ranges of the logical
//! file onto the chunks. Pure logic, no I/O.

use std::io::Read;
use std::ops::Range;

use kelp_core::FileId;
use serde::Deserialize;

/// Manifests larger than this (inflated) are not manifests.
const MAX_MANIFEST: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub fid: FileId,
    /// The fid as the manifest spells it.
    pub fid_text: String,
    pub size: u64,
}

/// A parsed manifest with its chunks in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub mime: String,
    pub chunks: Vec<Chunk>,
    /// Sum of the chunk sizes: the length of the logical file.
    pub total: u64,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mime: String,
    #[serde(default)]
    chunks: Vec<RawChunk>,
}

#[derive(Deserialize)]
struct RawChunk {
    fid: String,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    size: u64,
}

impl Manifest {
    /// Parses stored manifest bytes (inflating them first when `gzipped`).
    /// `None` when they are not a usable manifest; the caller then serves
    /// the raw bytes.
    pub fn parse(data: &[u8], gzipped: bool) -> Option<Manifest> {
        let inflated;
        let json = if gzipped {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .take(MAX_MANIFEST + 1)
                .read_to_end(&mut out)
                .ok()?;
            if out.len() as u64 > MAX_MANIFEST {
                return None;
            }
            inflated = out;
            &inflated[..]
        } else {
            data
        };
        let raw: RawManifest = serde_json::from_slice(json).ok()?;
        let mut chunks: Vec<(u64, Chunk)> = raw
            .chunks
            .into_iter()
            .map(|c| {
                let fid_text = c.fid.trim().to_string();
                let fid = fid_text.parse::<FileId>().ok()?;
                Some((
                    c.offset,
                    Chunk {
                        fid,
                        fid_text,
                        size: c.size,
                    },
                ))
            })
            .collect::<Option<_>>()?;
        chunks.sort_by_key(|(offset, _)| *offset);
        let chunks: Vec<Chunk> = chunks.into_iter().map(|(_, c)| c).collect();
        let total = chunks
            .iter()
            .try_fold(0u64, |acc, c| acc.checked_add(c.size))?;
        Some(Manifest {
            name: raw.name,
            mime: raw.mime,
            chunks,
            total,
        })
    }

    /// The pieces of chunks that make up `range` of the logical file, in
    /// order. `range` must lie within `0..total`.
    pub fn pieces(&self, range: Range<u64>) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        for (index, c) in self.chunks.iter().enumerate() {
            let (start, end) = (pos, pos + c.size);
            pos = end;
            if end <= range.start || c.size == 0 {
                continue;
            }
            if start >= range.end {
                break;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            out.push(Piece {
                chunk: index,
                range: from..to,
            });
        }
        out
    }
}

/// Bytes `range` (relative to the chunk) of chunk number `chunk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub chunk: usize,
    pub range: Range<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn manifest() -> Manifest {
        // Out of order on purpose: chunks are laid out by offset.
        let json = r#"{"name":"big.bin","mime":"application/octet-stream","size":25,
            "chunks":[{"fid":"2,0200000002","offset":10,"size":10},
                      {"fid":"1,0100000001","offset":0,"size":10},
                      {"fid":"3,0300000003","offset":20,"size":5,"future":true}],
            "extra":{"x":1}}"#;
        Manifest::parse(json.as_bytes(), false).unwrap()
    }

    #[test]
    fn parses_and_orders() {
        let m = manifest();
        assert_eq!(m.name, "big.bin");
        assert_eq!(m.total, 25);
        let ids: Vec<_> = m.chunks.iter().map(|c| c.fid_text.as_str()).collect();
        assert_eq!(ids, ["1,0100000001", "2,0200000002", "3,0300000003"]);
        assert_eq!(m.chunks[1].fid, FileId::new(2, 2, 2));
    }

    #[test]
    fn gzipped_manifest() {
        let json = br#"{"chunks":[{"fid":"1,0100000001","size":3}]}"#;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(json).unwrap();
        let gz = enc.finish().unwrap();
        let m = Manifest::parse(&gz, true).unwrap();
        assert_eq!(m.total, 3);
        assert!(Manifest::parse(json, true).is_none());
    }

    #[test]
    fn not_manifests() {
        for bad in [
            &b""[..],
            b"hello",
            b"[1,2]",
            br#"{"chunks":[{"fid":"nope","size":1}]}"#,
            br#"{"chunks":[{"fid":"1,0100000001","size":-1}]}"#,
            br#"{"chunks":[{"size":1}]}"#,
            br#"{"chunks":[{"fid":"1,0100000001","size":18446744073709551615},{"fid":"1,0100000001","size":1}]}"#,
        ] {
            assert!(Manifest::parse(bad, false).is_none(), "{bad:?}");
        }
        // No chunks at all is an empty file.
        assert_eq!(Manifest::parse(b"{}", false).unwrap().total, 0);
    }

    #[test]
    fn pieces_of_ranges() {
        let m = manifest();
        let p = |r: Range<u64>| {
            m.pieces(r)
                .into_iter()
                .map(|p| (p.chunk, p.range.start, p.range.end))
                .collect::<Vec<_>>()
        };
        assert_eq!(p(0..25), [(0, 0, 10), (1, 0, 10), (2, 0, 5)]);
        assert_eq!(p(5..15), [(0, 5, 10), (1, 0, 5)]);
        assert_eq!(p(10..20), [(1, 0, 10)]);
        assert_eq!(p(24..25), [(2, 4, 5)]);
        assert_eq!(p(0..1), [(0, 0, 1)]);
    }

    proptest::proptest! {
        #[test]
        fn pieces_cover_the_range_exactly(
            sizes in proptest::collection::vec(0u64..50, 0..8),
            a in 0u64..400,
            len in 1u64..400,
        ) {
            let chunks = sizes
                .iter()
                .enumerate()
                .map(|(i, s)| Chunk {
                    fid: FileId::new(1, i as u64 + 1, 1),
                    fid_text: String::new(),
                    size: *s,
                })
                .collect();
            let total = sizes.iter().sum::<u64>();
            let m = Manifest { name: String::new(), mime: String::new(), chunks, total };
            if total == 0 {
                return Ok(());
            }
            let start = a % total;
            let end = (start + len).min(total);
            let pieces = m.pieces(start..end);
            let covered: u64 = pieces.iter().map(|p| p.range.end - p.range.start).sum();
            proptest::prop_assert_eq!(covered, end - start);
            for p in &pieces {
                proptest::prop_assert!(p.range.start < p.range.end);
                proptest::prop_assert!(p.range.end <= sizes[p.chunk]);
            }
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), gz in proptest::prelude::any::<bool>()) {
            let _ = Manifest::parse(&data, gz);
        }
    }
}
