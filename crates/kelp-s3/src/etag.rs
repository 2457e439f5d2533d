//! ETags and the `If-Match` / `If-None-Match` lists.
//!
//! A single PUT's ETag is the quoted hex MD5 of the body: `"9b2c…"`.
//! A multipart object's is the hex MD5 of the concatenated binary MD5s of
//! its parts, then `-N` for N parts: `"d41d…-3"`. Clients send ETags with
//! or without quotes (and `W/` for weak ones, compared weakly here).

use md5::{Digest, Md5};

/// An ETag without its quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// The ETag of a single PUT body with this MD5.
    pub fn from_md5(md5: &[u8; 16]) -> Self {
        ETag(crate::hex::encode(md5))
    }

    /// The ETag of a body.
    pub fn of_body(body: &[u8]) -> Self {
        Self::from_md5(&Md5::digest(body).into())
    }

    /// The multipart ETag from each part's binary MD5, in part order.
    pub fn multipart(part_md5s: &[[u8; 16]]) -> Self {
        let mut h = Md5::new();
        for m in part_md5s {
            h.update(m);
        }
        ETag(format!(
            "{}-{}",
            crate::hex::encode(&h.finalize()),
            part_md5s.len()
        ))
    }

    /// Parses an ETag as a client sends it: quotes, `W/` optional.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        let s = s.strip_prefix("W/").unwrap_or(s);
        let s = s.strip_prefix('"').unwrap_or(s);
        let s = s.strip_suffix('"').unwrap_or(s);
        ETag(s.to_owned())
    }

    /// The bare value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quoted form for the `ETag` header and XML.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The hex MD5 when this is a single-PUT ETag.
    pub fn md5(&self) -> Option<[u8; 16]> {
        let v = crate::hex::decode(&self.0)?;
        v.try_into().ok()
    }
}

/// An `If-Match` / `If-None-Match` value: `*` or a list of ETags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ETagCondition {
    Any,
    List(Vec<ETag>),
}

/// At most this many ETags are read from one condition header.
pub const MAX_CONDITION_ETAGS: usize = 64;

impl ETagCondition {
    /// Parses `*` or `"a", "b", W/"c"`; `None` if empty.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s == "*" {
            return Some(ETagCondition::Any);
        }
        let tags: Vec<ETag> = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .take(MAX_CONDITION_ETAGS)
            .map(ETag::parse)
            .collect();
        if tags.is_empty() {
            None
        } else {
            Some(ETagCondition::List(tags))
        }
    }

    /// Whether an object with this ETag matches (`*` matches any object).
    pub fn matches(&self, etag: &ETag) -> bool {
        match self {
            ETagCondition::Any => true,
            ETagCondition::List(l) => l.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multipart() {
        assert_eq!(
            ETag::of_body(b"").quoted(),
            "\"d41d8cd98f00b204e9800998ecf8427e\""
        );
        let m: [u8; 16] = Md5::digest(b"").into();
        // md5(md5("") || md5("")) computed independently.
        let mut cat = Vec::new();
        cat.extend_from_slice(&m);
        cat.extend_from_slice(&m);
        let want = format!("{}-2", crate::hex::encode(&Md5::digest(&cat)));
        assert_eq!(ETag::multipart(&[m, m]).as_str(), want);
        assert_eq!(ETag::of_body(b"").md5(), Some(m));
        assert_eq!(ETag::multipart(&[m]).md5(), None);
    }

    #[test]
    fn parse_and_conditions() {
        assert_eq!(ETag::parse("\"abc\""), ETag::parse("abc"));
        assert_eq!(ETag::parse("W/\"abc\"").as_str(), "abc");
        let c = ETagCondition::parse("\"a\", b ,W/\"c\"").unwrap();
        assert!(
            c.matches(&ETag::parse("a"))
                && c.matches(&ETag::parse("b"))
                && c.matches(&ETag::parse("c"))
        );
        assert!(!c.matches(&ETag::parse("d")));
        assert_eq!(ETagCondition::parse("*"), Some(ETagCondition::Any));
        assert_eq!(ETagCondition::parse(" , "), None);
    }
}
