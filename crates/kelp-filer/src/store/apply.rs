//! The namespace's rules, applied inside one store transaction: parent
//! directories, conditions, directory moves, quotas, chunk references,
//! garbage and the change log. Written once over [`KvTxn`]; every backend
//! runs it.

use std::collections::{BTreeSet, HashMap};

use super::keys::{self, Table};
use super::records::Event;
use super::{Cond, KvTxn, Op, Replaced, Txn};
use crate::entry::{Entry, Kind};
use crate::error::FilerError;
use crate::path::FullPath;

const LAST_EVENT: &[u8] = b"events.last";
const LAST_GARBAGE: &[u8] = b"garbage.last";

/// Rows read per range call while walking a subtree.
const PAGE: usize = 1024;

/// Bytes and entries counted against quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
}

impl Usage {
    fn of(e: &Entry) -> Usage {
        Usage {
            bytes: if e.is_dir() { 0 } else { e.size },
            entries: 1,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.bytes.to_le_bytes().to_vec();
        v.extend_from_slice(&self.entries.to_le_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Usage {
        let word = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        Usage {
            bytes: word(0),
            entries: word(8),
        }
    }
}

struct Ctx<'t, T: KvTxn> {
    t: &'t mut T,
    now_ns: i64,
    /// Chunk fids an operation stopped referencing.
    dropped: BTreeSet<String>,
    events: Vec<Event>,
}

pub async fn apply<T: KvTxn>(t: &mut T, txn: &Txn, now_ns: i64) -> Result<Replaced, FilerError> {
    let mut cx = Ctx {
        t,
        now_ns,
        dropped: BTreeSet::new(),
        events: Vec::new(),
    };
    let mut replaced = Vec::with_capacity(txn.ops.len());
    for op in &txn.ops {
        replaced.push(match op {
            Op::Put { path, entry, cond } => cx.put(path, entry, cond).await?,
            Op::Delete {
                path,
                cond,
                recursive,
            } => Some(cx.delete(path, cond, *recursive).await?),
            Op::Rename { from, to } => cx.rename(from, to).await?,
            Op::PutLease(l) => {
                // Filers sharing a store name leases by time: two may pick
                // one id, and the second must not replace the first's record.
                let k = keys::seq_key(l.id);
                if cx.t.get(Table::Leases, &k).await?.is_some() {
                    return Err(FilerError::Exists(format!("lease {}", l.id)));
                }
                cx.t.put(Table::Leases, &k, &l.encode()).await?;
                None
            }
            Op::DropLease(id) => {
                cx.t.delete(Table::Leases, &keys::seq_key(*id)).await?;
                None
            }
            Op::AddGarbage(fids) => {
                cx.dropped.extend(fids.iter().cloned());
                None
            }
            Op::DropGarbage(ids) => {
                for id in ids {
                    cx.t.delete(Table::Garbage, &keys::seq_key(*id)).await?;
                }
                None
            }
            Op::DropEvents(ids) => {
                for id in ids {
                    cx.t.delete(Table::Events, &keys::seq_key(*id)).await?;
                }
                None
            }
        });
    }
    // A chunk moved between entries in this transaction (a multipart
    // upload's parts becoming the object) still has its reference.
    let dropped = std::mem::take(&mut cx.dropped);
    let mut garbage = Vec::new();
    for fid in dropped {
        if cx.t.get(Table::Refs, fid.as_bytes()).await?.is_none() {
            garbage.push(fid.into_bytes());
        }
    }
    append(cx.t, Table::Garbage, LAST_GARBAGE, garbage).await?;
    let first = last_seq(cx.t, LAST_EVENT).await? + 1;
    let events: Vec<Vec<u8>> = std::mem::take(&mut cx.events)
        .into_iter()
        .zip(first..)
        .map(|(mut ev, seq)| {
            ev.seq = seq;
            ev.encode()
        })
        .collect();
    append(cx.t, Table::Events, LAST_EVENT, events).await?;
    Ok(replaced)
}

/// The last number handed out in a numbered table.
async fn last_seq<T: KvTxn>(t: &mut T, counter: &[u8]) -> Result<u64, FilerError> {
    Ok(match t.get(Table::Meta, counter).await? {
        Some(v) => keys::seq_of(&v).unwrap_or(0),
        None => 0,
    })
}

/// Appends `rows` to a numbered table (`Events`, `Garbage`). The last
/// number lives in `meta` under `counter`, so that dropping rows never
/// makes a number come back: whoever holds number N (the collector
/// deleting a chunk, a subscriber's cursor) never meets another row under
/// it. (Numbering from the table's last key did: the collector dropped a
/// new garbage row that took an old row's number, and its chunk leaked.)
async fn append<T: KvTxn>(
    t: &mut T,
    table: Table,
    counter: &[u8],
    rows: Vec<Vec<u8>>,
) -> Result<(), FilerError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut seq = last_seq(t, counter).await?;
    for row in rows {
        seq += 1;
        t.put(table, &keys::seq_key(seq), &row).await?;
    }
    t.put(Table::Meta, counter, &keys::seq_key(seq)).await
}

pub async fn get_entry<T: KvTxn>(t: &mut T, path: &FullPath) -> Result<Option<Entry>, FilerError> {
    if path.is_root() {
        return Ok(Some(Entry::directory("", 0)));
    }
    match t.get(Table::Entries, &keys::entry_key(path)).await? {
        Some(v) => Ok(Some(Entry::decode(path.name(), &v)?)),
        None => Ok(None),
    }
}

fn check(cond: &Cond, path: &FullPath, old: Option<&Entry>) -> Result<(), FilerError> {
    let ok = match cond {
        Cond::Any => true,
        Cond::Absent => {
            if old.is_some() {
                return Err(FilerError::Exists(path.to_string()));
            }
            true
        }
        Cond::Present => old.is_some(),
        Cond::Unchanged(e) => old.is_some_and(|o| **e == *o),
    };
    if ok {
        Ok(())
    } else if old.is_none() {
        Err(FilerError::NotFound(path.to_string()))
    } else {
        Err(FilerError::Precondition(path.to_string()))
    }
}

impl<T: KvTxn> Ctx<'_, T> {
    fn event(&mut self, old: Option<(FullPath, Entry)>, new: Option<(FullPath, Entry)>) {
        self.events.push(Event {
            seq: 0,
            ts_ns: self.now_ns,
            old,
            new,
        });
    }

    /// Makes every ancestor of `path` a directory, creating missing ones;
    /// returns those with a quota.
    async fn parents(&mut self, path: &FullPath) -> Result<Vec<(FullPath, Entry)>, FilerError> {
        let mut quotas = Vec::new();
        for dir in path.ancestors() {
            if dir.is_root() {
                continue;
            }
            match get_entry(self.t, &dir).await? {
                Some(e) if e.is_dir() => {
                    if e.quota_bytes > 0 || e.quota_entries > 0 {
                        quotas.push((dir, e));
                    }
                }
                Some(_) => return Err(FilerError::NotDirectory(dir.to_string())),
                None => {
                    let e = Entry::directory(dir.name(), self.now_ns);
                    self.t
                        .put(Table::Entries, &keys::entry_key(&dir), &e.encode())
                        .await?;
                    self.charge(&quotas, Usage::of(&e), &dir).await?;
                    self.event(None, Some((dir.clone(), e)));
                }
            }
        }
        Ok(quotas)
    }

    /// Adds `add` to every quota directory's usage, refusing growth past a
    /// quota (shrinking is always allowed).
    async fn charge(
        &mut self,
        quotas: &[(FullPath, Entry)],
        add: Usage,
        at: &FullPath,
    ) -> Result<(), FilerError> {
        self.adjust(quotas, add, Usage::default(), at).await
    }

    async fn adjust(
        &mut self,
        quotas: &[(FullPath, Entry)],
        add: Usage,
        sub: Usage,
        at: &FullPath,
    ) -> Result<(), FilerError> {
        for (dir, e) in quotas {
            let k = dir.as_str().as_bytes();
            let mut u = match self.t.get(Table::Usage, k).await? {
                Some(v) => Usage::decode(&v),
                None => Usage::default(),
            };
            let bytes = (u.bytes + add.bytes).saturating_sub(sub.bytes);
            let entries = (u.entries + add.entries).saturating_sub(sub.entries);
            if e.quota_bytes > 0 && bytes > e.quota_bytes && bytes > u.bytes {
                return Err(FilerError::Quota {
                    dir: dir.to_string(),
                    what: format!(
                        "{at} would make it {bytes} bytes, over its quota of {} bytes",
                        e.quota_bytes
                    ),
                });
            }
            if e.quota_entries > 0 && entries > e.quota_entries && entries > u.entries {
                return Err(FilerError::Quota {
                    dir: dir.to_string(),
                    what: format!(
                        "{at} would make it {entries} entries, over its quota of {} entries",
                        e.quota_entries
                    ),
                });
            }
            u = Usage { bytes, entries };
            self.t.put(Table::Usage, k, &u.encode()).await?;
        }
        Ok(())
    }

    async fn add_refs(&mut self, path: &FullPath, e: &Entry) -> Result<(), FilerError> {
        for c in &e.chunks {
            self.t
                .put(Table::Refs, c.fid.as_bytes(), path.as_str().as_bytes())
                .await?;
        }
        Ok(())
    }

    async fn drop_refs(&mut self, e: &Entry) -> Result<(), FilerError> {
        for c in &e.chunks {
            self.t.delete(Table::Refs, c.fid.as_bytes()).await?;
            self.dropped.insert(c.fid.clone());
        }
        Ok(())
    }

    async fn put(
        &mut self,
        path: &FullPath,
        new: &Entry,
        cond: &Cond,
    ) -> Result<Option<Entry>, FilerError> {
        let Some((_, name)) = path.split() else {
            return Err(FilerError::BadPath("the root cannot be replaced".into()));
        };
        let quotas = self.parents(path).await?;
        let old = get_entry(self.t, path).await?;
        check(cond, path, old.as_ref())?;
        if let Some(o) = &old {
            if o.is_dir() && !new.is_dir() {
                return Err(FilerError::IsDirectory(path.to_string()));
            }
            if !o.is_dir() && new.is_dir() {
                return Err(FilerError::NotDirectory(path.to_string()));
            }
        }
        let mut new = new.clone();
        new.name = name.to_string();
        let was = old.as_ref().map(Usage::of).unwrap_or_default();
        self.adjust(&quotas, Usage::of(&new), was, path).await?;
        if new.kind == Kind::Directory {
            self.quota_changed(path, old.as_ref(), &new).await?;
        }
        if let Some(o) = &old {
            self.drop_refs(o).await?;
        }
        self.add_refs(path, &new).await?;
        self.t
            .put(Table::Entries, &keys::entry_key(path), &new.encode())
            .await?;
        self.event(
            old.clone().map(|o| (path.clone(), o)),
            Some((path.clone(), new)),
        );
        Ok(old)
    }

    /// A directory's quota set or cleared: its usage row starts from what
    /// is below it now, or goes.
    async fn quota_changed(
        &mut self,
        path: &FullPath,
        old: Option<&Entry>,
        new: &Entry,
    ) -> Result<(), FilerError> {
        let had = old.is_some_and(|o| o.quota_bytes > 0 || o.quota_entries > 0);
        let has = new.quota_bytes > 0 || new.quota_entries > 0;
        let k = path.as_str().as_bytes();
        if has && !had {
            let mut u = Usage::default();
            if old.is_some() {
                for (_, e) in self.subtree(path).await? {
                    u.bytes += Usage::of(&e).bytes;
                    u.entries += 1;
                }
            }
            self.t.put(Table::Usage, k, &u.encode()).await?;
        } else if had && !has {
            self.t.delete(Table::Usage, k).await?;
        }
        Ok(())
    }

    /// Every entry strictly below `dir`, with its path.
    async fn subtree(&mut self, dir: &FullPath) -> Result<Vec<(FullPath, Entry)>, FilerError> {
        let mut out = Vec::new();
        for (start, end) in keys::subtree_ranges(dir) {
            let mut from = start;
            loop {
                let rows = self.t.range(Table::Entries, &from, &end, PAGE).await?;
                let n = rows.len();
                for (k, v) in rows {
                    let (d, name) = keys::split_entry_key(&k).ok_or_else(|| {
                        FilerError::Corrupt("entry key without a separator".into())
                    })?;
                    let p = FullPath::parse(d)?.child(name);
                    let e = Entry::decode(name, &v)?;
                    from = k;
                    from.push(0);
                    out.push((p, e));
                }
                if n < PAGE {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn has_children(&mut self, dir: &FullPath) -> Result<bool, FilerError> {
        let (s, e) = keys::children_range(dir, "");
        Ok(!self.t.range(Table::Entries, &s, &e, 1).await?.is_empty())
    }

    async fn delete(
        &mut self,
        path: &FullPath,
        cond: &Cond,
        recursive: bool,
    ) -> Result<Entry, FilerError> {
        if path.is_root() {
            return Err(FilerError::BadPath("the root cannot be deleted".into()));
        }
        let old = get_entry(self.t, path).await?;
        check(cond, path, old.as_ref())?;
        let old = old.ok_or_else(|| FilerError::NotFound(path.to_string()))?;
        let mut gone = Usage::of(&old);
        if old.is_dir() && self.has_children(path).await? {
            if !recursive {
                return Err(FilerError::NotEmpty(path.to_string()));
            }
            for (p, e) in self.subtree(path).await? {
                self.drop_refs(&e).await?;
                gone.bytes += Usage::of(&e).bytes;
                gone.entries += 1;
                if e.is_dir() {
                    self.t.delete(Table::Usage, p.as_str().as_bytes()).await?;
                }
                self.t.delete(Table::Entries, &keys::entry_key(&p)).await?;
            }
        }
        self.drop_refs(&old).await?;
        self.t
            .delete(Table::Usage, path.as_str().as_bytes())
            .await?;
        self.t
            .delete(Table::Entries, &keys::entry_key(path))
            .await?;
        let quotas = self.quota_dirs(path).await?;
        self.adjust(&quotas, Usage::default(), gone, path).await?;
        self.event(Some((path.clone(), old.clone())), None);
        Ok(old)
    }

    /// The ancestors of `path` with a quota (they all exist).
    async fn quota_dirs(&mut self, path: &FullPath) -> Result<Vec<(FullPath, Entry)>, FilerError> {
        let mut out = Vec::new();
        for dir in path.ancestors() {
            if dir.is_root() {
                continue;
            }
            if let Some(e) = get_entry(self.t, &dir).await?
                && (e.quota_bytes > 0 || e.quota_entries > 0)
            {
                out.push((dir, e));
            }
        }
        Ok(out)
    }

    async fn rename(
        &mut self,
        from: &FullPath,
        to: &FullPath,
    ) -> Result<Option<Entry>, FilerError> {
        if from.is_root() || to.is_root() {
            return Err(FilerError::BadPath("the root cannot be moved".into()));
        }
        if to.is_within(from) {
            return Err(FilerError::BadRequest(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let src = get_entry(self.t, from)
            .await?
            .ok_or_else(|| FilerError::NotFound(from.to_string()))?;
        let from_quotas = self.quota_dirs(from).await?;
        let to_quotas = self.parents(to).await?;
        let dest = get_entry(self.t, to).await?;
        if let Some(d) = &dest {
            if d.is_dir() {
                return Err(FilerError::Exists(to.to_string()));
            }
            if src.is_dir() {
                return Err(FilerError::NotDirectory(to.to_string()));
            }
            self.drop_refs(d).await?;
        }
        let mut moved = Usage::of(&src);
        let below = if src.is_dir() {
            self.subtree(from).await?
        } else {
            Vec::new()
        };
        let mut usage_rows: HashMap<FullPath, Vec<u8>> = HashMap::new();
        for (p, e) in &below {
            moved.bytes += Usage::of(e).bytes;
            moved.entries += 1;
            if e.is_dir()
                && let Some(u) = self.t.get(Table::Usage, p.as_str().as_bytes()).await?
            {
                self.t.delete(Table::Usage, p.as_str().as_bytes()).await?;
                usage_rows.insert(p.rebase(from, to), u);
            }
            self.t.delete(Table::Entries, &keys::entry_key(p)).await?;
        }
        for (p, e) in below {
            let np = p.rebase(from, to);
            self.add_refs(&np, &e).await?;
            self.t
                .put(Table::Entries, &keys::entry_key(&np), &e.encode())
                .await?;
        }
        for (p, u) in usage_rows {
            self.t.put(Table::Usage, p.as_str().as_bytes(), &u).await?;
        }
        if let Some(u) = self.t.get(Table::Usage, from.as_str().as_bytes()).await? {
            self.t
                .delete(Table::Usage, from.as_str().as_bytes())
                .await?;
            self.t.put(Table::Usage, to.as_str().as_bytes(), &u).await?;
        }
        self.t
            .delete(Table::Entries, &keys::entry_key(from))
            .await?;
        let mut e = src.clone();
        e.name = to.name().to_string();
        e.ctime_ns = self.now_ns;
        self.add_refs(to, &e).await?;
        self.t
            .put(Table::Entries, &keys::entry_key(to), &e.encode())
            .await?;
        // Quotas only see the move when it crosses their boundary.
        let replaced = dest.as_ref().map(Usage::of).unwrap_or_default();
        let only_from: Vec<_> = from_quotas
            .iter()
            .filter(|(d, _)| !to_quotas.iter().any(|(t, _)| t == d))
            .cloned()
            .collect();
        let only_to: Vec<_> = to_quotas
            .iter()
            .filter(|(d, _)| !from_quotas.iter().any(|(f, _)| f == d))
            .cloned()
            .collect();
        let shared: Vec<_> = to_quotas
            .iter()
            .filter(|(d, _)| from_quotas.iter().any(|(f, _)| f == d))
            .cloned()
            .collect();
        self.adjust(&only_from, Usage::default(), moved, from)
            .await?;
        self.adjust(&only_to, moved, replaced, to).await?;
        self.adjust(&shared, Usage::default(), replaced, to).await?;
        self.event(Some((from.clone(), src)), Some((to.clone(), e)));
        Ok(dest)
    }
}
