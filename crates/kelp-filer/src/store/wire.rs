//! The store wire format: how a gateway's [`super::remote::RemoteBackend`]
//! asks a filer (`POST /__kelp/store/{get,range,commit}`) to read its
//! store and commit transactions, and how the filer answers.
//!
//! Every body starts with `u8 version`, [`WIRE_VERSION`] (1). A filer that
//! gets another version refuses the request (HTTP 400, naming the version
//! it speaks); a caller that gets an answer of another version refuses it.
//! All integers are little endian; `u16+` is a u16 length then that many
//! bytes (`u32+` likewise); strings are UTF-8.
//!
//! Requests:
//! ```text
//! get:     u8 version, u8 table, u32+ key
//! range:   u8 version, u8 table, u32+ start, u32+ end, u64 limit
//! commit:  u8 version, u32 op count, each op:
//!   u8 0 put        u16+ path, cond, named entry
//!   u8 1 delete     u16+ path, cond, u8 recursive (0 or 1)
//!   u8 2 rename     u16+ from, u16+ to
//!   u8 3 put lease  u64 lease id, u32+ lease (the Lease layout)
//!   u8 4 drop lease u64 lease id
//!   u8 5 add garbage   u32 count, each u16+ fid
//!   u8 6 drop garbage  u32 count, each u64 row
//!   u8 7 drop events   u32 count, each u64 sequence
//! cond:         u8 0 any, 1 absent, 2 present, 3 unchanged + named entry
//! named entry:  u16+ name, u32+ entry (the Entry layout, CRC included)
//! ```
//! The table is [`Table::id`] (0 entries … 6 meta).
//!
//! Answers: `u8 version`, then `u8 0` and the value, or `u8 1` and an
//! error:
//! ```text
//! get:     u8 present (0 or 1), if present u32+ value
//! range:   u32 row count, each u32+ key, u32+ value
//! commit:  u32 count, each u8 present (0 or 1), if present a named entry
//! error:   u8 kind, then u32+ message; kind 7 (quota) has u32+ directory,
//!          then u32+ what
//! ```
//! Error kinds are [`FilerError`]'s variants: 0 bad path, 1 not found,
//! 2 exists, 3 not a directory, 4 is a directory, 5 not empty,
//! 6 precondition, 7 quota, 8 bad request, 9 range, 10 blob store (read
//! back as a store error: a blob client error cannot cross), 11 store,
//! 12 corrupt, 13 body, 14 shutting down (its message empty). An unknown
//! kind reads back as a store error carrying its number and message.
//!
//! Decoding checks every length against the bytes left before taking
//! them and never panics; trailing bytes are refused.

use std::fmt;

use super::keys::Table;
use super::records::Lease;
use super::{Cond, Op, Replaced, Rows, Txn};
use crate::entry::{Entry, Reader, put16, put32};
use crate::error::FilerError;
use crate::path::FullPath;

/// The version of this layout, the first byte of every body.
pub const WIRE_VERSION: u8 = 1;

/// A body that is not this layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Another version of the layout.
    Version(u8),
    /// Truncated, malformed, or with bytes past its end.
    Malformed(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Version(v) => write!(
                f,
                "store wire version {v} is not known here (this side speaks version {WIRE_VERSION})"
            ),
            WireError::Malformed(m) => write!(f, "malformed store wire body: {m}"),
        }
    }
}

impl std::error::Error for WireError {}

fn bad(what: &str) -> WireError {
    WireError::Malformed(what.to_string())
}

// ---- writing ---------------------------------------------------------------

fn put_u32(w: &mut Vec<u8>, n: usize) {
    w.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_named(w: &mut Vec<u8>, e: &Entry) {
    put16(w, e.name.as_bytes());
    put32(w, &e.encode());
}

fn put_cond(w: &mut Vec<u8>, c: &Cond) {
    match c {
        Cond::Any => w.push(0),
        Cond::Absent => w.push(1),
        Cond::Present => w.push(2),
        Cond::Unchanged(e) => {
            w.push(3);
            put_named(w, e);
        }
    }
}

fn put_op(w: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Put { path, entry, cond } => {
            w.push(0);
            put16(w, path.as_str().as_bytes());
            put_cond(w, cond);
            put_named(w, entry);
        }
        Op::Delete {
            path,
            cond,
            recursive,
        } => {
            w.push(1);
            put16(w, path.as_str().as_bytes());
            put_cond(w, cond);
            w.push(u8::from(*recursive));
        }
        Op::Rename { from, to } => {
            w.push(2);
            put16(w, from.as_str().as_bytes());
            put16(w, to.as_str().as_bytes());
        }
        Op::PutLease(l) => {
            w.push(3);
            w.extend_from_slice(&l.id.to_le_bytes());
            put32(w, &l.encode());
        }
        Op::DropLease(id) => {
            w.push(4);
            w.extend_from_slice(&id.to_le_bytes());
        }
        Op::AddGarbage(fids) => {
            w.push(5);
            put_u32(w, fids.len());
            for f in fids {
                put16(w, f.as_bytes());
            }
        }
        Op::DropGarbage(ids) | Op::DropEvents(ids) => {
            w.push(if matches!(op, Op::DropGarbage(_)) {
                6
            } else {
                7
            });
            put_u32(w, ids.len());
            for id in ids {
                w.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
}

pub fn encode_get(t: Table, key: &[u8]) -> Vec<u8> {
    let mut w = vec![WIRE_VERSION, t.id() as u8];
    put32(&mut w, key);
    w
}

pub fn encode_range(t: Table, start: &[u8], end: &[u8], limit: u64) -> Vec<u8> {
    let mut w = vec![WIRE_VERSION, t.id() as u8];
    put32(&mut w, start);
    put32(&mut w, end);
    w.extend_from_slice(&limit.to_le_bytes());
    w
}

pub fn encode_txn(txn: &Txn) -> Vec<u8> {
    let mut w = vec![WIRE_VERSION];
    put_u32(&mut w, txn.ops.len());
    for op in &txn.ops {
        put_op(&mut w, op);
    }
    w
}

// ---- reading ---------------------------------------------------------------

/// Reads the version byte: the rest of the body when it is ours.
fn open(b: &[u8]) -> Result<Reader<'_>, WireError> {
    let mut r = Reader { b, at: 0 };
    match r.u8() {
        None => Err(bad("empty body")),
        Some(WIRE_VERSION) => Ok(r),
        Some(v) => Err(WireError::Version(v)),
    }
}

fn finish<T>(r: &Reader<'_>, v: T) -> Result<T, WireError> {
    if r.remaining() == 0 {
        Ok(v)
    } else {
        Err(bad("bytes past the end"))
    }
}

fn bytes32<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
    let n = r.u32().ok_or_else(|| bad("truncated length"))? as usize;
    r.bytes(n).ok_or_else(|| bad("truncated bytes"))
}

fn string16(r: &mut Reader<'_>) -> Result<String, WireError> {
    r.string16()
        .ok_or_else(|| bad("truncated or non-UTF-8 string"))
}

fn string32(r: &mut Reader<'_>) -> Result<String, WireError> {
    let b = bytes32(r)?;
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| bad("non-UTF-8 string"))
}

fn u8_of(r: &mut Reader<'_>) -> Result<u8, WireError> {
    r.u8().ok_or_else(|| bad("truncated"))
}

fn u32_of(r: &mut Reader<'_>) -> Result<u32, WireError> {
    r.u32().ok_or_else(|| bad("truncated"))
}

fn u64_of(r: &mut Reader<'_>) -> Result<u64, WireError> {
    r.u64().ok_or_else(|| bad("truncated"))
}

fn flag(r: &mut Reader<'_>) -> Result<bool, WireError> {
    match u8_of(r)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad("a flag other than 0 or 1")),
    }
}

fn table(r: &mut Reader<'_>) -> Result<Table, WireError> {
    let id = u8_of(r)?;
    Table::ALL
        .into_iter()
        .find(|t| t.id() == i16::from(id))
        .ok_or_else(|| WireError::Malformed(format!("unknown table {id}")))
}

fn path(r: &mut Reader<'_>) -> Result<FullPath, WireError> {
    let s = string16(r)?;
    let p = FullPath::parse(&s).map_err(|e| WireError::Malformed(e.to_string()))?;
    // Only a path in its normal form: what decodes encodes back the same.
    if p.as_str() != s {
        return Err(WireError::Malformed(format!(
            "path {s:?} is not normalised"
        )));
    }
    Ok(p)
}

fn named(r: &mut Reader<'_>) -> Result<Entry, WireError> {
    let name = string16(r)?;
    let b = bytes32(r)?;
    Entry::decode(&name, b).map_err(|e| WireError::Malformed(e.to_string()))
}

fn cond(r: &mut Reader<'_>) -> Result<Cond, WireError> {
    Ok(match u8_of(r)? {
        0 => Cond::Any,
        1 => Cond::Absent,
        2 => Cond::Present,
        3 => Cond::Unchanged(Box::new(named(r)?)),
        c => return Err(WireError::Malformed(format!("unknown condition {c}"))),
    })
}

fn ids(r: &mut Reader<'_>) -> Result<Vec<u64>, WireError> {
    let n = u32_of(r)?;
    // No allocation from the count: every id takes bytes that must be there.
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(u64_of(r)?);
    }
    Ok(v)
}

fn op(r: &mut Reader<'_>) -> Result<Op, WireError> {
    Ok(match u8_of(r)? {
        0 => {
            let path = path(r)?;
            let cond = cond(r)?;
            Op::Put {
                path,
                cond,
                entry: named(r)?,
            }
        }
        1 => Op::Delete {
            path: path(r)?,
            cond: cond(r)?,
            recursive: flag(r)?,
        },
        2 => Op::Rename {
            from: path(r)?,
            to: path(r)?,
        },
        3 => {
            let id = u64_of(r)?;
            let l =
                Lease::decode(id, bytes32(r)?).map_err(|e| WireError::Malformed(e.to_string()))?;
            Op::PutLease(l)
        }
        4 => Op::DropLease(u64_of(r)?),
        5 => {
            let n = u32_of(r)?;
            let mut fids = Vec::new();
            for _ in 0..n {
                fids.push(string16(r)?);
            }
            Op::AddGarbage(fids)
        }
        6 => Op::DropGarbage(ids(r)?),
        7 => Op::DropEvents(ids(r)?),
        o => return Err(WireError::Malformed(format!("unknown operation {o}"))),
    })
}

pub fn decode_get(b: &[u8]) -> Result<(Table, Vec<u8>), WireError> {
    let mut r = open(b)?;
    let t = table(&mut r)?;
    let k = bytes32(&mut r)?.to_vec();
    finish(&r, (t, k))
}

/// A range request: table, start, end, limit.
pub type RangeRequest = (Table, Vec<u8>, Vec<u8>, u64);

pub fn decode_range(b: &[u8]) -> Result<RangeRequest, WireError> {
    let mut r = open(b)?;
    let t = table(&mut r)?;
    let start = bytes32(&mut r)?.to_vec();
    let end = bytes32(&mut r)?.to_vec();
    let limit = u64_of(&mut r)?;
    finish(&r, (t, start, end, limit))
}

pub fn decode_txn(b: &[u8]) -> Result<Txn, WireError> {
    let mut r = open(b)?;
    let n = u32_of(&mut r)?;
    let mut ops = Vec::new();
    for _ in 0..n {
        ops.push(op(&mut r)?);
    }
    finish(&r, Txn { ops })
}

// ---- answers ---------------------------------------------------------------

/// What one endpoint answers when it succeeds.
pub trait Payload: Sized {
    fn put(&self, w: &mut Vec<u8>);
    fn take(r: &mut Reader<'_>) -> Result<Self, WireError>;
}

/// `get`'s answer.
impl Payload for Option<Vec<u8>> {
    fn put(&self, w: &mut Vec<u8>) {
        match self {
            None => w.push(0),
            Some(v) => {
                w.push(1);
                put32(w, v);
            }
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(if flag(r)? {
            Some(bytes32(r)?.to_vec())
        } else {
            None
        })
    }
}

/// `range`'s answer.
impl Payload for Rows {
    fn put(&self, w: &mut Vec<u8>) {
        put_u32(w, self.len());
        for (k, v) in self {
            put32(w, k);
            put32(w, v);
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let n = u32_of(r)?;
        let mut rows = Vec::new();
        for _ in 0..n {
            let k = bytes32(r)?.to_vec();
            rows.push((k, bytes32(r)?.to_vec()));
        }
        Ok(rows)
    }
}

/// `commit`'s answer.
impl Payload for Replaced {
    fn put(&self, w: &mut Vec<u8>) {
        put_u32(w, self.len());
        for e in self {
            match e {
                None => w.push(0),
                Some(e) => {
                    w.push(1);
                    put_named(w, e);
                }
            }
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let n = u32_of(r)?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(if flag(r)? { Some(named(r)?) } else { None });
        }
        Ok(out)
    }
}

fn put_error(w: &mut Vec<u8>, e: &FilerError) {
    let (kind, msg): (u8, String) = match e {
        FilerError::BadPath(m) => (0, m.clone()),
        FilerError::NotFound(m) => (1, m.clone()),
        FilerError::Exists(m) => (2, m.clone()),
        FilerError::NotDirectory(m) => (3, m.clone()),
        FilerError::IsDirectory(m) => (4, m.clone()),
        FilerError::NotEmpty(m) => (5, m.clone()),
        FilerError::Precondition(m) => (6, m.clone()),
        FilerError::Quota { dir, what } => {
            w.push(7);
            put32(w, dir.as_bytes());
            put32(w, what.as_bytes());
            return;
        }
        FilerError::BadRequest(m) => (8, m.clone()),
        FilerError::Range(m) => (9, m.clone()),
        FilerError::Blob(c) => (10, c.to_string()),
        FilerError::Store(m) => (11, m.clone()),
        FilerError::Corrupt(m) => (12, m.clone()),
        FilerError::Body(m) => (13, m.clone()),
        FilerError::ShuttingDown => (14, String::new()),
    };
    w.push(kind);
    put32(w, msg.as_bytes());
}

fn take_error(r: &mut Reader<'_>) -> Result<FilerError, WireError> {
    let kind = u8_of(r)?;
    if kind == 7 {
        let dir = string32(r)?;
        return Ok(FilerError::Quota {
            dir,
            what: string32(r)?,
        });
    }
    let m = string32(r)?;
    Ok(match kind {
        0 => FilerError::BadPath(m),
        1 => FilerError::NotFound(m),
        2 => FilerError::Exists(m),
        3 => FilerError::NotDirectory(m),
        4 => FilerError::IsDirectory(m),
        5 => FilerError::NotEmpty(m),
        6 => FilerError::Precondition(m),
        8 => FilerError::BadRequest(m),
        9 => FilerError::Range(m),
        10 => FilerError::Store(format!("blob store (at the filer): {m}")),
        11 => FilerError::Store(m),
        12 => FilerError::Corrupt(m),
        13 => FilerError::Body(m),
        14 => FilerError::ShuttingDown,
        k => FilerError::Store(format!("the filer answered error kind {k}: {m}")),
    })
}

/// An answer: the value, or the error the filer's store gave.
pub fn encode_answer<P: Payload>(a: &Result<P, FilerError>) -> Vec<u8> {
    let mut w = vec![WIRE_VERSION];
    match a {
        Ok(v) => {
            w.push(0);
            v.put(&mut w);
        }
        Err(e) => {
            w.push(1);
            put_error(&mut w, e);
        }
    }
    w
}

pub fn decode_answer<P: Payload>(b: &[u8]) -> Result<Result<P, FilerError>, WireError> {
    let mut r = open(b)?;
    let a = match u8_of(&mut r)? {
        0 => Ok(P::take(&mut r)?),
        1 => Err(take_error(&mut r)?),
        s => return Err(WireError::Malformed(format!("unknown answer status {s}"))),
    };
    finish(&r, a)
}

#[cfg(test)]
mod tests;
