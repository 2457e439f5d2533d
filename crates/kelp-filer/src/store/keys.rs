//! Keys of the metadata tables.
//!
//! The store is a handful of ordered byte-keyed tables ([`Table`]); every
//! backend keeps them the same way, so the logic above them is written
//! once (`apply.rs`).
//!
//! - `Entries`: `dir 0x00 name` → [`crate::Entry`] encoding. A directory's
//!   children are the range `dir 0x00 ..= dir 0x00 0xff…`, in byte order
//!   of their names; the root's children have `dir` = `/`.
//! - `Refs`: chunk fid → owning path (UTF-8). A chunk is deleted from the
//!   blob store only when it has no row here.
//! - `Garbage`: u64 BE sequence → fid: chunks no entry references any
//!   more, waiting for the collector.
//! - `Events`: u64 BE sequence → [`crate::Event`] encoding: the change log
//!   subscribers read.
//! - `Leases`: u64 BE lease id → lease (file ids reserved from the master
//!   and not yet all committed or collected).
//! - `Usage`: directory path → u64 bytes, u64 entries (directories with a
//!   quota only).
//! - `Meta`: name → value: `format` (the store format version, u64 LE),
//!   `events.last` and `garbage.last` (the last event and garbage numbers
//!   given, u64 BE: numbers never come back after their rows are dropped).

use crate::path::FullPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Entries,
    Refs,
    Garbage,
    Events,
    Leases,
    Usage,
    Meta,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Entries,
        Table::Refs,
        Table::Garbage,
        Table::Events,
        Table::Leases,
        Table::Usage,
        Table::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Entries => "entries",
            Table::Refs => "refs",
            Table::Garbage => "garbage",
            Table::Events => "events",
            Table::Leases => "leases",
            Table::Usage => "usage",
            Table::Meta => "meta",
        }
    }

    /// The number a SQL backend stores in its `tbl` column.
    pub fn id(self) -> i16 {
        match self {
            Table::Entries => 0,
            Table::Refs => 1,
            Table::Garbage => 2,
            Table::Events => 3,
            Table::Leases => 4,
            Table::Usage => 5,
            Table::Meta => 6,
        }
    }
}

/// The `Entries` key of `path` (not the root, which has no entry).
pub fn entry_key(path: &FullPath) -> Vec<u8> {
    let (dir, name) = path.split().expect("the root has no entry key");
    child_key(&dir, name)
}

pub fn child_key(dir: &FullPath, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.as_str().len() + 1 + name.len());
    k.extend_from_slice(dir.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The key range of `dir`'s children whose names start with `prefix`:
/// `[start, end)`.
pub fn children_range(dir: &FullPath, prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = child_key(dir, prefix);
    let mut end = start.clone();
    // No UTF-8 name contains 0xff, so this is past every name with the prefix.
    end.push(0xff);
    (start, end)
}

/// Splits an `Entries` key into directory and name.
pub fn split_entry_key(k: &[u8]) -> Option<(&str, &str)> {
    let i = k.iter().position(|b| *b == 0)?;
    let dir = std::str::from_utf8(&k[..i]).ok()?;
    let name = std::str::from_utf8(&k[i + 1..]).ok()?;
    Some((dir, name))
}

/// Key ranges holding every entry strictly below `dir`: its children and
/// the children of every directory below it.
pub fn subtree_ranges(dir: &FullPath) -> Vec<(Vec<u8>, Vec<u8>)> {
    if dir.is_root() {
        return vec![(Vec::new(), vec![0xff])];
    }
    let d = dir.as_str().as_bytes();
    let mut children = d.to_vec();
    children.push(0);
    let mut children_end = d.to_vec();
    children_end.push(1);
    let mut deeper = d.to_vec();
    deeper.push(b'/');
    let mut deeper_end = d.to_vec();
    deeper_end.push(b'/' + 1);
    vec![(children, children_end), (deeper, deeper_end)]
}

pub fn seq_key(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}
