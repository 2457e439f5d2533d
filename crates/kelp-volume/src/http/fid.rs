//! File ids in URL paths. The volume server accepts
//! `/vid,keycookie`, `/vid,keycookie.ext`, `/vid/keycookie` and
//! `/vid/keycookie/filename` (the last form may also carry `.ext` on the
//! key part, which is ignored).

use kelp_core::{FileId, VolumeId};

use crate::error::ApiError;

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FidPath {
    pub fid: FileId,
    /// Extension including the dot, from the file name or the fid (`.jpg`).
    pub ext: Option<String>,
    /// File name given as the last path segment (`/vid/keycookie/name`).
    pub filename: Option<String>,
    /// `vid,keycookie[_N]` exactly as written in the path (extension
    /// dropped): what a JWT's `fid` claim is compared with.
    pub claim: String,
}

pub fn parse_fid_path(path: &str) -> Result<FidPath, ApiError> {
    let bad = || ApiError::BadFileId(path.to_string());
    let trimmed = path.strip_prefix('/').ok_or_else(bad)?;
    let segments: Vec<&str> = trimmed.split('/').collect();
    let (vid, key_part, filename) = match segments.as_slice() {
        [one] => {
            let (vid, rest) = one.split_once(',').ok_or_else(bad)?;
            (vid, rest, None)
        }
        [vid, key] => (*vid, *key, None),
        [vid, key, name] if !name.is_empty() => (*vid, *key, Some(percent_decode(name))),
        _ => return Err(bad()),
    };
    let volume_id: VolumeId = vid.parse().map_err(|_| bad())?;
    // `.ext` after the key; the key itself is hex so the first dot starts it.
    let (key_cookie, key_ext) = match key_part.find('.') {
        Some(i) => (&key_part[..i], Some(key_part[i..].to_string())),
        None => (key_part, None),
    };
    let fid = FileId::parse_key_cookie(volume_id, key_cookie)
        .map_err(|e| ApiError::BadFileId(format!("{path}: {e}")))?;
    let ext = match &filename {
        Some(name) => name.rfind('.').map(|i| name[i..].to_string()),
        None => key_ext,
    };
    Ok(FidPath {
        fid,
        ext,
        filename,
        claim: format!("{vid},{key_cookie}"),
    })
}

/// Decodes `%XX` escapes; invalid escapes and invalid UTF-8 are kept
/// literally (lossy) rather than rejected.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = (b[i + 1] as char).to_digit(16);
            let lo = (b[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_path_forms() {
        let f = parse_fid_path("/3,01637037d6").unwrap();
        assert_eq!(f.fid, FileId::new(3, 1, 0x637037d6));
        assert_eq!(f.ext, None);
        let f = parse_fid_path("/3,01637037d6.jpg").unwrap();
        assert_eq!(f.fid, FileId::new(3, 1, 0x637037d6));
        assert_eq!(f.ext.as_deref(), Some(".jpg"));
        let f = parse_fid_path("/3/01637037d6").unwrap();
        assert_eq!(f.fid, FileId::new(3, 1, 0x637037d6));
        let f = parse_fid_path("/3/01637037d6/my%20file.txt").unwrap();
        assert_eq!(f.fid, FileId::new(3, 1, 0x637037d6));
        assert_eq!(f.filename.as_deref(), Some("my file.txt"));
        assert_eq!(f.ext.as_deref(), Some(".txt"));
        let f = parse_fid_path("/3,01637037d6_2").unwrap();
        assert_eq!(f.fid.key, 3);
        assert_eq!(f.claim, "3,01637037d6_2");
        assert_eq!(
            parse_fid_path("/3/01637037d6.jpg").unwrap().claim,
            "3,01637037d6"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "/",
            "3,01637037d6",
            "/3",
            "/x,01637037d6",
            "/3,0163",
            "/3,zz637037d6",
            "/3/01637037d6/a/b",
            "/3/01637037d6/",
            "/-1,01637037d6",
            "/3,",
            "/,01637037d6",
        ] {
            assert!(parse_fid_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_decoding_never_panics() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(p in "/?[0-9a-f,/._%]{0,40}") {
            let _ = parse_fid_path(&p);
            let _ = percent_decode(&p);
        }

        #[test]
        fn round_trips(vid in 0u32.., key in 0u64.., cookie in 0u32..) {
            let fid = FileId::new(vid, key, cookie);
            let p = parse_fid_path(&format!("/{fid}")).unwrap();
            proptest::prop_assert_eq!(p.fid, fid);
            let p = parse_fid_path(&format!("/{}/{}/n.txt", vid, fid.key_cookie_hex())).unwrap();
            proptest::prop_assert_eq!(p.fid, fid);
        }
    }
}
