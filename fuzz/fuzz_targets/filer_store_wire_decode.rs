#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_filer::fuzzing::filer_store_wire_decode(data);
});
