//! Volume file names: `<dir>/<vid>.<ext>` or `<dir>/<collection>_<vid>.<ext>`.

use std::io;
use std::path::{Path, PathBuf};

use kelp_storage::Storage;

/// Base path without extension.
pub fn base_path(dir: &Path, collection: &str, vid: u32) -> PathBuf {
    if collection.is_empty() {
        dir.join(vid.to_string())
    } else {
        dir.join(format!("{collection}_{vid}"))
    }
}

pub fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Parses a `.dat` file stem into (collection, vid).
pub fn parse_stem(stem: &str) -> Option<(String, u32)> {
    if let Ok(v) = stem.parse::<u32>() {
        return Some((String::new(), v));
    }
    let (c, v) = stem.rsplit_once('_')?;
    let v = v.parse::<u32>().ok()?;
    (!c.is_empty()).then(|| (c.to_string(), v))
}

/// Volumes (`.dat` files) in `dir`, sorted by (collection, vid).
pub fn scan_dir(dir: &Path) -> io::Result<Vec<(String, u32)>> {
    scan_dir_in(&Storage::real(), dir)
}

/// `scan_dir` on a chosen storage backend.
pub fn scan_dir_in(storage: &Storage, dir: &Path) -> io::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for name in storage.list(dir)? {
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".dat")
            && let Some(v) = parse_stem(stem)
        {
            out.push(v);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(base_path(Path::new("/d"), "", 3), PathBuf::from("/d/3"));
        assert_eq!(
            base_path(Path::new("/d"), "pics", 3),
            PathBuf::from("/d/pics_3")
        );
        assert_eq!(parse_stem("pics_3"), Some(("pics".into(), 3)));
        assert_eq!(parse_stem("a_b_12"), Some(("a_b".into(), 12)));
        assert_eq!(parse_stem("7"), Some((String::new(), 7)));
        assert_eq!(parse_stem("x"), None);
        assert_eq!(parse_stem("_5"), None);
        let d = tempfile::tempdir().unwrap();
        for f in ["1.dat", "1.idx", "c_2.dat", "junk.dat", "3.dat.tmp"] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        assert_eq!(
            scan_dir(d.path()).unwrap(),
            vec![(String::new(), 1), ("c".into(), 2)]
        );
    }
}
