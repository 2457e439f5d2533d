//! The `.vif` volume info file: protobuf-JSON of `volume_server_pb.VolumeInfo`
//! (camelCase keys, int64/uint64 as JSON strings, every field emitted,
//! 2-space indent). Unknown keys are ignored; snake_case keys, numbers for
//! int64 fields and `null` are accepted, as protojson does.

use kelp_storage::Storage;
use std::io;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::NeedleError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeInfoFile {
    #[serde(deserialize_with = "null_default")]
    pub files: Vec<RemoteFile>,
    #[serde(deserialize_with = "num")]
    pub version: u32,
    #[serde(deserialize_with = "null_default")]
    pub replication: String,
    #[serde(alias = "bytes_offset", deserialize_with = "num")]
    pub bytes_offset: u32,
    #[serde(alias = "dat_file_size", with = "int_string")]
    pub dat_file_size: i64,
    #[serde(alias = "expire_at_sec", with = "int_string")]
    pub expire_at_sec: u64,
    #[serde(alias = "read_only", deserialize_with = "null_default")]
    pub read_only: bool,
    #[serde(alias = "ec_shard_config")]
    pub ec_shard_config: Option<EcShardConfig>,
    #[serde(alias = "read_only_can_delete", deserialize_with = "null_default")]
    pub read_only_can_delete: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RemoteFile {
    #[serde(alias = "backend_type", deserialize_with = "null_default")]
    pub backend_type: String,
    #[serde(alias = "backend_id", deserialize_with = "null_default")]
    pub backend_id: String,
    #[serde(deserialize_with = "null_default")]
    pub key: String,
    #[serde(with = "int_string")]
    pub offset: u64,
    #[serde(alias = "file_size", with = "int_string")]
    pub file_size: u64,
    #[serde(alias = "modified_time", with = "int_string")]
    pub modified_time: u64,
    #[serde(deserialize_with = "null_default")]
    pub extension: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EcShardConfig {
    #[serde(alias = "data_shards", deserialize_with = "num")]
    pub data_shards: u32,
    #[serde(alias = "parity_shards", deserialize_with = "num")]
    pub parity_shards: u32,
    #[serde(alias = "encode_ts_ns", with = "int_string")]
    pub encode_ts_ns: i64,
}

impl VolumeInfoFile {
    /// What Kelp writes for a new volume.
    pub fn new(version: u8, bytes_offset: u32) -> Self {
        Self {
            version: version as u32,
            bytes_offset,
            ..Self::default()
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, NeedleError> {
        serde_json::from_slice(bytes).map_err(|e| NeedleError::Vif(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a `.vif`; a missing or empty file is `None`.
    pub fn load(path: &Path) -> Result<Option<Self>, crate::VolumeError> {
        Self::load_from(&Storage::real(), path)
    }

    /// `load` from a chosen storage backend.
    pub fn load_from(storage: &Storage, path: &Path) -> Result<Option<Self>, crate::VolumeError> {
        match storage.read(path) {
            Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => Ok(None),
            Ok(b) => Ok(Some(Self::from_json(&b)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes atomically (temp file, fsync, rename, fsync directory).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        self.save_to(&Storage::real(), path)
    }

    /// `save` to a chosen storage backend.
    pub fn save_to(&self, storage: &Storage, path: &Path) -> io::Result<()> {
        storage.write_atomic(path, self.to_json().as_bytes())
    }
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer given as a JSON number or a decimal string (protojson accepts both).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    I(i128),
    F(f64),
    S(String),
}

fn parse_num<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let v = match Option::<NumOrString>::deserialize(d)? {
        None => 0,
        Some(NumOrString::I(i)) => i,
        Some(NumOrString::F(f)) if f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
        Some(NumOrString::F(f)) => return Err(D::Error::custom(format!("{f} is not an integer"))),
        Some(NumOrString::S(s)) if s.is_empty() => 0,
        Some(NumOrString::S(s)) => s
            .parse::<i128>()
            .map_err(|_| D::Error::custom(format!("{s:?} is not an integer")))?,
    };
    T::try_from(v).map_err(|_| D::Error::custom(format!("{v} out of range")))
}

fn num<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    parse_num(d)
}

mod int_string {
    use super::*;

    pub fn serialize<S: Serializer, T: ToString>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        parse_num(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OBSERVED: &str = r#"{"files":[],"version":3,"replication":"","bytesOffset":5,"datFileSize":"0","expireAtSec":"0",
   "readOnly":false,"ecShardConfig":null,"readOnlyCanDelete":false}"#;

    #[test]
    fn observed_new_volume() {
        let v = VolumeInfoFile::from_json(OBSERVED.as_bytes()).unwrap();
        assert_eq!(v, VolumeInfoFile::new(3, 5));
        let compact: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
        let want: serde_json::Value = serde_json::from_str(OBSERVED).unwrap();
        assert_eq!(compact, want);
        assert!(
            v.to_json()
                .starts_with("{\n  \"files\": [],\n  \"version\": 3,")
        );
    }

    #[test]
    fn lenient_forms() {
        let v = VolumeInfoFile::from_json(
            br#"{"version":2,"bytes_offset":4,"datFileSize":123,"files":null,"unknown":1}"#,
        )
        .unwrap();
        assert_eq!((v.version, v.bytes_offset, v.dat_file_size), (2, 4, 123));
        assert!(VolumeInfoFile::from_json(b"{\"datFileSize\":\"x\"}").is_err());
        assert!(VolumeInfoFile::from_json(b"[").is_err());
    }

    #[test]
    fn empty_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1.vif");
        assert!(VolumeInfoFile::load(&p).unwrap().is_none());
        std::fs::write(&p, b"").unwrap();
        assert!(VolumeInfoFile::load(&p).unwrap().is_none());
        VolumeInfoFile::new(3, 5).save(&p).unwrap();
        assert_eq!(
            VolumeInfoFile::load(&p).unwrap(),
            Some(VolumeInfoFile::new(3, 5))
        );
    }

    proptest! {
        #[test]
        fn round_trip(version: u32, repl in "[0-9]{0,3}", bo in 4u32..=5, size: i64, exp: u64,
                      ro: bool, rocd: bool, ec: Option<(u32, u32, i64)>,
                      files in proptest::collection::vec(("[a-z]{0,5}", any::<u64>()), 0..3)) {
            let v = VolumeInfoFile {
                files: files.into_iter().map(|(k, o)| RemoteFile { key: k, offset: o, ..Default::default() }).collect(),
                version, replication: repl, bytes_offset: bo, dat_file_size: size, expire_at_sec: exp,
                read_only: ro,
                ec_shard_config: ec.map(|(d, p, t)| EcShardConfig { data_shards: d, parity_shards: p, encode_ts_ns: t }),
                read_only_can_delete: rocd,
            };
            prop_assert_eq!(VolumeInfoFile::from_json(v.to_json().as_bytes()).unwrap(), v);
        }

        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = VolumeInfoFile::from_json(s.as_bytes());
        }
    }
}
