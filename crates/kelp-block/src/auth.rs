//! Downstairs authentication: a per-volume shared secret, proven by both
//! sides without ever being sent (mutual HMAC-SHA256 challenge-response).
//!
//! ```text
//! U → D  AuthHello     upstairs id, nonce_u (32 random bytes)
//! D → U  AuthChallenge region uuid, nonce_d (32 random bytes),
//!                      proof_d = HMAC(secret, transcript("downstairs"))
//! U → D  AuthProof     proof_u = HMAC(secret, transcript("upstairs"))
//! then Hello, Activate, ... as without a secret
//! ```
//!
//! `transcript(role)` = `"kelp-block-auth" | u8 PROTOCOL_VERSION | u8
//! len(role) | role | upstairs id u128 LE | region uuid [16] | nonce_u [32]
//! | nonce_d [32]`. Each proof covers both fresh nonces, so neither can be
//! replayed on another connection, and names its direction, so a proof
//! one side computes is never one the other side accepts (a downstairs
//! cannot be used as an oracle for upstairs proofs, nor reflected back).
//! Proofs are checked in constant time (`ring::hmac::verify`).
//!
//! The downstairs proves itself first (an upstairs with a secret refuses a
//! downstairs that cannot: a rogue one), and checks the upstairs' proof
//! before it reads anything else from it. Without TLS this guards the port
//! against anyone who merely reaches it; an attacker on the path who can
//! rewrite TCP could still take over a session after it authenticated, so
//! on untrusted networks use TLS too.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;

use crate::error::{BlockError, Result};
use crate::frame::PROTOCOL_VERSION;

pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// A shorter secret is refused: an observed exchange allows an offline
/// guessing attack on a weak one.
pub const MIN_SECRET_LEN: usize = 16;

pub type Nonce = [u8; NONCE_LEN];
pub type Proof = [u8; PROOF_LEN];

/// The shared secret of one volume (its upstairs and its three
/// downstairs). Never printed.
#[derive(Clone)]
pub struct Secret(Arc<hmac::Key>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from raw bytes (at least `MIN_SECRET_LEN`).
    pub fn new(bytes: &[u8]) -> Result<Secret> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(BlockError::BadOptions(format!(
                "the block secret is {} bytes; use at least {MIN_SECRET_LEN} random bytes \
                 (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
                bytes.len()
            )));
        }
        Ok(Secret(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, bytes))))
    }

    /// Reads a secret file: its bytes, without leading and trailing white
    /// space (so `echo ... > FILE` works).
    pub fn from_file(path: &Path) -> Result<Secret> {
        let raw =
            std::fs::read(path).map_err(|e| BlockError::io(format!("{}", path.display()), e))?;
        let trimmed = raw.trim_ascii();
        Secret::new(trimmed).map_err(|e| match e {
            BlockError::BadOptions(m) => BlockError::BadOptions(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    fn transcript(role: &str, t: &Transcript) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(b"kelp-block-auth");
        b.push(PROTOCOL_VERSION);
        b.push(role.len() as u8);
        b.extend_from_slice(role.as_bytes());
        b.extend_from_slice(&t.upstairs_id.to_le_bytes());
        b.extend_from_slice(&t.region_uuid);
        b.extend_from_slice(&t.nonce_u);
        b.extend_from_slice(&t.nonce_d);
        b
    }

    fn prove(&self, role: &str, t: &Transcript) -> Proof {
        let tag = hmac::sign(&self.0, &Self::transcript(role, t));
        let mut p = [0u8; PROOF_LEN];
        p.copy_from_slice(tag.as_ref());
        p
    }

    fn check(&self, role: &str, t: &Transcript, proof: &Proof) -> bool {
        hmac::verify(&self.0, &Self::transcript(role, t), proof).is_ok()
    }

    /// What the downstairs sends to prove it holds the secret.
    pub fn downstairs_proof(&self, t: &Transcript) -> Proof {
        self.prove("downstairs", t)
    }

    /// What the upstairs sends to prove it holds the secret.
    pub fn upstairs_proof(&self, t: &Transcript) -> Proof {
        self.prove("upstairs", t)
    }

    /// Constant-time check of a downstairs' proof.
    pub fn check_downstairs(&self, t: &Transcript, proof: &Proof) -> bool {
        self.check("downstairs", t, proof)
    }

    /// Constant-time check of an upstairs' proof.
    pub fn check_upstairs(&self, t: &Transcript, proof: &Proof) -> bool {
        self.check("upstairs", t, proof)
    }
}

/// What both proofs cover.
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    pub upstairs_id: u128,
    pub region_uuid: [u8; 16],
    pub nonce_u: Nonce,
    pub nonce_d: Nonce,
}

/// A fresh random nonce (the thread RNG is a CSPRNG seeded from the OS).
pub fn nonce() -> Nonce {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Transcript {
        Transcript {
            upstairs_id: 7,
            region_uuid: [1; 16],
            nonce_u: [2; 32],
            nonce_d: [3; 32],
        }
    }

    #[test]
    fn proofs_check_and_are_bound_to_role_nonces_and_key() {
        let s = Secret::new(b"0123456789abcdef").unwrap();
        let p_u = s.upstairs_proof(&t());
        let p_d = s.downstairs_proof(&t());
        assert!(s.check_upstairs(&t(), &p_u));
        assert!(s.check_downstairs(&t(), &p_d));
        // A proof is never valid for the other direction (no reflection).
        assert_ne!(p_u, p_d);
        assert!(!s.check_upstairs(&t(), &p_d));
        assert!(!s.check_downstairs(&t(), &p_u));
        // Nor for other nonces, another upstairs or region, or another key.
        for other in [
            Transcript {
                nonce_u: [9; 32],
                ..t()
            },
            Transcript {
                nonce_d: [9; 32],
                ..t()
            },
            Transcript {
                upstairs_id: 8,
                ..t()
            },
            Transcript {
                region_uuid: [9; 16],
                ..t()
            },
        ] {
            assert!(!s.check_upstairs(&other, &p_u));
        }
        let s2 = Secret::new(b"0123456789abcdeF").unwrap();
        assert!(!s2.check_upstairs(&t(), &p_u));
    }

    /// Pins the construction: HMAC-SHA256 over the documented transcript
    /// (the expected value computed apart, with Python's `hmac`).
    /// Changing either breaks every deployed pair, so it must come with a
    /// protocol version bump.
    #[test]
    fn golden_proof() {
        let s = Secret::new(b"0123456789abcdef").unwrap();
        assert_eq!(
            hex(&s.upstairs_proof(&t())),
            "7be78f3f1cba336eceb97385727b867ad7248e8b2c319624cebdaac573c80522"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(Secret::new(b"short").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, b"  0123456789abcdef\n").unwrap();
        let s = Secret::from_file(&p).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        let same = Secret::new(b"0123456789abcdef").unwrap();
        assert!(same.check_upstairs(&t(), &s.upstairs_proof(&t())));
        std::fs::write(&p, b"tiny\n").unwrap();
        let e = Secret::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("4 bytes") && e.contains("at least 16"), "{e}");
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }
}
