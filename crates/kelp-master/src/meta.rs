//! The master's only persistent state: the ceiling below which needle keys
//! may already have been handed out, and the largest volume id ever used.
//! Neither may go backwards across a restart, or ids would be reused.
//!
//! File `<meta_dir>/master.meta`, UTF-8 text, version 1:
//!
//! ```text
//! kelp-master-meta 1
//! key_ceiling <u64 decimal>
//! max_volume_id <u32 decimal>
//! ```
//!
//! It is replaced atomically: written to `master.meta.tmp`, fsynced,
//! renamed over the old file, then the directory is fsynced.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::MasterError;

const FILE_NAME: &str = "master.meta";
const MAGIC: &str = "kelp-master-meta 1";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// Keys `< key_ceiling` may have been handed out before a restart.
    pub key_ceiling: u64,
    pub max_volume_id: u32,
}

impl Meta {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    pub fn encode(&self) -> String {
        format!(
            "{MAGIC}\nkey_ceiling {}\nmax_volume_id {}\n",
            self.key_ceiling, self.max_volume_id
        )
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("first line is not {MAGIC:?}"));
        }
        let mut meta = Meta::default();
        let (mut seen_key, mut seen_vid) = (false, false);
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("bad line {line:?}"))?;
            match name {
                "key_ceiling" => {
                    meta.key_ceiling = value.parse().map_err(|_| format!("bad line {line:?}"))?;
                    seen_key = true;
                }
                "max_volume_id" => {
                    meta.max_volume_id = value.parse().map_err(|_| format!("bad line {line:?}"))?;
                    seen_vid = true;
                }
                _ => return Err(format!("unknown field {name:?}")),
            }
        }
        if !(seen_key && seen_vid) {
            return Err("missing field".to_string());
        }
        Ok(meta)
    }

    /// A missing file is a fresh master; a corrupt one is an error, since
    /// guessing could reuse ids.
    pub fn load(dir: &Path) -> Result<Self, MasterError> {
        let path = Self::path(dir);
        match fs::read_to_string(&path) {
            Ok(text) => Self::decode(&text).map_err(|reason| MasterError::Meta {
                path: path.display().to_string(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(MasterError::Meta {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Blocking; call from `spawn_blocking`.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(self.encode().as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, Self::path(dir))?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_text() {
        let m = Meta {
            key_ceiling: 20_001,
            max_volume_id: 7,
        };
        assert_eq!(
            m.encode(),
            "kelp-master-meta 1\nkey_ceiling 20001\nmax_volume_id 7\n"
        );
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "kelp-master-meta 2\nkey_ceiling 1\nmax_volume_id 1\n",
            "kelp-master-meta 1\nkey_ceiling x\nmax_volume_id 1\n",
            "kelp-master-meta 1\nkey_ceiling 1\n",
            "kelp-master-meta 1\nkey_ceiling 1\nmax_volume_id 1\nfoo 2\n",
        ] {
            assert!(Meta::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), Meta::default());
        let m = Meta {
            key_ceiling: 5,
            max_volume_id: 9,
        };
        m.store(dir.path()).unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), m);
        std::fs::write(Meta::path(dir.path()), "junk").unwrap();
        assert!(Meta::load(dir.path()).is_err());
    }
}
