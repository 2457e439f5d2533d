//! The metadata store: ordered byte-keyed tables ([`keys::Table`]) behind
//! one narrow interface, [`KvTxn`] for a transaction and [`Backend`] for a
//! store, with the namespace's rules (parent directories, conditions,
//! quotas, chunk references, garbage, the change log) written once above
//! it in `apply.rs`.
//!
//! Backends: [`redb::RedbBackend`] (embedded, the default),
//! [`postgres::PostgresBackend`] (a real external database; several filers
//! may share it) and [`remote::RemoteBackend`] (the store of a running
//! filer, over HTTP in the layout of [`wire`]; `kelp s3 -filer`).
//! The same conformance suite (`tests/store.rs`) runs against each.

pub(crate) mod apply;
pub mod keys;
pub mod postgres;
mod records;
pub mod redb;
pub mod remote;
pub mod wire;

use std::future::Future;

use futures::future::BoxFuture;

use crate::entry::Entry;
use crate::error::FilerError;
use crate::path::FullPath;
pub use keys::Table;
pub use records::{Event, Lease};

/// The store layout this release writes, kept in `Meta` under
/// [`FORMAT_KEY`] as a u64 LE; a store with another one is refused.
pub(crate) const STORE_FORMAT: u64 = 1;
pub(crate) const FORMAT_KEY: &[u8] = b"format";

/// What must hold before an operation changes an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cond {
    #[default]
    Any,
    /// Nothing exists at the path (S3 `If-None-Match: *`, `mkdir`).
    Absent,
    /// Something exists at the path.
    Present,
    /// The entry is exactly this one (a read-modify-write).
    Unchanged(Box<Entry>),
}

/// One change of the namespace.
#[derive(Debug, Clone)]
pub enum Op {
    /// Creates or replaces the entry at `path`; missing parent directories
    /// are created. Chunks the old entry had and the new one lacks become
    /// garbage.
    Put {
        path: FullPath,
        entry: Entry,
        cond: Cond,
    },
    /// Removes `path`; a non-empty directory only with `recursive`.
    Delete {
        path: FullPath,
        cond: Cond,
        recursive: bool,
    },
    /// Moves `from` (a file or a whole directory) to `to`. An existing file
    /// at `to` is replaced; an existing directory is refused.
    Rename { from: FullPath, to: FullPath },
    /// Records file ids reserved from the master before they are used.
    PutLease(Lease),
    /// Forgets a lease whose ids are all committed or collected.
    DropLease(u64),
    /// Queues chunk fids for the collector: uploads that never became
    /// part of an entry. A fid some entry references is left alone.
    AddGarbage(Vec<String>),
    /// Drops collected garbage rows.
    DropGarbage(Vec<u64>),
    /// Drops change events past their retention.
    DropEvents(Vec<u64>),
}

/// Operations applied all or nothing.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn one(op: Op) -> Self {
        Txn { ops: vec![op] }
    }
}

/// Key-value rows of a range, in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// What a committed transaction replaced: per operation, the entry that
/// was at its path before (for a rename, at `to`).
pub type Replaced = Vec<Option<Entry>>;

/// A transaction of one backend: reads see its own writes.
pub trait KvTxn: Send {
    fn get(
        &mut self,
        t: Table,
        k: &[u8],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, FilerError>> + Send;
    fn put(
        &mut self,
        t: Table,
        k: &[u8],
        v: &[u8],
    ) -> impl Future<Output = Result<(), FilerError>> + Send;
    fn delete(&mut self, t: Table, k: &[u8])
    -> impl Future<Output = Result<(), FilerError>> + Send;
    /// Up to `limit` rows with `start <= key < end`, in key order.
    fn range(
        &mut self,
        t: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<Rows, FilerError>> + Send;
}

/// A metadata store.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, t: Table, k: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, FilerError>>;
    fn range(
        &self,
        t: Table,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Rows, FilerError>>;
    /// Applies `txn` (each all or nothing) and returns once it is durable.
    /// Concurrent calls may share one durable commit.
    fn commit(&self, txn: Txn, now_ns: i64) -> BoxFuture<'_, Result<Replaced, FilerError>>;
    /// Which store this is, for logs and `/status`.
    fn describe(&self) -> String;
}
