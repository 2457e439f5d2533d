//! The embedded metadata store: one redb file (`<dir>/filer.redb`), its
//! tables those of [`super::keys`].
//!
//! Commits are grouped: one thread applies every transaction waiting for
//! it inside one redb write transaction and commits that once, durably
//! (`Durability::Immediate`), so concurrent uploads share one fsync. A
//! transaction that fails (a condition, a quota) is left out and the rest
//! are applied again without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::keys::Table;
use super::{Backend, FORMAT_KEY, KvTxn, Replaced, Rows, STORE_FORMAT, Txn, apply};
use crate::error::FilerError;

/// Transactions one group commit takes at most.
const MAX_GROUP: usize = 512;

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

type Pending = (Txn, i64, oneshot::Sender<Result<Replaced, FilerError>>);

/// The page cache of [`RedbBackend::open`] (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

pub struct RedbBackend {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` once dropped: the commit thread then ends.
    commits: Option<mpsc::SyncSender<Pending>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbBackend {
    /// Waits for queued commits, so that the file can be opened again at once.
    fn drop(&mut self) {
        self.commits = None;
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

impl RedbBackend {
    /// Opens (or creates) `<dir>/filer.redb` with a page cache of
    /// [`DEFAULT_CACHE_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, FilerError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) `<dir>/filer.redb`, caching up to `cache_bytes`
    /// of its pages in memory (the filer's resident memory grows to about
    /// that much as the namespace does; the kernel's page cache holds the
    /// rest of the file).
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, FilerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| FilerError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("filer.redb");
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| FilerError::Store(format!("cannot open {}: {e}", path.display())))?;
        // The file's name must survive a power cut as its contents do.
        let storage = kelp_storage::Storage::real();
        storage
            .sync_dir(dir)
            .and_then(|()| storage.sync_parent(dir))
            .map_err(|e| FilerError::Store(format!("cannot sync {}: {e}", dir.display())))?;
        let w = db.begin_write().map_err(FilerError::store)?;
        {
            for t in Table::ALL {
                w.open_table(def(t)).map_err(FilerError::store)?;
            }
            let mut meta = w.open_table(def(Table::Meta)).map_err(FilerError::store)?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(FilerError::store)?
                .map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert(FORMAT_KEY, &STORE_FORMAT.to_le_bytes()[..])
                        .map_err(FilerError::store)?;
                }
                Some(v) if v == STORE_FORMAT.to_le_bytes() => {}
                Some(v) => {
                    return Err(FilerError::Store(format!(
                        "{} has store format {v:?}; this release reads format {STORE_FORMAT}",
                        path.display()
                    )));
                }
            }
        }
        w.commit().map_err(FilerError::store)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::sync_channel::<Pending>(4 * MAX_GROUP);
        let committer = db.clone();
        let thread = std::thread::Builder::new()
            .name("filer-commit".into())
            .spawn(move || commit_loop(&committer, rx))
            .map_err(|e| FilerError::Store(format!("cannot start the commit thread: {e}")))?;
        Ok(Self {
            db,
            path,
            commits: Some(tx),
            committer: Some(thread),
        })
    }

    fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, FilerError> + Send + 'static,
    ) -> BoxFuture<'static, Result<R, FilerError>> {
        let db = self.db.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(|e| FilerError::Store(format!("read task: {e}")))?
        }
        .boxed()
    }
}

impl Backend for RedbBackend {
    fn get(&self, t: Table, k: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, FilerError>> {
        self.read(move |db| {
            let r = db.begin_read().map_err(FilerError::store)?;
            let table = r.open_table(def(t)).map_err(FilerError::store)?;
            Ok(table
                .get(&k[..])
                .map_err(FilerError::store)?
                .map(|v| v.value().to_vec()))
        })
    }

    fn range(
        &self,
        t: Table,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Rows, FilerError>> {
        self.read(move |db| {
            let r = db.begin_read().map_err(FilerError::store)?;
            let table = r.open_table(def(t)).map_err(FilerError::store)?;
            collect_range(&table, &start, &end, limit)
        })
    }

    fn commit(&self, txn: Txn, now_ns: i64) -> BoxFuture<'_, Result<Replaced, FilerError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.commits.clone();
        async move {
            let sent = sent.ok_or(FilerError::ShuttingDown)?;
            // A full queue waits here (backpressure), off the runtime.
            tokio::task::spawn_blocking(move || sent.send((txn, now_ns, tx)))
                .await
                .map_err(|e| FilerError::Store(format!("commit queue: {e}")))?
                .map_err(|_| FilerError::ShuttingDown)?;
            rx.await.map_err(|_| FilerError::ShuttingDown)?
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("redb {}", self.path.display())
    }
}

fn collect_range(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<Rows, FilerError> {
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    for row in table.range(start..end).map_err(FilerError::store)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = row.map_err(FilerError::store)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// A transaction of the commit thread.
struct RedbTxn<'a> {
    w: &'a WriteTransaction,
}

impl RedbTxn<'_> {
    fn table(
        &self,
        t: Table,
    ) -> Result<::redb::Table<'_, &'static [u8], &'static [u8]>, FilerError> {
        self.w.open_table(def(t)).map_err(FilerError::store)
    }
}

impl KvTxn for RedbTxn<'_> {
    async fn get(&mut self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, FilerError> {
        Ok(self
            .table(t)?
            .get(k)
            .map_err(FilerError::store)?
            .map(|v| v.value().to_vec()))
    }

    async fn put(&mut self, t: Table, k: &[u8], v: &[u8]) -> Result<(), FilerError> {
        self.table(t)?.insert(k, v).map_err(FilerError::store)?;
        Ok(())
    }

    async fn delete(&mut self, t: Table, k: &[u8]) -> Result<(), FilerError> {
        self.table(t)?.remove(k).map_err(FilerError::store)?;
        Ok(())
    }

    async fn range(
        &mut self,
        t: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Rows, FilerError> {
        collect_range(&self.table(t)?, start, end, limit)
    }
}

fn commit_loop(db: &Database, rx: mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        commit_group(db, group);
    }
}

/// Applies `group` in one write transaction. A transaction that fails is
/// answered with its error and the others are applied again without it.
fn commit_group(db: &Database, mut group: Vec<Pending>) {
    loop {
        let w = match db.begin_write() {
            Ok(w) => w,
            Err(e) => return fail_all(group, &e.to_string()),
        };
        let mut results = Vec::with_capacity(group.len());
        let mut failed = None;
        {
            let mut t = RedbTxn { w: &w };
            for (i, (txn, now, _)) in group.iter().enumerate() {
                match futures::executor::block_on(apply::apply(&mut t, txn, *now)) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
        }
        if let Some((i, e)) = failed {
            drop(w);
            let (_, _, reply) = group.remove(i);
            let _ = reply.send(Err(e));
            if group.is_empty() {
                return;
            }
            continue;
        }
        if let Err(e) = w.commit() {
            return fail_all(group, &e.to_string());
        }
        for ((_, _, reply), r) in group.into_iter().zip(results) {
            let _ = reply.send(Ok(r));
        }
        return;
    }
}

fn fail_all(group: Vec<Pending>, why: &str) {
    tracing::error!(error = why, "metadata commit failed");
    for (_, _, reply) in group {
        let _ = reply.send(Err(FilerError::Store(format!("commit failed: {why}"))));
    }
}
