//! Entry points shared by the cargo-fuzz targets (`/fuzz`) and the corpus
//! replay test, so both run exactly the same code. None may panic,
//! whatever the input: tokens, white lists and `security.toml` text come
//! from clients and operators.

use crate::jwt::JwtKey;
use crate::security::SecurityConfig;
use crate::white_list::WhiteList;

/// The key and file id the token target checks against; the corpus seeds
/// are tokens minted with them (and broken ones).
pub const TOKEN_KEY: &str = "fuzz-key";
pub const TOKEN_FID: &str = "3,01637037d6";

/// A token as a client sends it. Whatever it holds, verification answers
/// without panicking, and anything that passes carries the right claim.
pub fn token_verify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let key = JwtKey::new(TOKEN_KEY, 10);
    if key.verify(Some(&text), TOKEN_FID).is_ok() {
        // Only a correctly signed token can pass; re-verifying agrees.
        assert!(key.verify(Some(&text), "3,01637037d7").is_err());
    }
    let mut sec = SecurityConfig::default();
    sec.signing.key = TOKEN_KEY.into();
    let _ = sec.is_peer(Some(&text));
    let _ = crate::jwt::base_fid(&text);
}

/// `-whiteList` text and `security.toml` text.
pub fn security_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(w) = text.parse::<WhiteList>() {
        // What it prints parses back to the same list.
        let again: WhiteList = w.to_string().parse().expect("printed white list parses");
        assert_eq!(again, w);
        let _ = w.allows(std::net::IpAddr::from([10, 0, 0, 1]));
    }
    let _ = SecurityConfig::from_toml(&text);
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("token_verify", token_verify),
    ("security_parse", security_parse),
];
