//! Object versions: the bucket's versioning setting, version ids, keeping
//! the replaced object as a version, delete markers, reading and removing
//! one version, and ListObjectVersions.
//!
//! Stored layout (see also [`super::paths`]):
//!
//! - the bucket directory's `s3.versioning` xattr is `Enabled` or
//!   `Suspended`; absent, the bucket was never versioned and nothing here
//!   applies (version id `null` everywhere, today's behaviour);
//! - the current version of key `k` is the file `/buckets/b/k`, as in an
//!   unversioned bucket, with its id in `s3.version-id` (absent: `null`);
//! - every other version, and every delete marker, is the file
//!   `/.s3/versions/b/k/<name>`: the same entry moved there (chunks and
//!   xattrs unchanged, never copied). `<name>` is the version id, which is
//!   24 lowercase hex digits: 16 of `u64::MAX - <creation time in ns>`
//!   then 8 random, so that names sort newest first. The `null` version
//!   is named `<16 hex of its inverted mtime>null`, so it sorts by age
//!   too. A delete marker is an empty file with `s3.delete-marker`;
//! - when the current file exists it is the latest version; when it does
//!   not, the newest file of the versions directory is (a delete marker,
//!   or nothing). Removing the current version brings the newest older
//!   version back to `/buckets/b/k` unless that is a delete marker;
//! - a versioned write first stores its content at
//!   `/.s3/staging/b/<random>`, then one transaction removes the staging
//!   entry, puts the new current entry (on the condition that the current
//!   one is unchanged) and puts the replaced one in the versions
//!   directory — in that order, so that the filer's chunk references
//!   end up on the entries that keep the chunks.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use kelp_filer::store::{Cond, Op, Txn};
use kelp_filer::{Entry, FilerError, FullPath, Kind, NewFile};

use super::buckets::{owner_of, small_body, time_of};
use super::identities::Action;
use super::objects::{etag_of, find, now_ns, prune};
use super::{BucketInfo, Ctx, Gateway, filer_error, paths, reply};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::ListVersionsParams;
use crate::xml::requests::{self, VersioningStatus};
use crate::xml::responses;

pub const NULL: &str = "null";
/// Attempts of a versioned commit raced by another writer of the key.
const ATTEMPTS: usize = 8;

/// The bucket's versioning status (`None`: never versioned).
pub fn status(b: &BucketInfo) -> Option<VersioningStatus> {
    match b.entry.xattrs.get(paths::VERSIONING).map(Vec::as_slice) {
        Some(b"Enabled") => Some(VersioningStatus::Enabled),
        Some(b"Suspended") => Some(VersioningStatus::Suspended),
        _ => None,
    }
}

/// A new version id: newer ids sort first.
pub fn new_version_id() -> String {
    let inv = u64::MAX - now_ns().max(0) as u64;
    let r: u32 = rand::random();
    format!("{inv:016x}{r:08x}")
}

fn is_real_id(v: &str) -> bool {
    v.len() == 24 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The version id of a stored entry.
pub fn version_of(e: &Entry) -> String {
    e.xattrs
        .get(paths::VERSION_ID)
        .and_then(|v| String::from_utf8(v.clone()).ok())
        .unwrap_or_else(|| NULL.into())
}

pub fn is_marker(e: &Entry) -> bool {
    e.xattrs.contains_key(paths::DELETE_MARKER)
}

/// The name of `e` in its key's versions directory.
fn stored_name(e: &Entry) -> String {
    let v = version_of(e);
    if v == NULL {
        format!("{:016x}{NULL}", u64::MAX - e.mtime_ns.max(0) as u64)
    } else {
        v
    }
}

/// The versions of `key` kept in its versions directory, newest first.
async fn older(gw: &Gateway, bucket: &str, key: &str) -> S3Result<(FullPath, Vec<Entry>)> {
    let dir = paths::versions_dir(bucket, key)?;
    let out = gw
        .children(&dir)
        .await?
        .into_iter()
        .filter(|e| !e.is_dir())
        .collect();
    Ok((dir, out))
}

/// The current file of `key` (not a folder object), if any.
async fn current(gw: &Gateway, path: &FullPath) -> S3Result<Option<Entry>> {
    Ok(gw
        .filer
        .lookup(path)
        .await
        .map_err(filer_error)?
        .filter(|e| !e.is_dir()))
}

/// Like [`locate`], for what only an object has (tags, an ACL): a
/// delete marker is MethodNotAllowed.
pub async fn locate_object(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    vid: Option<&str>,
) -> S3Result<(FullPath, Entry)> {
    let (p, e) = locate(gw, bucket, key, vid).await?;
    if is_marker(&e) {
        return Err(S3Error::new(S3ErrorCode::MethodNotAllowed));
    }
    Ok((p, e))
}

/// Where version `vid` of `key` is and what it is (maybe a delete
/// marker); `None` for the current object.
pub async fn locate(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    vid: Option<&str>,
) -> S3Result<(FullPath, Entry)> {
    let Some(vid) = vid else {
        return find(gw, bucket, key).await;
    };
    if vid != NULL && !is_real_id(vid) {
        return Err(S3Error::with_message(
            S3ErrorCode::NoSuchVersion,
            "The specified version does not exist.",
        ));
    }
    let path = paths::object_path(bucket, key)?;
    if key.ends_with('/') && vid == NULL {
        return find(gw, bucket, key).await;
    }
    if let Some(e) = current(gw, &path).await?
        && version_of(&e) == vid
    {
        return Ok((path, e));
    }
    let (dir, older) = older(gw, bucket, key).await?;
    older
        .into_iter()
        .find(|e| version_of(e) == vid)
        .map(|e| (dir.child(&e.name), e))
        .ok_or_else(|| S3Error::new(S3ErrorCode::NoSuchVersion))
}

/// Ops that make `new` the current version at `path`, the replaced one
/// kept as a version (or, for a `null` write, dropped along with an older
/// `null` version). Appended after `before`.
async fn current_ops(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    path: &FullPath,
    new: Option<Entry>,
    st: VersioningStatus,
) -> S3Result<(Vec<Op>, Option<Entry>)> {
    let cur = current(gw, path).await?;
    let (vdir, older) = older(gw, bucket, key).await?;
    let new_is_null = new.as_ref().is_none_or(|n| version_of(n) == NULL);
    let mut ops = Vec::new();
    match (&new, &cur) {
        (Some(n), Some(c)) => ops.push(Op::Put {
            path: path.clone(),
            entry: n.clone(),
            cond: Cond::Unchanged(Box::new(c.clone())),
        }),
        (Some(n), None) => ops.push(Op::Put {
            path: path.clone(),
            entry: n.clone(),
            cond: Cond::Absent,
        }),
        (None, Some(c)) => ops.push(Op::Delete {
            path: path.clone(),
            cond: Cond::Unchanged(Box::new(c.clone())),
            recursive: false,
        }),
        (None, None) => {}
    }
    if let Some(c) = &cur
        && !(st == VersioningStatus::Suspended && version_of(c) == NULL)
    {
        let mut kept = c.clone();
        kept.name = stored_name(c);
        ops.push(Op::Put {
            path: vdir.child(&kept.name),
            entry: kept,
            cond: Cond::Absent,
        });
    }
    if st == VersioningStatus::Suspended && new_is_null {
        for o in older.iter().filter(|o| version_of(o) == NULL) {
            ops.push(Op::Delete {
                path: vdir.child(&o.name),
                cond: Cond::Unchanged(Box::new(o.clone())),
                recursive: false,
            });
        }
    }
    Ok((ops, cur))
}

/// Commits `new` (named for `path`) as the current version of `key`
/// after the ops `before` (which must release what `new` takes over);
/// returns its version id.
pub async fn commit_current(
    gw: &Gateway,
    b: &BucketInfo,
    bucket: &str,
    key: &str,
    path: &FullPath,
    mut new: Entry,
    before: Vec<Op>,
) -> Result<String, FilerError> {
    let st = status(b).unwrap_or(VersioningStatus::Suspended);
    let vid = match st {
        VersioningStatus::Enabled => new_version_id(),
        VersioningStatus::Suspended => NULL.to_string(),
    };
    new.name = path.name().to_string();
    if vid == NULL {
        new.xattrs.remove(paths::VERSION_ID);
    } else {
        new.xattrs
            .insert(paths::VERSION_ID.into(), vid.as_bytes().to_vec());
    }
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let (ops, _) = current_ops(gw, bucket, key, path, Some(new.clone()), st)
            .await
            .map_err(|e| FilerError::BadRequest(e.message))?;
        let mut all = before.clone();
        all.extend(ops);
        match gw.filer.commit(Txn { ops: all }).await {
            Ok(_) => return Ok(vid),
            Err(FilerError::Precondition(m)) => last = Some(FilerError::Precondition(m)),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(FilerError::Precondition(path.to_string())))
}

/// Writes `body` as the new current version of `key` in a versioned
/// bucket: content to a staging file, then [`commit_current`].
pub async fn write<S, E>(
    gw: &Gateway,
    b: &BucketInfo,
    bucket: &str,
    key: &str,
    path: &FullPath,
    body: S,
    f: NewFile,
) -> Result<(Entry, String), FilerError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let r: u128 = rand::random();
    let staging = paths::staging_dir(bucket).child(&format!("{r:032x}"));
    let staged = gw.filer.write(&staging, body, f).await?;
    let before = vec![Op::Delete {
        path: staging.clone(),
        cond: Cond::Any,
        recursive: false,
    }];
    match commit_current(gw, b, bucket, key, path, staged.clone(), before).await {
        Ok(vid) => {
            let mut e = staged;
            e.name = path.name().to_string();
            if vid != NULL {
                e.xattrs
                    .insert(paths::VERSION_ID.into(), vid.as_bytes().to_vec());
            }
            Ok((e, vid))
        }
        Err(err) => {
            let _ = gw.filer.delete(&staging, false).await;
            Err(err)
        }
    }
}

/// A delete marker named for `vid`.
fn marker(vid: &str, owner: Option<&str>) -> Entry {
    let now = now_ns();
    let mut xattrs = BTreeMap::new();
    xattrs.insert(paths::DELETE_MARKER.to_string(), b"1".to_vec());
    if vid != NULL {
        xattrs.insert(paths::VERSION_ID.to_string(), vid.as_bytes().to_vec());
    }
    if let Some(o) = owner {
        xattrs.insert(paths::OWNER.to_string(), o.as_bytes().to_vec());
    }
    let mut e = Entry {
        kind: Kind::File,
        mode: 0o660,
        mtime_ns: now,
        ctime_ns: now,
        crtime_ns: now,
        xattrs,
        ..Default::default()
    };
    e.name = stored_name(&e);
    e
}

/// What a delete did: the version id it concerned and whether that is a
/// delete marker.
pub struct Deleted {
    pub version_id: String,
    pub marker: bool,
}

/// DeleteObject in a versioned bucket. Without `vid`: a delete marker
/// becomes the latest version. With it: that version goes, and the next
/// newest becomes current when the latest went.
pub async fn delete(
    gw: &Gateway,
    cx: &Ctx,
    b: &BucketInfo,
    bucket: &str,
    key: &str,
    vid: Option<&str>,
) -> S3Result<Deleted> {
    let path = paths::object_path(bucket, key)?;
    match vid {
        None => {
            let st = status(b).unwrap_or(VersioningStatus::Suspended);
            let id = match st {
                VersioningStatus::Enabled => new_version_id(),
                VersioningStatus::Suspended => NULL.to_string(),
            };
            let m = marker(&id, gw.caller(cx).as_deref());
            for _ in 0..ATTEMPTS {
                let (mut ops, _) = current_ops(gw, bucket, key, &path, None, st).await?;
                let vdir = paths::versions_dir(bucket, key)?;
                ops.push(Op::Put {
                    path: vdir.child(&m.name),
                    entry: m.clone(),
                    cond: Cond::Absent,
                });
                match gw.filer.commit(Txn { ops }).await {
                    Ok(_) => {
                        prune(gw, bucket, &path).await;
                        return Ok(Deleted {
                            version_id: id,
                            marker: true,
                        });
                    }
                    Err(FilerError::Precondition(_)) => continue,
                    Err(e) => return Err(filer_error(e)),
                }
            }
            Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "The object kept changing; try again",
            ))
        }
        Some(v) => {
            for _ in 0..ATTEMPTS {
                let (at, e) = match locate(gw, bucket, key, Some(v)).await {
                    Ok(x) => x,
                    // S3 answers a delete of a missing version with success.
                    Err(err) if err.code == S3ErrorCode::NoSuchVersion && is_real_or_null(v) => {
                        return Ok(Deleted {
                            version_id: v.to_string(),
                            marker: false,
                        });
                    }
                    Err(err) => return Err(err),
                };
                let was_current = at == path;
                let mut ops = vec![Op::Delete {
                    path: at.clone(),
                    cond: Cond::Unchanged(Box::new(e.clone())),
                    recursive: false,
                }];
                let (vdir, older) = older(gw, bucket, key).await?;
                // The latest version is the current file, or without one
                // the newest kept version: when it goes, the next one up
                // comes back unless it is a delete marker.
                let latest_went = was_current
                    || (current(gw, &path).await?.is_none()
                        && older.first().is_some_and(|o| o.name == e.name));
                if latest_went {
                    let next = older.iter().find(|o| o.name != e.name);
                    if let Some(n) = next
                        && !is_marker(n)
                    {
                        ops.push(Op::Delete {
                            path: vdir.child(&n.name),
                            cond: Cond::Unchanged(Box::new(n.clone())),
                            recursive: false,
                        });
                        let mut back = n.clone();
                        back.name = path.name().to_string();
                        ops.push(Op::Put {
                            path: path.clone(),
                            entry: back,
                            cond: if was_current { Cond::Any } else { Cond::Absent },
                        });
                    }
                }
                match gw.filer.commit(Txn { ops }).await {
                    Ok(_) | Err(FilerError::NotFound(_)) => {
                        prune(gw, bucket, &path).await;
                        prune_versions(gw, bucket, &at).await;
                        return Ok(Deleted {
                            version_id: v.to_string(),
                            marker: is_marker(&e),
                        });
                    }
                    Err(FilerError::Precondition(_)) => continue,
                    Err(err) => return Err(filer_error(err)),
                }
            }
            Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "The object kept changing; try again",
            ))
        }
    }
}

fn is_real_or_null(v: &str) -> bool {
    v == NULL || is_real_id(v)
}

/// Removes empty directories left in the versions tree above `path`.
async fn prune_versions(gw: &Gateway, bucket: &str, path: &FullPath) {
    let top = paths::versions_dir_of_bucket(bucket);
    let mut at = path.clone();
    while let Some((parent, _)) = at.split() {
        if parent == top || !parent.is_within(&top) {
            return;
        }
        let del = Op::Delete {
            path: parent.clone(),
            cond: Cond::Present,
            recursive: false,
        };
        if gw.filer.commit(Txn::one(del)).await.is_err() {
            return;
        }
        at = parent;
    }
}

pub async fn get_versioning(gw: &Gateway, cx: &Ctx, bucket: &str) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    Ok(reply::ok_xml(responses::versioning(status(&b))))
}

pub async fn put_versioning(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    body: Body,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Admin).await?;
    let Some(st) = requests::parse_versioning(&small_body(cx, body).await?)? else {
        return Ok(reply::empty(200));
    };
    let value: &[u8] = match st {
        VersioningStatus::Enabled => b"Enabled",
        VersioningStatus::Suspended => b"Suspended",
    };
    let mut e = b.entry.clone();
    e.xattrs.insert(paths::VERSIONING.into(), value.to_vec());
    let put = Op::Put {
        path: b.dir.clone(),
        entry: e,
        cond: Cond::Unchanged(Box::new(b.entry)),
    };
    gw.filer.commit(Txn::one(put)).await.map_err(filer_error)?;
    Ok(reply::empty(200))
}

/// One key's versions, newest first.
struct KeyVersions {
    key: String,
    versions: Vec<Entry>,
}

/// Every file below `dir` (recursively), with its path relative to `dir`.
async fn walk(gw: &Gateway, dir: &FullPath, prefix: &str) -> S3Result<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.clone(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in gw.children(&d).await? {
            let r = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            // Only what can hold keys with `prefix`.
            let cmp = r.len().min(prefix.len());
            if r.as_bytes()[..cmp] != prefix.as_bytes()[..cmp] {
                continue;
            }
            if e.is_dir() {
                stack.push((d.child(&e.name), r.clone()));
            }
            out.push((r, e));
        }
    }
    Ok(out)
}

/// Every key with versions under `prefix`, in key order.
async fn all_versions(gw: &Gateway, bucket: &str, prefix: &str) -> S3Result<Vec<KeyVersions>> {
    type Found = (Option<Entry>, Vec<Entry>);
    let mut keys: BTreeMap<String, Found> = BTreeMap::new();
    for (rel, e) in walk(gw, &paths::bucket_dir(bucket), prefix).await? {
        if !e.is_dir() {
            keys.entry(rel).or_default().0 = Some(e);
        } else if e.xattrs.contains_key(paths::MARKER) {
            keys.entry(format!("{rel}/")).or_default().0 = Some(e);
        }
    }
    for (rel, e) in walk(gw, &paths::versions_dir_of_bucket(bucket), prefix).await? {
        if e.is_dir() {
            continue;
        }
        if let Some((key, _)) = rel.rsplit_once('/') {
            keys.entry(key.to_string()).or_default().1.push(e);
        }
    }
    Ok(keys
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(key, (cur, mut kept))| {
            // The current file first, then the kept ones newest first.
            kept.sort_by(|a, b| a.name.cmp(&b.name));
            let versions = cur.into_iter().chain(kept).collect();
            KeyVersions { key, versions }
        })
        .collect())
}

pub async fn list(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    p: ListVersionsParams,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::List).await?;
    let owner = owner_of(b.owner());
    let keys = all_versions(gw, bucket, &p.prefix).await?;
    let mut out = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let max = p.max_keys as usize;
    let mut truncated = false;
    let mut next: Option<(String, String)> = None;
    'keys: for kv in keys {
        if kv.key < p.key_marker || (kv.key == p.key_marker && p.version_id_marker.is_empty()) {
            continue;
        }
        if let Some(d) = p.delimiter.as_deref().filter(|d| !d.is_empty())
            && let Some(i) = kv.key[p.prefix.len()..].find(d)
        {
            let cp = kv.key[..p.prefix.len() + i + d.len()].to_string();
            if cp.as_str() <= p.key_marker.as_str() || prefixes.last() == Some(&cp) {
                continue;
            }
            if out.len() + prefixes.len() >= max {
                truncated = true;
                break;
            }
            next = Some((cp.clone(), String::new()));
            prefixes.push(cp);
            continue;
        }
        let mut skipping = kv.key == p.key_marker;
        for (i, e) in kv.versions.iter().enumerate() {
            let vid = version_of(e);
            if skipping {
                if vid == p.version_id_marker {
                    skipping = false;
                }
                continue;
            }
            if out.len() + prefixes.len() >= max {
                truncated = true;
                break 'keys;
            }
            next = Some((kv.key.clone(), vid.clone()));
            out.push(responses::VersionEntry {
                key: kv.key.clone(),
                version_id: vid,
                is_latest: i == 0,
                last_modified: time_of(e.mtime_ns),
                owner: owner.clone(),
                object: (!is_marker(e)).then(|| (etag_of(e), e.size, "STANDARD".to_string())),
            });
        }
    }
    let (next_key, next_vid) = match (truncated, next) {
        (true, Some((k, v))) => (Some(k), Some(v).filter(|v| !v.is_empty())),
        _ => (None, None),
    };
    let v = responses::VersionListing {
        listing: responses::Listing {
            bucket: bucket.to_string(),
            prefix: p.prefix.clone(),
            delimiter: p.delimiter.clone(),
            max_keys: p.max_keys,
            is_truncated: truncated,
            encoding_url: p.encoding_url,
            common_prefixes: prefixes,
            ..Default::default()
        },
        key_marker: p.key_marker.clone(),
        version_id_marker: p.version_id_marker.clone(),
        next_key_marker: next_key,
        next_version_id_marker: next_vid,
        versions: out,
    };
    Ok(reply::ok_xml(responses::list_object_versions(&v)))
}
