#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kelp_block::fuzzing::send_stream_decode(data);
});
