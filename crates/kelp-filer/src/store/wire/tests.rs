use super::*;
use crate::entry::Chunk;

fn p(s: &str) -> FullPath {
    FullPath::parse(s).unwrap()
}

fn file(name: &str) -> Entry {
    Entry {
        name: name.into(),
        mode: 0o644,
        size: 3,
        mime: "text/plain".into(),
        chunks: vec![Chunk {
            fid: "3,01637037d6".into(),
            offset: 0,
            size: 3,
            stored: 3,
            zstd: false,
            mtime_ns: 1,
        }],
        ..Default::default()
    }
}

/// One of every operation and condition.
fn every_op() -> Txn {
    Txn {
        ops: vec![
            Op::Put {
                path: p("/a/b.txt"),
                entry: file("b.txt"),
                cond: Cond::Unchanged(Box::new(file("b.txt"))),
            },
            Op::Put {
                path: p("/d"),
                entry: Entry::directory("d", 5),
                cond: Cond::Absent,
            },
            Op::Delete {
                path: p("/a"),
                cond: Cond::Present,
                recursive: true,
            },
            Op::Delete {
                path: p("/x"),
                cond: Cond::Any,
                recursive: false,
            },
            Op::Rename {
                from: p("/a é"),
                to: p("/z/y"),
            },
            Op::PutLease(Lease {
                id: 9,
                fid: "3,01637037d6".into(),
                count: 64,
                created_ns: 7,
                owner: "filer-1".into(),
            }),
            Op::DropLease(9),
            Op::AddGarbage(vec!["1,02".into(), "4,ff".into()]),
            Op::DropGarbage(vec![1, 2]),
            Op::DropEvents(vec![u64::MAX]),
        ],
    }
}

#[test]
fn requests_round_trip() {
    let txn = every_op();
    let b = encode_txn(&txn);
    let back = decode_txn(&b).unwrap();
    assert_eq!(format!("{:?}", back), format!("{:?}", txn));
    assert_eq!(encode_txn(&back), b);

    let g = encode_get(Table::Refs, b"3,01");
    assert_eq!(decode_get(&g).unwrap(), (Table::Refs, b"3,01".to_vec()));
    let r = encode_range(Table::Entries, b"", &[0xff; 3], u64::MAX);
    assert_eq!(
        decode_range(&r).unwrap(),
        (Table::Entries, vec![], vec![0xff; 3], u64::MAX)
    );
}

/// The bytes of version 1 never drift: a filer and a gateway of two
/// releases must understand each other.
#[test]
fn golden_bytes() {
    let hex = |b: Vec<u8>| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(encode_get(Table::Leases, b"k")), "0104010000006b");
    assert_eq!(
        hex(encode_range(Table::Meta, b"a", b"b", 2)),
        "0106010000006101000000620200000000000000"
    );
    let txn = Txn {
        ops: vec![
            Op::Rename {
                from: p("/a"),
                to: p("/b"),
            },
            Op::DropLease(3),
        ],
    };
    assert_eq!(
        hex(encode_txn(&txn)),
        "01020000000202002f6102002f62040300000000000000"
    );
    let a: Result<Option<Vec<u8>>, FilerError> = Err(FilerError::NotFound("/x".into()));
    assert_eq!(hex(encode_answer(&a)), "010101020000002f78");
}

#[test]
fn answers_round_trip_with_their_error_variant() {
    let v: Result<Option<Vec<u8>>, FilerError> = Ok(Some(b"v".to_vec()));
    assert_eq!(
        decode_answer::<Option<Vec<u8>>>(&encode_answer(&v))
            .unwrap()
            .unwrap(),
        Some(b"v".to_vec())
    );
    let rows: Rows = vec![(b"k".to_vec(), b"v".to_vec()), (vec![], vec![])];
    let back = decode_answer::<Rows>(&encode_answer(&Ok(rows.clone()))).unwrap();
    assert_eq!(back.unwrap(), rows);
    let rep: Replaced = vec![None, Some(file("f"))];
    let back = decode_answer::<Replaced>(&encode_answer(&Ok(rep.clone()))).unwrap();
    assert_eq!(back.unwrap(), rep);
    let errors = [
        FilerError::BadPath("a".into()),
        FilerError::NotFound("b".into()),
        FilerError::Exists("c".into()),
        FilerError::NotDirectory("d".into()),
        FilerError::IsDirectory("e".into()),
        FilerError::NotEmpty("f".into()),
        FilerError::Precondition("g".into()),
        FilerError::Quota {
            dir: "/q".into(),
            what: "too big".into(),
        },
        FilerError::BadRequest("h".into()),
        FilerError::Range("i".into()),
        FilerError::Store("j".into()),
        FilerError::Corrupt("k".into()),
        FilerError::Body("l".into()),
        FilerError::ShuttingDown,
    ];
    for e in errors {
        let want = format!("{e:?}");
        let a: Result<Replaced, FilerError> = Err(e);
        let back = decode_answer::<Replaced>(&encode_answer(&a)).unwrap();
        assert_eq!(format!("{:?}", back.unwrap_err()), want);
    }
}

#[test]
fn refuses_truncation_trailing_bytes_and_other_versions() {
    let b = encode_txn(&every_op());
    for cut in 0..b.len() {
        assert!(decode_txn(&b[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = b.clone();
    long.push(0);
    assert!(decode_txn(&long).is_err());
    let mut v2 = b;
    v2[0] = 2;
    let e = decode_txn(&v2).unwrap_err();
    assert_eq!(e, WireError::Version(2));
    assert!(e.to_string().contains("version 1"), "{e}");

    let a: Result<Replaced, FilerError> = Ok(vec![Some(file("f"))]);
    let b = encode_answer(&a);
    for cut in 0..b.len() {
        assert!(
            decode_answer::<Replaced>(&b[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn hostile_counts_do_not_allocate() {
    // A txn claiming 4 billion ops, rows or ids, with nothing behind them.
    assert!(decode_txn(&[1, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(decode_txn(&[1, 1, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(decode_answer::<Rows>(&[1, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(decode_answer::<Rows>(&[1, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn an_unnormalised_path_is_refused() {
    let mut b = vec![WIRE_VERSION, 1, 0, 0, 0, 2];
    b.extend_from_slice(&5u16.to_le_bytes());
    b.extend_from_slice(b"//a//");
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(b"/b");
    assert!(decode_txn(&b).is_err());
}
