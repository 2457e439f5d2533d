//! Percent-encoding as S3 and SigV4 use it.
//!
//! - Paths are decoded exactly once; `+` in a path is a literal plus.
//! - Query strings decode `%XX` and, like S3, read `+` as a space.
//! - SigV4's `UriEncode` keeps `A-Z a-z 0-9 - . _ ~`, encodes everything
//!   else as `%XX` with uppercase hex; `/` is kept in the canonical URI and
//!   encoded in query names and values. `EncodingType=url` in listings
//!   uses the same set with `/` kept.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};

/// Everything but the unreserved set.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, keeping `/` (canonical URI, listing keys).
const UNRESERVED_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// SigV4 `UriEncode` of a query name or value (`/` encoded).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// SigV4 `UriEncode` keeping `/` (canonical URI, `EncodingType=url`).
pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED_SLASH).to_string()
}

/// The same for raw bytes (a decoded path that is not UTF-8).
pub fn encode_path_bytes(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, UNRESERVED_SLASH).to_string()
}

/// Decodes `%XX` once; bad escapes are kept as they are (as S3 does).
pub fn decode_path_bytes(s: &str) -> Vec<u8> {
    percent_decode(s.as_bytes()).collect()
}

/// Decodes a path; `None` if the result is not UTF-8.
pub fn decode_path(s: &str) -> Option<String> {
    String::from_utf8(decode_path_bytes(s)).ok()
}

/// Decodes a query name or value: `+` is a space, then `%XX`.
pub fn decode_query(s: &str) -> Option<String> {
    let plus: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    String::from_utf8(percent_decode(&plus).collect()).ok()
}

/// Splits a raw query string into decoded `(name, value)` pairs in order.
/// `a&b=` gives `("a", "")`, `("b", "")`. `None` if a part is not UTF-8.
pub fn parse_query(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode_query(n)?, decode_query(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_sigv4() {
        assert_eq!(
            encode_path("/a b/c+d&e%f~g_h.i-j/ü"),
            "/a%20b/c%2Bd%26e%25f~g_h.i-j/%C3%BC"
        );
        assert_eq!(encode_component("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(encode_path("/test$file.text"), "/test%24file.text");
    }

    #[test]
    fn decodes_once() {
        assert_eq!(decode_path("/a%2520b+c").unwrap(), "/a%20b+c");
        assert_eq!(decode_path("/%zz").unwrap(), "/%zz");
        assert_eq!(decode_path("/%ff"), None);
        assert_eq!(decode_query("a+b%2B").unwrap(), "a b+");
        assert_eq!(
            parse_query("list-type=2&prefix=&acl&x=%2F").unwrap(),
            vec![
                ("list-type".into(), "2".into()),
                ("prefix".into(), "".into()),
                ("acl".into(), "".into()),
                ("x".into(), "/".into())
            ]
        );
    }
}
