#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_block::fuzzing::snapshot_files_decode(data);
});
