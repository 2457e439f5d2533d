//! Request parameters the SeaweedFS way: query string and, for POST, an
//! `application/x-www-form-urlencoded` body, merged (body wins). Parsing is
//! lenient and never fails: bad percent escapes stay literal.

use std::collections::HashMap;

use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};

use crate::error::MasterError;

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Debug, Default, Clone)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    /// Absent or empty → `None`; present but not a number → 400.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, MasterError> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| MasterError::BadRequest(format!("{name}={v:?} is not a valid number")))
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = MasterError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut map = parse_form(req.uri().query().unwrap_or(""));
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if req.method() == Method::POST && is_form {
            let body = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e| MasterError::BadRequest(format!("reading form body: {e}")))?;
            if body.len() > MAX_FORM_BYTES {
                return Err(MasterError::BadRequest("form body too large".to_string()));
            }
            map.extend(parse_form(&String::from_utf8_lossy(&body)));
        }
        Ok(Params(map))
    }
}

pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        let m = parse_form("count=5&collection=a%20b&ttl=3m&x&bad=%zz%4&plus=a+b&=1");
        assert_eq!(m["count"], "5");
        assert_eq!(m["collection"], "a b");
        assert_eq!(m["x"], "");
        assert_eq!(m["bad"], "%zz%4");
        assert_eq!(m["plus"], "a b");
        assert!(parse_form("").is_empty());
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%41"), "A");
        assert_eq!(decode("%ff"), "\u{fffd}");
    }
}
