//! One conformance suite for every metadata backend: each test below runs
//! the same assertions against `RedbBackend` (in a temp dir),
//! `PostgresBackend` (a real PostgreSQL server started for the test by
//! `kelp_testkit::Postgres`; missing PostgreSQL skips loudly, and fails
//! under CI) and `RemoteBackend` (a filer over redb served in-process on
//! a loopback port, reached over HTTP as `kelp s3 -filer` reaches one).
//! They call the `Backend` trait directly: `commit` of `Txn`s of `Op`s,
//! `get` and `range`.
//!
//! After the shared suite: what only a shared database has (two filers on
//! one database, the format check, a dead server), what only a remote
//! filer has (another wire version, a dead filer), and a differential test
//! running one random history against redb and PostgreSQL and comparing
//! every table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_filer::store::keys::{self, Table};
use kelp_filer::store::postgres::PostgresBackend;
use kelp_filer::store::redb::RedbBackend;
use kelp_filer::store::remote::RemoteBackend;
use kelp_filer::store::{Backend, Cond, Event, Lease, Op, Txn};
use kelp_filer::{Chunk, Entry, Filer, FilerError, FilerOptions, FullPath, Kind};
use kelp_testkit::Postgres;

/// A backend under test and what keeps it alive.
struct Store {
    b: Arc<dyn Backend>,
    /// The backend stamps events with its own clock, not the caller's
    /// `now_ns` (a remote filer).
    own_clock: bool,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<Postgres>,
    _filer: Option<InProcessFiler>,
}

fn redb_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let b = RedbBackend::open(dir.path()).unwrap();
    Store {
        b: Arc::new(b),
        own_clock: false,
        _dir: Some(dir),
        _pg: None,
        _filer: None,
    }
}

async fn pg_store() -> Option<Store> {
    let pg = Postgres::start_or_skip()?;
    let b = PostgresBackend::connect(&pg.url()).await.unwrap();
    Some(Store {
        b: Arc::new(b),
        own_clock: false,
        _dir: None,
        _pg: Some(pg),
        _filer: None,
    })
}

/// A filer over redb serving its HTTP API on a loopback port, stopped
/// when dropped. Metadata only: its blob client points at a master that
/// is not there, which only chunk uploads and the collector would ask.
struct InProcessFiler {
    addr: std::net::SocketAddr,
    filer: Filer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl InProcessFiler {
    async fn start() -> InProcessFiler {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbBackend::open(dir.path()).unwrap());
        let client = kelp_client::Client::new(
            &["127.0.0.1:1"],
            &kelp_core::SecurityConfig::default(),
            kelp_client::ClientOptions::default(),
        )
        .unwrap();
        let opts = FilerOptions {
            owner: "the-filer".into(),
            // The suite looks at garbage rows: no collector pass during it.
            gc_interval: Duration::from_secs(3600),
            ..FilerOptions::default()
        };
        let filer = Filer::open(store, client, opts).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kelp_filer::http::run(listener, filer.clone(), async move {
            let _ = rx.await;
        }));
        InProcessFiler {
            addr,
            filer,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    fn remote(&self) -> RemoteBackend {
        RemoteBackend::new(&self.addr.to_string()).unwrap()
    }

    /// Stops serving and waits until the port is closed.
    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for InProcessFiler {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn remote_store() -> Store {
    let f = InProcessFiler::start().await;
    let b = f.remote();
    b.status().await.expect("the in-process filer's status");
    Store {
        b: Arc::new(b),
        own_clock: true,
        _dir: None,
        _pg: None,
        _filer: Some(f),
    }
}

/// Every test of the shared suite, once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = super::redb_store();
                    super::$name(&s).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(s) = super::pg_store().await else { return };
                    super::$name(&s).await;
                }
            )*
        }
        mod remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = super::remote_store().await;
                    super::$name(&s).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_replace,
    conditions_refuse_and_change_nothing,
    parents_are_created,
    put_under_a_file_is_refused,
    listings_are_in_byte_order,
    delete_recursive_and_not,
    rename_moves_directories_with_children,
    quotas_count_and_refuse,
    chunk_refs_and_garbage,
    garbage_ids_are_never_reused,
    events_are_numbered_without_gaps_and_never_reused,
    leases_put_and_drop,
    a_failed_txn_leaves_nothing,
    concurrent_creates_all_land_with_unique_events,
    racing_creates_of_one_path_have_one_winner,
);

// ---- helpers ----------------------------------------------------------

const NOW: i64 = 1_700_000_000_000_000_000;

fn p(s: &str) -> FullPath {
    FullPath::parse(s).unwrap()
}

fn chunk(fid: &str, size: u64) -> Chunk {
    Chunk {
        fid: fid.to_string(),
        offset: 0,
        size,
        stored: size,
        zstd: false,
        mtime_ns: NOW,
    }
}

fn file(size: u64, fids: &[&str]) -> Entry {
    Entry {
        kind: Kind::File,
        mode: 0o644,
        mtime_ns: NOW,
        ctime_ns: NOW,
        crtime_ns: NOW,
        size,
        chunks: fids.iter().map(|f| chunk(f, size)).collect(),
        ..Default::default()
    }
}

fn put_op(path: &str, entry: Entry, cond: Cond) -> Op {
    Op::Put {
        path: p(path),
        entry,
        cond,
    }
}

fn del_op(path: &str, recursive: bool) -> Op {
    Op::Delete {
        path: p(path),
        cond: Cond::Any,
        recursive,
    }
}

async fn commit(s: &Store, ops: Vec<Op>) -> Result<Vec<Option<Entry>>, FilerError> {
    s.b.commit(Txn { ops }, NOW).await
}

async fn put(s: &Store, path: &str, e: Entry) {
    commit(s, vec![put_op(path, e, Cond::Any)])
        .await
        .unwrap_or_else(|e| panic!("put {path}: {e}"));
}

async fn get(s: &Store, path: &str) -> Option<Entry> {
    let path = p(path);
    let v =
        s.b.get(Table::Entries, keys::entry_key(&path))
            .await
            .unwrap()?;
    Some(Entry::decode(path.name(), &v).unwrap())
}

/// Names of `dir`'s children starting with `prefix`, read in pages of `page`.
async fn list_paged(s: &Store, dir: &str, prefix: &str, page: usize) -> Vec<String> {
    let (mut start, end) = keys::children_range(&p(dir), prefix);
    let mut out = Vec::new();
    loop {
        let rows =
            s.b.range(Table::Entries, start.clone(), end.clone(), page)
                .await
                .unwrap();
        let n = rows.len();
        for (k, _) in rows {
            let (_, name) = keys::split_entry_key(&k).unwrap();
            out.push(name.to_string());
            start = k;
            start.push(0);
        }
        if n < page {
            return out;
        }
    }
}

async fn list(s: &Store, dir: &str) -> Vec<String> {
    list_paged(s, dir, "", 1000).await
}

/// Every row of `t`.
async fn dump(s: &Store, t: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.b.range(t, Vec::new(), vec![0xff; 64], usize::MAX)
        .await
        .unwrap()
}

async fn events(s: &Store) -> Vec<Event> {
    dump(s, Table::Events)
        .await
        .into_iter()
        .map(|(k, v)| Event::decode(keys::seq_of(&k).unwrap(), &v).unwrap())
        .collect()
}

async fn garbage(s: &Store) -> BTreeSet<String> {
    dump(s, Table::Garbage)
        .await
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect()
}

async fn ref_of(s: &Store, fid: &str) -> Option<String> {
    s.b.get(Table::Refs, fid.as_bytes().to_vec())
        .await
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// (bytes, entries) of a quota directory's `Usage` row: two u64 LE.
async fn usage(s: &Store, dir: &str) -> Option<(u64, u64)> {
    let v =
        s.b.get(Table::Usage, dir.as_bytes().to_vec())
            .await
            .unwrap()?;
    let word = |i: usize| u64::from_le_bytes(v[i..i + 8].try_into().unwrap());
    Some((word(0), word(8)))
}

/// Everything a backend holds, for "nothing changed" checks.
async fn snapshot(s: &Store) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for t in Table::ALL {
        out.push(dump(s, t).await);
    }
    out
}

// ---- the shared suite ---------------------------------------------------

async fn put_get_replace(s: &Store) {
    assert_eq!(get(s, "/a/b.txt").await, None);
    let first = file(10, &["1,01"]);
    let r = commit(s, vec![put_op("/a/b.txt", first.clone(), Cond::Any)])
        .await
        .unwrap();
    assert_eq!(r, vec![None]);
    let mut want = first.clone();
    want.name = "b.txt".into();
    assert_eq!(get(s, "/a/b.txt").await, Some(want.clone()));

    let second = file(20, &["1,02"]);
    let r = commit(s, vec![put_op("/a/b.txt", second.clone(), Cond::Any)])
        .await
        .unwrap();
    assert_eq!(r, vec![Some(want)], "the replaced entry is returned");
    let got = get(s, "/a/b.txt").await.unwrap();
    assert_eq!((got.size, got.chunks), (20, second.chunks));
    assert!(get(s, "/a").await.unwrap().is_dir());
}

async fn conditions_refuse_and_change_nothing(s: &Store) {
    put(s, "/c/f", file(5, &["2,01"])).await;
    let before = snapshot(s).await;

    let e = commit(s, vec![put_op("/c/f", file(6, &["2,02"]), Cond::Absent)]).await;
    assert!(matches!(e, Err(FilerError::Exists(_))), "{e:?}");
    let e = commit(s, vec![put_op("/x/y/z", file(6, &["2,03"]), Cond::Present)]).await;
    assert!(matches!(e, Err(FilerError::NotFound(_))), "{e:?}");
    let mut stale = get(s, "/c/f").await.unwrap();
    stale.size = 99;
    let e = commit(
        s,
        vec![put_op(
            "/c/f",
            file(7, &["2,04"]),
            Cond::Unchanged(Box::new(stale)),
        )],
    )
    .await;
    assert!(matches!(e, Err(FilerError::Precondition(_))), "{e:?}");
    let e = commit(
        s,
        vec![Op::Delete {
            path: p("/c/missing"),
            cond: Cond::Present,
            recursive: false,
        }],
    )
    .await;
    assert!(matches!(e, Err(FilerError::NotFound(_))), "{e:?}");
    assert_eq!(snapshot(s).await, before, "a refused txn changed something");
    assert_eq!(
        get(s, "/x").await,
        None,
        "parents of a refused put stay absent"
    );

    // The conditions that hold.
    let cur = get(s, "/c/f").await.unwrap();
    commit(
        s,
        vec![put_op(
            "/c/f",
            file(8, &["2,05"]),
            Cond::Unchanged(Box::new(cur)),
        )],
    )
    .await
    .unwrap();
    commit(s, vec![put_op("/c/f", file(9, &["2,06"]), Cond::Present)])
        .await
        .unwrap();
    commit(s, vec![put_op("/c/g", file(1, &["2,07"]), Cond::Absent)])
        .await
        .unwrap();
    assert_eq!(get(s, "/c/f").await.unwrap().size, 9);
}

async fn parents_are_created(s: &Store) {
    put(s, "/p/q/r/f", file(1, &["3,01"])).await;
    for d in ["/p", "/p/q", "/p/q/r"] {
        let e = get(s, d).await.unwrap_or_else(|| panic!("{d} missing"));
        assert!(e.is_dir(), "{d}");
    }
    let ev = events(s).await;
    let made: Vec<_> = ev
        .iter()
        .map(|e| e.new.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(made, ["/p", "/p/q", "/p/q/r", "/p/q/r/f"]);
    assert_eq!(list(s, "/").await, ["p"]);
}

async fn put_under_a_file_is_refused(s: &Store) {
    put(s, "/f", file(1, &["4,01"])).await;
    let before = snapshot(s).await;
    let e = commit(s, vec![put_op("/f/g", file(1, &["4,02"]), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::NotDirectory(_))), "{e:?}");
    let e = commit(s, vec![put_op("/f/g/h", file(1, &["4,03"]), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::NotDirectory(_))), "{e:?}");
    // A directory cannot replace a file, nor a file a directory.
    let e = commit(s, vec![put_op("/f", Entry::directory("f", NOW), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::NotDirectory(_))), "{e:?}");
    put(s, "/d/x", file(1, &["4,04"])).await;
    let before_d = snapshot(s).await;
    let e = commit(s, vec![put_op("/d", file(1, &["4,05"]), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::IsDirectory(_))), "{e:?}");
    assert_eq!(snapshot(s).await, before_d);
    assert_ne!(snapshot(s).await, before);
}

async fn listings_are_in_byte_order(s: &Store) {
    let names = ["b", "a", "a b", "a.b", "ab", "Z", "é", "a-1", "aa", "abc"];
    for n in names {
        put(s, &format!("/d/{n}"), file(1, &[])).await;
    }
    // Neighbours that must not show up in /d's listing.
    put(s, "/d/zz/inner", file(1, &[])).await;
    put(s, "/d2/x", file(1, &[])).await;
    put(s, "/d.x/y", file(1, &[])).await;
    let e = commit(s, vec![put_op("/", Entry::directory("", NOW), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::BadPath(_))), "{e:?}");
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.push("zz".into());
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(list(s, "/d").await, want);
    assert_eq!(list_paged(s, "/d", "", 3).await, want, "pages of 3");
    assert_eq!(list_paged(s, "/d", "", 1).await, want, "pages of 1");
    assert_eq!(list(s, "/d").await.len(), names.len() + 1);
    assert_eq!(
        list_paged(s, "/d", "a", 2).await,
        ["a", "a b", "a-1", "a.b", "aa", "ab", "abc"]
    );
    assert_eq!(list(s, "/d/zz").await, ["inner"]);
    assert_eq!(list(s, "/").await, ["d", "d.x", "d2"]);
    assert_eq!(list_paged(s, "/d", "zzz", 5).await, Vec::<String>::new());
    // An empty or inverted range is empty.
    let (start, _) = keys::children_range(&p("/d"), "");
    assert!(
        s.b.range(Table::Entries, start.clone(), start.clone(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut before = start.clone();
    before.pop();
    assert!(
        s.b.range(Table::Entries, start, before, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn delete_recursive_and_not(s: &Store) {
    put(s, "/t/a/1", file(1, &["5,01"])).await;
    put(s, "/t/a/2", file(1, &["5,02"])).await;
    put(s, "/t/b/3", file(1, &["5,03"])).await;
    put(s, "/tt/keep", file(1, &["5,04"])).await;
    let before = snapshot(s).await;
    let e = commit(s, vec![del_op("/t", false)]).await;
    assert!(matches!(e, Err(FilerError::NotEmpty(_))), "{e:?}");
    assert_eq!(snapshot(s).await, before);
    let e = commit(s, vec![del_op("/nope", true)]).await;
    assert!(matches!(e, Err(FilerError::NotFound(_))), "{e:?}");

    let r = commit(s, vec![del_op("/t", true)]).await.unwrap();
    assert!(r[0].as_ref().unwrap().is_dir());
    for path in ["/t", "/t/a", "/t/a/1", "/t/a/2", "/t/b", "/t/b/3"] {
        assert_eq!(get(s, path).await, None, "{path}");
    }
    assert!(
        get(s, "/tt/keep").await.is_some(),
        "a sibling with the same prefix stays"
    );
    for fid in ["5,01", "5,02", "5,03"] {
        assert_eq!(ref_of(s, fid).await, None);
    }
    assert_eq!(ref_of(s, "5,04").await.as_deref(), Some("/tt/keep"));
    let g = garbage(s).await;
    assert_eq!(g, ["5,01", "5,02", "5,03"].map(String::from).into());
    // An empty directory and a file go without `recursive`.
    put(s, "/e", Entry::directory("e", NOW)).await;
    commit(s, vec![del_op("/e", false)]).await.unwrap();
    commit(s, vec![del_op("/tt/keep", false)]).await.unwrap();
    assert_eq!(list(s, "/").await, ["tt"]);
}

async fn rename_moves_directories_with_children(s: &Store) {
    put(s, "/m/d/x", file(1, &["6,01"])).await;
    put(s, "/m/d/y/z", file(2, &["6,02"])).await;
    put(s, "/m/dd/other", file(1, &["6,03"])).await;
    commit(
        s,
        vec![Op::Rename {
            from: p("/m/d"),
            to: p("/n/e"),
        }],
    )
    .await
    .unwrap();
    for gone in ["/m/d", "/m/d/x", "/m/d/y", "/m/d/y/z"] {
        assert_eq!(get(s, gone).await, None, "{gone}");
    }
    assert_eq!(get(s, "/n/e/x").await.unwrap().size, 1);
    assert_eq!(get(s, "/n/e/y/z").await.unwrap().size, 2);
    assert!(get(s, "/n/e/y").await.unwrap().is_dir());
    assert_eq!(list(s, "/n/e").await, ["x", "y"]);
    assert_eq!(
        list(s, "/m").await,
        ["dd"],
        "a sibling with the same prefix stays"
    );
    assert_eq!(ref_of(s, "6,01").await.as_deref(), Some("/n/e/x"));
    assert_eq!(ref_of(s, "6,02").await.as_deref(), Some("/n/e/y/z"));
    assert!(garbage(s).await.is_empty(), "moved chunks are not garbage");

    let before = snapshot(s).await;
    // Onto a directory, into itself, from nowhere: refused.
    let e = commit(
        s,
        vec![Op::Rename {
            from: p("/n/e/x"),
            to: p("/m/dd"),
        }],
    )
    .await;
    assert!(matches!(e, Err(FilerError::Exists(_))), "{e:?}");
    let e = commit(
        s,
        vec![Op::Rename {
            from: p("/n"),
            to: p("/n/e/inside"),
        }],
    )
    .await;
    assert!(matches!(e, Err(FilerError::BadRequest(_))), "{e:?}");
    let e = commit(
        s,
        vec![Op::Rename {
            from: p("/nothing"),
            to: p("/x"),
        }],
    )
    .await;
    assert!(matches!(e, Err(FilerError::NotFound(_))), "{e:?}");
    let e = commit(
        s,
        vec![Op::Rename {
            from: p("/n/e"),
            to: p("/m/dd/other"),
        }],
    )
    .await;
    assert!(matches!(e, Err(FilerError::NotDirectory(_))), "{e:?}");
    assert_eq!(snapshot(s).await, before);

    // A file onto a file replaces it; the replaced chunks are garbage.
    let r = commit(
        s,
        vec![Op::Rename {
            from: p("/n/e/x"),
            to: p("/m/dd/other"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(r[0].as_ref().unwrap().chunks[0].fid, "6,03");
    assert_eq!(ref_of(s, "6,01").await.as_deref(), Some("/m/dd/other"));
    assert_eq!(ref_of(s, "6,03").await, None);
    assert_eq!(garbage(s).await, ["6,03".to_string()].into());
    let last = events(s).await.pop().unwrap();
    assert_eq!(last.old.unwrap().0, p("/n/e/x"));
    assert_eq!(last.new.unwrap().0, p("/m/dd/other"));
}

async fn quotas_count_and_refuse(s: &Store) {
    let mut q = Entry::directory("q", NOW);
    q.quota_bytes = 100;
    q.quota_entries = 4;
    put(s, "/q", q.clone()).await;
    assert_eq!(usage(s, "/q").await, Some((0, 0)));
    put(s, "/q/a", file(30, &["7,01"])).await;
    put(s, "/q/sub/b", file(40, &["7,02"])).await;
    assert_eq!(usage(s, "/q").await, Some((70, 3)), "a, sub, sub/b");

    let before = snapshot(s).await;
    let e = commit(s, vec![put_op("/q/c", file(31, &["7,03"]), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::Quota { .. })), "{e:?}");
    put(s, "/q/c", file(30, &["7,03"])).await; // exactly 100 bytes, 4 entries
    assert_eq!(usage(s, "/q").await, Some((100, 4)));
    let before_full = snapshot(s).await;
    let e = commit(s, vec![put_op("/q/d", file(0, &[]), Cond::Any)]).await;
    assert!(matches!(e, Err(FilerError::Quota { .. })), "entries: {e:?}");
    assert_eq!(snapshot(s).await, before_full);
    assert_ne!(snapshot(s).await, before);

    // Shrinking is always allowed; replacing counts the difference.
    put(s, "/q/a", file(10, &["7,04"])).await;
    assert_eq!(usage(s, "/q").await, Some((80, 4)));
    commit(s, vec![del_op("/q/sub", true)]).await.unwrap();
    assert_eq!(usage(s, "/q").await, Some((40, 2)));
    // Moving out of the quota directory gives back; moving in charges.
    commit(
        s,
        vec![Op::Rename {
            from: p("/q/c"),
            to: p("/out/c"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(usage(s, "/q").await, Some((10, 1)));
    put(s, "/big", file(95, &["7,05"])).await;
    let e = commit(
        s,
        vec![Op::Rename {
            from: p("/big"),
            to: p("/q/big"),
        }],
    )
    .await;
    assert!(matches!(e, Err(FilerError::Quota { .. })), "{e:?}");
    assert!(get(s, "/big").await.is_some());
    // Renaming the quota directory takes its usage row along.
    commit(
        s,
        vec![Op::Rename {
            from: p("/q"),
            to: p("/r"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(usage(s, "/q").await, None);
    assert_eq!(usage(s, "/r").await, Some((10, 1)));
    // Clearing the quota drops the row; setting one counts what is there.
    let mut r = get(s, "/r").await.unwrap();
    r.quota_bytes = 0;
    r.quota_entries = 0;
    put(s, "/r", r.clone()).await;
    assert_eq!(usage(s, "/r").await, None);
    r.quota_entries = 10;
    put(s, "/r", r).await;
    assert_eq!(usage(s, "/r").await, Some((10, 1)));
}

async fn chunk_refs_and_garbage(s: &Store) {
    put(s, "/g/a", file(1, &["8,01", "8,02"])).await;
    assert_eq!(ref_of(s, "8,01").await.as_deref(), Some("/g/a"));
    // A replaced entry's chunks that the new one lacks are garbage.
    put(s, "/g/a", file(1, &["8,02", "8,03"])).await;
    assert_eq!(garbage(s).await, ["8,01".to_string()].into());
    assert_eq!(ref_of(s, "8,01").await, None);
    assert_eq!(ref_of(s, "8,02").await.as_deref(), Some("/g/a"));
    // Chunks moved to another entry in one txn are not garbage (a
    // multipart upload's parts becoming the object).
    commit(
        s,
        vec![
            del_op("/g/a", false),
            put_op("/g/b", file(1, &["8,02", "8,03"]), Cond::Any),
        ],
    )
    .await
    .unwrap();
    assert_eq!(garbage(s).await, ["8,01".to_string()].into());
    assert_eq!(ref_of(s, "8,03").await.as_deref(), Some("/g/b"));
    // Queued garbage: a referenced fid is left alone.
    commit(s, vec![Op::AddGarbage(vec!["8,03".into(), "8,09".into()])])
        .await
        .unwrap();
    let rows = dump(s, Table::Garbage).await;
    let fids: Vec<_> = rows.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(fids, [b"8,01".to_vec(), b"8,09".to_vec()]);
    let ids: Vec<u64> = rows.iter().map(|(k, _)| keys::seq_of(k).unwrap()).collect();
    assert!(ids[0] < ids[1]);
    commit(s, vec![Op::DropGarbage(vec![ids[0]])])
        .await
        .unwrap();
    assert_eq!(garbage(s).await, ["8,09".to_string()].into());
    commit(s, vec![Op::DropGarbage(vec![ids[1]])])
        .await
        .unwrap();
    assert!(garbage(s).await.is_empty());
}

/// Two collectors (two filers on one database, or two calls of one) may
/// read the same garbage rows; the one that drops them second must not
/// drop newer rows given the same ids.
async fn garbage_ids_are_never_reused(s: &Store) {
    let ids = async || -> Vec<u64> {
        dump(s, Table::Garbage)
            .await
            .iter()
            .map(|(k, _)| keys::seq_of(k).unwrap())
            .collect()
    };
    commit(s, vec![Op::AddGarbage(vec!["13,01".into()])])
        .await
        .unwrap();
    let seen = ids().await;
    assert_eq!(seen, [1]);
    commit(s, vec![Op::DropGarbage(seen.clone())])
        .await
        .unwrap();
    commit(s, vec![Op::AddGarbage(vec!["13,02".into()])])
        .await
        .unwrap();
    assert_eq!(ids().await, [2]);
    // The second collector's late drop of what it read.
    commit(s, vec![Op::DropGarbage(seen)]).await.unwrap();
    assert_eq!(garbage(s).await, ["13,02".to_string()].into());
}

async fn events_are_numbered_without_gaps_and_never_reused(s: &Store) {
    put(s, "/ev/1", file(1, &[])).await; // /ev and /ev/1
    put(s, "/ev/2", file(1, &[])).await;
    commit(s, vec![del_op("/ev/1", false)]).await.unwrap();
    let ev = events(s).await;
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(ev[3].new.is_none() && ev[3].old.as_ref().unwrap().0 == p("/ev/1"));
    if s.own_clock {
        // Stamped by the filer when it committed: within this test.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let ts: Vec<i64> = ev.iter().map(|e| e.ts_ns).collect();
        assert!(
            ts.iter().all(|t| (now - 60_000_000_000..=now).contains(t)),
            "{ts:?}"
        );
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    } else {
        assert!(ev.iter().all(|e| e.ts_ns == NOW));
    }
    commit(s, vec![Op::DropEvents(vec![1, 2, 3, 4])])
        .await
        .unwrap();
    assert!(events(s).await.is_empty());
    put(s, "/ev/3", file(1, &[])).await;
    let ev = events(s).await;
    assert_eq!(
        ev.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [5],
        "numbers never come back"
    );
    // A txn with several changes numbers them in order.
    commit(
        s,
        vec![
            put_op("/ev/4", file(1, &[]), Cond::Any),
            put_op("/ev/5", file(1, &[]), Cond::Any),
        ],
    )
    .await
    .unwrap();
    let seqs: Vec<_> = events(s).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [5, 6, 7]);
}

async fn leases_put_and_drop(s: &Store) {
    let lease = |id: u64| Lease {
        id,
        fid: format!("9,{id:02x}"),
        count: 16,
        created_ns: NOW,
        owner: "filer-a".into(),
    };
    commit(s, vec![Op::PutLease(lease(1)), Op::PutLease(lease(2))])
        .await
        .unwrap();
    let rows = dump(s, Table::Leases).await;
    let got: Vec<Lease> = rows
        .iter()
        .map(|(k, v)| Lease::decode(keys::seq_of(k).unwrap(), v).unwrap())
        .collect();
    assert_eq!(got, [lease(1), lease(2)]);
    // Another filer picking a taken id is refused; the first lease stays.
    let theirs = Lease {
        owner: "filer-b".into(),
        ..lease(2)
    };
    let e = commit(s, vec![Op::PutLease(theirs)]).await;
    assert!(matches!(e, Err(FilerError::Exists(_))), "{e:?}");
    let rows = dump(s, Table::Leases).await;
    assert_eq!(Lease::decode(2, &rows[1].1).unwrap(), lease(2));
    commit(s, vec![Op::DropLease(1)]).await.unwrap();
    let rows = dump(s, Table::Leases).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(keys::seq_of(&rows[0].0), Some(2));
    assert!(
        events(s).await.is_empty(),
        "leases are not namespace changes"
    );
}

async fn a_failed_txn_leaves_nothing(s: &Store) {
    put(s, "/keep", file(1, &["10,01"])).await;
    let before = snapshot(s).await;
    let e = commit(
        s,
        vec![
            put_op("/ok/a", file(1, &["10,02"]), Cond::Any),
            Op::PutLease(Lease {
                id: 7,
                fid: "10,03".into(),
                count: 1,
                created_ns: NOW,
                owner: "x".into(),
            }),
            Op::AddGarbage(vec!["10,04".into()]),
            put_op("/keep", file(2, &["10,05"]), Cond::Any),
            put_op("/ok/a", file(1, &["10,06"]), Cond::Absent),
        ],
    )
    .await;
    assert!(matches!(e, Err(FilerError::Exists(_))), "{e:?}");
    assert_eq!(
        snapshot(s).await,
        before,
        "a failed txn left something behind"
    );
    // The backend goes on working after a failure.
    put(s, "/ok/a", file(1, &["10,02"])).await;
    assert!(get(s, "/ok/a").await.is_some());
}

async fn concurrent_creates_all_land_with_unique_events(s: &Store) {
    const TASKS: usize = 16;
    const EACH: usize = 50;
    for t in 0..TASKS {
        put(s, &format!("/c/t{t}"), Entry::directory("", NOW)).await;
    }
    let first = events(s).await.len() as u64 + 1;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let b = s.b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let path = format!("/c/t{t}/f{i}");
                let fid = format!("{t},{i:04x}");
                b.commit(Txn::one(put_op(&path, file(1, &[&fid]), Cond::Absent)), NOW)
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for t in 0..TASKS {
        assert_eq!(list(s, &format!("/c/t{t}")).await.len(), EACH, "t{t}");
    }
    let ev = events(s).await;
    let seqs: Vec<u64> = ev.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = (1..first + (TASKS * EACH) as u64).collect();
    assert_eq!(seqs, want, "events numbered 1..=N exactly once");
    let created: BTreeSet<String> = ev[first as usize - 1..]
        .iter()
        .map(|e| e.new.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(created.len(), TASKS * EACH, "one event per create");
    assert_eq!(dump(s, Table::Refs).await.len(), TASKS * EACH);
}

async fn racing_creates_of_one_path_have_one_winner(s: &Store) {
    for round in 0..5 {
        let path = format!("/race/{round}");
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let b = s.b.clone();
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                let e = file(t, &[&format!("11,{round}{t}")]);
                b.commit(Txn::one(put_op(&path, e, Cond::Absent)), NOW)
                    .await
            }));
        }
        let mut won = Vec::new();
        for (t, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(_) => won.push(t as u64),
                Err(FilerError::Exists(_)) => {}
                Err(e) => panic!("{path}: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "{path}: winners {won:?}");
        assert_eq!(get(s, &path).await.unwrap().size, won[0]);
    }
}

// ---- what only a shared database has ---------------------------------------

/// Two filers on one database: racing `Cond::Absent` has one winner, and
/// concurrent creates through both number their events exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_filers_share_one_namespace() {
    let Some(pg) = Postgres::start_or_skip() else {
        return;
    };
    let pa = Arc::new(PostgresBackend::connect(&pg.url()).await.unwrap());
    let pb = Arc::new(PostgresBackend::connect(&pg.url()).await.unwrap());
    let a: Arc<dyn Backend> = pa.clone();
    let b: Arc<dyn Backend> = pb.clone();
    for round in 0..10 {
        let path = format!("/race/{round}");
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let s = if t % 2 == 0 { a.clone() } else { b.clone() };
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                let e = file(t, &[&format!("12,{round}{t}")]);
                s.commit(Txn::one(put_op(&path, e, Cond::Absent)), NOW)
                    .await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => winners += 1,
                Err(FilerError::Exists(_)) => {}
                Err(e) => panic!("{path}: {e}"),
            }
        }
        assert_eq!(winners, 1, "{path}");
    }
    let base = dump_events(&*a).await.len() as u64;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let path = format!("/shared/f{t}-{i}");
                s.commit(Txn::one(put_op(&path, file(1, &[]), Cond::Absent)), NOW)
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seqs: Vec<u64> = dump_events(&*b).await;
    // /shared itself once, then 200 files.
    let want: Vec<u64> = (1..=base + 201).collect();
    assert_eq!(seqs, want);
    let (start, end) = keys::children_range(&p("/shared"), "");
    assert_eq!(
        a.range(Table::Entries, start, end, 1000)
            .await
            .unwrap()
            .len(),
        200
    );
    println!(
        "group commits tried again after a conflict: {} and {}",
        pa.retries(),
        pb.retries()
    );
}

async fn dump_events(b: &dyn Backend) -> Vec<u64> {
    b.range(Table::Events, Vec::new(), vec![0xff; 9], usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|(k, _)| keys::seq_of(k).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_another_store_format() {
    let Some(pg) = Postgres::start_or_skip() else {
        return;
    };
    drop(PostgresBackend::connect(&pg.url()).await.unwrap());
    pg.psql("UPDATE kelp_filer_kv SET v = '\\x0900000000000000' WHERE tbl = 6 AND k = 'format'");
    let e = PostgresBackend::connect(&pg.url())
        .await
        .err()
        .expect("connected");
    let msg = e.to_string();
    assert!(
        msg.contains("format 9") && msg.contains("format 1"),
        "{msg}"
    );
    // Connecting twice to a good database is fine (the schema exists).
    pg.psql("UPDATE kelp_filer_kv SET v = '\\x0100000000000000' WHERE tbl = 6 AND k = 'format'");
    PostgresBackend::connect(&pg.url()).await.unwrap();
    PostgresBackend::connect(&pg.url()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dead_server_is_an_error_not_a_hang() {
    // Nothing listens: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Instant::now();
    let e = PostgresBackend::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .await
        .err()
        .expect("connected to nothing");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));

    // Something accepts and never answers: the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let t = Instant::now();
    let e = PostgresBackend::connect(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1"
    ))
    .await
    .err()
    .expect("connected to a silent server");
    assert!(e.to_string().contains("no answer"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(silent);

    // A server that dies under a running filer: commits and reads fail.
    let Some(pg) = Postgres::start_or_skip() else {
        return;
    };
    let b = PostgresBackend::connect(&pg.url()).await.unwrap();
    b.commit(Txn::one(put_op("/a", file(1, &[]), Cond::Any)), NOW)
        .await
        .unwrap();
    pg.stop();
    let t = Instant::now();
    let e = b
        .commit(Txn::one(put_op("/b", file(1, &[]), Cond::Any)), NOW)
        .await
        .expect_err("committed to a stopped server");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    let r = b.get(Table::Entries, keys::entry_key(&p("/a"))).await;
    assert!(matches!(r, Err(FilerError::Store(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

// ---- what only a remote filer has ----------------------------------------------

/// A filer refuses a request of another wire version with 400, naming the
/// version it speaks; a `RemoteBackend` speaking another version gets that
/// as a store error, and nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_filer_refuses_another_wire_version() {
    let f = InProcessFiler::start().await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/__kelp/store/get", f.addr))
        .body(vec![9u8, 0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("version 9") && msg.contains("speaks version 1"),
        "{msg}"
    );

    let future = f.remote().with_wire_version(2);
    let e = future
        .commit(Txn::one(put_op("/v2", file(1, &[]), Cond::Any)), NOW)
        .await
        .expect_err("a version 2 commit was taken");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("version 2") && m.contains("speaks version 1"),
        "{m}"
    );
    let e = future
        .get(Table::Entries, keys::entry_key(&p("/v2")))
        .await
        .expect_err("a version 2 get was answered");
    assert!(e.to_string().contains("speaks version 1"), "{e}");
    let now = f.remote();
    assert_eq!(
        now.get(Table::Entries, keys::entry_key(&p("/v2")))
            .await
            .unwrap(),
        None,
        "the refused commit changed the store"
    );
}

/// A filer that is not there, or goes away: every call fails with a store
/// error naming it, after a few quick tries, never a panic or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_dead_filer_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = RemoteBackend::new(&format!("127.0.0.1:{port}")).unwrap();
    let t = Instant::now();
    let e = b.status().await.expect_err("status of nothing");
    assert!(e.to_string().contains("cannot reach the filer"), "{e}");
    let e = b
        .get(Table::Entries, keys::entry_key(&p("/a")))
        .await
        .expect_err("get from nothing");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    let e = b
        .range(Table::Entries, vec![], vec![0xff], 10)
        .await
        .expect_err("range from nothing");
    assert!(e.to_string().contains("cannot reach the filer"), "{e}");
    let e = b
        .commit(Txn::one(put_op("/a", file(1, &[]), Cond::Any)), NOW)
        .await
        .expect_err("commit to nothing");
    assert!(e.to_string().contains("cannot reach the filer"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A filer that stops under its gateway.
    let mut f = InProcessFiler::start().await;
    let b = f.remote();
    b.commit(Txn::one(put_op("/a", file(1, &[]), Cond::Any)), NOW)
        .await
        .unwrap();
    f.stop().await;
    let t = Instant::now();
    let e = b
        .commit(Txn::one(put_op("/b", file(1, &[]), Cond::Any)), NOW)
        .await
        .expect_err("committed to a stopped filer");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    let r = b.get(Table::Entries, keys::entry_key(&p("/a"))).await;
    assert!(matches!(r, Err(FilerError::Store(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// A filer that takes a request and dies before answering: a read is
/// tried again (it is idempotent), a commit is not — its outcome is
/// unknown, and the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_commit_with_an_unknown_outcome_is_not_sent_twice() {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    std::thread::spawn({
        let requests = requests.clone();
        move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 4096];
                // The request reached it; then the connection is cut.
                if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                    requests.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let b = RemoteBackend::new(&addr.to_string()).unwrap();
    let e = b
        .commit(Txn::one(put_op("/a", file(1, &[]), Cond::Any)), NOW)
        .await
        .expect_err("a commit without an answer");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    assert!(
        e.to_string().contains("may or may not have been applied"),
        "{e}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the commit was sent again"
    );
    let e = b
        .get(Table::Entries, keys::entry_key(&p("/a")))
        .await
        .expect_err("a get without an answer");
    assert!(matches!(e, FilerError::Store(_)), "{e:?}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1 + kelp_filer::store::remote::ATTEMPTS as usize,
        "a get is tried again"
    );
}

/// A commit through the remote store is the filer's own commit: the
/// filer's subscribers are woken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_commits_wake_the_filers_subscribers() {
    let f = InProcessFiler::start().await;
    let mut watch = f.filer.watch();
    let b = f.remote();
    b.commit(Txn::one(put_op("/w/a", file(1, &[]), Cond::Any)), NOW)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("the filer's watch did not fire")
        .unwrap();
    let ev = f.filer.events(0, 10).await.unwrap();
    assert_eq!(ev.len(), 2, "/w and /w/a: {ev:?}");
}

// ---- one random history against both backends ------------------------------

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn path(&mut self) -> String {
        let depth = 1 + self.below(3);
        let mut s = String::new();
        for _ in 0..depth {
            s.push('/');
            s.push_str(["a", "b", "ab", "a b", "é"][self.below(5) as usize]);
        }
        s
    }
}

fn random_op(r: &mut Rng, n: u64) -> Op {
    match r.below(10) {
        0..=3 => {
            let fids: Vec<String> = (0..r.below(3)).map(|i| format!("{},{i}", n % 50)).collect();
            let fids: Vec<&str> = fids.iter().map(|s| s.as_str()).collect();
            put_op(
                &r.path(),
                file(r.below(100), &fids),
                if r.below(4) == 0 {
                    Cond::Absent
                } else {
                    Cond::Any
                },
            )
        }
        4 => {
            let mut d = Entry::directory("", NOW);
            if r.below(3) == 0 {
                d.quota_bytes = 150 + r.below(200);
            }
            put_op(&r.path(), d, Cond::Any)
        }
        5 | 6 => del_op(&r.path(), r.below(2) == 0),
        7 | 8 => Op::Rename {
            from: p(&r.path()),
            to: p(&r.path()),
        },
        _ => Op::AddGarbage(vec![format!("{},0", r.below(50))]),
    }
}

/// The same random history through redb and PostgreSQL: every commit has
/// the same outcome, and afterwards every table holds the same rows; the
/// listings agree with a model of the paths kept beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_history_is_the_same_on_every_backend() {
    let Some(pg) = pg_store().await else {
        return;
    };
    let rd = redb_store();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model: BTreeMap<String, bool> = BTreeMap::new(); // path -> is_dir
    for n in 0..400u64 {
        let ops: Vec<Op> = (0..1 + r.below(3)).map(|_| random_op(&mut r, n)).collect();
        let a = rd.b.commit(Txn { ops: ops.clone() }, NOW + n as i64).await;
        let b = pg.b.commit(Txn { ops }, NOW + n as i64).await;
        match (&a, &b) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "commit {n}"),
            (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string(), "commit {n}"),
            _ => panic!("commit {n}: redb {a:?}, postgres {b:?}"),
        }
        if n % 50 == 49 {
            for t in Table::ALL {
                assert_eq!(
                    dump(&rd, t).await,
                    dump(&pg, t).await,
                    "{} after {n}",
                    t.name()
                );
            }
        }
    }
    // The model: every entry row is a path whose parent is a directory.
    for (k, v) in dump(&pg, Table::Entries).await {
        let (dir, name) = keys::split_entry_key(&k).unwrap();
        let path = p(dir).child(name);
        model.insert(path.to_string(), Entry::decode(name, &v).unwrap().is_dir());
    }
    for path in model.keys() {
        let full = p(path);
        let (dir, name) = full.split().unwrap();
        if !dir.is_root() {
            assert_eq!(model.get(dir.as_str()), Some(&true), "{path}'s parent");
        }
        let listed = list(&pg, dir.as_str()).await;
        assert!(listed.iter().any(|n| n == name), "{path} not listed");
    }
    for dir in model.iter().filter(|(_, d)| **d).map(|(p, _)| p) {
        let mut want: Vec<String> = model
            .keys()
            .filter_map(|c| {
                p(c).split()
                    .filter(|(d, _)| d.as_str() == dir)
                    .map(|(_, n)| n.to_string())
            })
            .collect();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(list(&pg, dir).await, want, "{dir}");
        assert_eq!(list(&rd, dir).await, want, "{dir}");
    }
    assert!(
        model.len() > 5,
        "the history left too little to compare: {model:?}"
    );
}
