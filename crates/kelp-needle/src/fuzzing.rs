//! Entry points shared by the cargo-fuzz targets (`/fuzz`) and the corpus
//! replay test, so both exercise exactly the same code. Each must never
//! panic, whatever the input.

use std::str::FromStr;

use crate::idx::{self, IdxEntry, OffsetWidth};
use crate::needle::Needle;
use crate::superblock::SuperBlock;

/// First byte picks the version; the rest is a needle image.
pub fn needle_decode(data: &[u8]) {
    let Some((&v, rest)) = data.split_first() else {
        return;
    };
    let version = v % 4;
    let a = Needle::decode(rest, version);
    let b = Needle::decode_vec(rest.to_vec(), version);
    assert_eq!(a, b, "decode and decode_vec disagree");
    needle_decode_without_data(rest, version, a.as_ref().ok());
    if let Ok(mut n) = a
        && version >= 2
        && !rest.is_empty()
    {
        // A decoded needle re-encodes to something that decodes the same
        // (a tombstone's checksum field holds the deleted needle's CRC).
        n.checksum = crate::needle::crc32c(&n.data);
        if let Ok(bytes) = n.encode(version) {
            let again = Needle::decode(&bytes, version).expect("re-encoded needle decodes");
            assert_eq!(again.data, n.data);
        }
    }
}

/// The split decode (header, then the bytes after the data, as a large
/// read does) never panics, and agrees with the whole decode on every
/// needle that one accepts.
fn needle_decode_without_data(bytes: &[u8], version: u8, whole: Option<&Needle>) {
    let Ok(span) = Needle::data_span(bytes, version) else {
        assert!(whole.is_none_or(|_| bytes.len() < crate::needle::data_prefix_len(version)));
        return;
    };
    let after = usize::try_from(span.end()).unwrap_or(usize::MAX);
    let Some(rest) = bytes.get(after..) else {
        return;
    };
    let split = Needle::decode_without_data(bytes, rest, version);
    if let Some(whole) = whole {
        let (n, s) = split.expect("split decode accepts what the whole decode accepts");
        assert_eq!(s, span);
        let data = &bytes[s.start as usize..s.end() as usize];
        assert!(
            crate::needle::checksum_matches(n.checksum, crate::needle::crc32c(data))
                || whole.data.is_empty() && data.is_empty()
        );
        assert_eq!(
            Needle {
                data: whole.data.clone(),
                checksum: whole.checksum,
                ..n
            },
            *whole
        );
    }
}

pub fn idx_decode(data: &[u8]) {
    for w in [OffsetWidth::Four, OffsetWidth::Five] {
        if let Ok(e) = IdxEntry::decode(data, w) {
            let b = e.to_bytes(w).expect("decoded offset fits its width");
            assert_eq!(&b[..], &data[..w.entry_size()]);
        }
        if let Ok(it) = idx::decode_all(data, w) {
            it.for_each(drop);
        }
    }
}

pub fn superblock_decode(data: &[u8]) {
    if let Ok(sb) = SuperBlock::decode(data) {
        let b = sb.encode();
        assert_eq!(SuperBlock::decode(&b).as_ref(), Ok(&sb));
    }
}

pub fn file_id_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Key 0 formats as the bare 8-digit cookie, which (as in SeaweedFS) does
    // not parse back; sequencers start at 1, so only keys > 0 round-trip.
    if let Ok(f) = kelp_core::FileId::from_str(s)
        && f.key != 0
    {
        assert_eq!(kelp_core::FileId::from_str(&f.to_string()), Ok(f));
    }
}

pub fn vif_decode(data: &[u8]) {
    if let Ok(v) = crate::vif::VolumeInfoFile::from_json(data) {
        let again = crate::vif::VolumeInfoFile::from_json(v.to_json().as_bytes());
        assert_eq!(again.as_ref().ok(), Some(&v));
    }
}

/// A checkpoint from disk: decoding either fails or gives a map whose
/// keys increase, that a lookup of each key finds, and that encodes and
/// decodes again to the same entries and metadata.
pub fn checkpoint_decode(data: &[u8]) {
    let Ok((meta, map)) = crate::checkpoint::decode(data) else {
        return;
    };
    let entries: Vec<_> = map.iter().collect();
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    for (k, v) in &entries {
        assert_eq!(map.get(*k), Some(*v));
    }
    let again = crate::checkpoint::decode(&crate::checkpoint::encode(&meta, &map));
    let (meta2, map2) = again.expect("a decoded checkpoint encodes to a valid one");
    assert_eq!(meta2, meta);
    assert_eq!(map2.counters(), map.counters());
    assert_eq!(map2.iter().collect::<Vec<_>>(), entries);
}

/// A digest from another server: decoding either fails or round-trips.
pub fn digest_decode(data: &[u8]) {
    if let Ok(entries) = crate::digest::decode(data) {
        let again = crate::digest::encode(&entries);
        assert_eq!(crate::digest::decode(&again).ok(), Some(entries));
    }
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Target name -> entry point, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("needle_decode", needle_decode),
    ("idx_decode", idx_decode),
    ("superblock_decode", superblock_decode),
    ("file_id_parse", file_id_parse),
    ("vif_decode", vif_decode),
    ("checkpoint_decode", checkpoint_decode),
    ("digest_decode", digest_decode),
];
