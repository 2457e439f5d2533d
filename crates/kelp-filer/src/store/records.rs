//! The small records of the store besides entries: change-log events and
//! file-id leases, each with its byte layout.

use crate::entry::{Entry, Reader};
use crate::error::FilerError;
use crate::path::FullPath;

/// One change of the namespace, as subscribers see it. A create has only
/// `new`, a delete only `old`, an update or rename both.
///
/// Layout: `u8 format = 1`, `i64 ts_ns`, `u8 flags` (bit 0: old, bit 1:
/// new), then for each present side `u16+ path` and `u32+ entry`
/// ([`Entry::encode`]). The sequence number is the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub ts_ns: i64,
    pub old: Option<(FullPath, Entry)>,
    pub new: Option<(FullPath, Entry)>,
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![1u8];
        w.extend_from_slice(&self.ts_ns.to_le_bytes());
        w.push(u8::from(self.old.is_some()) | (u8::from(self.new.is_some()) << 1));
        for (p, e) in self.old.iter().chain(self.new.iter()) {
            w.extend_from_slice(&(p.as_str().len() as u16).to_le_bytes());
            w.extend_from_slice(p.as_str().as_bytes());
            let b = e.encode();
            w.extend_from_slice(&(b.len() as u32).to_le_bytes());
            w.extend_from_slice(&b);
        }
        w
    }

    pub fn decode(seq: u64, b: &[u8]) -> Result<Self, FilerError> {
        let bad = || FilerError::Corrupt(format!("event {seq}: truncated or malformed"));
        let mut r = Reader { b, at: 0 };
        if r.u8().ok_or_else(bad)? != 1 {
            return Err(FilerError::Corrupt(format!("event {seq}: unknown format")));
        }
        let ts_ns = r.i64().ok_or_else(bad)?;
        let flags = r.u8().ok_or_else(bad)?;
        let mut side = |present: bool| -> Result<Option<(FullPath, Entry)>, FilerError> {
            if !present {
                return Ok(None);
            }
            let p = r.string16().ok_or_else(bad)?;
            let p = FullPath::parse(&p)?;
            let n = r.u32().ok_or_else(bad)? as usize;
            let e = Entry::decode(p.name(), r.bytes(n).ok_or_else(bad)?)?;
            Ok(Some((p, e)))
        };
        let old = side(flags & 1 != 0)?;
        let new = side(flags & 2 != 0)?;
        Ok(Event {
            seq,
            ts_ns,
            old,
            new,
        })
    }

    /// The event touches `dir` or something below it.
    pub fn is_under(&self, dir: &FullPath) -> bool {
        self.old
            .iter()
            .chain(self.new.iter())
            .any(|(p, _)| p.is_within(dir))
    }
}

/// File ids reserved from the master in one assign: `fid`, then `count - 1`
/// more keys after it. Written before any of them is uploaded, so that
/// after a crash the collector can find uploads that never committed.
///
/// Layout: `u8 format = 1`, `u8+ fid`, `u32 count`, `i64 created_ns`,
/// `u8+ owner` (the filer that took it; it reaps its own leases when it
/// starts again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub fid: String,
    pub count: u32,
    pub created_ns: i64,
    pub owner: String,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![1u8, self.fid.len() as u8];
        w.extend_from_slice(self.fid.as_bytes());
        w.extend_from_slice(&self.count.to_le_bytes());
        w.extend_from_slice(&self.created_ns.to_le_bytes());
        w.push(self.owner.len() as u8);
        w.extend_from_slice(self.owner.as_bytes());
        w
    }

    pub fn decode(id: u64, b: &[u8]) -> Result<Self, FilerError> {
        let bad = || FilerError::Corrupt(format!("lease {id}: truncated or malformed"));
        let mut r = Reader { b, at: 0 };
        if r.u8().ok_or_else(bad)? != 1 {
            return Err(bad());
        }
        let n = r.u8().ok_or_else(bad)? as usize;
        let fid = std::str::from_utf8(r.bytes(n).ok_or_else(bad)?)
            .map_err(|_| bad())?
            .to_string();
        let count = r.u32().ok_or_else(bad)?;
        let created_ns = r.i64().ok_or_else(bad)?;
        let n = r.u8().ok_or_else(bad)? as usize;
        let owner = std::str::from_utf8(r.bytes(n).ok_or_else(bad)?)
            .map_err(|_| bad())?
            .to_string();
        Ok(Lease {
            id,
            fid,
            count,
            created_ns,
            owner,
        })
    }

    /// Every file id of the lease, in the canonical form the filer stores.
    pub fn fids(&self) -> Vec<String> {
        let Ok(base) = self.fid.parse::<kelp_core::FileId>() else {
            return Vec::new();
        };
        (0..u64::from(self.count))
            .map(|i| {
                kelp_core::FileId::new(base.volume_id, base.key.wrapping_add(i), base.cookie)
                    .to_string()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let e = Event {
            seq: 9,
            ts_ns: 77,
            old: Some((FullPath::parse("/a/b").unwrap(), Entry::directory("b", 3))),
            new: None,
        };
        let b = e.encode();
        assert_eq!(Event::decode(9, &b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(Event::decode(9, &b[..cut]).is_err());
        }
        let l = Lease {
            id: 4,
            fid: "3,01637037d6".into(),
            count: 3,
            created_ns: 5,
            owner: "f1".into(),
        };
        assert_eq!(Lease::decode(4, &l.encode()).unwrap(), l);
        assert_eq!(l.fids().len(), 3);
        assert_eq!(l.fids()[0], "3,01637037d6");
    }
}
