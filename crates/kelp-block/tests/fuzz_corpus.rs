//! Replays every file under `/fuzz/corpus/<target>/` for kelp-block's fuzz
//! targets through the same entry points the fuzzer uses, so CI on stable
//! keeps the seeds (and any committed crash reproducers) passing.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kelp_block::frame::{FrameDecoder, Message};

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut out = vec![];
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn replay_fuzz_corpus() {
    let mut total = 0;
    for (name, run) in kelp_block::fuzzing::TARGETS {
        for input in corpus(name) {
            run(&input);
            total += 1;
        }
    }
    assert!(total >= 10, "only {total} corpus files");
}

/// The frame seeds are real frames: each decodes (all but the truncated
/// one), so the fuzzer starts from valid inputs.
#[test]
fn frame_seeds_decode() {
    let mut decoded = 0;
    for input in corpus("block_frame_decode") {
        let mut buf = BytesMut::from(&input[1..]);
        while let Ok(Some(m)) = FrameDecoder.decode(&mut buf) {
            assert_eq!(
                Message::decode(Bytes::from(m.to_bytes().unwrap())).unwrap(),
                m
            );
            decoded += 1;
        }
    }
    assert!(
        decoded >= 16,
        "only {decoded} frames decoded from the seeds"
    );
}

/// Seeds of `snapshot_files_decode`: one valid input of each kind (the
/// selector byte, then a catalog, a receive state, a resume token, a
/// saved-version file, a slot context, a clone's origin file, a clone
/// hold). `KELP_WRITE_FUZZ_SEEDS=1` writes
/// them; otherwise the test checks that each kind's seed is there and
/// decodes.
#[test]
fn snapshot_seeds_cover_every_kind() {
    use kelp_block::catalog::{Catalog, Snapshot};
    use kelp_block::context::{SLOT_DATA, SlotCtx, block_crc};
    use kelp_block::saved::{SavedStore, saved_path};
    use kelp_block::transfer::{ReceiveState, ResumeToken};
    use kelp_storage::{Memory, Storage};

    let mut cat = Catalog::default();
    for (i, name) in ["hourly-1", "hourly-2"].iter().enumerate() {
        cat.add(Snapshot {
            name: name.to_string(),
            guid: 0x1234 + i as u128,
            flush: 3 + i as u64,
            created: 1_800_000_000,
        })
        .unwrap();
    }
    let state = ReceiveState {
        from: Some(5),
        to: 6,
        name: "s2".into(),
        next_block: 77,
    };
    let token = ResumeToken {
        from: None,
        to: 9,
        next_block: 12,
    };
    let st = Storage::new(Memory::new());
    let ext = std::path::Path::new("/e.ext");
    let mut s = SavedStore::create(&st, ext, 0, 512).unwrap();
    let d = vec![7u8; 512];
    s.append(3, 2, kelp_block::BlockContext::Data(block_crc(&d)), &d)
        .unwrap();
    s.append(4, 2, kelp_block::BlockContext::Zero, &[]).unwrap();
    drop(s);
    let saved = st.read(&saved_path(ext)).unwrap();
    let slot = SlotCtx {
        seq: 4,
        crc: block_crc(&d),
        kind: SLOT_DATA,
        birth: 9,
    }
    .encode();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("catalog", [&[0u8][..], &cat.encode()].concat()),
        ("receive_state", [&[1u8][..], &state.encode()].concat()),
        (
            "resume_token",
            [&[2u8][..], token.encode().as_bytes()].concat(),
        ),
        ("saved_versions", [&[3u8][..], &saved].concat()),
        ("slot_context", [&[4u8][..], &slot].concat()),
        (
            "clone_origin",
            [
                &[5u8][..],
                &kelp_block::link::Origin {
                    clone_id: 0xc1,
                    origin_uuid: [9; 16],
                    flush: 12,
                    guid: 0x1234,
                    name: "hourly-1".into(),
                    dir: "/var/lib/kelp/vol/r0".into(),
                }
                .encode()
                .unwrap(),
            ]
            .concat(),
        ),
        (
            "clone_hold",
            [
                &[6u8][..],
                &kelp_block::link::Hold {
                    clone_id: 0xc1,
                    guid: 0x1234,
                    clones: vec!["/c/0".into(), "/c/1".into(), "/c/2".into()],
                }
                .encode()
                .unwrap(),
            ]
            .concat(),
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/snapshot_files_decode");
    if std::env::var_os("KELP_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        return;
    }
    for (name, bytes) in &seeds {
        let on_disk = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("seed {name} is missing ({e}); write it with KELP_WRITE_FUZZ_SEEDS=1")
        });
        assert_eq!(
            &on_disk, bytes,
            "seed {name} is not what today's code writes"
        );
    }
}
