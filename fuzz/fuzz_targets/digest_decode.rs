#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_needle::fuzzing::digest_decode(data);
});
