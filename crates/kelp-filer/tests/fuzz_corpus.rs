//! Replays every file under `fuzz/corpus/<target>/` of the filer's fuzz
//! targets through the fuzzer's entry points, so the seeds (and any
//! committed crash reproducers) keep passing on stable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kelp_filer::store::keys::Table;
use kelp_filer::store::{Cond, Event, Lease, Op, Replaced, Rows, Txn, wire};
use kelp_filer::{Chunk, Entry, FilerError, FullPath};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name)
}

#[test]
fn replay_fuzz_corpus() {
    let mut total = 0;
    for (name, run) in kelp_filer::fuzzing::TARGETS {
        let d = dir(name);
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            run(&std::fs::read(e.unwrap().path()).unwrap());
            total += 1;
        }
    }
    assert!(total >= 14, "only {total} corpus files");
}

/// The seeds: one valid record of each kind. `KELP_WRITE_SEEDS=1 cargo
/// test -p kelp-filer --test fuzz_corpus` writes them again.
#[test]
fn seeds_are_valid_records() {
    let mut e = Entry {
        mode: 0o644,
        size: 9,
        mime: "text/plain".into(),
        md5: Some([3; 16]),
        xattrs: BTreeMap::from([("Seaweed-A".to_string(), b"b".to_vec())]),
        ..Default::default()
    };
    e.chunks.push(Chunk {
        fid: "3,01637037d6".into(),
        offset: 0,
        size: 9,
        stored: 9,
        zstd: false,
        mtime_ns: 1,
    });
    let ev = Event {
        seq: 7,
        ts_ns: 5,
        old: None,
        new: Some((FullPath::parse("/a/n").unwrap(), e.clone())),
    };
    let lease = Lease {
        id: 7,
        fid: "3,01637037d6".into(),
        count: 64,
        created_ns: 9,
        owner: "filer-1".into(),
    };
    let dir_entry = Entry::directory("d", 1);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("entry_file", [&[0u8][..], &e.encode()].concat()),
        ("entry_dir", [&[0u8][..], &dir_entry.encode()].concat()),
        ("event_create", [&[1u8][..], &ev.encode()].concat()),
        ("lease", [&[2u8][..], &lease.encode()].concat()),
        ("entry_truncated", [&[0u8][..], &e.encode()[..20]].concat()),
        ("empty", vec![]),
    ];
    check_seeds("filer_records_decode", seeds);
}

/// The store wire format's seeds: each request and answer once.
#[test]
fn wire_seeds_are_valid_bodies() {
    let mut e = Entry {
        name: "k".into(),
        mode: 0o644,
        size: 9,
        md5: Some([3; 16]),
        ..Default::default()
    };
    e.chunks.push(Chunk {
        fid: "3,01637037d6".into(),
        offset: 0,
        size: 9,
        stored: 9,
        zstd: false,
        mtime_ns: 1,
    });
    let path = |s: &str| FullPath::parse(s).unwrap();
    let txn = Txn {
        ops: vec![
            Op::Put {
                path: path("/buckets/b/k"),
                entry: e.clone(),
                cond: Cond::Unchanged(Box::new(e.clone())),
            },
            Op::Delete {
                path: path("/buckets/b/old"),
                cond: Cond::Present,
                recursive: false,
            },
            Op::Rename {
                from: path("/a"),
                to: path("/b"),
            },
            Op::PutLease(Lease {
                id: 7,
                fid: "3,01637037d6".into(),
                count: 64,
                created_ns: 9,
                owner: "filer-1".into(),
            }),
            Op::DropLease(7),
            Op::AddGarbage(vec!["3,01637037d7".into()]),
            Op::DropGarbage(vec![1, 2]),
            Op::DropEvents(vec![3]),
        ],
    };
    let with = |which: u8, body: Vec<u8>| [&[which][..], &body].concat();
    let rows: Result<Rows, FilerError> = Ok(vec![(b"/\0a".to_vec(), e.encode())]);
    let replaced: Result<Replaced, FilerError> = Ok(vec![Some(e.clone()), None]);
    let quota: Result<Replaced, FilerError> = Err(FilerError::Quota {
        dir: "/buckets/b".into(),
        what: "over".into(),
    });
    let value: Result<Option<Vec<u8>>, FilerError> = Ok(Some(b"v".to_vec()));
    let mut v2 = wire::encode_txn(&txn);
    v2[0] = 2;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("get", with(0, wire::encode_get(Table::Refs, b"3,01"))),
        (
            "range",
            with(1, wire::encode_range(Table::Entries, b"/", &[0xff], 1000)),
        ),
        ("commit", with(2, wire::encode_txn(&txn))),
        ("commit_version_2", with(2, v2)),
        ("answer_get", with(3, wire::encode_answer(&value))),
        ("answer_range", with(4, wire::encode_answer(&rows))),
        ("answer_commit", with(5, wire::encode_answer(&replaced))),
        ("answer_quota", with(5, wire::encode_answer(&quota))),
    ];
    check_seeds("filer_store_wire_decode", seeds);
}

/// Each seed is in the target's corpus with exactly these bytes (written
/// there with `KELP_WRITE_SEEDS=1`).
fn check_seeds(target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let d = dir(target);
    for (name, bytes) in seeds {
        let path = d.join(name);
        if std::env::var_os("KELP_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{} is stale",
            path.display()
        );
    }
}
