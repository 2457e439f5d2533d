//! Replica placement `xyz`: x copies in other data centers, y in other racks
//! of the same data center, z on other servers of the same rack. Stored in a
//! superblock as the single byte `x*100 + y*10 + z` (decimal digits, not
//! nibbles), so `"001"` is 1 and `"200"` is 200.

use std::fmt;
use std::str::FromStr;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ReplicaPlacement {
    pub diff_data_center: u8,
    pub diff_rack: u8,
    pub same_rack: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaPlacementError {
    #[error("replication {0:?} must be up to three decimal digits, like 001")]
    Syntax(String),
    #[error("replica placement byte {0} is not of the form x*100+y*10+z")]
    Byte(u8),
}

impl ReplicaPlacement {
    pub fn from_byte(b: u8) -> Result<Self, ReplicaPlacementError> {
        Ok(Self {
            diff_data_center: b / 100,
            diff_rack: (b / 10) % 10,
            same_rack: b % 10,
        })
    }

    pub fn to_byte(self) -> u8 {
        self.diff_data_center * 100 + self.diff_rack * 10 + self.same_rack
    }

    /// Total number of copies, the original included.
    pub fn copy_count(self) -> usize {
        1 + self.diff_data_center as usize + self.diff_rack as usize + self.same_rack as usize
    }
}

impl FromStr for ReplicaPlacement {
    type Err = ReplicaPlacementError;

    /// Accepts "" (000) and one to three digits, left-padded like SeaweedFS
    /// ("1" is "001").
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        if s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReplicaPlacementError::Syntax(s.to_string()));
        }
        let v: u32 = s
            .parse()
            .map_err(|_| ReplicaPlacementError::Syntax(s.to_string()))?;
        let b = u8::try_from(v).map_err(|_| ReplicaPlacementError::Syntax(s.to_string()))?;
        Self::from_byte(b)
    }
}

impl fmt::Display for ReplicaPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.diff_data_center, self.diff_rack, self.same_rack
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_form_is_decimal() {
        for (s, b, copies) in [
            ("000", 0, 1),
            ("001", 1, 2),
            ("010", 10, 2),
            ("100", 100, 2),
            ("200", 200, 3),
            ("011", 11, 3),
        ] {
            let rp: ReplicaPlacement = s.parse().unwrap();
            assert_eq!(rp.to_byte(), b);
            assert_eq!(rp.copy_count(), copies);
            assert_eq!(rp.to_string(), s);
            assert_eq!(ReplicaPlacement::from_byte(b).unwrap(), rp);
        }
        assert_eq!("".parse::<ReplicaPlacement>().unwrap().to_byte(), 0);
        assert_eq!("1".parse::<ReplicaPlacement>().unwrap().to_byte(), 1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["0001", "abc", "300", "-1", "1 2"] {
            assert!(bad.parse::<ReplicaPlacement>().is_err(), "{bad}");
        }
    }
}
