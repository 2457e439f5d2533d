#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_s3::fuzzing::post_policy(data);
});
