//! Replays every file under `/fuzz/corpus/<target>/` for kelp-core's fuzz
//! targets through the entry point the fuzzer uses. A target without a
//! corpus folder fails: a missing corpus is a mistake, not a skip.

use std::path::Path;

#[test]
fn replay_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, run) in kelp_core::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus of {name}: {}: {e}", dir.display()));
        let mut files = 0;
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                run(&std::fs::read(&path).unwrap());
                files += 1;
            }
        }
        assert!(files > 0, "no corpus files under {}", dir.display());
    }
}

/// The corpus seeds include a valid token, so the replay reaches the
/// accepting branch, not only the refusals.
#[test]
fn corpus_holds_a_token_that_verifies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/token_verify");
    let key = kelp_core::JwtKey::new(kelp_core::fuzzing::TOKEN_KEY, 0);
    let any_valid = std::fs::read_dir(&dir).unwrap().any(|e| {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        key.verify(Some(&text), kelp_core::fuzzing::TOKEN_FID)
            .is_ok()
    });
    assert!(any_valid, "no seed in {} verifies", dir.display());
}
