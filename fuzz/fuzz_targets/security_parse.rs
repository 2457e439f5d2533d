#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_core::fuzzing::security_parse(data);
});
