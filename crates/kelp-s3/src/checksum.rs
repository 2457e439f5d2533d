//! Additional checksums (`x-amz-checksum-*`): CRC32, CRC32C, SHA-1, SHA-256.
//!
//! On the wire each is the base64 of the big-endian digest, in a header
//! (`x-amz-checksum-crc32: 6U9rTA==`) or an aws-chunked trailer
//! (`x-amz-checksum-crc32:6U9rTA==`), named by `x-amz-trailer`.
//! CRC64NVME is recognised by name but not computed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::digest;

use crate::error::{S3Error, S3ErrorCode, S3Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
    /// Known but not verified here.
    Crc64Nvme,
}

impl ChecksumAlgorithm {
    /// From a header or trailer name (`x-amz-checksum-crc32`), any case.
    pub fn from_header_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase();
        Self::from_name(n.strip_prefix("x-amz-checksum-")?)
    }

    /// From `x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm` values.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "crc32" => Self::Crc32,
            "crc32c" => Self::Crc32c,
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "crc64nvme" => Self::Crc64Nvme,
            _ => return None,
        })
    }

    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
        }
    }

    /// The XML element name (`ChecksumCRC32`).
    pub fn xml_name(self) -> &'static str {
        match self {
            Self::Crc32 => "ChecksumCRC32",
            Self::Crc32c => "ChecksumCRC32C",
            Self::Sha1 => "ChecksumSHA1",
            Self::Sha256 => "ChecksumSHA256",
            Self::Crc64Nvme => "ChecksumCRC64NVME",
        }
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Crc64Nvme => 8,
        }
    }
}

/// A checksum value as sent: algorithm and raw digest bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub value: Vec<u8>,
}

impl Checksum {
    /// Parses the base64 value; `InvalidRequest` if it is not the right length.
    pub fn parse(algorithm: ChecksumAlgorithm, b64: &str) -> S3Result<Self> {
        match B64.decode(b64.trim()) {
            Ok(value) if value.len() == algorithm.digest_len() => Ok(Checksum { algorithm, value }),
            _ => Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("Value for {} header is invalid.", algorithm.header_name()),
            )),
        }
    }

    pub fn to_base64(&self) -> String {
        B64.encode(&self.value)
    }
}

/// Computes a checksum as data streams by.
pub enum Checksummer {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Digest(ChecksumAlgorithm, Box<digest::Context>),
    /// Not computed (CRC64NVME).
    Unsupported(ChecksumAlgorithm),
}

impl Checksummer {
    pub fn new(a: ChecksumAlgorithm) -> Self {
        match a {
            ChecksumAlgorithm::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => Self::Crc32c(0),
            ChecksumAlgorithm::Sha1 => Self::Digest(
                a,
                Box::new(digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY)),
            ),
            ChecksumAlgorithm::Sha256 => {
                Self::Digest(a, Box::new(digest::Context::new(&digest::SHA256)))
            }
            ChecksumAlgorithm::Crc64Nvme => Self::Unsupported(a),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Digest(_, d) => d.update(data),
            Self::Unsupported(_) => {}
        }
    }

    /// The digest, or `None` for an algorithm not computed here.
    pub fn finish(self) -> Option<Checksum> {
        let (algorithm, value) = match self {
            Self::Crc32(h) => (
                ChecksumAlgorithm::Crc32,
                h.finalize().to_be_bytes().to_vec(),
            ),
            Self::Crc32c(c) => (ChecksumAlgorithm::Crc32c, c.to_be_bytes().to_vec()),
            Self::Digest(a, d) => (a, d.finish().as_ref().to_vec()),
            Self::Unsupported(_) => return None,
        };
        Some(Checksum { algorithm, value })
    }

    /// Checks the data against `want`: `BadDigest` on mismatch; an
    /// algorithm not computed here passes.
    pub fn verify(self, want: &Checksum) -> S3Result<()> {
        match self.finish() {
            Some(got) if got.value != want.value => Err(S3Error::with_message(
                S3ErrorCode::BadDigest,
                format!(
                    "The {} you specified did not match the calculated checksum.",
                    want.algorithm.header_name()
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(a: ChecksumAlgorithm, d: &[u8]) -> String {
        let mut c = Checksummer::new(a);
        c.update(d);
        c.finish().unwrap().to_base64()
    }

    #[test]
    fn known_values() {
        // CRC32("123456789") = 0xCBF43926, CRC32C = 0xE3069283 (check values).
        assert_eq!(
            of(ChecksumAlgorithm::Crc32, b"123456789"),
            B64.encode(0xCBF4_3926u32.to_be_bytes())
        );
        assert_eq!(
            of(ChecksumAlgorithm::Crc32c, b"123456789"),
            B64.encode(0xE306_9283u32.to_be_bytes())
        );
        assert_eq!(
            of(ChecksumAlgorithm::Sha1, b""),
            "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
        );
        assert_eq!(
            of(ChecksumAlgorithm::Sha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn parse_and_verify() {
        let want = Checksum::parse(
            ChecksumAlgorithm::Crc32,
            &of(ChecksumAlgorithm::Crc32, b"abc"),
        )
        .unwrap();
        let mut c = Checksummer::new(ChecksumAlgorithm::Crc32);
        c.update(b"ab");
        c.update(b"c");
        c.verify(&want).unwrap();
        let mut c = Checksummer::new(ChecksumAlgorithm::Crc32);
        c.update(b"abd");
        assert_eq!(c.verify(&want).unwrap_err().code, S3ErrorCode::BadDigest);
        assert!(Checksum::parse(ChecksumAlgorithm::Crc32, "AAAAAAAA").is_err());
        assert!(Checksum::parse(ChecksumAlgorithm::Crc32, "!!").is_err());
        assert_eq!(
            ChecksumAlgorithm::from_header_name("X-Amz-Checksum-CRC32C"),
            Some(ChecksumAlgorithm::Crc32c)
        );
        assert_eq!(
            ChecksumAlgorithm::from_header_name("x-amz-checksum-md5"),
            None
        );
    }
}
