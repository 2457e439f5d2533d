//! [`Filer`]: the namespace's operations over a metadata store and the
//! blob store: lookups and listings, writing files (content first, then
//! the entry, so a committed entry always has its chunks), directories,
//! deletes and moves, the change log, and the garbage collector.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use kelp_client::{AssignRequest, Client};
use tokio::sync::watch;

use crate::entry::{Entry, Kind};
use crate::error::FilerError;
use crate::lease::{LeasePool, Ticket};
use crate::path::FullPath;
use crate::store::{Backend, Cond, Event, Lease, Op, Replaced, Table, Txn, keys};
use crate::upload::{self, Compress};

/// How a filer stores content.
#[derive(Debug, Clone)]
pub struct FilerOptions {
    /// Bytes per chunk (the last of a file may be shorter).
    pub chunk_size: usize,
    /// Chunks of one file uploaded at once.
    pub concurrency: usize,
    /// Files up to this many bytes live in their entry, not on a volume
    /// server (0: none; the SeaweedFS filer's `-saveToFilerLimit`).
    pub inline_limit: usize,
    pub compress: Compress,
    /// Collection, replication and TTL of the chunks.
    pub assign: AssignRequest,
    /// File ids reserved per assign.
    pub lease_size: u32,
    /// Names this filer's leases (stable across restarts).
    pub owner: String,
    /// How often the collector looks for garbage.
    pub gc_interval: Duration,
    /// How long change events are kept.
    pub event_retention: Duration,
}

impl Default for FilerOptions {
    fn default() -> Self {
        Self {
            chunk_size: 4 << 20,
            concurrency: 4,
            inline_limit: 0,
            compress: Compress::Auto,
            assign: AssignRequest::default(),
            lease_size: 64,
            owner: "filer".into(),
            gc_interval: Duration::from_secs(10),
            event_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a new file carries besides its content.
#[derive(Debug, Clone, Default)]
pub struct NewFile {
    pub mime: String,
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    pub ttl_sec: u32,
    pub xattrs: std::collections::BTreeMap<String, Vec<u8>>,
    pub cond: Cond,
    /// Content always goes to volume servers, however small (an S3
    /// multipart part, which CompleteMultipartUpload assembles by chunk).
    pub chunked: bool,
}

/// A filer. Cheap to clone.
#[derive(Clone)]
pub struct Filer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Backend>,
    pub client: Client,
    pub leases: LeasePool,
    pub opts: FilerOptions,
    /// Bumped after every commit; subscribers wait on it.
    committed: watch::Sender<u64>,
    /// Content bytes written and bytes stored for them (compression).
    logical: AtomicU64,
    stored: AtomicU64,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub async fn commit(&self, mut txn: Txn) -> Result<Replaced, FilerError> {
        let drops = self.leases.drain_done();
        let n = txn.ops.len();
        txn.ops.extend(drops.iter().copied().map(Op::DropLease));
        let mut r = match self.store.commit(txn, now_ns()).await {
            Ok(r) => r,
            Err(e) => {
                // Not lost with a refused transaction: the next commit
                // drops them (a filer over this one fails commits often:
                // every conditional S3 write that loses a race).
                self.leases.undrain(drops);
                return Err(e);
            }
        };
        r.truncate(n);
        self.committed.send_modify(|v| *v += 1);
        Ok(r)
    }

    /// Queues the tickets' ids as garbage and settles them.
    pub async fn discard(&self, tickets: Vec<Ticket>) {
        if tickets.is_empty() {
            return;
        }
        let fids = tickets.iter().map(|t| t.fid.clone()).collect();
        match self.commit(Txn::one(Op::AddGarbage(fids))).await {
            Ok(_) => {
                for t in &tickets {
                    self.leases.settle(t);
                }
            }
            // Left in their lease: the next start reaps them.
            Err(e) => tracing::warn!(error = %e, "cannot queue unused chunks for collection"),
        }
    }

    pub fn count_stored(&self, logical: u64, stored: u64) {
        self.logical.fetch_add(logical, Ordering::Relaxed);
        self.stored.fetch_add(stored, Ordering::Relaxed);
    }
}

impl Filer {
    /// A filer over `store`, writing content through `client`. Ids this
    /// filer (`opts.owner`) leased before a crash and never committed are
    /// queued for the collector first.
    pub async fn open(
        store: Arc<dyn Backend>,
        client: Client,
        opts: FilerOptions,
    ) -> Result<Self, FilerError> {
        let leases = LeasePool::new(
            store.clone(),
            client.clone(),
            opts.assign.clone(),
            opts.lease_size,
            opts.owner.clone(),
        );
        let filer = Filer {
            inner: Arc::new(Inner {
                store,
                client,
                leases,
                opts,
                committed: watch::channel(0).0,
                logical: AtomicU64::new(0),
                stored: AtomicU64::new(0),
            }),
        };
        filer.reap_leases().await?;
        Ok(filer)
    }

    pub fn store(&self) -> &Arc<dyn Backend> {
        &self.inner.store
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn options(&self) -> &FilerOptions {
        &self.inner.opts
    }

    async fn reap_leases(&self) -> Result<(), FilerError> {
        let rows = self
            .inner
            .store
            .range(Table::Leases, Vec::new(), vec![0xff; 9], usize::MAX)
            .await?;
        for (k, v) in rows {
            let Some(id) = keys::seq_of(&k) else { continue };
            let lease = Lease::decode(id, &v)?;
            if lease.owner != self.inner.opts.owner {
                continue;
            }
            let fids = lease.fids();
            tracing::info!(lease = id, first = %lease.fid, ids = fids.len(), "reaping a lease left by an earlier run");
            self.inner
                .commit(Txn {
                    ops: vec![Op::AddGarbage(fids), Op::DropLease(id)],
                })
                .await?;
        }
        Ok(())
    }

    /// The entry at `path` (the root is a directory without attributes).
    pub async fn lookup(&self, path: &FullPath) -> Result<Option<Entry>, FilerError> {
        if path.is_root() {
            return Ok(Some(Entry::directory("", 0)));
        }
        match self
            .inner
            .store
            .get(Table::Entries, keys::entry_key(path))
            .await?
        {
            Some(v) => Ok(Some(Entry::decode(path.name(), &v)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` children of `dir` whose names start with `prefix` and
    /// sort after `after` (byte order).
    pub async fn list(
        &self,
        dir: &FullPath,
        after: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, FilerError> {
        self.list_at(dir, after, false, prefix, limit).await
    }

    /// Like [`Self::list`], from `start` on: names equal to it too when
    /// `inclusive`.
    pub async fn list_at(
        &self,
        dir: &FullPath,
        start: &str,
        inclusive: bool,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, FilerError> {
        match self.lookup(dir).await? {
            None => return Err(FilerError::NotFound(dir.to_string())),
            Some(e) if !e.is_dir() => return Err(FilerError::NotDirectory(dir.to_string())),
            Some(_) => {}
        }
        let (mut from, end) = keys::children_range(dir, prefix);
        if !start.is_empty() {
            let mut a = keys::child_key(dir, start);
            if !inclusive {
                a.push(0);
            }
            if a > from {
                from = a;
            }
        }
        let rows = self
            .inner
            .store
            .range(Table::Entries, from, end, limit)
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let name = keys::split_entry_key(&k)
                    .map(|(_, n)| n.to_string())
                    .ok_or_else(|| FilerError::Corrupt("entry key without a separator".into()))?;
                Entry::decode(&name, &v)
            })
            .collect()
    }

    /// Writes a file: its content first (chunks durable on volume servers),
    /// then its entry (durable in the store). Answered only when both are.
    /// The replaced file's chunks go to the collector.
    pub async fn write<S, E>(
        &self,
        path: &FullPath,
        body: S,
        f: NewFile,
    ) -> Result<Entry, FilerError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if path.is_root() {
            return Err(FilerError::IsDirectory("/".into()));
        }
        // Refuse early what the commit would refuse, before any upload.
        if let Some(e) = self.lookup(path).await? {
            if e.is_dir() {
                return Err(FilerError::IsDirectory(path.to_string()));
            }
            if f.cond == Cond::Absent {
                return Err(FilerError::Exists(path.to_string()));
            }
        }
        let inline_limit = if f.chunked {
            0
        } else {
            self.inner.opts.inline_limit
        };
        let stored = upload::store(&self.inner, body, &f.mime, inline_limit).await?;
        let now = now_ns();
        let entry = Entry {
            name: path.name().to_string(),
            kind: Kind::File,
            mode: f.mode.unwrap_or(0o660),
            uid: f.uid,
            gid: f.gid,
            mtime_ns: now,
            ctime_ns: now,
            crtime_ns: now,
            size: stored.size,
            mime: f.mime,
            md5: Some(stored.md5),
            ttl_sec: f.ttl_sec,
            inline: stored.inline,
            xattrs: f.xattrs,
            chunks: stored.chunks.iter().map(|(c, _)| c.clone()).collect(),
            ..Default::default()
        };
        let tickets: Vec<Ticket> = stored.chunks.into_iter().map(|(_, t)| t).collect();
        let put = Op::Put {
            path: path.clone(),
            entry: entry.clone(),
            cond: f.cond,
        };
        match self.inner.commit(Txn::one(put)).await {
            Ok(_) => {
                for t in &tickets {
                    self.inner.leases.settle(t);
                }
                Ok(entry)
            }
            Err(e) => {
                self.inner.discard(tickets).await;
                Err(e)
            }
        }
    }

    /// Commits `txn` as it is (metadata only).
    pub async fn commit(&self, txn: Txn) -> Result<Replaced, FilerError> {
        self.inner.commit(txn).await
    }

    /// Creates a directory (and its parents); an existing one is kept.
    pub async fn mkdir(&self, path: &FullPath) -> Result<Entry, FilerError> {
        if let Some(e) = self.lookup(path).await? {
            return if e.is_dir() {
                Ok(e)
            } else {
                Err(FilerError::NotDirectory(path.to_string()))
            };
        }
        let e = Entry::directory(path.name(), now_ns());
        let put = Op::Put {
            path: path.clone(),
            entry: e.clone(),
            cond: Cond::Absent,
        };
        match self.inner.commit(Txn::one(put)).await {
            Ok(_) => Ok(e),
            // Made meanwhile by someone else: fine.
            Err(FilerError::Exists(_)) => self
                .lookup(path)
                .await?
                .ok_or_else(|| FilerError::NotFound(path.to_string())),
            Err(err) => Err(err),
        }
    }

    /// Removes a file or directory; its chunks go to the collector.
    pub async fn delete(&self, path: &FullPath, recursive: bool) -> Result<Entry, FilerError> {
        let r = self
            .inner
            .commit(Txn::one(Op::Delete {
                path: path.clone(),
                cond: Cond::Any,
                recursive,
            }))
            .await?;
        r.into_iter()
            .next()
            .flatten()
            .ok_or_else(|| FilerError::NotFound(path.to_string()))
    }

    pub async fn rename(&self, from: &FullPath, to: &FullPath) -> Result<(), FilerError> {
        self.inner
            .commit(Txn::one(Op::Rename {
                from: from.clone(),
                to: to.clone(),
            }))
            .await?;
        Ok(())
    }

    /// Sets (or with zeros clears) a directory's quota.
    pub async fn set_quota(
        &self,
        dir: &FullPath,
        bytes: u64,
        entries: u64,
    ) -> Result<Entry, FilerError> {
        let mut e = self.mkdir(dir).await?;
        let old = e.clone();
        e.quota_bytes = bytes;
        e.quota_entries = entries;
        e.ctime_ns = now_ns();
        self.inner
            .commit(Txn::one(Op::Put {
                path: dir.clone(),
                entry: e.clone(),
                cond: Cond::Unchanged(Box::new(old)),
            }))
            .await?;
        Ok(e)
    }

    /// Bytes and entries counted below a directory with a quota.
    pub async fn usage(&self, dir: &FullPath) -> Result<Option<(u64, u64)>, FilerError> {
        Ok(self
            .inner
            .store
            .get(Table::Usage, dir.as_str().as_bytes().to_vec())
            .await?
            .map(|v| {
                let u = crate::store::apply::Usage::decode(&v);
                (u.bytes, u.entries)
            }))
    }

    /// The bytes `range` of `entry`'s content.
    pub fn read(
        &self,
        entry: &Entry,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, FilerError>> {
        let end = range.end.min(entry.size);
        crate::read::content(&self.inner.client, entry, range.start.min(end)..end)
    }

    /// Up to `limit` change events after sequence `after`.
    pub async fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, FilerError> {
        let rows = self
            .inner
            .store
            .range(
                Table::Events,
                keys::seq_key(after.saturating_add(1)),
                vec![0xff; 9],
                limit,
            )
            .await?;
        rows.into_iter()
            .filter_map(|(k, v)| keys::seq_of(&k).map(|s| Event::decode(s, &v)))
            .collect()
    }

    /// The sequence of the first event at or after `ts_ns` (minus one: the
    /// value to pass as `after`).
    pub async fn seq_at(&self, ts_ns: i64) -> Result<u64, FilerError> {
        let mut after = 0;
        loop {
            let page = self.events(after, 1024).await?;
            let Some(last) = page.last() else {
                return Ok(after);
            };
            if let Some(e) = page.iter().find(|e| e.ts_ns >= ts_ns) {
                return Ok(e.seq - 1);
            }
            after = last.seq;
        }
    }

    /// Changes after this point wake [`Self::changed`].
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Rows waiting in the collector's queue and leases open (up to
    /// `limit` each), for `/__kelp/status`.
    pub async fn pending(&self, limit: usize) -> Result<(usize, usize), FilerError> {
        let g = self
            .inner
            .store
            .range(Table::Garbage, Vec::new(), vec![0xff; 9], limit)
            .await?;
        let l = self
            .inner
            .store
            .range(Table::Leases, Vec::new(), vec![0xff; 9], limit)
            .await?;
        Ok((g.len(), l.len()))
    }

    /// Bytes written and bytes stored for them since start.
    pub fn compression(&self) -> (u64, u64) {
        (
            self.inner.logical.load(Ordering::Relaxed),
            self.inner.stored.load(Ordering::Relaxed),
        )
    }

    /// Deletes up to `limit` queued garbage chunks from the blob store;
    /// returns how many rows were done. A chunk some entry references is
    /// dropped from the queue without touching it.
    pub async fn collect_garbage(&self, limit: usize) -> Result<usize, FilerError> {
        let rows = self
            .inner
            .store
            .range(Table::Garbage, Vec::new(), vec![0xff; 9], limit)
            .await?;
        let mut done = Vec::new();
        for (k, v) in rows {
            let Some(id) = keys::seq_of(&k) else { continue };
            let fid = String::from_utf8_lossy(&v).to_string();
            if self
                .inner
                .store
                .get(Table::Refs, v.clone())
                .await?
                .is_some()
            {
                tracing::warn!(%fid, "queued chunk is referenced again; not deleting it");
                done.push(id);
                continue;
            }
            match self.inner.client.delete(&fid).await {
                Ok(()) => {
                    tracing::debug!(%fid, row = id, "garbage chunk deleted");
                    done.push(id)
                }
                // Only a volume server's 404 says the chunk is gone; a
                // master that does not know the volume yet says nothing.
                Err(e) if e.is_missing_file() => {
                    tracing::debug!(%fid, row = id, "garbage chunk was already gone");
                    done.push(id)
                }
                Err(e) => tracing::warn!(%fid, error = %e, "cannot delete a garbage chunk yet"),
            }
        }
        let n = done.len();
        if n > 0 {
            self.inner.commit(Txn::one(Op::DropGarbage(done))).await?;
            tracing::debug!(chunks = n, "garbage collected");
        }
        Ok(n)
    }

    /// Drops change events older than the retention.
    pub async fn trim_events(&self) -> Result<usize, FilerError> {
        let horizon = now_ns() - self.inner.opts.event_retention.as_nanos() as i64;
        let old: Vec<u64> = self
            .events(0, 4096)
            .await?
            .into_iter()
            .filter(|e| e.ts_ns < horizon)
            .map(|e| e.seq)
            .collect();
        let n = old.len();
        if n > 0 {
            self.inner.commit(Txn::one(Op::DropEvents(old))).await?;
        }
        Ok(n)
    }

    /// Runs the collector until `stop` resolves.
    pub async fn run_collector(self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            loop {
                match self.collect_garbage(256).await {
                    Ok(256) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "garbage collection failed");
                        break;
                    }
                }
            }
            if let Err(e) = self.trim_events().await {
                tracing::warn!(error = %e, "trimming change events failed");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.inner.opts.gc_interval) => {}
            }
        }
    }
}
