//! [`FullPath`]: a checked absolute path in the filer's namespace.
//!
//! Paths are `/`-separated UTF-8, absolute, without empty, `.` or `..`
//! segments and without NUL (the metadata key separator). A trailing `/`
//! is dropped (`/a/b/` is `/a/b`); the root is `/`.

use std::fmt;

use crate::error::FilerError;

/// Longest path accepted, in bytes (S3 keys are at most 1024 bytes and
/// live under `/buckets/<name>/`).
pub const MAX_PATH: usize = 4096;
/// Longest single name, in bytes.
pub const MAX_NAME: usize = 1024;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FullPath(String);

impl FullPath {
    pub fn root() -> Self {
        Self("/".to_string())
    }

    /// Checks and normalises `s` (a leading `/` is added when missing).
    pub fn parse(s: &str) -> Result<Self, FilerError> {
        if s.len() > MAX_PATH {
            return Err(FilerError::BadPath(format!(
                "path of {} bytes is longer than {MAX_PATH}",
                s.len()
            )));
        }
        let mut out = String::with_capacity(s.len() + 1);
        for seg in s.split('/') {
            if seg.is_empty() {
                continue;
            }
            if seg == "." || seg == ".." {
                return Err(FilerError::BadPath(format!(
                    "{s:?}: `.` and `..` are not allowed"
                )));
            }
            if seg.contains('\0') {
                return Err(FilerError::BadPath(format!("{s:?}: NUL in a name")));
            }
            if seg.len() > MAX_NAME {
                return Err(FilerError::BadPath(format!(
                    "a name of {} bytes is longer than {MAX_NAME}",
                    seg.len()
                )));
            }
            out.push('/');
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The parent directory and the last name; `None` for the root.
    pub fn split(&self) -> Option<(FullPath, &str)> {
        if self.is_root() {
            return None;
        }
        let i = self.0.rfind('/').unwrap_or(0);
        let parent = if i == 0 { "/" } else { &self.0[..i] };
        Some((FullPath(parent.to_string()), &self.0[i + 1..]))
    }

    pub fn name(&self) -> &str {
        self.split().map(|(_, n)| n).unwrap_or("")
    }

    /// `self/name`; `name` must be one checked segment.
    pub fn child(&self, name: &str) -> FullPath {
        if self.is_root() {
            FullPath(format!("/{name}"))
        } else {
            FullPath(format!("{}/{name}", self.0))
        }
    }

    /// Every ancestor from the root down, not `self`.
    pub fn ancestors(&self) -> Vec<FullPath> {
        let mut out = vec![FullPath::root()];
        let mut at = 0;
        while let Some(i) = self.0[at + 1..].find('/') {
            at += 1 + i;
            out.push(FullPath(self.0[..at].to_string()));
        }
        if self.is_root() {
            out.clear();
        }
        out
    }

    /// `self` is `other` or below it.
    pub fn is_within(&self, other: &FullPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes()[other.0.len()] == b'/')
    }

    /// `self` moved from below `from` to below `to`.
    pub fn rebase(&self, from: &FullPath, to: &FullPath) -> FullPath {
        debug_assert!(self.is_within(from));
        let rest = if from.is_root() {
            &self.0[..]
        } else {
            &self.0[from.0.len()..]
        };
        if rest.is_empty() {
            return to.clone();
        }
        if to.is_root() {
            FullPath(rest.to_string())
        } else {
            FullPath(format!("{}{rest}", to.0))
        }
    }
}

impl fmt::Display for FullPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FullPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(FullPath::parse("a//b/").unwrap().as_str(), "/a/b");
        assert_eq!(FullPath::parse("").unwrap().as_str(), "/");
        assert!(FullPath::parse("/a/../b").is_err());
        assert!(FullPath::parse("/a/\0").is_err());
        assert!(FullPath::parse(&"x".repeat(MAX_NAME + 1)).is_err());
        let p = FullPath::parse("/a/b/c d").unwrap();
        let (parent, name) = p.split().unwrap();
        assert_eq!((parent.as_str(), name), ("/a/b", "c d"));
        assert_eq!(
            FullPath::parse("/a").unwrap().split().unwrap().0.as_str(),
            "/"
        );
        let anc: Vec<String> = p.ancestors().iter().map(|a| a.to_string()).collect();
        assert_eq!(anc, ["/", "/a", "/a/b"]);
        assert!(FullPath::root().ancestors().is_empty());
    }

    #[test]
    fn within_and_rebase() {
        let a = FullPath::parse("/a").unwrap();
        let ab = FullPath::parse("/a/b").unwrap();
        let abc = FullPath::parse("/abc").unwrap();
        assert!(ab.is_within(&a) && a.is_within(&a) && !abc.is_within(&a));
        assert!(abc.is_within(&FullPath::root()));
        let z = FullPath::parse("/z/y").unwrap();
        assert_eq!(ab.rebase(&a, &z).as_str(), "/z/y/b");
        assert_eq!(a.rebase(&a, &z).as_str(), "/z/y");
        assert_eq!(ab.rebase(&a, &FullPath::root()).as_str(), "/b");
    }
}
