//! File id text form, `<vid>,<key hex><cookie 8 hex>[_N]`.
//!
//! Formatting writes the key as 8 big-endian bytes followed by the cookie as
//! 4, strips leading zero bytes of the key (so the key part has an even
//! number of hex digits, possibly none) and prints lowercase hex.
//! Parsing takes everything after the first comma: the last 8 hex digits are
//! the cookie, the rest (1..=16 digits) the key. An optional `_N` suffix adds
//! N to the key; it addresses the extra ids reserved by `count=N` assigns.

use std::fmt;
use std::str::FromStr;

use crate::{Cookie, NeedleId, VolumeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub volume_id: VolumeId,
    pub key: NeedleId,
    pub cookie: Cookie,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileIdError {
    #[error("file id {0:?} has no comma between volume id and key")]
    NoComma(String),
    #[error("volume id {0:?} is not a number")]
    BadVolumeId(String),
    #[error("key and cookie {0:?} must be 9 to 24 hex digits")]
    BadLength(String),
    #[error("key and cookie {0:?} are not hexadecimal")]
    NotHex(String),
    #[error("key delta {0:?} is not a number")]
    BadDelta(String),
}

impl FileId {
    pub fn new(volume_id: VolumeId, key: NeedleId, cookie: Cookie) -> Self {
        Self {
            volume_id,
            key,
            cookie,
        }
    }

    /// The part after the comma: key hex (leading zero bytes stripped) and cookie.
    pub fn key_cookie_hex(&self) -> String {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&self.key.to_be_bytes());
        bytes[8..].copy_from_slice(&self.cookie.to_be_bytes());
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(8).min(8);
        let mut out = String::with_capacity(24);
        for b in &bytes[first..] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Parses the part after the comma (`<key hex><cookie hex>[_N]`).
    pub fn parse_key_cookie(volume_id: VolumeId, s: &str) -> Result<Self, FileIdError> {
        let (hex, delta) = match s.split_once('_') {
            Some((hex, delta)) => {
                let delta: u64 = delta
                    .parse()
                    .map_err(|_| FileIdError::BadDelta(delta.to_string()))?;
                (hex, delta)
            }
            None => (s, 0),
        };
        if hex.len() <= 8 || hex.len() > 24 {
            return Err(FileIdError::BadLength(hex.to_string()));
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FileIdError::NotHex(hex.to_string()));
        }
        let split = hex.len() - 8;
        let key = u64::from_str_radix(&hex[..split], 16)
            .map_err(|_| FileIdError::NotHex(hex.to_string()))?;
        let cookie = u32::from_str_radix(&hex[split..], 16)
            .map_err(|_| FileIdError::NotHex(hex.to_string()))?;
        Ok(Self::new(volume_id, key.wrapping_add(delta), cookie))
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.volume_id, self.key_cookie_hex())
    }
}

impl FromStr for FileId {
    type Err = FileIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (vid, rest) = s
            .split_once(',')
            .ok_or_else(|| FileIdError::NoComma(s.to_string()))?;
        let volume_id: VolumeId = vid
            .parse()
            .map_err(|_| FileIdError::BadVolumeId(vid.to_string()))?;
        Self::parse_key_cookie(volume_id, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_seaweedfs() {
        assert_eq!(FileId::new(6, 1, 0x1848da59).to_string(), "6,011848da59");
        assert_eq!(FileId::new(3, 1, 0x637037d6).to_string(), "3,01637037d6");
        assert_eq!(FileId::new(7, 0, 0x00000001).to_string(), "7,00000001");
        assert_eq!(
            FileId::new(1, 0x0102030405060708, 0xdeadbeef).to_string(),
            "1,0102030405060708deadbeef"
        );
    }

    #[test]
    fn parses_forms_and_delta() {
        let f: FileId = "3,01637037d6".parse().unwrap();
        assert_eq!(f, FileId::new(3, 1, 0x637037d6));
        let f: FileId = "3,01637037d6_2".parse().unwrap();
        assert_eq!(f.key, 3);
        let f: FileId = "3,1637037d6".parse().unwrap();
        assert_eq!(f.key, 1);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "3",
            "3,",
            "x,01637037d6",
            "3,637037d6",
            "3,zz637037d6",
            "3,01637037d6_x",
            "3,0102030405060708090a0b0c0d",
            "-1,01637037d6",
        ] {
            assert!(bad.parse::<FileId>().is_err(), "{bad:?} should not parse");
        }
    }

    proptest! {
        // Key 0 formats as the bare cookie, which (as in SeaweedFS) does not
        // parse back; sequencers start at 1, so it never names a real file.
        #[test]
        fn round_trips(vid in any::<u32>(), key in 1..=u64::MAX, cookie in any::<u32>()) {
            let f = FileId::new(vid, key, cookie);
            prop_assert_eq!(f.to_string().parse::<FileId>().unwrap(), f);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = s.parse::<FileId>();
        }
    }
}
