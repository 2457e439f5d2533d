//! Entry points for the fuzz targets in `fuzz/` (not API). Each must
//! return without panicking for every input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::checksum::ChecksumAlgorithm;
use crate::chunked::{ChunkedConfig, ChunkedDecoder};
use crate::cors::CorsConfiguration;
use crate::request::{Addressing, HttpRequest, classify};
use crate::sigv4::{PayloadMode, SecretKey, SignedRequest, SigningContext, verify};
use crate::xml::requests;

fn creds(ak: &str) -> Option<SecretKey> {
    (ak == "AKIAIOSFODNN7EXAMPLE")
        .then(|| SecretKey("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()))
}

fn clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_369_353_600)
}

/// `METHOD\npath\nquery\nName: value\n…` → classify and verify.
pub fn request_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let (Some(m), Some(path), Some(query)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let Ok(method) = Method::from_bytes(m.as_bytes()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for l in lines.take(64) {
        if let Some((n, v)) = l.split_once(':')
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_bytes(v.trim().as_bytes()),
            )
        {
            headers.append(n, v);
        }
    }
    let a = Addressing {
        domains: vec!["s3.example.com".into()],
    };
    let _ = classify(
        &HttpRequest {
            method: &method,
            raw_path: path,
            raw_query: query,
            headers: &headers,
        },
        &a,
    );
    let _ = verify(
        &SignedRequest {
            method: method.as_str(),
            raw_path: path,
            raw_query: query,
            headers: &headers,
        },
        clock(),
        &creds,
    );
}

/// Every request-body parser; a CORS document that parses must survive
/// a render/parse round trip unchanged.
pub fn xml_parse(data: &[u8]) {
    let _ = requests::parse_complete_multipart_upload(data);
    let _ = requests::parse_delete(data);
    let _ = requests::parse_tagging(data, requests::MAX_OBJECT_TAGS);
    let _ = requests::parse_tagging(data, requests::MAX_BUCKET_TAGS);
    let _ = requests::parse_versioning(data);
    let _ = requests::parse_create_bucket(data);
    let _ = requests::parse_access_control_policy(data);
    if let Ok(c) = CorsConfiguration::parse(data) {
        let again = CorsConfiguration::parse(c.to_xml().as_bytes());
        assert_eq!(again.as_ref().ok(), Some(&c), "CORS round trip");
    }
}

/// The signing context the chunked seeds use (AWS's published example).
pub fn chunked_context() -> SigningContext {
    SigningContext::new(
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "20130524T000000Z",
        "us-east-1",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    )
}

fn decode(
    cfg: &ChunkedConfig,
    body: &[u8],
    cuts: &[usize],
) -> Result<Vec<u8>, crate::error::S3ErrorCode> {
    let mut d = ChunkedDecoder::new(cfg.clone()).map_err(|e| e.code)?;
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        d.push(&body[start..end]);
        start = end;
        while let Some(b) = d.decode_next().map_err(|e| e.code)? {
            out.extend_from_slice(&b);
        }
        if d.is_done() {
            break;
        }
    }
    d.finish().map_err(|e| e.code)?;
    Ok(out)
}

/// Byte 0: mode (bits 0-1), trailer checksum (bits 2-3), declared length
/// (bit 5), round trip (bit 4); bytes 1..5: split points; rest: the body.
/// Decoding whole and decoding in pieces must agree. In a round trip the
/// rest is data, cut into chunks at the split points and encoded validly
/// (signed, with its checksum trailer): it must decode to itself.
pub fn chunked_decode(data: &[u8]) {
    let [sel, c1, c2, c3, c4, body @ ..] = data else {
        return;
    };
    if sel & 0x10 != 0 {
        return chunked_round_trip(*sel, [*c1, *c2, *c3, *c4], body);
    }
    let mode = match (sel & 3) % 3 {
        0 => PayloadMode::StreamingSigned,
        1 => PayloadMode::StreamingSignedTrailer,
        _ => PayloadMode::StreamingUnsignedTrailer,
    };
    let trailer = match ((sel >> 2) & 3) % 3 {
        0 => None,
        1 => Some(ChecksumAlgorithm::Crc32),
        _ => Some(ChecksumAlgorithm::Crc32c),
    };
    let decoded_length = (sel & 0x20 != 0).then_some((*c1 as u64) << 4);
    let cfg = ChunkedConfig {
        mode,
        signing: Some(chunked_context()),
        decoded_length,
        trailer,
    };
    let n = body.len().max(1);
    let mut cuts: Vec<usize> = [c1, c2, c3, c4]
        .iter()
        .map(|&&c| (c as usize * n / 256).min(body.len()))
        .collect();
    cuts.sort();
    let whole = decode(&cfg, body, &[]);
    let pieces = decode(&cfg, body, &cuts);
    let bytes: Vec<usize> = (1..body.len()).collect();
    let single = if body.len() < 512 {
        decode(&cfg, body, &bytes)
    } else {
        whole.clone()
    };
    assert_eq!(whole, pieces, "split at {cuts:?} changed the result");
    assert_eq!(whole, single, "byte-at-a-time changed the result");
}

fn chunked_round_trip(sel: u8, cuts: [u8; 4], data: &[u8]) {
    let mode = [
        PayloadMode::StreamingSigned,
        PayloadMode::StreamingSignedTrailer,
        PayloadMode::StreamingUnsignedTrailer,
    ][((sel & 3) % 3) as usize];
    let alg = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ][((sel >> 2) & 3) as usize];
    let n = data.len();
    let mut at: Vec<usize> = cuts.iter().map(|&c| c as usize * n / 256).collect();
    at.sort();
    let mut chunks = Vec::new();
    let mut start = 0;
    for &end in at.iter().chain(std::iter::once(&n)) {
        chunks.push(&data[start..end]);
        start = end;
    }
    let ctx = chunked_context();
    let with_trailer = mode != PayloadMode::StreamingSigned;
    let mut sum = crate::checksum::Checksummer::new(alg);
    sum.update(data);
    let value = sum.finish().map(|c| c.to_base64()).unwrap_or_default();
    let trailer = with_trailer.then_some((alg.header_name(), value.as_str()));
    let signing = (mode != PayloadMode::StreamingUnsignedTrailer).then_some(&ctx);
    let body = crate::chunked::encode(&chunks, signing, trailer);
    let cfg = ChunkedConfig {
        mode,
        signing: Some(ctx.clone()),
        decoded_length: Some(n as u64),
        trailer: with_trailer.then_some(alg),
    };
    let mut body_cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize * body.len() / 256)
        .collect();
    body_cuts.sort();
    assert_eq!(
        decode(&cfg, &body, &body_cuts).as_deref(),
        Ok(data),
        "round trip"
    );
}

/// Policy JSON and a POST form built from the input.
pub fn post_policy(data: &[u8]) {
    if let Ok(p) = crate::policy::PostPolicy::parse_json(data) {
        let fields: Vec<(String, String)> = vec![
            ("key".into(), "user/a".into()),
            ("bucket".into(), "b".into()),
            ("content-type".into(), "image/png".into()),
        ];
        let _ = p.check(&fields, clock());
    }
    let fields: Vec<(String, String)> = String::from_utf8_lossy(data)
        .lines()
        .take(32)
        .filter_map(|l| {
            l.split_once('=')
                .map(|(a, b)| (a.to_ascii_lowercase(), b.to_owned()))
        })
        .collect();
    let _ = crate::policy::verify_post_signature(&fields, &creds);
    let body = Bytes::copy_from_slice(data);
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(body)]);
    futures::executor::block_on(async {
        if let Ok(mut up) = crate::post_form::read_post_form(
            stream,
            "multipart/form-data; boundary=X",
            "b",
            clock(),
            &creds,
        )
        .await
        {
            while let Some(Ok(_)) = up.file.next().await {}
        }
    });
}
