//! The `security.toml` that `weed` reads, as far as Kelp uses it, plus one
//! section of Kelp's own:
//!
//! ```toml
//! [jwt.signing]            # write and delete tokens (file ids)
//! key = "..."
//! expires_after_seconds = 10
//! [jwt.signing.read]       # read tokens; empty key: reads are open
//! key = "..."
//! [cluster]                # Kelp only: the key peers prove themselves with
//! key = "..."              # (default: derived from [jwt.signing] key)
//! [guard]
//! white_list = "127.0.0.1, 10.0.0.0/8"
//! [https.master]           # HTTPS on the master (ca: require client certs)
//! cert = "..."; key = "..."; ca = "..."
//! [https.volume]           # HTTPS on volume servers
//! [https.client]           # how Kelp's own clients reach HTTPS servers
//! enabled = true; ca = "..."; cert = "..."; key = "..."
//! [grpc]                   # gRPC TLS is mutual: every side needs the ca
//! ca = "..."
//! [grpc.master]  [grpc.volume]  [grpc.client]   # cert, key of each side
//! ```
//!
//! As in SeaweedFS, a master or volume server dialling gRPC presents its
//! own section's `client_cert`/`client_key` (else its `cert`/`key`);
//! `[grpc.client]` is what tools and other dialers present.
//!
//! Sections are spelled as SeaweedFS spells them, so one file configures a
//! mixed cluster; SeaweedFS ignores `[cluster]`.
//!
//! Sources, weakest first: the first `security.toml` found in
//! [`SEARCH_PATHS`] (`./`, `~/.seaweedfs/`, `/usr/local/etc/seaweedfs/`,
//! `/etc/seaweedfs/`), then the `WEED_JWT_SIGNING_*` and `KELP_CLUSTER_KEY`
//! environment variables, then explicit command-line keys
//! ([`SecurityConfig::override_keys`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::jwt::JwtKey;
use crate::white_list::WhiteList;

/// Lifetime of write tokens when the file does not say.
pub const DEFAULT_WRITE_EXPIRY_SECS: u64 = 10;
/// Lifetime of read tokens when the file does not say (SeaweedFS's default).
pub const DEFAULT_READ_EXPIRY_SECS: u64 = 60;
/// Lifetime of peer tokens: minted for each call, so short is enough while
/// leaving room for clocks a little apart.
pub const PEER_TOKEN_EXPIRY_SECS: u64 = 300;
/// The `fid` claim of a peer token. It has no comma, so it can never be
/// mistaken for (or verified as) a file id.
pub const PEER_CLAIM: &str = "kelp:peer";

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
    /// Peer and admin calls (`[cluster] key`); see [`SecurityConfig::peer`].
    pub cluster: JwtKey,
    /// Who may call anything but health checks (`[guard] white_list`,
    /// `-whiteList`); empty allows everyone.
    pub white_list: WhiteList,
    /// HTTPS and gRPC TLS files.
    pub tls: TlsSettings,
    /// The file the settings came from, if any.
    pub source: Option<PathBuf>,
}

/// A certificate chain, its key and optionally a CA (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// For a server: client certificates signed by it are required. For a
    /// client: servers are verified against it.
    pub ca: Option<PathBuf>,
    /// `client_cert`/`client_key`: presented when this side dials out
    /// (default: `cert`/`key`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// The chain and key this side presents when it dials out.
    pub fn dial_identity(&self) -> (&Path, &Path) {
        match &self.client {
            Some((c, k)) => (c, k),
            None => (&self.cert, &self.key),
        }
    }
}

/// Who dials a gRPC call, for [`TlsSettings::grpc_dial`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcRole {
    Master,
    Volume,
    /// Tools and anything else (`[grpc.client]`).
    Client,
}

/// The `[https.*]` and `[grpc.*]` sections. A section without a cert and
/// key is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub https_master: Option<TlsFiles>,
    pub https_volume: Option<TlsFiles>,
    /// Kelp's clients speak HTTPS to masters and volume servers; `ca`
    /// verifies them, cert and key (optional) answer a client-cert request.
    pub https_client: Option<HttpsClient>,
    /// `[grpc.master]` with `[grpc] ca`: mutual TLS on the master's gRPC.
    pub grpc_master: Option<TlsFiles>,
    pub grpc_volume: Option<TlsFiles>,
    /// `[grpc.client]` with `[grpc] ca`: what Kelp presents when it calls gRPC.
    pub grpc_client: Option<TlsFiles>,
}

impl TlsSettings {
    /// The TLS files `role` dials gRPC with: its own section, else
    /// `[grpc.client]`; `None` dials in plain text.
    pub fn grpc_dial(&self, role: GrpcRole) -> Option<&TlsFiles> {
        let own = match role {
            GrpcRole::Master => self.grpc_master.as_ref(),
            GrpcRole::Volume => self.grpc_volume.as_ref(),
            GrpcRole::Client => None,
        };
        own.or(self.grpc_client.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsClient {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            signing: JwtKey::new("", DEFAULT_WRITE_EXPIRY_SECS),
            read: JwtKey::new("", DEFAULT_READ_EXPIRY_SECS),
            cluster: JwtKey::new("", PEER_TOKEN_EXPIRY_SECS),
            white_list: WhiteList::default(),
            tls: TlsSettings::default(),
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
    #[error("white list: {0}")]
    WhiteList(#[from] crate::white_list::WhiteListError),
}

#[derive(Debug, Default, Deserialize)]
struct FileRoot {
    #[serde(default)]
    jwt: FileJwt,
    #[serde(default)]
    cluster: FileKey,
    #[serde(default)]
    guard: FileGuard,
    #[serde(default)]
    https: FileHttps,
    #[serde(default)]
    grpc: FileGrpc,
}

#[derive(Debug, Default, Deserialize)]
struct FileGuard {
    #[serde(default)]
    white_list: String,
}

/// `cert`, `key`, `ca` (and `enabled` for `[https.client]`); empty strings
/// mean "not set", as in SeaweedFS's scaffold.
#[derive(Debug, Default, Deserialize)]
struct FileTls {
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    ca: String,
    #[serde(default)]
    client_cert: String,
    #[serde(default)]
    client_key: String,
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
struct FileHttps {
    #[serde(default)]
    master: FileTls,
    #[serde(default)]
    volume: FileTls,
    #[serde(default)]
    client: FileTls,
}

#[derive(Debug, Default, Deserialize)]
struct FileGrpc {
    #[serde(default)]
    ca: String,
    #[serde(default)]
    master: FileTls,
    #[serde(default)]
    volume: FileTls,
    #[serde(default)]
    client: FileTls,
}

fn path(s: &str) -> Option<PathBuf> {
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// A certificate and its key: both given, or neither.
fn cert_and_key(cert: &str, key: &str, names: &str) -> Result<Option<(PathBuf, PathBuf)>, String> {
    match (path(cert), path(key)) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => Err(format!("give both {names}, or neither")),
    }
}

impl FileTls {
    /// Cert and key both set, with `ca` (or the section's shared one).
    fn files(&self, ca: Option<&str>) -> Result<Option<TlsFiles>, String> {
        let client = cert_and_key(
            &self.client_cert,
            &self.client_key,
            "client_cert and client_key",
        )?;
        Ok(
            cert_and_key(&self.cert, &self.key, "cert and key")?.map(|(cert, key)| TlsFiles {
                cert,
                key,
                ca: path(ca.unwrap_or(&self.ca)),
                client,
            }),
        )
    }
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
    /// (filer keys, CORS, ...) are ignored.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let root: FileRoot = toml::from_str(text).map_err(|e| e.to_string())?;
        let s = root.jwt.signing;
        let grpc_ca = root.grpc.ca.as_str();
        let grpc = |t: &FileTls, name: &str| -> Result<Option<TlsFiles>, String> {
            let files = t
                .files(Some(grpc_ca))
                .map_err(|e| format!("[grpc.{name}]: {e}"))?;
            if files.as_ref().is_some_and(|f| f.ca.is_none()) {
                return Err(format!(
                    "[grpc.{name}] has a cert but [grpc] has no ca: gRPC TLS is mutual"
                ));
            }
            Ok(files)
        };
        let https =
            |t: &FileTls, name: &str| t.files(None).map_err(|e| format!("[https.{name}]: {e}"));
        let c = &root.https.client;
        let https_client = if c.enabled {
            let ca = path(&c.ca)
                .ok_or("[https.client] is enabled but has no ca to verify servers with")?;
            let identity = cert_and_key(&c.cert, &c.key, "cert and key")
                .map_err(|e| format!("[https.client]: {e}"))?;
            Some(HttpsClient { ca, identity })
        } else {
            None
        };
        let tls = TlsSettings {
            https_master: https(&root.https.master, "master")?,
            https_volume: https(&root.https.volume, "volume")?,
            https_client,
            grpc_master: grpc(&root.grpc.master, "master")?,
            grpc_volume: grpc(&root.grpc.volume, "volume")?,
            grpc_client: grpc(&root.grpc.client, "client")?,
        };
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
            cluster: JwtKey::new(
                root.cluster.key,
                root.cluster
                    .expires_after_seconds
                    .unwrap_or(PEER_TOKEN_EXPIRY_SECS),
            ),
            white_list: root
                .guard
                .white_list
                .parse()
                .map_err(|e| format!("[guard] white_list: {e}"))?,
            tls,
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
        if let Some(k) = var("KELP_CLUSTER_KEY") {
            self.cluster.key = k;
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

    /// The key peers (masters, volume servers) prove themselves with on
    /// admin routes and peer RPCs: `[cluster] key` when set, else one
    /// derived from the write key (HMAC-SHA256 of a fixed label), so that
    /// turning write tokens on also closes the admin routes. `None` when
    /// neither is set: peer calls are then open (guarded only by the white
    /// list and, for gRPC, by mutual TLS).
    pub fn peer(&self) -> Option<JwtKey> {
        if self.cluster.is_enabled() {
            return Some(self.cluster.clone());
        }
        if !self.signing.is_enabled() {
            return None;
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.signing.key.as_bytes());
        let tag = ring::hmac::sign(&key, b"kelp cluster key v1");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(JwtKey::new(hex, self.cluster.expires_after_secs))
    }

    /// A fresh peer token, when peer calls are authenticated.
    pub fn peer_token(&self) -> Option<String> {
        self.peer()?.mint(PEER_CLAIM)
    }

    /// Whether `token` proves a peer. True when peer calls are open.
    pub fn is_peer(&self, token: Option<&str>) -> bool {
        match self.peer() {
            None => true,
            Some(key) => key.verify(token, PEER_CLAIM).is_ok(),
        }
    }

    /// What is on (for logging); never the keys themselves.
    pub fn describe(&self) -> String {
        let on_off = |t: bool| if t { "on" } else { "off" };
        let on = |k: &JwtKey| on_off(k.is_enabled());
        format!(
            "write tokens {}, read tokens {}, peer auth {}, white list {}, https {}/{} (master/volume), grpc mTLS {}/{}{}",
            on(&self.signing),
            on(&self.read),
            on_off(self.peer().is_some()),
            if self.white_list.is_empty() {
                "off".to_string()
            } else {
                self.white_list.to_string()
            },
            on_off(self.tls.https_master.is_some()),
            on_off(self.tls.https_volume.is_some()),
            on_off(self.tls.grpc_master.is_some()),
            on_off(self.tls.grpc_volume.is_some()),
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
    fn tls_guard_and_cluster_sections() {
        let text = r#"
[cluster]
key = "peers"
[guard]
white_list = "127.0.0.1, 10.0.0.0/8"
[grpc]
ca = "/pki/ca.pem"
[grpc.master]
cert = "/pki/m.pem"
key = "/pki/m.key"
[grpc.volume]
cert = ""
key = ""
[grpc.client]
cert = "/pki/c.pem"
key = "/pki/c.key"
[https.volume]
cert = "/pki/v.pem"
key = "/pki/v.key"
ca = "/pki/ca.pem"
[https.client]
enabled = true
ca = "/pki/ca.pem"
"#;
        let c = SecurityConfig::from_toml(text).unwrap();
        assert_eq!(c.cluster.key, "peers");
        assert!(c.white_list.allows("10.2.3.4".parse().unwrap()));
        assert!(!c.white_list.allows("11.2.3.4".parse().unwrap()));
        let m = c.tls.grpc_master.as_ref().unwrap();
        assert_eq!(m.ca.as_deref(), Some(Path::new("/pki/ca.pem")));
        assert_eq!(c.tls.grpc_volume, None);
        assert!(c.tls.grpc_client.is_some());
        assert_eq!(c.tls.https_master, None);
        assert_eq!(
            c.tls.https_volume.as_ref().unwrap().ca.as_deref(),
            Some(Path::new("/pki/ca.pem"))
        );
        assert_eq!(c.tls.https_client.as_ref().unwrap().identity, None);
        // Half a section, gRPC without a CA, a client without a CA, a bad
        // white list: each refused with the section named.
        for (bad, says) in [
            ("[https.master]\ncert = \"a\"\n", "[https.master]"),
            (
                "[grpc.volume]\ncert = \"a\"\nkey = \"b\"\n",
                "[grpc.volume]",
            ),
            ("[https.client]\nenabled = true\n", "[https.client]"),
            ("[guard]\nwhite_list = \"nohost\"\n", "white_list"),
        ] {
            let e = SecurityConfig::from_toml(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn peer_key_explicit_derived_or_off() {
        let mut c = SecurityConfig::default();
        assert_eq!(c.peer(), None);
        assert_eq!(c.peer_token(), None);
        assert!(c.is_peer(None), "open when nothing is set");
        c.signing.key = "write".into();
        let derived = c.peer().unwrap();
        assert_ne!(
            derived.key, "write",
            "the write key itself is never the peer key"
        );
        let t = c.peer_token().unwrap();
        assert!(c.is_peer(Some(&t)));
        assert!(!c.is_peer(None));
        assert!(!c.is_peer(Some("garbage")));
        // A write token for a file is not a peer token, and the reverse.
        let file_token = c.signing.mint("3,01637037d6").unwrap();
        assert!(!c.is_peer(Some(&file_token)));
        assert!(c.signing.verify(Some(&t), "3,01637037d6").is_err());
        c.apply_env(|n| (n == "KELP_CLUSTER_KEY").then(|| "explicit".into()))
            .unwrap();
        assert_eq!(c.peer().unwrap().key, "explicit");
        assert!(
            !c.is_peer(Some(&t)),
            "tokens of the derived key no longer pass"
        );
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
