//! JWT checks on `/<fid>` requests (SeaweedFS's guard): writes and deletes
//! need a token signed with `jwt.signing.key`, reads one signed with
//! `jwt.signing.read.key`; an empty key turns that check off.
//!
//! The token is taken from `?jwt=`, else `Authorization: Bearer <t>` (the
//! scheme in any case), else the `AT` cookie.

use axum::http::{HeaderMap, header};
use kelp_core::JwtKey;

use super::fid::FidPath;
use crate::error::ApiError;

/// Passes when `key` is empty or the request carries a valid token for the
/// file in `path`.
pub fn check(
    key: &JwtKey,
    query: &[(String, String)],
    headers: &HeaderMap,
    path: &FidPath,
) -> Result<(), ApiError> {
    if !key.is_enabled() {
        return Ok(());
    }
    let token = token(query, headers);
    key.verify(token.as_deref(), &path.claim).map_err(|e| {
        tracing::debug!(fid = path.claim, error = %e, "jwt refused");
        ApiError::WrongJwt
    })
}

/// The request's token, from the first source that has one.
pub fn token(query: &[(String, String)], headers: &HeaderMap) -> Option<String> {
    if let Some((_, v)) = query.iter().find(|(k, v)| k == "jwt" && !v.is_empty()) {
        return Some(v.clone());
    }
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(kelp_net::guard::bearer)
    {
        return Some(t.to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == "AT" && !value.is_empty()).then(|| value.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn token_sources_in_order() {
        let mut h = HeaderMap::new();
        assert_eq!(token(&[], &h), None);
        h.insert(header::COOKIE, HeaderValue::from_static("x=1; AT=cookie"));
        assert_eq!(token(&[], &h).as_deref(), Some("cookie"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("BEARER header"),
        );
        assert_eq!(token(&[], &h).as_deref(), Some("header"));
        assert_eq!(token(&q(&[("jwt", "query")]), &h).as_deref(), Some("query"));
        // An empty query value falls through.
        assert_eq!(token(&q(&[("jwt", "")]), &h).as_deref(), Some("header"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(token(&[], &h).as_deref(), Some("cookie"));
    }
}
