//! The `security.toml` that `weed` reads, as far as Kelp uses it: the JWT
//! keys for writes (`[jwt.signing]`) and reads (`[jwt.signing.read]`).
//!
//! Sources, weakest first: the first `security.toml` found in
//! [`SEARCH_PATHS`] (`./`, `~/.seaweedfs/`, `/usr/local/etc/seaweedfs/`,
//! `/etc/seaweedfs/`), then the `WEED_JWT_SIGNING_*` environment variables,
//! then explicit command-line keys ([`SecurityConfig::override_keys`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::jwt::JwtKey;

/// Lifetime of write tokens when the file does not say.
pub const DEFAULT_WRITE_EXPIRY_SECS: u64 = 10;
/// Lifetime of read tokens when the file does not say (SeaweedFS's default).
pub const DEFAULT_READ_EXPIRY_SECS: u64 = 60;

/// Where `security.toml` is looked for, in order; `~` is `$HOME`.
pub const SEARCH_PATHS: [&str; 4] = [
    "./security.toml",
    "~/.seaweedfs/security.toml",
    "/usr/local/etc/seaweedfs/security.toml",
    "/etc/seaweedfs/security.toml",
];

/// JWT keys for both directions. Empty keys turn the checks off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Writes and deletes (`jwt.signing`).
    pub signing: JwtKey,
    /// Reads (`jwt.signing.read`).
    pub read: JwtKey,
    /// The file the settings came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            signing: JwtKey::new("", DEFAULT_WRITE_EXPIRY_SECS),
            read: JwtKey::new("", DEFAULT_READ_EXPIRY_SECS),
            source: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("parsing {path}: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("{name}={value:?} is not a number of seconds")]
    BadEnv { name: String, value: String },
}

#[derive(Debug, Default, Deserialize)]
struct FileRoot {
    #[serde(default)]
    jwt: FileJwt,
}

#[derive(Debug, Default, Deserialize)]
struct FileJwt {
    #[serde(default)]
    signing: FileSigning,
}

#[derive(Debug, Default, Deserialize)]
struct FileSigning {
    #[serde(default)]
    key: String,
    expires_after_seconds: Option<u64>,
    #[serde(default)]
    read: FileKey,
}

#[derive(Debug, Default, Deserialize)]
struct FileKey {
    #[serde(default)]
    key: String,
    expires_after_seconds: Option<u64>,
}

impl SecurityConfig {
    /// File (first found in the search path), then environment.
    pub fn load() -> Result<Self, SecurityError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut cfg = match find_file(home.as_deref()) {
            Some(path) => Self::from_file(&path)?,
            None => Self::default(),
        };
        cfg.apply_env(|name| std::env::var(name).ok())?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|error| SecurityError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut cfg = Self::from_toml(&text).map_err(|error| SecurityError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses `security.toml` text; sections and keys Kelp does not use
    /// (gRPC TLS, guard white lists, ...) are ignored.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let root: FileRoot = toml::from_str(text).map_err(|e| e.to_string())?;
        let s = root.jwt.signing;
        Ok(Self {
            signing: JwtKey::new(
                s.key,
                s.expires_after_seconds.unwrap_or(DEFAULT_WRITE_EXPIRY_SECS),
            ),
            read: JwtKey::new(
                s.read.key,
                s.read
                    .expires_after_seconds
                    .unwrap_or(DEFAULT_READ_EXPIRY_SECS),
            ),
            source: None,
        })
    }

    /// `WEED_JWT_SIGNING_KEY`, `WEED_JWT_SIGNING_EXPIRES_AFTER_SECONDS`,
    /// `WEED_JWT_SIGNING_READ_KEY`, `WEED_JWT_SIGNING_READ_EXPIRES_AFTER_SECONDS`
    /// override the file.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), SecurityError> {
        let secs = |name: &str| -> Result<Option<u64>, SecurityError> {
            match var(name) {
                Some(v) if !v.trim().is_empty() => {
                    v.trim()
                        .parse()
                        .map(Some)
                        .map_err(|_| SecurityError::BadEnv {
                            name: name.to_string(),
                            value: v,
                        })
                }
                _ => Ok(None),
            }
        };
        if let Some(k) = var("WEED_JWT_SIGNING_KEY") {
            self.signing.key = k;
        }
        if let Some(s) = secs("WEED_JWT_SIGNING_EXPIRES_AFTER_SECONDS")? {
            self.signing.expires_after_secs = s;
        }
        if let Some(k) = var("WEED_JWT_SIGNING_READ_KEY") {
            self.read.key = k;
        }
        if let Some(s) = secs("WEED_JWT_SIGNING_READ_EXPIRES_AFTER_SECONDS")? {
            self.read.expires_after_secs = s;
        }
        Ok(())
    }

    /// Explicit keys (command-line flags) win over file and environment.
    pub fn override_keys(&mut self, signing: Option<&str>, read: Option<&str>) {
        if let Some(k) = signing {
            self.signing.key = k.to_string();
        }
        if let Some(k) = read {
            self.read.key = k.to_string();
        }
    }

    /// Whether any check is on (for logging).
    pub fn describe(&self) -> String {
        let on = |k: &JwtKey| if k.is_enabled() { "on" } else { "off" };
        format!(
            "write tokens {}, read tokens {}{}",
            on(&self.signing),
            on(&self.read),
            self.source
                .as_ref()
                .map(|p| format!(" (from {})", p.display()))
                .unwrap_or_default()
        )
    }
}

/// The first existing file of [`SEARCH_PATHS`].
pub fn find_file(home: Option<&Path>) -> Option<PathBuf> {
    SEARCH_PATHS.iter().find_map(|p| {
        let path = match p.strip_prefix("~/") {
            Some(rest) => home?.join(rest),
            None => PathBuf::from(p),
        };
        path.is_file().then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weed_security_toml() {
        let text = r#"
# a scaffold-like file
[jwt.signing]
key = "write-secret"
expires_after_seconds = 30

[jwt.signing.read]
key = "read-secret"

[grpc]
ca = ""

[guard]
white_list = ""
"#;
        let c = SecurityConfig::from_toml(text).unwrap();
        assert_eq!(c.signing, JwtKey::new("write-secret", 30));
        assert_eq!(c.read, JwtKey::new("read-secret", DEFAULT_READ_EXPIRY_SECS));
        let c = SecurityConfig::from_toml("").unwrap();
        assert_eq!(c, SecurityConfig::default());
        assert!(!c.signing.is_enabled());
        assert!(SecurityConfig::from_toml("[jwt.signing]\nkey = 3").is_err());
        assert!(SecurityConfig::from_toml("not toml [").is_err());
    }

    #[test]
    fn environment_and_flags_override() {
        let mut c = SecurityConfig::from_toml("[jwt.signing]\nkey = \"file\"\n").unwrap();
        c.apply_env(|n| match n {
            "WEED_JWT_SIGNING_KEY" => Some("env".into()),
            "WEED_JWT_SIGNING_READ_KEY" => Some("env-read".into()),
            "WEED_JWT_SIGNING_EXPIRES_AFTER_SECONDS" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.signing, JwtKey::new("env", 7));
        assert_eq!(c.read.key, "env-read");
        c.override_keys(Some("flag"), None);
        assert_eq!(c.signing.key, "flag");
        assert_eq!(c.read.key, "env-read");
        c.override_keys(None, Some(""));
        assert!(!c.read.is_enabled());
        assert!(
            c.apply_env(|n| (n == "WEED_JWT_SIGNING_EXPIRES_AFTER_SECONDS").then(|| "x".into()))
                .is_err()
        );
    }

    #[test]
    fn search_order() {
        let home = tempfile_dir();
        // An empty home adds nothing to the system-wide locations.
        assert_eq!(find_file(Some(&home)), find_file(None));
        let dot = home.join(".seaweedfs");
        std::fs::create_dir_all(&dot).unwrap();
        std::fs::write(dot.join("security.toml"), "[jwt.signing]\nkey = \"h\"\n").unwrap();
        // No ./security.toml in the test's working directory.
        assert_eq!(find_file(Some(&home)), Some(dot.join("security.toml")));
        let c = SecurityConfig::from_file(&dot.join("security.toml")).unwrap();
        assert_eq!(c.signing.key, "h");
        assert!(c.describe().contains("write tokens on"));
        let _ = std::fs::remove_dir_all(&home);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kelp-security-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
