//! The filer library over an in-process blob cluster: content in chunks,
//! listings, overwrites and the collector, deletes, moves, quotas,
//! compression, failed uploads and the change log.

mod common;

use bytes::Bytes;
use common::*;
use kelp_filer::{Compress, FilerError, FilerOptions, NewFile};

fn small_chunks() -> FilerOptions {
    FilerOptions {
        chunk_size: 64 << 10,
        compress: Compress::Off,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_across_chunk_boundaries() {
    let s = setup(small_chunks()).await;
    let cs = 64 << 10;
    for (i, len) in [0usize, 1, cs - 1, cs, cs + 1, 3 * cs + 17]
        .into_iter()
        .enumerate()
    {
        let data = kelp_testkit::blob(i as u64, len);
        let path = format!("/d/f{len}");
        let e = write(&s.filer, &path, &data).await;
        assert_eq!(e.size, len as u64);
        assert_eq!(e.md5, Some(md5(&data)));
        assert_eq!(e.chunks.len(), len.div_ceil(cs), "{len} bytes");
        assert_eq!(read_all(&s.filer, &path).await, data, "{len} bytes");
        if len > 10 {
            for r in [
                0..1,
                5..len as u64,
                (cs as u64 - 3).min(len as u64 - 2)..len as u64 - 1,
            ] {
                let want = &data[r.start as usize..r.end as usize];
                assert_eq!(
                    read_range(&s.filer, &path, r.clone()).await,
                    want,
                    "{len} bytes, {r:?}"
                );
            }
        }
    }
    // Parents were made as directories.
    let d = s.filer.lookup(&p("/d")).await.unwrap().unwrap();
    assert!(d.is_dir());
    let err = s
        .filer
        .write(&p("/d/f1/x"), body(b"x"), NewFile::default())
        .await
        .unwrap_err();
    assert!(matches!(err, FilerError::NotDirectory(_)), "{err}");
    let err = s
        .filer
        .write(&p("/d"), body(b"x"), NewFile::default())
        .await
        .unwrap_err();
    assert!(matches!(err, FilerError::IsDirectory(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_live_in_their_entry_unless_asked_for_chunks() {
    let limit = 4096;
    let s = setup(FilerOptions {
        inline_limit: limit,
        ..small_chunks()
    })
    .await;
    for len in [1usize, 100, limit] {
        let data = kelp_testkit::blob(len as u64, len);
        let path = format!("/i/f{len}");
        let e = write(&s.filer, &path, &data).await;
        assert!(e.chunks.is_empty(), "{len} bytes: {:?}", e.chunks);
        assert_eq!(e.inline, data, "{len} bytes");
        assert_eq!(e.md5, Some(md5(&data)));
        assert_eq!(read_all(&s.filer, &path).await, data);
        assert_eq!(read_range(&s.filer, &path, 1..len as u64).await, &data[1..]);
    }
    // One byte over the limit goes to a volume server.
    let data = kelp_testkit::blob(7, limit + 1);
    let e = write(&s.filer, "/i/big", &data).await;
    assert!(e.inline.is_empty());
    assert_eq!(e.chunks.len(), 1);
    assert_eq!(read_all(&s.filer, "/i/big").await, data);
    // So does a small file written `chunked` (an S3 multipart part).
    let e = s
        .filer
        .write(
            &p("/i/part"),
            body(b"tiny"),
            NewFile {
                chunked: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(e.inline.is_empty());
    assert_eq!(e.chunks.len(), 1);
    assert_eq!(read_all(&s.filer, "/i/part").await, b"tiny");
    // An inline file replaced by a chunked one, and back, reads right.
    write(&s.filer, "/i/f1", &data).await;
    assert_eq!(read_all(&s.filer, "/i/f1").await, data);
    write(&s.filer, "/i/f1", b"x").await;
    assert_eq!(read_all(&s.filer, "/i/f1").await, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_in_name_order_with_prefix() {
    let s = setup(small_chunks()).await;
    let mut names: Vec<String> = (0..57).map(|i| format!("k{i:03}")).collect();
    names.extend(["a b".to_string(), "é".to_string(), "k+&%".to_string()]);
    for n in &names {
        write(&s.filer, &format!("/l/{n}"), n.as_bytes()).await;
    }
    s.filer.mkdir(&p("/l/sub")).await.unwrap();
    names.push("sub".into());
    names.sort();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = s.filer.list(&p("/l"), &after, "", 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().name.clone();
        seen.extend(page.into_iter().map(|e| e.name));
    }
    assert_eq!(seen, names);
    let k01: Vec<String> = s
        .filer
        .list(&p("/l"), "", "k01", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        k01,
        (10..20).map(|i| format!("k{i:03}")).collect::<Vec<_>>()
    );
    assert!(matches!(
        s.filer.list(&p("/nope"), "", "", 10).await,
        Err(FilerError::NotFound(_))
    ));
    assert!(matches!(
        s.filer.list(&p("/l/k001"), "", "", 10).await,
        Err(FilerError::NotDirectory(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_and_deleted_chunks_are_collected_and_live_ones_kept() {
    let s = setup(small_chunks()).await;
    let client = client(&s.cluster);
    let old = write(&s.filer, "/g/a", &kelp_testkit::blob(1, 200_000)).await;
    let keep = write(&s.filer, "/g/keep", &kelp_testkit::blob(2, 100_000)).await;
    let new_data = kelp_testkit::blob(3, 70_000);
    write(&s.filer, "/g/a", &new_data).await;
    let gone = write(&s.filer, "/g/sub/b", &kelp_testkit::blob(4, 10)).await;
    s.filer.delete(&p("/g/sub"), true).await.unwrap();
    let n = s.filer.collect_garbage(1000).await.unwrap();
    assert_eq!(n, old.chunks.len() + gone.chunks.len());
    for c in old.chunks.iter().chain(&gone.chunks) {
        assert!(
            client.read(&c.fid).await.unwrap_err().is_not_found(),
            "{} still readable",
            c.fid
        );
    }
    for c in &keep.chunks {
        client.read(&c.fid).await.unwrap();
    }
    assert_eq!(read_all(&s.filer, "/g/a").await, new_data);
    assert_eq!(s.filer.collect_garbage(1000).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_moves_and_their_refusals() {
    let s = setup(small_chunks()).await;
    write(&s.filer, "/m/a/x", b"x").await;
    write(&s.filer, "/m/a/y/z", b"z").await;
    write(&s.filer, "/m/b", b"b").await;
    assert!(matches!(
        s.filer.delete(&p("/m/a"), false).await,
        Err(FilerError::NotEmpty(_))
    ));
    assert!(matches!(
        s.filer.rename(&p("/m/a"), &p("/m/a/y/q")).await,
        Err(FilerError::BadRequest(_))
    ));
    assert!(matches!(
        s.filer.rename(&p("/m/nope"), &p("/m/q")).await,
        Err(FilerError::NotFound(_))
    ));
    // A directory moves with everything below it.
    s.filer.rename(&p("/m/a"), &p("/n/c")).await.unwrap();
    assert!(s.filer.lookup(&p("/m/a/x")).await.unwrap().is_none());
    assert_eq!(read_all(&s.filer, "/n/c/y/z").await, b"z");
    assert_eq!(read_all(&s.filer, "/n/c/x").await, b"x");
    // A file moved over a file replaces it; over a directory is refused.
    s.filer.rename(&p("/m/b"), &p("/n/c/x")).await.unwrap();
    assert_eq!(read_all(&s.filer, "/n/c/x").await, b"b");
    write(&s.filer, "/m/b2", b"b2").await;
    assert!(matches!(
        s.filer.rename(&p("/m/b2"), &p("/n/c/y")).await,
        Err(FilerError::Exists(_))
    ));
    s.filer.delete(&p("/n"), true).await.unwrap();
    assert!(s.filer.lookup(&p("/n/c/y/z")).await.unwrap().is_none());
    assert!(matches!(
        s.filer.delete(&p("/n"), true).await,
        Err(FilerError::NotFound(_))
    ));
    // Nothing left below /n is listed or readable.
    assert!(s.filer.list(&p("/"), "", "n", 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_growth_and_follow_deletes_and_moves() {
    let s = setup(small_chunks()).await;
    write(&s.filer, "/q/pre", &[7; 100]).await;
    s.filer.set_quota(&p("/q"), 1000, 5).await.unwrap();
    assert_eq!(s.filer.usage(&p("/q")).await.unwrap(), Some((100, 1)));
    write(&s.filer, "/q/d/a", &[1; 500]).await;
    assert_eq!(s.filer.usage(&p("/q")).await.unwrap(), Some((600, 3)));
    let err = s
        .filer
        .write(&p("/q/d/b"), body(&[1; 401]), NewFile::default())
        .await
        .unwrap_err();
    assert!(matches!(err, FilerError::Quota { .. }), "{err}");
    assert!(err.to_string().contains("quota of 1000 bytes"), "{err}");
    assert!(s.filer.lookup(&p("/q/d/b")).await.unwrap().is_none());
    // The refused upload's chunks are queued for collection.
    assert!(s.filer.collect_garbage(100).await.unwrap() >= 1);
    // Replacing a file counts the difference.
    write(&s.filer, "/q/d/a", &[1; 900]).await;
    assert_eq!(s.filer.usage(&p("/q")).await.unwrap(), Some((1000, 3)));
    write(&s.filer, "/q/e1", b"").await;
    write(&s.filer, "/q/e2", b"").await;
    let err = s
        .filer
        .write(&p("/q/e3"), body(b""), NewFile::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quota of 5 entries"), "{err}");
    // Moving out frees, deleting frees.
    s.filer.rename(&p("/q/d"), &p("/free/d")).await.unwrap();
    assert_eq!(s.filer.usage(&p("/q")).await.unwrap(), Some((100, 3)));
    s.filer.delete(&p("/q/pre"), false).await.unwrap();
    assert_eq!(s.filer.usage(&p("/q")).await.unwrap(), Some((0, 2)));
    // Moving in past the quota is refused.
    write(&s.filer, "/free/big", &[1; 1001]).await;
    assert!(matches!(
        s.filer.rename(&p("/free/big"), &p("/q/big")).await,
        Err(FilerError::Quota { .. })
    ));
    s.filer.set_quota(&p("/q"), 0, 0).await.unwrap();
    assert_eq!(s.filer.usage(&p("/q")).await.unwrap(), None);
    s.filer.rename(&p("/free/big"), &p("/q/big")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressible_content_is_stored_compressed_and_reads_back() {
    let s = setup(FilerOptions {
        chunk_size: 64 << 10,
        compress: Compress::Auto,
        ..Default::default()
    })
    .await;
    let text: Vec<u8> = (0..300_000u32)
        .map(|i| b"kelp filer text\n"[(i % 16) as usize])
        .collect();
    let f = NewFile {
        mime: "text/plain".into(),
        ..Default::default()
    };
    let e = s.filer.write(&p("/z/t.txt"), body(&text), f).await.unwrap();
    assert!(
        e.chunks.iter().all(|c| c.zstd && c.stored * 10 < c.size),
        "{:?}",
        e.chunks
    );
    assert_eq!(read_all(&s.filer, "/z/t.txt").await, text);
    assert_eq!(
        read_range(&s.filer, "/z/t.txt", 65_530..65_560).await,
        &text[65_530..65_560]
    );
    // Random bytes are not compressible; binary types are not tried.
    let rnd = kelp_testkit::blob(9, 100_000);
    let e = s
        .filer
        .write(
            &p("/z/r.txt"),
            body(&rnd),
            NewFile {
                mime: "text/plain".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(e.chunks.iter().all(|c| !c.zstd));
    let e = s
        .filer
        .write(&p("/z/t.bin"), body(&text), NewFile::default())
        .await
        .unwrap();
    assert!(e.chunks.iter().all(|c| !c.zstd));
    let (logical, stored) = s.filer.compression();
    assert!(logical > stored, "{logical} {stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_commits_nothing_and_its_chunks_are_collected() {
    let s = setup(small_chunks()).await;
    let client = client(&s.cluster);
    let good: Vec<Result<Bytes, std::io::Error>> = (0..5)
        .map(|i| Ok(Bytes::from(kelp_testkit::blob(i, 64 << 10))))
        .collect();
    let broken = futures::stream::iter(good).chain(futures::stream::iter([Err(
        std::io::Error::other("client went away"),
    )]));
    use futures::StreamExt;
    let err = s
        .filer
        .write(&p("/f/x"), broken, NewFile::default())
        .await
        .unwrap_err();
    assert!(matches!(err, FilerError::Body(_)), "{err}");
    assert!(s.filer.lookup(&p("/f/x")).await.unwrap().is_none());
    let n = s.filer.collect_garbage(100).await.unwrap();
    assert!(n >= 1, "uploaded chunks of the failed write are queued");
    let _ = client;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_left_by_a_crash_are_reaped_at_the_next_start() {
    let cluster = Cluster::start(1, kelp_core::SecurityConfig::default()).await;
    let meta = tempfile::tempdir().unwrap();
    let opts = FilerOptions {
        lease_size: 8,
        ..small_chunks()
    };
    let filer = open_filer(&cluster, meta.path(), opts.clone()).await;
    let kept = write(&filer, "/c/kept", &kelp_testkit::blob(1, 100)).await;
    // An upload that was cut off: its chunk is on a volume server, but
    // neither its entry nor a garbage row was committed ("crash").
    let e = write(&filer, "/c/lost", &kelp_testkit::blob(2, 100)).await;
    let orphan = e.chunks[0].fid.clone();
    let store = filer.store().clone();
    let raw = kelp_filer::store::Op::Delete {
        path: p("/c/lost"),
        cond: Default::default(),
        recursive: false,
    };
    // Remove the entry behind the filer's back, keeping the chunk and lease.
    let _ = store
        .commit(kelp_filer::store::Txn::one(raw), 1)
        .await
        .unwrap();
    let garbage = store
        .range(
            kelp_filer::store::Table::Garbage,
            vec![],
            vec![0xff; 9],
            100,
        )
        .await
        .unwrap();
    for (k, _) in &garbage {
        store
            .commit(
                kelp_filer::store::Txn::one(kelp_filer::store::Op::DropGarbage(vec![
                    u64::from_be_bytes(k[..].try_into().unwrap()),
                ])),
                1,
            )
            .await
            .unwrap();
    }
    drop(filer);
    drop(store);
    let c = client(&cluster);
    c.read(&orphan).await.unwrap();
    let filer = open_filer(&cluster, meta.path(), opts).await;
    filer.collect_garbage(1000).await.unwrap();
    assert!(c.read(&orphan).await.unwrap_err().is_not_found());
    assert_eq!(
        read_all(&filer, "/c/kept").await,
        kelp_testkit::blob(1, 100)
    );
    c.read(&kept.chunks[0].fid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_lists_creates_updates_moves_and_deletes() {
    let s = setup(small_chunks()).await;
    write(&s.filer, "/e/a", b"1").await;
    write(&s.filer, "/e/a", b"22").await;
    s.filer.rename(&p("/e/a"), &p("/e/b")).await.unwrap();
    s.filer.delete(&p("/e/b"), false).await.unwrap();
    let evs = s.filer.events(0, 100).await.unwrap();
    let kinds: Vec<(Option<String>, Option<String>)> = evs
        .iter()
        .map(|e| {
            (
                e.old.as_ref().map(|(p, _)| p.to_string()),
                e.new.as_ref().map(|(p, _)| p.to_string()),
            )
        })
        .collect();
    let s_ = |x: &str| Some(x.to_string());
    assert_eq!(
        kinds,
        vec![
            (None, s_("/e")),
            (None, s_("/e/a")),
            (s_("/e/a"), s_("/e/a")),
            (s_("/e/a"), s_("/e/b")),
            (s_("/e/b"), None),
        ]
    );
    assert!(evs.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(evs[2].new.as_ref().unwrap().1.size, 2);
    let mid = s.filer.events(evs[2].seq, 100).await.unwrap();
    assert_eq!(mid.len(), 2);
    assert_eq!(s.filer.seq_at(evs[3].ts_ns).await.unwrap(), evs[3].seq - 1);
}

/// Two filers over one PostgreSQL database and one blob cluster: what one
/// writes the other reads and lists, a delete through one is collected by
/// the other, creates racing for one path with `Cond::Absent` leave one
/// winner, and both read one change log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_filers_share_one_postgres_namespace() {
    use kelp_filer::store::postgres::PostgresBackend;
    let Some(pg) = kelp_testkit::Postgres::start_or_skip() else {
        return;
    };
    let cluster = Cluster::start(1, kelp_core::SecurityConfig::default()).await;
    let mut filers = Vec::new();
    for owner in ["filer-a", "filer-b"] {
        let store = std::sync::Arc::new(PostgresBackend::connect(&pg.url()).await.unwrap());
        let opts = FilerOptions {
            owner: owner.into(),
            ..small_chunks()
        };
        filers.push(
            kelp_filer::Filer::open(store, client(&cluster), opts)
                .await
                .unwrap(),
        );
    }
    let (a, b) = (&filers[0], &filers[1]);
    assert!(
        a.store()
            .describe()
            .starts_with("postgres postgres@127.0.0.1:")
    );
    let data = kelp_testkit::blob(7, 200_000);
    let e = write(a, "/shared/x", &data).await;
    assert!(e.chunks.len() > 1);
    assert_eq!(read_all(b, "/shared/x").await, data);
    write(b, "/shared/y", b"from b").await;
    let names: Vec<String> = a
        .list(&p("/shared"), "", "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["x", "y"]);
    b.delete(&p("/shared/x"), false).await.unwrap();
    assert_eq!(a.lookup(&p("/shared/x")).await.unwrap(), None);
    assert_eq!(a.collect_garbage(1000).await.unwrap(), e.chunks.len());
    let c = client(&cluster);
    for ch in &e.chunks {
        assert!(c.read(&ch.fid).await.unwrap_err().is_not_found());
    }
    // mkdir through both at once: one creates, the other finds it made.
    let one = p("/one");
    let (ra, rb) = tokio::join!(a.mkdir(&one), b.mkdir(&one));
    assert_eq!(ra.unwrap(), rb.unwrap());
    // Creates racing with `Cond::Absent`: one wins.
    use kelp_filer::store::{Cond, Op, Txn};
    let create = || {
        Txn::one(Op::Put {
            path: p("/one/f"),
            entry: kelp_filer::Entry::default(),
            cond: Cond::Absent,
        })
    };
    let (ra, rb) = tokio::join!(a.commit(create()), b.commit(create()));
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    // Both see one change log, numbered once.
    let ea = a.events(0, 100).await.unwrap();
    let eb = b.events(0, 100).await.unwrap();
    let seqs: Vec<u64> = ea.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=ea.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs, eb.iter().map(|e| e.seq).collect::<Vec<_>>());
    let made_one = ea
        .iter()
        .filter(|e| e.old.is_none() && e.new.as_ref().is_some_and(|(p, _)| p.as_str() == "/one"))
        .count();
    assert_eq!(made_one, 1, "/one was created once");
}
