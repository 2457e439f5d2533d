//! ListObjects V1 and V2 over the nested namespace, in S3's order: keys in
//! UTF-8 byte order across directories.
//!
//! A directory `d` holds the keys `P d/…`, which sort as `d/` does, not as
//! `d`: a sibling `d.txt` (`.` < `/`) comes before them. The walk keeps the
//! directories it met in a small sorted set and opens each when the names
//! reach its `d/`. With the delimiter `/` a directory is one common prefix
//! and is never opened; another delimiter folds keys as they come.
//!
//! Listings seek: a page after a marker starts at the marker's place in
//! each directory instead of reading what came before.

use std::collections::BTreeMap;

use axum::response::Response;
use base64::Engine;
use futures::future::BoxFuture;
use kelp_filer::{Entry, FilerError, FullPath};

use super::buckets::{owner_of, time_of};
use super::identities::Action;
use super::objects::etag_of;
use super::{Ctx, Gateway, filer_error, paths, reply};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::{ListV1Params, ListV2Params};
use crate::xml::responses::{self, Listing, ObjectInfo};

/// Entries read per filer call.
const PAGE: usize = 1000;

pub enum Item {
    Object(String, Box<Entry>),
    Prefix(String),
}

impl Item {
    pub fn key(&self) -> &str {
        match self {
            Item::Object(k, _) => k,
            Item::Prefix(p) => p,
        }
    }
}

/// One listing: items after `floor`, under `prefix`.
pub struct Walk<'g> {
    gw: &'g Gateway,
    prefix: String,
    delimiter: Option<String>,
    floor: String,
    /// Items to find: one more than asked, to know about truncation.
    want: usize,
    pub items: Vec<Item>,
}

impl<'g> Walk<'g> {
    pub fn new(
        gw: &'g Gateway,
        prefix: &str,
        delimiter: Option<&str>,
        floor: &str,
        max: usize,
    ) -> Self {
        Walk {
            gw,
            prefix: prefix.to_string(),
            delimiter: delimiter.map(str::to_string),
            floor: floor.to_string(),
            want: max + 1,
            items: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.items.len() >= self.want
    }

    fn folds_dirs(&self) -> bool {
        self.delimiter.as_deref() == Some("/")
    }

    /// Runs the walk over `bucket`.
    pub async fn run(&mut self, bucket: &str) -> S3Result<()> {
        let top = paths::bucket_dir(bucket);
        // The deepest directory the prefix names whole, and the rest.
        let (dir_part, name_prefix) = match self.prefix.rfind('/') {
            Some(i) => (&self.prefix[..=i], &self.prefix[i + 1..]),
            None => ("", self.prefix.as_str()),
        };
        let dir = if dir_part.is_empty() {
            top.clone()
        } else {
            match paths::object_path(bucket, dir_part) {
                Ok(p) => p,
                // No key can be below a path Kelp cannot store.
                Err(_) => return Ok(()),
            }
        };
        let (dir_part, name_prefix) = (dir_part.to_string(), name_prefix.to_string());
        self.walk_dir(dir, dir_part, name_prefix).await
    }

    /// The first child name of a directory with key prefix `p` that can
    /// hold a key above the floor (inclusive).
    fn seek(&self, p: &str) -> String {
        let Some(rest) = self.floor.strip_prefix(p) else {
            return String::new();
        };
        let first = rest.split('/').next().unwrap_or("");
        // Names before the first character below `/` can only hold keys at
        // or below the floor (see the module doc).
        let cut = first.find(|c: char| c < '/').unwrap_or(first.len());
        first[..cut].to_string()
    }

    fn walk_dir(
        &mut self,
        dir: FullPath,
        p: String,
        name_prefix: String,
    ) -> BoxFuture<'_, S3Result<()>> {
        Box::pin(async move {
            let mut start = self.seek(&p);
            let mut inclusive = true;
            if start.as_str() < name_prefix.as_str() {
                start.clear();
            }
            let mut pending: BTreeMap<String, Entry> = BTreeMap::new();
            loop {
                let page = match self
                    .gw
                    .filer
                    .list_at(&dir, &start, inclusive, &name_prefix, PAGE)
                    .await
                {
                    Ok(p) => p,
                    Err(FilerError::NotFound(_)) | Err(FilerError::NotDirectory(_)) => {
                        return Ok(());
                    }
                    Err(e) => return Err(filer_error(e)),
                };
                let n = page.len();
                for child in page {
                    start = child.name.clone();
                    inclusive = false;
                    let sort_key = if child.is_dir() {
                        format!("{}/", child.name)
                    } else {
                        child.name.clone()
                    };
                    self.flush(&dir, &p, &mut pending, Some(&sort_key)).await?;
                    if self.full() {
                        return Ok(());
                    }
                    if child.is_dir() {
                        pending.insert(sort_key, child);
                    } else {
                        let key = format!("{p}{}", child.name);
                        self.object(key, child);
                    }
                    if self.full() {
                        return Ok(());
                    }
                }
                if n < PAGE {
                    break;
                }
            }
            self.flush(&dir, &p, &mut pending, None).await
        })
    }

    /// Opens the pending directories that sort before `upto` (all of them
    /// for `None`).
    async fn flush(
        &mut self,
        dir: &FullPath,
        p: &str,
        pending: &mut BTreeMap<String, Entry>,
        upto: Option<&str>,
    ) -> S3Result<()> {
        while let Some((sk, _)) = pending.first_key_value() {
            if upto.is_some_and(|u| sk.as_str() >= u) || self.full() {
                return Ok(());
            }
            let (sk, e) = pending.pop_first().expect("just seen");
            let key = format!("{p}{sk}");
            let path = dir.child(&e.name);
            if self.folds_dirs() {
                if key > self.floor && self.holds_objects(&path, &e).await? {
                    self.items.push(Item::Prefix(key));
                }
                continue;
            }
            // Every key below starts with `key`: skip it when the floor is
            // past all of them.
            if self.floor.as_str() >= key.as_str() && !self.floor.starts_with(&key) {
                continue;
            }
            if e.xattrs.contains_key(paths::MARKER) {
                self.object(key.clone(), e);
            }
            if self.full() {
                return Ok(());
            }
            self.walk_dir(path, key, String::new()).await?;
        }
        Ok(())
    }

    /// A directory is a common prefix only when some object is below it.
    async fn holds_objects(&self, path: &FullPath, e: &Entry) -> S3Result<bool> {
        if e.xattrs.contains_key(paths::MARKER) {
            return Ok(true);
        }
        match self.gw.filer.list(path, "", "", 1).await {
            Ok(c) => Ok(!c.is_empty()),
            Err(FilerError::NotFound(_)) => Ok(false),
            Err(err) => Err(filer_error(err)),
        }
    }

    fn object(&mut self, key: String, e: Entry) {
        if key <= self.floor {
            return;
        }
        // A delimiter other than `/` folds keys here.
        if let Some(d) = self.delimiter.as_deref().filter(|d| *d != "/")
            && let Some(i) = key[self.prefix.len().min(key.len())..].find(d)
        {
            let cp = key[..self.prefix.len() + i + d.len()].to_string();
            let same = matches!(self.items.last(), Some(Item::Prefix(last)) if *last == cp);
            if !same && cp > self.floor {
                self.items.push(Item::Prefix(cp));
            }
            return;
        }
        self.items.push(Item::Object(key, Box::new(e)));
    }
}

/// What ListObjects V1 and V2 ask alike.
struct Ask<'a> {
    prefix: &'a str,
    delimiter: Option<&'a str>,
    floor: &'a str,
    max_keys: u32,
    owners: bool,
    encoding_url: bool,
}

/// The listing document's common part, and the last item's key when the
/// listing was cut.
async fn list(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    a: Ask<'_>,
) -> S3Result<(Listing, Option<String>)> {
    let Ask {
        prefix,
        delimiter,
        floor,
        max_keys,
        owners,
        encoding_url,
    } = a;
    let b = gw.bucket(cx, bucket, Action::List).await?;
    let mut walk = Walk::new(gw, prefix, delimiter, floor, max_keys as usize);
    if max_keys > 0 {
        walk.run(bucket).await?;
    }
    let truncated = walk.items.len() > max_keys as usize;
    walk.items.truncate(max_keys as usize);
    let next = if truncated {
        walk.items.last().map(|i| i.key().to_string())
    } else {
        None
    };
    let owner = owners.then(|| owner_of(b.owner()));
    let mut listing = Listing {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        delimiter: delimiter.map(str::to_string),
        max_keys,
        is_truncated: truncated,
        encoding_url,
        ..Default::default()
    };
    for item in walk.items {
        match item {
            Item::Prefix(p) => listing.common_prefixes.push(p),
            Item::Object(key, e) => listing.contents.push(ObjectInfo {
                key,
                last_modified: time_of(e.mtime_ns),
                etag: etag_of(&e),
                size: if e.is_dir() { 0 } else { e.size },
                storage_class: "STANDARD".into(),
                owner: owner.clone(),
            }),
        }
    }
    Ok((listing, next))
}

pub async fn v1(gw: &Gateway, cx: &Ctx, bucket: &str, p: ListV1Params) -> S3Result<Response> {
    let ask = Ask {
        prefix: &p.prefix,
        delimiter: p.delimiter.as_deref(),
        floor: &p.marker,
        max_keys: p.max_keys,
        owners: true,
        encoding_url: p.encoding_url,
    };
    let (l, next) = list(gw, cx, bucket, ask).await?;
    // S3 gives NextMarker only with a delimiter; clients use the last key.
    let next_marker = if p.delimiter.is_some() {
        next.as_deref()
    } else {
        None
    };
    Ok(reply::ok_xml(responses::list_objects_v1(
        &l,
        &p.marker,
        next_marker,
    )))
}

fn token_of(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn key_of_token(t: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect",
            )
        })
}

pub async fn v2(gw: &Gateway, cx: &Ctx, bucket: &str, p: ListV2Params) -> S3Result<Response> {
    let floor = match (&p.continuation_token, &p.start_after) {
        (Some(t), _) => key_of_token(t)?,
        (None, Some(s)) => s.clone(),
        (None, None) => String::new(),
    };
    let ask = Ask {
        prefix: &p.prefix,
        delimiter: p.delimiter.as_deref(),
        floor: &floor,
        max_keys: p.max_keys,
        owners: p.fetch_owner,
        encoding_url: p.encoding_url,
    };
    let (l, next) = list(gw, cx, bucket, ask).await?;
    let next_token = next.as_deref().map(token_of);
    Ok(reply::ok_xml(responses::list_objects_v2(
        &l,
        p.continuation_token.as_deref(),
        next_token.as_deref(),
        p.start_after.as_deref(),
    )))
}
