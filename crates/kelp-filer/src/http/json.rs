//! Entries as JSON, in the field names of the SeaweedFS filer's listings
//! and `?metadata=true` answers (`FullPath`, `Mtime`, `Mode`, `chunks`…),
//! plus Kelp's `StoredSize` and `Quota*` fields.

use base64::Engine;
use serde_json::{Value, json};

use crate::entry::{Entry, Kind, MODE_DIR};
use crate::path::FullPath;
use crate::store::Event;

pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn entry(path: &FullPath, e: &Entry) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mode = if e.kind == Kind::Directory {
        e.mode | MODE_DIR
    } else {
        e.mode
    };
    let extended: serde_json::Map<String, Value> = e
        .xattrs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(b64.encode(v))))
        .collect();
    let chunks: Vec<Value> = e
        .chunks
        .iter()
        .map(|c| {
            json!({
                "file_id": c.fid,
                "offset": c.offset,
                "size": c.size,
                "modified_ts_ns": c.mtime_ns,
                "stored_size": c.stored,
                "zstd": c.zstd,
            })
        })
        .collect();
    json!({
        "FullPath": path.as_str(),
        "Mtime": rfc3339(e.mtime_ns),
        "Crtime": rfc3339(e.crtime_ns),
        "Ctime": rfc3339(e.ctime_ns),
        "Mode": mode,
        "Uid": e.uid,
        "Gid": e.gid,
        "Mime": e.mime,
        "TtlSec": e.ttl_sec,
        "SymlinkTarget": e.symlink,
        "Md5": e.md5.map(|m| b64.encode(m)),
        "FileSize": e.size,
        "StoredSize": e.stored_bytes() + e.inline.len() as u64,
        "Extended": if extended.is_empty() { Value::Null } else { Value::Object(extended) },
        "chunks": chunks,
        "QuotaBytes": e.quota_bytes,
        "QuotaEntries": e.quota_entries,
    })
}

pub fn event(ev: &Event) -> Value {
    let side = |s: &Option<(FullPath, Entry)>| match s {
        Some((p, e)) => entry(p, e),
        None => Value::Null,
    };
    json!({
        "seq": ev.seq,
        "ts_ns": ev.ts_ns,
        "old": side(&ev.old),
        "new": side(&ev.new),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(1_796_606_098_243_077_083),
            "2026-12-07T01:14:58.243077083Z"
        );
        assert_eq!(
            super::rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
