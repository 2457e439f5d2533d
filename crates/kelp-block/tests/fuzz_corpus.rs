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
