//! The PostgreSQL metadata store: the tables of [`super::keys`] in one SQL
//! table, so that several filers can share one namespace.
//!
//! # Schema
//!
//! ```sql
//! CREATE TABLE kelp_filer_kv (
//!     tbl SMALLINT NOT NULL,   -- Table::id(): entries 0, refs 1, garbage 2,
//!                              -- events 3, leases 4, usage 5, meta 6
//!     k   BYTEA    NOT NULL,   -- the key, exactly as keys.rs builds it
//!     v   BYTEA    NOT NULL,   -- the value, exactly as redb stores it
//!     PRIMARY KEY (tbl, k)
//! );
//! ```
//!
//! plus the row `(6, 'format', STORE_FORMAT as u64 LE)`: a database written
//! by another store format is refused, naming both.
//!
//! Why key-value and not a column per entry field: the namespace's rules
//! (parents, conditions, quotas, chunk references, garbage, the change log)
//! live once in `apply.rs` over ordered byte-keyed tables, and this backend
//! only provides those tables, like redb; the rows are then the same bytes
//! in both stores. SeaweedFS's own postgres store is shaped the same way
//! (a hash of the directory, the name, the directory, and one meta blob).
//! `bytea` compares bytewise (memcmp, then length), the order the keys are
//! built for: a directory's children are one index range of the primary key.
//!
//! # Commits
//!
//! One task per backend commits: it takes every transaction waiting for it
//! (up to [`MAX_GROUP`]) into one SERIALIZABLE PostgreSQL transaction, each
//! inside its own savepoint, so a transaction that fails (a condition, a
//! quota) is rolled back to its savepoint alone and the others still
//! commit. Grouping shares one WAL flush between concurrent uploads and
//! keeps this filer's own transactions from conflicting with each other
//! (they all update `events.last`). Transactions of other filers on the
//! same database conflict with it through SERIALIZABLE: a serialization
//! failure (40001) or deadlock (40P01) rolls the whole group back and it
//! runs again, up to [`MAX_ATTEMPTS`] times with a random backoff.
//!
//! Reads outside transactions go to a few other connections ([`READERS`]),
//! chosen in turn; tokio-postgres pipelines concurrent queries on one
//! connection, so no pool crate is needed. A closed connection is opened
//! again on its next use.
//!
//! No TLS yet (`NoTls`): the database is expected on loopback or a
//! trusted network.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::keys::Table;
use super::{Backend, FORMAT_KEY, KvTxn, Replaced, Rows, STORE_FORMAT, Txn, apply};
use crate::error::FilerError;

/// Connections kept for reads.
const READERS: usize = 3;
/// Transactions one group commit takes at most.
const MAX_GROUP: usize = 256;
/// Tries of one group against serialization failures.
const MAX_ATTEMPTS: u32 = 40;
/// Connecting (TCP and the startup exchange) when the URL sets no
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One read, or one try of a group commit, waits at most this long for the
/// server (a stopped or unreachable server is an error, not a hang).
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Serializes schema creation between filers starting together.
const SCHEMA_LOCK: i64 = 0x6b65_6c70_6669_6c72; // "kelpfilr"

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kelp_filer_kv (
    tbl SMALLINT NOT NULL,
    k BYTEA NOT NULL,
    v BYTEA NOT NULL,
    PRIMARY KEY (tbl, k)
)";

type Pending = (Txn, i64, oneshot::Sender<Result<Replaced, FilerError>>);

pub struct PostgresBackend {
    config: Arc<Config>,
    readers: Vec<Mutex<Arc<Conn>>>,
    next: AtomicUsize,
    commits: mpsc::Sender<Pending>,
    describe: String,
    /// Group commits tried again after a serialization failure or deadlock.
    retries: Arc<AtomicU64>,
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user[:password]@host:port/db` or
    /// `host=… port=… user=… dbname=…`), creating the table if missing and
    /// checking the store format. Must run inside a tokio runtime: the
    /// connections and the commit task are spawned on it.
    pub async fn connect(url: &str) -> Result<Self, FilerError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| FilerError::Store(format!("bad PostgreSQL URL: {}", pg_err(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("kelp-filer");
        let describe = describe(&config);
        let config = Arc::new(config);
        let mut first = open_client(&config, &describe).await?;
        create_schema(&mut first, &describe).await?;
        let writer = Conn::new(first, &describe).await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = open_client(&config, &describe).await?;
            readers.push(Mutex::new(Arc::new(Conn::new(c, &describe).await?)));
        }
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let retries = Arc::new(AtomicU64::new(0));
        let committer = Committer {
            config: config.clone(),
            describe: describe.clone(),
            conn: Some(writer),
            retries: retries.clone(),
        };
        tokio::spawn(committer.run(rx));
        Ok(Self {
            config,
            readers,
            next: AtomicUsize::new(0),
            commits: tx,
            describe,
            retries,
        })
    }

    /// How many times a group commit was tried again after conflicting
    /// with another filer's transactions (serialization failure or
    /// deadlock), since connecting.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// A read connection, opened again if it was closed.
    async fn reader(&self) -> Result<Arc<Conn>, FilerError> {
        let slot = &self.readers[self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len()];
        let c = slot.lock().clone();
        if !c.client.is_closed() {
            return Ok(c);
        }
        let client = open_client(&self.config, &self.describe).await?;
        let c = Arc::new(Conn::new(client, &self.describe).await?);
        *slot.lock() = c.clone();
        Ok(c)
    }
}

impl Backend for PostgresBackend {
    fn get(&self, t: Table, k: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>, FilerError>> {
        async move {
            let c = self.reader().await?;
            let mut r = PgTxn::new(&c);
            timed(&self.describe, r.get(t, &k)).await
        }
        .boxed()
    }

    fn range(
        &self,
        t: Table,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Rows, FilerError>> {
        async move {
            let c = self.reader().await?;
            let mut r = PgTxn::new(&c);
            timed(&self.describe, r.range(t, &start, &end, limit)).await
        }
        .boxed()
    }

    fn commit(&self, txn: Txn, now_ns: i64) -> BoxFuture<'_, Result<Replaced, FilerError>> {
        async move {
            let (tx, rx) = oneshot::channel();
            self.commits
                .send((txn, now_ns, tx))
                .await
                .map_err(|_| FilerError::ShuttingDown)?;
            rx.await.map_err(|_| FilerError::ShuttingDown)?
        }
        .boxed()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// `postgres user@host:port/db`, without the password.
fn describe(c: &Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres {}@{host}:{port}/{}",
        c.get_user().unwrap_or("?"),
        c.get_dbname().unwrap_or("?")
    )
}

/// An error of tokio-postgres with what the server said.
fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

async fn timed<T>(
    describe: &str,
    f: impl Future<Output = Result<T, FilerError>>,
) -> Result<T, FilerError> {
    tokio::time::timeout(QUERY_TIMEOUT, f).await.map_err(|_| {
        FilerError::Store(format!(
            "{describe}: no answer in {} s",
            QUERY_TIMEOUT.as_secs()
        ))
    })?
}

async fn open_client(config: &Config, describe: &str) -> Result<Client, FilerError> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let (client, connection) = tokio::time::timeout(limit, config.connect(NoTls))
        .await
        .map_err(|_| {
            FilerError::Store(format!(
                "cannot connect to {describe}: no answer in {} s",
                limit.as_secs_f32()
            ))
        })?
        .map_err(|e| FilerError::Store(format!("cannot connect to {describe}: {}", pg_err(&e))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %pg_err(&e), "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Creates the table if missing (one filer at a time) and checks the
/// store format.
async fn create_schema(client: &mut Client, describe: &str) -> Result<(), FilerError> {
    let fail = |e: tokio_postgres::Error| {
        FilerError::Store(format!("creating the schema in {describe}: {}", pg_err(&e)))
    };
    let t = client.transaction().await.map_err(fail)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(fail)?;
    t.batch_execute(SCHEMA).await.map_err(fail)?;
    let want = STORE_FORMAT.to_le_bytes();
    t.execute(
        "INSERT INTO kelp_filer_kv (tbl, k, v) VALUES ($1, $2, $3) ON CONFLICT (tbl, k) DO NOTHING",
        &[&Table::Meta.id(), &FORMAT_KEY, &&want[..]],
    )
    .await
    .map_err(fail)?;
    let row = t
        .query_one(
            "SELECT v FROM kelp_filer_kv WHERE tbl = $1 AND k = $2",
            &[&Table::Meta.id(), &FORMAT_KEY],
        )
        .await
        .map_err(fail)?;
    let found: Vec<u8> = row.try_get(0).map_err(fail)?;
    t.commit().await.map_err(fail)?;
    if found != want {
        let shown = match <[u8; 8]>::try_from(&found[..]) {
            Ok(b) => u64::from_le_bytes(b).to_string(),
            Err(_) => format!("{found:?} (not a number)"),
        };
        return Err(FilerError::Store(format!(
            "{describe} has filer store format {shown}; this release reads format {STORE_FORMAT}"
        )));
    }
    Ok(())
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    put: Statement,
    delete: Statement,
    range: Statement,
}

impl Conn {
    async fn new(client: Client, describe: &str) -> Result<Conn, FilerError> {
        let kv = [Type::INT2, Type::BYTEA];
        let prep = async |sql: &str, types: &[Type]| {
            client.prepare_typed(sql, types).await.map_err(|e| {
                FilerError::Store(format!(
                    "preparing a statement on {describe}: {}",
                    pg_err(&e)
                ))
            })
        };
        let get = prep("SELECT v FROM kelp_filer_kv WHERE tbl = $1 AND k = $2", &kv).await?;
        let put = prep(
            "INSERT INTO kelp_filer_kv (tbl, k, v) VALUES ($1, $2, $3) \
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v",
            &[Type::INT2, Type::BYTEA, Type::BYTEA],
        )
        .await?;
        let delete = prep("DELETE FROM kelp_filer_kv WHERE tbl = $1 AND k = $2", &kv).await?;
        let range = prep(
            "SELECT k, v FROM kelp_filer_kv WHERE tbl = $1 AND k >= $2 AND k < $3 \
             ORDER BY k LIMIT $4",
            &[Type::INT2, Type::BYTEA, Type::BYTEA, Type::INT8],
        )
        .await?;
        Ok(Conn {
            client,
            get,
            put,
            delete,
            range,
        })
    }
}

/// [`KvTxn`] over one connection: inside the commit task's transaction, or
/// single reads outside any.
struct PgTxn<'a> {
    c: &'a Conn,
    /// The first SQL error seen: after one, PostgreSQL refuses everything
    /// up to a rollback, and a serialization failure means trying again.
    failed: Option<tokio_postgres::Error>,
}

impl<'a> PgTxn<'a> {
    fn new(c: &'a Conn) -> Self {
        PgTxn { c, failed: None }
    }

    fn fail(&mut self, e: tokio_postgres::Error) -> FilerError {
        let err = FilerError::Store(pg_err(&e));
        if self.failed.is_none() {
            self.failed = Some(e);
        }
        err
    }
}

impl KvTxn for PgTxn<'_> {
    async fn get(&mut self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, FilerError> {
        let row = match self.c.client.query_opt(&self.c.get, &[&t.id(), &k]).await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        match row {
            Some(r) => r.try_get(0).map(Some).map_err(|e| self.fail(e)),
            None => Ok(None),
        }
    }

    async fn put(&mut self, t: Table, k: &[u8], v: &[u8]) -> Result<(), FilerError> {
        match self.c.client.execute(&self.c.put, &[&t.id(), &k, &v]).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn delete(&mut self, t: Table, k: &[u8]) -> Result<(), FilerError> {
        match self.c.client.execute(&self.c.delete, &[&t.id(), &k]).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn range(
        &mut self,
        t: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Rows, FilerError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match self
            .c
            .client
            .query(&self.c.range, &[&t.id(), &start, &end, &limit])
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let k = r.try_get(0).map_err(|e| self.fail(e))?;
            let v = r.try_get(1).map_err(|e| self.fail(e))?;
            out.push((k, v));
        }
        Ok(out)
    }
}

/// How a try of a group commit ended when not committed.
enum Abort {
    /// A serialization failure or deadlock: try the group again.
    Retry(String),
    /// Anything else (the connection, the server): every transaction of
    /// the group fails with it.
    Fatal(String),
}

fn abort(e: &tokio_postgres::Error) -> Abort {
    if retryable(e) {
        Abort::Retry(pg_err(e))
    } else {
        Abort::Fatal(pg_err(e))
    }
}

struct Committer {
    config: Arc<Config>,
    describe: String,
    /// `None` after the connection failed: opened again for the next group.
    conn: Option<Conn>,
    retries: Arc<AtomicU64>,
}

impl Committer {
    /// Commits groups until the backend is dropped, then ends with the
    /// transactions still queued committed.
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&mut self, group: Vec<Pending>) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = match self.conn.take() {
                Some(c) if !c.client.is_closed() => c,
                _ => {
                    let opened = match open_client(&self.config, &self.describe).await {
                        Ok(c) => Conn::new(c, &self.describe).await,
                        Err(e) => Err(e),
                    };
                    match opened {
                        Ok(c) => c,
                        Err(e) => return fail_all(group, &e.to_string()),
                    }
                }
            };
            let tried = tokio::time::timeout(QUERY_TIMEOUT, try_group(&conn, &group)).await;
            let why = match tried {
                Ok(Ok(results)) => {
                    self.conn = Some(conn);
                    for ((_, _, reply), r) in group.into_iter().zip(results) {
                        let _ = reply.send(r);
                    }
                    return;
                }
                Ok(Err(Abort::Retry(why))) => {
                    self.conn = Some(conn);
                    why
                }
                Ok(Err(Abort::Fatal(why))) => {
                    // The connection's state is unknown: it is not reused.
                    return fail_all(group, &format!("{}: {why}", self.describe));
                }
                Err(_) => {
                    return fail_all(
                        group,
                        &format!(
                            "{}: no answer in {} s (the outcome of a COMMIT under way is unknown)",
                            self.describe,
                            QUERY_TIMEOUT.as_secs()
                        ),
                    );
                }
            };
            if attempt >= MAX_ATTEMPTS {
                return fail_all(
                    group,
                    &format!(
                        "{}: gave up after {attempt} serialization failures, the last: {why}",
                        self.describe
                    ),
                );
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(attempt, error = %why, "filer commit conflicted; trying again");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

/// A random wait of up to 1 ms, 2 ms, 4 ms … 64 ms: filers that conflicted
/// do not try again in step.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1000u64 << attempt.min(6);
    Duration::from_micros(RandomState::new().hash_one(attempt) % cap_us)
}

/// One try of a group: every transaction in its own savepoint, then COMMIT.
/// Per transaction, what `apply` returned.
async fn try_group(
    conn: &Conn,
    group: &[Pending],
) -> Result<Vec<Result<Replaced, FilerError>>, Abort> {
    let c = &conn.client;
    c.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .await
        .map_err(|e| abort(&e))?;
    let mut results = Vec::with_capacity(group.len());
    for (txn, now_ns, _) in group {
        if let Err(e) = c.batch_execute("SAVEPOINT kelp_txn").await {
            return Err(rollback(c, &e).await);
        }
        let mut kv = PgTxn::new(conn);
        let r = apply::apply(&mut kv, txn, *now_ns).await;
        if let Some(e) = kv.failed.take() {
            // An SQL error aborts the whole PostgreSQL transaction.
            return Err(rollback(c, &e).await);
        }
        let end = if r.is_ok() {
            "RELEASE SAVEPOINT kelp_txn"
        } else {
            "ROLLBACK TO SAVEPOINT kelp_txn"
        };
        if let Err(e) = c.batch_execute(end).await {
            return Err(rollback(c, &e).await);
        }
        results.push(r);
    }
    match c.batch_execute("COMMIT").await {
        Ok(()) => Ok(results),
        Err(e) if retryable(&e) => Err(Abort::Retry(pg_err(&e))),
        Err(e) if e.as_db_error().is_some() => Err(rollback(c, &e).await),
        Err(e) => Err(Abort::Fatal(format!(
            "the outcome of COMMIT is unknown: {}",
            pg_err(&e)
        ))),
    }
}

async fn rollback(c: &Client, e: &tokio_postgres::Error) -> Abort {
    let a = abort(e);
    if let Err(r) = c.batch_execute("ROLLBACK").await {
        return Abort::Fatal(format!(
            "{} (and ROLLBACK failed: {})",
            pg_err(e),
            pg_err(&r)
        ));
    }
    a
}

fn fail_all(group: Vec<Pending>, why: &str) {
    tracing::error!(error = why, "metadata commit failed");
    for (_, _, reply) in group {
        let _ = reply.send(Err(FilerError::Store(format!("commit failed: {why}"))));
    }
}
