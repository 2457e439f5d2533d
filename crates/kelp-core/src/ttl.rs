//! Time to live, SeaweedFS style: a count and a unit, written `3m`, `4h`,
//! `5d`, `6w`, `7M` (30 days), `8y` (365 days); a bare number means minutes.
//! On disk it is two bytes, `count, unit` (unit 0 = no TTL); in gRPC it is
//! the u32 `count << 8 | unit`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TtlUnit {
    #[default]
    Empty = 0,
    Minute = 1,
    Hour = 2,
    Day = 3,
    Week = 4,
    Month = 5,
    Year = 6,
}

impl TtlUnit {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Empty,
            1 => Self::Minute,
            2 => Self::Hour,
            3 => Self::Day,
            4 => Self::Week,
            5 => Self::Month,
            6 => Self::Year,
            _ => return None,
        })
    }

    fn seconds(self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
            Self::Month => 30 * 86_400,
            Self::Year => 365 * 86_400,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Self::Empty => "",
            Self::Minute => "m",
            Self::Hour => "h",
            Self::Day => "d",
            Self::Week => "w",
            Self::Month => "M",
            Self::Year => "y",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ttl {
    pub count: u8,
    pub unit: TtlUnit,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("ttl {0:?} must be a number 1..255 followed by one of m h d w M y")]
    Syntax(String),
}

impl Ttl {
    pub const EMPTY: Ttl = Ttl {
        count: 0,
        unit: TtlUnit::Empty,
    };

    pub fn is_empty(self) -> bool {
        self.count == 0 || self.unit == TtlUnit::Empty
    }

    /// Decodes the two on-disk bytes; unknown units decode as no TTL, since
    /// an unreadable TTL must never make data expire.
    pub fn from_bytes(b: [u8; 2]) -> Self {
        match TtlUnit::from_u8(b[1]) {
            Some(unit) if b[0] != 0 && unit != TtlUnit::Empty => Self { count: b[0], unit },
            _ => Self::EMPTY,
        }
    }

    pub fn to_bytes(self) -> [u8; 2] {
        if self.is_empty() {
            [0, 0]
        } else {
            [self.count, self.unit as u8]
        }
    }

    pub fn to_u32(self) -> u32 {
        let [c, u] = self.to_bytes();
        (c as u32) << 8 | u as u32
    }

    pub fn from_u32(v: u32) -> Self {
        Self::from_bytes([(v >> 8) as u8, v as u8])
    }

    pub fn seconds(self) -> u64 {
        self.count as u64 * self.unit.seconds()
    }
}

impl FromStr for Ttl {
    type Err = TtlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::EMPTY);
        }
        let err = || TtlError::Syntax(s.to_string());
        let (digits, unit) = match s.as_bytes()[s.len() - 1] {
            b'0'..=b'9' => (s, TtlUnit::Minute),
            b'm' => (&s[..s.len() - 1], TtlUnit::Minute),
            b'h' => (&s[..s.len() - 1], TtlUnit::Hour),
            b'd' => (&s[..s.len() - 1], TtlUnit::Day),
            b'w' => (&s[..s.len() - 1], TtlUnit::Week),
            b'M' => (&s[..s.len() - 1], TtlUnit::Month),
            b'y' => (&s[..s.len() - 1], TtlUnit::Year),
            _ => return Err(err()),
        };
        let count: u8 = digits.parse().map_err(|_| err())?;
        if count == 0 {
            return Ok(Self::EMPTY);
        }
        Ok(Self { count, unit })
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return Ok(());
        }
        write!(f, "{}{}", self.count, self.unit.letter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (s, bytes, secs) in [
            ("3m", [3, 1], 180),
            ("4h", [4, 2], 14_400),
            ("5d", [5, 3], 432_000),
            ("1w", [1, 4], 604_800),
            ("7M", [7, 5], 7 * 30 * 86_400),
            ("8y", [8, 6], 8 * 365 * 86_400),
        ] {
            let t: Ttl = s.parse().unwrap();
            assert_eq!(t.to_bytes(), bytes);
            assert_eq!(t.seconds(), secs);
            assert_eq!(t.to_string(), s);
            assert_eq!(Ttl::from_bytes(bytes), t);
            assert_eq!(Ttl::from_u32(t.to_u32()), t);
        }
        assert_eq!("15".parse::<Ttl>().unwrap().to_string(), "15m");
        assert!("".parse::<Ttl>().unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["x", "3x", "300d", "-1m", "m"] {
            assert!(bad.parse::<Ttl>().is_err(), "{bad}");
        }
    }
}
