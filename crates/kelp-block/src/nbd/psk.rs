//! NBD over TLS with a pre-shared key (TLS-PSK), as qemu-nbd serves it
//! with `--object tls-creds-psk,endpoint=server,dir=DIR`.
//!
//! rustls has no external-PSK support, so this one path runs on OpenSSL
//! (the system's libssl); x509 stays on rustls.
//!
//! Keys come from a `keys.psk` file in the format of GnuTLS' psktool, which
//! QEMU and libnbd read too: one client per line,
//!
//! ```text
//! username:hexkey          e.g.  alice:9f86d081884c7d659a2feaa0c55ad015...
//! ```
//!
//! The username is the PSK identity the client sends; the key is hex, at
//! least `MIN_KEY_LEN` bytes. Blank lines are skipped; anything else that
//! does not parse is an error naming its line.
//!
//! What is negotiated: TLS 1.3 with an external PSK and an (EC)DHE key
//! share (`psk_dhe_ke`; OpenSSL refuses `psk_ke`, so every session has
//! forward secrecy), or, for a client without TLS 1.3, TLS 1.2 with an
//! ECDHE-PSK cipher suite. Plain PSK suites (no ephemeral key exchange)
//! are not offered. The server has no certificate, so a client whose
//! identity is unknown, or whose key differs, fails the handshake.
//! Session tickets and the session cache are off: every connection proves
//! the key afresh.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::pin::Pin;

use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslMethod, SslOptions, SslRef, SslSessionCacheMode, SslVersion,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use crate::error::{BlockError, Result};

/// A shorter key is refused: whoever records a PSK handshake can test
/// guesses of the key offline.
pub const MIN_KEY_LEN: usize = 16;
/// OpenSSL's limit (PSK_MAX_PSK_LEN) is 256 bytes in 1.1 and 512 in 3.x.
pub const MAX_KEY_LEN: usize = 256;
/// OpenSSL 1.1's PSK_MAX_IDENTITY_LEN.
pub const MAX_USERNAME_LEN: usize = 128;

/// TLS 1.2 suites offered: PSK with an ephemeral ECDH exchange only.
const TLS12_CIPHERS: &str =
    "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256";
/// TLS 1.3 suites offered: an external PSK from the psk callback is bound
/// to SHA-256, so the SHA-384 suite could never be chosen.
const TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";

/// The keys of a `keys.psk` file: username -> key. Never printed (Debug
/// shows the usernames only); zeroed when dropped.
#[derive(Clone, Default)]
pub struct PskKeys {
    keys: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for PskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskKeys")
            .field("usernames", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for PskKeys {
    fn drop(&mut self) {
        for key in self.keys.values_mut() {
            for b in key.iter_mut() {
                // Volatile so the compiler cannot drop the store as dead.
                // SAFETY: `b` is a valid, aligned, exclusive reference.
                unsafe { std::ptr::write_volatile(b, 0) };
            }
        }
    }
}

impl PskKeys {
    /// Parses a `keys.psk` file's text (see the module comment).
    pub fn parse(text: &str) -> Result<PskKeys> {
        let mut keys = BTreeMap::new();
        let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: String| BlockError::Tls(format!("line {n}: {why}"));
            let Some((user, hex)) = line.split_once(':') else {
                return Err(bad("expected username:hexkey".into()));
            };
            if user.is_empty() {
                return Err(bad("the username is empty".into()));
            }
            if user.len() > MAX_USERNAME_LEN {
                return Err(bad(format!(
                    "the username is longer than {MAX_USERNAME_LEN} bytes"
                )));
            }
            if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!(
                    "the username {user:?} holds white space or control characters"
                )));
            }
            let key = decode_hex(hex).map_err(|why| bad(format!("the key of {user:?} {why}")))?;
            if key.len() < MIN_KEY_LEN {
                return Err(bad(format!(
                    "the key of {user:?} is {} bytes; at least {MIN_KEY_LEN} are needed \
                     (make one with `psktool -u {user} -p keys.psk` or \
                     `echo {user}:$(head -c 32 /dev/urandom | xxd -p -c 64) >> keys.psk`)",
                    key.len()
                )));
            }
            if key.len() > MAX_KEY_LEN {
                return Err(bad(format!(
                    "the key of {user:?} is {} bytes; at most {MAX_KEY_LEN} are allowed",
                    key.len()
                )));
            }
            if let Some(earlier) = first_line.get(user) {
                return Err(bad(format!(
                    "the username {user:?} is already given on line {earlier}"
                )));
            }
            first_line.insert(user.to_string(), n);
            keys.insert(user.to_string(), key);
        }
        if keys.is_empty() {
            return Err(BlockError::Tls(
                "no username:hexkey line in the file".into(),
            ));
        }
        Ok(PskKeys { keys })
    }

    /// Reads and parses a `keys.psk` file; errors name the file.
    pub fn from_file(path: &Path) -> Result<PskKeys> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BlockError::io(format!("PSK file {}", path.display()), e))?;
        PskKeys::parse(&text).map_err(|e| match e {
            BlockError::Tls(m) => BlockError::Tls(format!("PSK file {}: {m}", path.display())),
            e => e,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(|s| s.as_str())
    }

    fn get(&self, username: &[u8]) -> Option<&[u8]> {
        let name = std::str::from_utf8(username).ok()?;
        self.keys.get(name).map(|k| k.as_slice())
    }
}

/// Decodes an even-length hex string (either case); says why not.
fn decode_hex(s: &str) -> std::result::Result<Vec<u8>, String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if !s.len().is_multiple_of(2) {
        return Err(format!("has an odd number of hex digits ({})", s.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks_exact(2)
        .enumerate()
        .map(|(i, p)| match (digit(p[0]), digit(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("is not hex (at character {})", 2 * i + 1)),
        })
        .collect()
}

/// What the PSK callback saw of the client's identity, kept on the
/// connection so a failed handshake can say why.
#[derive(Clone, Debug)]
enum Identity {
    Known(String),
    Unknown(String),
}

/// Accepts TLS-PSK connections with the keys of one `keys.psk` file.
pub struct PskAcceptor {
    ctx: SslContext,
    identity: Index<Ssl, Identity>,
    usernames: usize,
}

impl fmt::Debug for PskAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskAcceptor")
            .field("usernames", &self.usernames)
            .finish_non_exhaustive()
    }
}

/// A TLS-PSK connection, after its handshake.
pub type PskStream<S> = SslStream<S>;

fn tls_err(what: &str, e: impl fmt::Display) -> BlockError {
    BlockError::Tls(format!("{what}: {e}"))
}

impl PskAcceptor {
    pub fn new(keys: PskKeys) -> Result<PskAcceptor> {
        let ssl_err = |e| tls_err("cannot set up OpenSSL for TLS-PSK", e);
        let identity = Ssl::new_ex_index::<Identity>().map_err(ssl_err)?;
        let usernames = keys.len();
        let mut b = SslContext::builder(SslMethod::tls_server()).map_err(ssl_err)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(ssl_err)?;
        b.set_cipher_list(TLS12_CIPHERS).map_err(ssl_err)?;
        b.set_ciphersuites(TLS13_SUITES).map_err(ssl_err)?;
        b.set_options(
            SslOptions::NO_TICKET
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::CIPHER_SERVER_PREFERENCE,
        );
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        b.set_num_tickets(0).map_err(ssl_err)?;
        // Called with the identity from the ClientHello (TLS 1.3; the
        // key is then taken for TLS_AES_128_GCM_SHA256's SHA-256, as
        // GnuTLS does for external PSKs) or ClientKeyExchange (TLS 1.2).
        // Returning 0 bytes means "no such identity".
        b.set_psk_server_callback(move |ssl: &mut SslRef, id: Option<&[u8]>, out: &mut [u8]| {
            let name = String::from_utf8_lossy(id.unwrap_or_default()).into_owned();
            match keys.get(id.unwrap_or_default()) {
                Some(key) if key.len() <= out.len() => {
                    out[..key.len()].copy_from_slice(key);
                    ssl.set_ex_data(identity, Identity::Known(name));
                    Ok(key.len())
                }
                _ => {
                    ssl.set_ex_data(identity, Identity::Unknown(name));
                    Ok(0)
                }
            }
        });
        Ok(PskAcceptor {
            ctx: b.build(),
            identity,
            usernames,
        })
    }

    /// Runs the server side of the handshake on `stream`. A refusal (an
    /// unknown identity, a wrong key) is `BlockError::Auth` saying which.
    pub async fn accept<S>(&self, stream: S) -> Result<PskStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = Ssl::new(&self.ctx).map_err(|e| tls_err("OpenSSL", e))?;
        let mut s = SslStream::new(ssl, stream).map_err(|e| tls_err("OpenSSL", e))?;
        match Pin::new(&mut s).accept().await {
            Ok(()) => Ok(s),
            Err(e) => Err(self.refusal(s.ssl(), &e)),
        }
    }

    /// Why a handshake failed, in the operator's words.
    fn refusal(&self, ssl: &SslRef, e: &openssl::ssl::Error) -> BlockError {
        let detail = match e.ssl_error() {
            Some(stack) => stack.to_string(),
            None => match e.io_error() {
                Some(io) => io.to_string(),
                None => e.to_string(),
            },
        };
        match ssl.ex_data(self.identity) {
            Some(Identity::Unknown(name)) => BlockError::Auth(format!(
                "TLS-PSK: unknown identity {name:?} (not in the --nbd-tls-psk file)"
            )),
            Some(Identity::Known(name)) if wrong_key(&detail) => BlockError::Auth(format!(
                "TLS-PSK: wrong key for identity {name:?} ({detail})"
            )),
            Some(Identity::Known(name)) => BlockError::Auth(format!(
                "TLS-PSK: handshake with identity {name:?} failed: {detail}"
            )),
            None => BlockError::Auth(format!(
                "TLS-PSK: handshake failed before the client named an identity \
                 (a client without a pre-shared key, or an x509 one?): {detail}"
            )),
        }
    }
}

/// OpenSSL's reasons when the client's key differs from ours: a PSK binder
/// that does not verify (TLS 1.3), a Finished that does not decrypt or
/// check (TLS 1.2).
fn wrong_key(detail: &str) -> bool {
    [
        "binder does not verify",
        "bad record mac",
        "digest check failed",
    ]
    .iter()
    .any(|r| detail.contains(r))
}

impl PskAcceptor {
    /// The negotiated protocol version, cipher suite and client identity
    /// of a connection, for the log.
    pub fn describe<S>(&self, s: &PskStream<S>) -> (String, String, String) {
        let ssl = s.ssl();
        let cipher = ssl
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default();
        // SSL_get_psk_identity is empty on TLS 1.3; the callback kept it.
        let identity = match ssl.ex_data(self.identity) {
            Some(Identity::Known(name)) => name.clone(),
            _ => String::new(),
        };
        (ssl.version_str().to_string(), cipher, identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K32: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    fn err(text: &str) -> String {
        PskKeys::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_qemu_keys_psk() {
        let text = format!("alice:{K32}\r\n\nbob:{}\n", &K32[..32]);
        let k = PskKeys::parse(&text).unwrap();
        assert_eq!(k.usernames().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(k.get(b"alice").unwrap().len(), 32);
        assert_eq!(k.get(b"alice").unwrap()[0..2], [0x00, 0x11]);
        assert_eq!(k.get(b"alice").unwrap()[31], 0xff);
        assert_eq!(k.get(b"bob").unwrap().len(), 16);
        assert!(k.get(b"carol").is_none());
        assert!(k.get(&[0xff, 0xfe]).is_none());
        // Never prints a key.
        let dbg = format!("{k:?}");
        assert!(dbg.contains("alice") && !dbg.contains("0011"), "{dbg}");
    }

    #[test]
    fn malformed_lines_are_named() {
        assert!(err("").contains("no username:hexkey line"));
        assert!(err("\n\n").contains("no username:hexkey line"));
        let e = err(&format!("alice:{K32}\nbob\n"));
        assert!(e.contains("line 2") && e.contains("username:hexkey"), "{e}");
        assert!(err(&format!(":{K32}")).contains("line 1: the username is empty"));
        let e = err(&format!("alice:{K32}\n\nbob:{}z\n", &K32[..31]));
        assert!(e.contains("line 3") && e.contains("not hex"), "{e}");
        assert!(err(&format!("a:{}", &K32[..33])).contains("odd number"));
        assert!(err("alice:").contains("is empty"));
        let e = err("alice:00112233");
        assert!(e.contains("4 bytes") && e.contains("at least 16"), "{e}");
        let e = err(&format!("alice:{}", "ab".repeat(MAX_KEY_LEN + 1)));
        assert!(e.contains("at most"), "{e}");
        let e = err(&format!("alice:{K32}\nalice:{K32}"));
        assert!(
            e.contains("line 2") && e.contains("already given on line 1"),
            "{e}"
        );
        let e = err(&format!("al ice:{K32}"));
        assert!(e.contains("white space"), "{e}");
        let e = err(&format!("{}:{K32}", "u".repeat(MAX_USERNAME_LEN + 1)));
        assert!(e.contains("longer than"), "{e}");
        // A key with a colon in it is not hex.
        assert!(err(&format!("a:b:{K32}")).contains("not hex"));
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.psk");
        std::fs::write(&p, "nope\n").unwrap();
        let e = PskKeys::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("keys.psk") && e.contains("line 1"), "{e}");
        let e = PskKeys::from_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn acceptor_builds() {
        let k = PskKeys::parse(&format!("alice:{K32}")).unwrap();
        let a = PskAcceptor::new(k).unwrap();
        assert!(format!("{a:?}").contains("usernames: 1"));
    }
}
