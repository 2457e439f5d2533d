//! Replays every file under `/fuzz/corpus/<target>/` through the same entry
//! point the fuzzer uses, so CI on stable keeps the corpus (seeds and any
//! committed crash reproducers) passing.

use std::path::Path;

#[test]
fn replay_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut total = 0;
    for (name, run) in kelp_needle::fuzzing::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                run(&std::fs::read(&path).unwrap());
                total += 1;
            }
        }
    }
    assert!(total > 0, "no corpus files under {}", root.display());
}
