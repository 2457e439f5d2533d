//! Runs the fuzz entry points over the seed corpus in `fuzz/corpus/s3_*`,
//! so the seeds stay valid and stable CI exercises the same code.

use std::path::PathBuf;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn request_parse_seeds() {
    for (_, d) in seeds("s3_request_parse") {
        kelp_s3::fuzzing::request_parse(&d);
    }
}

#[test]
fn xml_parse_seeds() {
    for (_, d) in seeds("s3_xml_parse") {
        kelp_s3::fuzzing::xml_parse(&d);
    }
}

#[test]
fn chunked_seeds_are_valid_bodies() {
    use kelp_s3::checksum::ChecksumAlgorithm;
    use kelp_s3::chunked::{ChunkedConfig, ChunkedDecoder};
    use kelp_s3::sigv4::PayloadMode;
    for (name, d) in seeds("s3_chunked_decode") {
        kelp_s3::fuzzing::chunked_decode(&d);
        if d[0] & 0x10 != 0 {
            continue; // a round-trip seed: data, not an encoded body
        }
        // The seeds are well-formed: decoding must succeed.
        let sel = d[0];
        let mode = [
            PayloadMode::StreamingSigned,
            PayloadMode::StreamingSignedTrailer,
            PayloadMode::StreamingUnsignedTrailer,
        ][((sel & 3) % 3) as usize];
        let trailer = [
            None,
            Some(ChecksumAlgorithm::Crc32),
            Some(ChecksumAlgorithm::Crc32c),
        ][(((sel >> 2) & 3) % 3) as usize];
        let mut dec = ChunkedDecoder::new(ChunkedConfig {
            mode,
            signing: Some(kelp_s3::fuzzing::chunked_context()),
            decoded_length: None,
            trailer,
        })
        .unwrap();
        dec.push(&d[5..]);
        while dec
            .decode_next()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .is_some()
        {}
        dec.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn post_policy_seeds() {
    for (_, d) in seeds("s3_post_policy") {
        kelp_s3::fuzzing::post_policy(&d);
    }
}
