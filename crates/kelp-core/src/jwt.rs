//! File-id tokens: the HS256 JSON Web Tokens a SeaweedFS master hands out
//! with an assignment or a lookup, and a volume server checks before it
//! writes, deletes or (with a read key) serves a blob.
//!
//! The claims are `{"fid": "<vid>,<key+cookie hex>", "exp": <unix secs>}`;
//! `exp` is left out when the key's lifetime is 0. A token is good for one
//! file id (any `_N` suffix of a `count=N` assignment maps to the base id).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// One signing key and how long the tokens it mints live.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct JwtKey {
    /// Shared HMAC secret; empty means "no tokens, no checks".
    pub key: String,
    /// Lifetime of minted tokens; 0 mints tokens without `exp`.
    pub expires_after_secs: u64,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JwtKey")
            .field("key", &if self.key.is_empty() { "" } else { "<set>" })
            .field("expires_after_secs", &self.expires_after_secs)
            .finish()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("no token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token is for {claimed:?}, not {wanted:?}")]
    WrongFid { claimed: String, wanted: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    fid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

impl JwtKey {
    pub fn new(key: impl Into<String>, expires_after_secs: u64) -> Self {
        Self {
            key: key.into(),
            expires_after_secs,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.key.is_empty()
    }

    /// A token for `fid` (`_N` suffix dropped), or `None` when no key is set.
    pub fn mint(&self, fid: &str) -> Option<String> {
        if !self.is_enabled() {
            return None;
        }
        let exp = (self.expires_after_secs > 0).then(|| now_secs() + self.expires_after_secs);
        self.mint_with(fid, exp)
    }

    /// A token with an explicit `exp` (tests use past ones).
    pub fn mint_with(&self, fid: &str, exp: Option<u64>) -> Option<String> {
        let claims = Claims {
            fid: base_fid(fid).to_string(),
            exp,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.key.as_bytes()),
        )
        .ok()
    }

    /// Checks `token` for `fid`: HS256 with this key, `exp`/`nbf` in force,
    /// and a `fid` claim naming the same file (both sides without `_N`).
    /// With no key set every request passes.
    pub fn verify(&self, token: Option<&str>, fid: &str) -> Result<(), JwtError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(JwtError::Missing)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.key.as_bytes()),
            &validation,
        )
        .map_err(|e| JwtError::Invalid(e.to_string()))?;
        let wanted = base_fid(fid);
        if base_fid(&data.claims.fid) != wanted {
            return Err(JwtError::WrongFid {
                claimed: data.claims.fid,
                wanted: wanted.to_string(),
            });
        }
        Ok(())
    }
}

/// `3,01637037d6_2` → `3,01637037d6`.
pub fn base_fid(fid: &str) -> &str {
    match fid.rfind('_') {
        Some(i) if fid[..i].contains(',') => &fid[..i],
        _ => fid,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FID: &str = "3,01637037d6";

    #[test]
    fn mint_and_verify() {
        let k = JwtKey::new("secret", 10);
        let t = k.mint(FID).unwrap();
        assert_eq!(k.verify(Some(&t), FID), Ok(()));
        // The token carries the documented claims.
        let payload = t.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["fid"], FID);
        assert!(claims["exp"].as_u64().unwrap() >= now_secs() + 9);
    }

    #[test]
    fn wrong_key_expired_wrong_fid_missing() {
        let k = JwtKey::new("secret", 10);
        let other = JwtKey::new("other", 10);
        let t = other.mint(FID).unwrap();
        assert!(matches!(k.verify(Some(&t), FID), Err(JwtError::Invalid(_))));
        let expired = k.mint_with(FID, Some(now_secs() - 5)).unwrap();
        assert!(matches!(
            k.verify(Some(&expired), FID),
            Err(JwtError::Invalid(_))
        ));
        let t = k.mint("3,01637037d7").unwrap();
        assert!(matches!(
            k.verify(Some(&t), FID),
            Err(JwtError::WrongFid { .. })
        ));
        let t = k.mint("4,01637037d6").unwrap();
        assert!(k.verify(Some(&t), FID).is_err());
        assert_eq!(k.verify(None, FID), Err(JwtError::Missing));
        assert_eq!(k.verify(Some(""), FID), Err(JwtError::Missing));
        assert!(k.verify(Some("not.a.jwt"), FID).is_err());
        assert!(k.verify(Some("garbage"), FID).is_err());
    }

    #[test]
    fn suffixes_and_no_expiry() {
        let k = JwtKey::new("secret", 0);
        let t = k.mint(FID).unwrap();
        assert_eq!(k.verify(Some(&t), "3,01637037d6_1"), Ok(()));
        assert_eq!(k.verify(Some(&t), "3,01637037d6_17"), Ok(()));
        let t = k.mint("3,01637037d6_4").unwrap();
        assert_eq!(k.verify(Some(&t), FID), Ok(()));
        assert_eq!(base_fid("3,01637037d6_4"), FID);
        assert_eq!(base_fid(FID), FID);
        assert_eq!(base_fid("a_b"), "a_b");
    }

    #[test]
    fn disabled_key_mints_nothing_and_checks_nothing() {
        let k = JwtKey::default();
        assert_eq!(k.mint(FID), None);
        assert_eq!(k.verify(None, FID), Ok(()));
        assert!(!format!("{:?}", JwtKey::new("s3cr3t", 1)).contains("s3cr3t"));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let k = JwtKey::new("secret", 10);
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                fid: FID.into(),
                exp: Some(now_secs() + 10),
            },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(k.verify(Some(&t), FID).is_err());
    }
}
