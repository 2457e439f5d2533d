//! The three timestamp forms S3 uses.
//!
//! - SigV4 `X-Amz-Date`: `20130524T000000Z` (basic ISO 8601, UTC).
//! - XML bodies and POST policies: `2006-02-03T16:45:09.000Z` (extended ISO
//!   8601, UTC; the policy may omit the milliseconds).
//! - HTTP headers: RFC 1123, `Fri, 24 May 2013 00:00:00 GMT` (httpdate).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) for days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

struct Civil {
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    ms: u32,
}

fn to_civil(t: SystemTime) -> Civil {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = dur.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let sod = secs.rem_euclid(86400) as u32;
    Civil {
        y,
        mo,
        d,
        h: sod / 3600,
        mi: sod / 60 % 60,
        s: sod % 60,
        ms: dur.subsec_millis(),
    }
}

fn from_civil(c: &Civil) -> Option<SystemTime> {
    if !(1..=12).contains(&c.mo)
        || !(1..=31).contains(&c.d)
        || c.h > 23
        || c.mi > 59
        || c.s > 60
        || c.y < 1970
    {
        return None;
    }
    let days = days_from_civil(c.y, c.mo, c.d);
    let secs = days * 86400 + (c.h * 3600 + c.mi * 60 + c.s) as i64;
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(c.ms as u64))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |a, &c| {
        a.checked_mul(10)?.checked_add((c - b'0') as u32)
    })
}

/// `20130524T000000Z`.
pub fn format_amz_date(t: SystemTime) -> String {
    let c = to_civil(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.y, c.mo, c.d, c.h, c.mi, c.s
    )
}

/// Parses `20130524T000000Z`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    from_civil(&Civil {
        y: digits(&b[0..4])? as i64,
        mo: digits(&b[4..6])?,
        d: digits(&b[6..8])?,
        h: digits(&b[9..11])?,
        mi: digits(&b[11..13])?,
        s: digits(&b[13..15])?,
        ms: 0,
    })
}

/// `2006-02-03T16:45:09.000Z`.
pub fn format_iso8601(t: SystemTime) -> String {
    let c = to_civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.y, c.mo, c.d, c.h, c.mi, c.s, c.ms
    )
}

/// Parses `2006-02-03T16:45:09Z` with optional fraction (any digits).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let rest = &b[19..];
    let ms = match rest {
        [b'Z'] => 0,
        [b'.', frac @ .., b'Z'] if (1..=9).contains(&frac.len()) => {
            let f = &frac[..frac.len().min(3)];
            digits(f)? * 10u32.pow(3 - f.len() as u32)
        }
        _ => return None,
    };
    from_civil(&Civil {
        y: digits(&b[0..4])? as i64,
        mo: digits(&b[5..7])?,
        d: digits(&b[8..10])?,
        h: digits(&b[11..13])?,
        mi: digits(&b[14..16])?,
        s: digits(&b[17..19])?,
        ms,
    })
}

/// RFC 1123 for headers (`Last-Modified`, `Expires`).
pub fn format_http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Parses an HTTP date (RFC 1123, RFC 850 or asctime).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let t = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1369353600);
        assert_eq!(format_amz_date(t), "20130524T000000Z");
        assert_eq!(format_http_date(t), "Fri, 24 May 2013 00:00:00 GMT");
        let x = parse_iso8601("2006-02-03T16:45:09.000Z").unwrap();
        assert_eq!(format_iso8601(x), "2006-02-03T16:45:09.000Z");
        assert_eq!(parse_iso8601("2006-02-03T16:45:09Z"), Some(x));
        assert_eq!(
            format_iso8601(parse_iso8601("2006-02-03T16:45:09.5Z").unwrap()),
            "2006-02-03T16:45:09.500Z"
        );
        assert_eq!(
            format_amz_date(parse_amz_date("20240229T235959Z").unwrap()),
            "20240229T235959Z"
        );
        for bad in [
            "",
            "20130524T000000",
            "2013052AT000000Z",
            "20131324T000000Z",
            "2013-05-24T00:00:00Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
        for bad in [
            "2006-02-03T16:45:09",
            "2006-02-03T16:45:09.Z",
            "2006-02-03 16:45:09Z",
            "２006-02-03T16:45:09Z",
        ] {
            assert!(parse_iso8601(bad).is_none(), "{bad}");
        }
    }
}
