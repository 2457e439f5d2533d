//! Replays every file under `/fuzz/corpus/<target>/` through the same entry
//! point the fuzzer uses, so CI on stable keeps the corpus (seeds and any
//! committed crash reproducers) passing. A target without a corpus folder,
//! or with an empty one, fails: a missing corpus is a mistake, not a skip.

use std::path::{Path, PathBuf};

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name)
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus of {name}: {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(&p).unwrap())
        .collect();
    assert!(!files.is_empty(), "no corpus files under {}", dir.display());
    files
}

#[test]
fn replay_fuzz_corpus() {
    for (name, run) in kelp_needle::fuzzing::TARGETS {
        for input in corpus(name) {
            run(&input);
        }
    }
}

/// The checkpoint seeds include a valid checkpoint, so the replay reaches
/// the decoder's accepting path, not only its refusals.
#[test]
fn checkpoint_corpus_holds_a_valid_checkpoint() {
    let valid = corpus("checkpoint_decode")
        .iter()
        .filter(|b| kelp_needle::checkpoint::decode(b).is_ok())
        .count();
    assert!(valid > 0, "no checkpoint seed decodes");
}
