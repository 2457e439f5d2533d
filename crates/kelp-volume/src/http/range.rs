//! `Range: bytes=...` parsing (RFC 9110 §14.1.2).
//!
//! The outcome is one of: no usable Range header (serve everything), a list
//! of satisfiable ranges, or "not satisfiable" (416). A syntactically bad
//! header is answered 416 as SeaweedFS does, not silently ignored.

use std::ops::Range;

/// Cap on the number of ranges in one request; more is a denial-of-service
/// pattern (tiny overlapping ranges), not a real client.
const MAX_RANGES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve the whole body.
    Full,
    /// Serve these half-open ranges, in request order.
    Ranges(Vec<Range<u64>>),
    /// Answer 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Interprets a `Range` header value against a body of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Unsatisfiable;
    };
    let mut out = Vec::new();
    let mut count = 0;
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_RANGES {
            return RangeRequest::Unsatisfiable;
        }
        let Some((start, end)) = part.split_once('-') else {
            return RangeRequest::Unsatisfiable;
        };
        let (start, end) = (start.trim(), end.trim());
        let parse = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        let range = if start.is_empty() {
            // Suffix range: the last N bytes.
            let Some(n) = parse(end) else {
                return RangeRequest::Unsatisfiable;
            };
            if n == 0 {
                continue;
            }
            len.saturating_sub(n)..len
        } else {
            let Some(s) = parse(start) else {
                return RangeRequest::Unsatisfiable;
            };
            let e = if end.is_empty() {
                len
            } else {
                let Some(e) = parse(end) else {
                    return RangeRequest::Unsatisfiable;
                };
                if e < s {
                    return RangeRequest::Unsatisfiable;
                }
                e.saturating_add(1).min(len)
            };
            if s >= len {
                // Not satisfiable on its own; others may still be.
                continue;
            }
            s..e
        };
        if range.start < range.end {
            out.push(range);
        }
    }
    if out.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Ranges(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(h: &str, len: u64) -> RangeRequest {
        parse_range(Some(h), len)
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn single_and_multi() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(r("bytes=0-4", 10), RangeRequest::Ranges(vec![0..5]));
        assert_eq!(r("bytes=5-", 10), RangeRequest::Ranges(vec![5..10]));
        assert_eq!(r("bytes=-3", 10), RangeRequest::Ranges(vec![7..10]));
        assert_eq!(r("bytes=-30", 10), RangeRequest::Ranges(vec![0..10]));
        assert_eq!(r("bytes=8-100", 10), RangeRequest::Ranges(vec![8..10]));
        assert_eq!(
            r("bytes=0-1, 4-5", 10),
            RangeRequest::Ranges(vec![0..2, 4..6])
        );
        assert_eq!(r("bytes=0-1,20-30", 10), RangeRequest::Ranges(vec![0..2]));
    }

    #[test]
    fn unsatisfiable_and_invalid() {
        for h in [
            "bytes=10-",
            "bytes=20-30",
            "bytes=5-2",
            "bytes=abc",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=-0",
            "bytes=1-x",
            "bytes=+1-2",
        ] {
            assert_eq!(r(h, 10), RangeRequest::Unsatisfiable, "{h}");
        }
        assert_eq!(r("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        let many = format!("bytes={}", vec!["0-0"; 65].join(","));
        assert_eq!(r(&many, 10), RangeRequest::Unsatisfiable);
    }

    proptest::proptest! {
        #[test]
        fn ranges_stay_in_bounds(h in "bytes=[0-9, -]{0,30}", len in 0u64..5000) {
            if let RangeRequest::Ranges(rs) = parse_range(Some(&h), len) {
                for r in rs {
                    proptest::prop_assert!(r.start < r.end && r.end <= len);
                }
            }
        }

        #[test]
        fn never_panics(h in ".{0,40}", len in proptest::prelude::any::<u64>()) {
            let _ = parse_range(Some(&h), len);
        }
    }
}
