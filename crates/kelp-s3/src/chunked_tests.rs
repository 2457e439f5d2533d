//! aws-chunked tests: the AWS documentation's 66560-byte example, the
//! trailer variants, and every split of the input.

use super::*;
use crate::sigv4::EMPTY_SHA256;
use futures::StreamExt;

const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

fn ctx() -> SigningContext {
    SigningContext::new(SK, "20130524T000000Z", "us-east-1", SEED)
}

fn cfg(mode: PayloadMode, len: Option<u64>, trailer: Option<ChecksumAlgorithm>) -> ChunkedConfig {
    ChunkedConfig {
        mode,
        signing: Some(ctx()),
        decoded_length: len,
        trailer,
    }
}

/// Decodes `body` fed in the given pieces with the push decoder.
fn decode_pieces(c: &ChunkedConfig, body: &[u8], cuts: &[usize]) -> S3Result<Vec<u8>> {
    let mut d = ChunkedDecoder::new(c.clone())?;
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        d.push(&body[start..end]);
        start = end;
        while let Some(b) = d.decode_next()? {
            out.extend_from_slice(&b);
        }
    }
    d.finish()?;
    Ok(out)
}

fn decode_stream(c: &ChunkedConfig, pieces: Vec<Vec<u8>>) -> S3Result<Vec<u8>> {
    let inner = futures::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from(p))));
    let mut s = AwsChunked::new(inner, c.clone())?;
    futures::executor::block_on(async {
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    })
}

#[test]
fn aws_example_66560_bytes() {
    let data = vec![b'a'; 66560];
    let body = encode(&[&data[..65536], &data[65536..]], Some(&ctx()), None);
    assert_eq!(body.len(), 66824, "Content-Length of the published example");
    let text = String::from_utf8_lossy(&body[..90]);
    assert!(text.starts_with(
        "10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    ));
    assert!(String::from_utf8_lossy(&body).ends_with(
        "0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
    ));
    let c = cfg(PayloadMode::StreamingSigned, Some(66560), None);
    assert_eq!(decode_pieces(&c, &body, &[]).unwrap(), data);
    // Splits around every header and a spread of data offsets.
    let mut cuts: Vec<usize> = (0..100).chain(65600..65800).chain(66600..66824).collect();
    cuts.extend((0..66824).step_by(997));
    for cut in cuts {
        assert_eq!(
            decode_pieces(&c, &body, &[cut]).unwrap().len(),
            66560,
            "cut {cut}"
        );
    }
    let pieces: Vec<Vec<u8>> = body.chunks(7).map(<[u8]>::to_vec).collect();
    assert_eq!(decode_stream(&c, pieces).unwrap(), data);
}

fn small_bodies() -> Vec<(ChunkedConfig, Vec<u8>, Vec<u8>)> {
    let data = b"hello, chunked world! 0123456789".to_vec();
    let parts: [&[u8]; 3] = [&data[..5], &data[5..6], &data[6..]];
    let crc = {
        let mut c = Checksummer::new(ChecksumAlgorithm::Crc32);
        c.update(&data);
        c.finish().unwrap().to_base64()
    };
    let crc32c = {
        let mut c = Checksummer::new(ChecksumAlgorithm::Crc32c);
        c.update(&data);
        c.finish().unwrap().to_base64()
    };
    let n = Some(data.len() as u64);
    vec![
        (
            cfg(PayloadMode::StreamingSigned, n, None),
            encode(&parts, Some(&ctx()), None),
            data.clone(),
        ),
        (
            ChunkedConfig {
                mode: PayloadMode::StreamingUnsignedTrailer,
                signing: None,
                decoded_length: n,
                trailer: Some(ChecksumAlgorithm::Crc32),
            },
            encode(&parts, None, Some(("x-amz-checksum-crc32", &crc))),
            data.clone(),
        ),
        (
            cfg(
                PayloadMode::StreamingSignedTrailer,
                n,
                Some(ChecksumAlgorithm::Crc32c),
            ),
            encode(
                &parts,
                Some(&ctx()),
                Some(("x-amz-checksum-crc32c", &crc32c)),
            ),
            data.clone(),
        ),
        (
            cfg(PayloadMode::StreamingSigned, Some(0), None),
            encode(&[], Some(&ctx()), None),
            vec![],
        ),
    ]
}

#[test]
fn every_split_of_small_bodies() {
    for (c, body, data) in small_bodies() {
        for i in 0..=body.len() {
            assert_eq!(
                decode_pieces(&c, &body, &[i]).unwrap(),
                data,
                "cut {i} of {:?}",
                c.mode
            );
            for j in i..=body.len() {
                assert_eq!(decode_pieces(&c, &body, &[i, j]).unwrap(), data);
            }
        }
        let bytes: Vec<Vec<u8>> = body.iter().map(|b| vec![*b]).collect();
        assert_eq!(decode_stream(&c, bytes).unwrap(), data);
    }
}

#[test]
fn refusals() {
    use S3ErrorCode::*;
    let bodies = small_bodies();
    let (signed_cfg, signed, _) = &bodies[0];
    let (unsigned_cfg, _, _) = &bodies[1];
    let code = |c: &ChunkedConfig, b: &[u8]| decode_pieces(c, b, &[]).unwrap_err().code;
    // Truncated anywhere.
    for i in 0..signed.len() {
        assert!(
            decode_pieces(signed_cfg, &signed[..i], &[]).is_err(),
            "truncated at {i}"
        );
    }
    // A flipped data byte breaks the chunk signature.
    let mut b = signed.clone();
    let at = b.windows(5).position(|w| w == b"hello").unwrap();
    b[at] = b'H';
    assert_eq!(code(signed_cfg, &b), SignatureDoesNotMatch);
    // Wrong seed.
    let mut c2 = signed_cfg.clone();
    c2.signing = Some(SigningContext::new(
        SK,
        "20130524T000000Z",
        "us-east-1",
        EMPTY_SHA256,
    ));
    assert_eq!(code(&c2, signed), SignatureDoesNotMatch);
    // Declared length mismatch.
    let mut c3 = signed_cfg.clone();
    c3.decoded_length = Some(31);
    assert_eq!(code(&c3, signed), IncompleteBody);
    c3.decoded_length = Some(33);
    assert_eq!(code(&c3, signed), IncompleteBody);
    // Bad trailer checksum, missing trailer.
    let bad = encode(&[b"abc"], None, Some(("x-amz-checksum-crc32", "AAAAAA==")));
    let mut c4 = unsigned_cfg.clone();
    c4.decoded_length = Some(3);
    assert_eq!(code(&c4, &bad), BadDigest);
    assert_eq!(code(&c4, &encode(&[b"abc"], None, None)), IncompleteBody);
    // Hostile headers: huge size, long line, not hex, no signature.
    assert_eq!(
        code(signed_cfg, b"2000000;chunk-signature=00\r\n"),
        InvalidRequest
    );
    assert_eq!(code(signed_cfg, &[b'1'; 300]), InvalidRequest);
    assert_eq!(
        code(signed_cfg, b"zz;chunk-signature=00\r\n"),
        InvalidRequest
    );
    assert_eq!(code(signed_cfg, b"3\r\nabc\r\n"), InvalidRequest);
    assert_eq!(code(unsigned_cfg, b"3\r\nabcX\r\n"), InvalidRequest);
    // Trailers in a stream without them.
    let mut c5 = unsigned_cfg.clone();
    c5.mode = PayloadMode::StreamingSigned;
    c5.signing = Some(ctx());
    let with_trailer = encode(
        &[b"abc"],
        Some(&ctx()),
        Some(("x-amz-checksum-crc32", "AAAAAA==")),
    );
    c5.decoded_length = Some(3);
    c5.trailer = None;
    assert_eq!(code(&c5, &with_trailer), InvalidRequest);
    // Signed trailer with a forged signature.
    let (st_cfg, st, _) = &bodies[2];
    let s = String::from_utf8(st.clone()).unwrap();
    let i = s.find("x-amz-trailer-signature:").unwrap() + 24;
    let mut forged = st.clone();
    forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
    assert_eq!(code(st_cfg, &forged), SignatureDoesNotMatch);
    // Not a streaming mode.
    assert!(
        ChunkedDecoder::new(ChunkedConfig {
            mode: PayloadMode::Unsigned,
            signing: None,
            decoded_length: None,
            trailer: None
        })
        .is_err()
    );
}

#[test]
fn random_splits() {
    // A small xorshift so the test needs no extra crate.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let parts: Vec<&[u8]> = data.chunks(1111).collect();
    let body = encode(&parts, Some(&ctx()), None);
    let c = cfg(PayloadMode::StreamingSigned, Some(5000), None);
    for _ in 0..200 {
        let mut cuts: Vec<usize> = (0..rnd(20)).map(|_| rnd(body.len())).collect();
        cuts.sort();
        assert_eq!(decode_pieces(&c, &body, &cuts).unwrap(), data);
    }
}
