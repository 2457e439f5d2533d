#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_needle::fuzzing::file_id_parse(data);
});
