//! Multipart uploads. An upload is the directory
//! `/.s3/uploads/<bucket>/<upload id>` (its key and the object's metadata
//! in its attributes), each part a file in it (`00001`…). Completing is
//! one filer transaction: the upload directory goes and the object is
//! made of the parts' chunks, in order, without copying a byte. Parts
//! left out of the completion are collected with the directory.

use std::time::SystemTime;

use axum::body::Body;
use axum::response::Response;
use futures::TryStreamExt;
use kelp_filer::store::{Cond, Op, Txn};
use kelp_filer::{Chunk, Entry, FilerError, FullPath, Kind, NewFile};

use super::body::Failure;
use super::buckets::{owner_of, small_body, time_of};
use super::identities::Action;
use super::objects::{attrs_of, body_stream, copy_source, etag_of, now_ns, write_error};
use super::{Ctx, Gateway, filer_error, paths, reply};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::etag::ETag;
use crate::request::{BodyLength, ByteRange, CopyArgs, ListUploadsParams, ObjectMeta};
use crate::xml::{requests, responses};

/// Sizes of a completed object's parts, comma separated (for
/// `GetObject?partNumber=`).
pub const PARTS: &str = "s3.parts";
/// The smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// Uploads one ListMultipartUploads reads at most.
const MAX_UPLOADS_SCANNED: usize = 100_000;

pub struct PartTarget<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub upload_id: &'a str,
    pub part_number: u32,
}

fn new_upload_id() -> String {
    let a: u128 = rand::random();
    format!("{a:032x}")
}

/// The upload directory, checked to be `key`'s.
async fn upload(
    gw: &Gateway,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> S3Result<(FullPath, Entry)> {
    let dir = paths::upload_dir(bucket, upload_id)?;
    match gw.filer.lookup(&dir).await.map_err(filer_error)? {
        Some(e)
            if e.is_dir()
                && e.xattrs.get(paths::UPLOAD_KEY).map(Vec::as_slice) == Some(key.as_bytes()) =>
        {
            Ok((dir, e))
        }
        _ => Err(S3Error::new(S3ErrorCode::NoSuchUpload)),
    }
}

pub async fn create(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::Write).await?;
    paths::object_path(bucket, key)?;
    let id = new_upload_id();
    let dir = paths::upload_dir(bucket, &id)?;
    let mut e = Entry::directory(&id, now_ns());
    e.xattrs = attrs_of(&meta);
    e.xattrs
        .insert(paths::UPLOAD_KEY.into(), key.as_bytes().to_vec());
    e.mime = meta.content_type.clone().unwrap_or_default();
    gw.filer
        .commit(Txn::one(Op::Put {
            path: dir,
            entry: e,
            cond: Cond::Absent,
        }))
        .await
        .map_err(filer_error)?;
    Ok(reply::ok_xml(responses::initiate_multipart_upload(
        bucket, key, &id,
    )))
}

pub async fn upload_part(
    gw: &Gateway,
    cx: &Ctx,
    t: PartTarget<'_>,
    content_md5: Option<[u8; 16]>,
    length: BodyLength,
    body: Body,
) -> S3Result<Response> {
    gw.bucket(cx, t.bucket, Action::Write).await?;
    let (dir, _) = upload(gw, t.bucket, t.key, t.upload_id).await?;
    let checksum = crate::request::headers::parse_checksum_header(&cx.headers)?;
    let failure = Failure::default();
    let stream = body_stream(cx, body, length, content_md5, checksum.clone(), &failure)?;
    let e = gw
        .filer
        .write(
            &dir.child(&paths::part_name(t.part_number)),
            stream,
            NewFile {
                chunked: true,
                ..NewFile::default()
            },
        )
        .await
        .map_err(|e| write_error(e, &failure))?;
    let mut r = reply::empty(200);
    reply::header(&mut r, "etag", &etag_of(&e).quoted());
    if let Some(c) = &checksum {
        reply::header(&mut r, c.algorithm.header_name(), &c.to_base64());
    }
    Ok(r)
}

pub async fn upload_part_copy(
    gw: &Gateway,
    cx: &Ctx,
    t: PartTarget<'_>,
    copy: CopyArgs,
    range: Option<ByteRange>,
) -> S3Result<Response> {
    let src = copy_source(gw, cx, &copy).await?;
    gw.bucket(cx, t.bucket, Action::Write).await?;
    let (dir, _) = upload(gw, t.bucket, t.key, t.upload_id).await?;
    let (start, end) = match range {
        Some(r) => {
            let (a, b) = r.resolve(src.size)?;
            (a, b + 1)
        }
        None => (0, src.size),
    };
    let stream = gw.filer.read(&src, start..end).map_err(|e| e.to_string());
    let e = gw
        .filer
        .write(
            &dir.child(&paths::part_name(t.part_number)),
            stream,
            NewFile {
                chunked: true,
                ..NewFile::default()
            },
        )
        .await
        .map_err(filer_error)?;
    Ok(reply::ok_xml(responses::copy_part_result(
        &etag_of(&e),
        time_of(e.mtime_ns),
    )))
}

pub async fn complete(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    upload_id: &str,
    body: Body,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Write).await?;
    let path = paths::object_path(bucket, key)?;
    let (dir, up) = upload(gw, bucket, key, upload_id).await?;
    let asked = requests::parse_complete_multipart_upload(&small_body(cx, body).await?)?;
    if asked.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "CompleteMultipartUpload needs at least one Part",
        ));
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut md5s = Vec::with_capacity(asked.len());
    let mut sizes = Vec::with_capacity(asked.len());
    let mut offset = 0u64;
    for (i, want) in asked.iter().enumerate() {
        let part = gw
            .filer
            .lookup(&dir.child(&paths::part_name(want.part_number)))
            .await
            .map_err(filer_error)?;
        let Some(part) = part else {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPart,
                format!("Part {} was not uploaded.", want.part_number),
            ));
        };
        let etag = etag_of(&part);
        if etag.as_str() != want.etag.as_str() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPart,
                format!(
                    "Part {}'s ETag is {}, not {}.",
                    want.part_number,
                    etag.quoted(),
                    want.etag.quoted()
                ),
            ));
        }
        if i + 1 < asked.len() && part.size < MIN_PART {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooSmall,
                format!(
                    "Part {} has {} bytes; every part but the last needs 5 MiB.",
                    want.part_number, part.size
                ),
            ));
        }
        if !part.inline.is_empty() {
            // Parts are written chunked; only a store from before that could hold one.
            return Err(S3Error::with_message(
                S3ErrorCode::InternalError,
                format!(
                    "Part {} is kept inline in the filer and cannot be assembled; upload it again.",
                    want.part_number
                ),
            ));
        }
        let mut pc = part.chunks.clone();
        pc.sort_by_key(|c| c.offset);
        for mut c in pc {
            c.offset += offset;
            chunks.push(c);
        }
        offset += part.size;
        md5s.push(part.md5.unwrap_or([0; 16]));
        sizes.push(part.size.to_string());
    }
    let etag = ETag::multipart(&md5s);
    let now = now_ns();
    let mut xattrs: std::collections::BTreeMap<String, Vec<u8>> = up
        .xattrs
        .iter()
        .filter(|(k, _)| k.as_str() != paths::UPLOAD_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    xattrs.insert(paths::ETAG.into(), etag.as_str().as_bytes().to_vec());
    xattrs.insert(PARTS.into(), sizes.join(",").into_bytes());
    let object = Entry {
        name: path.name().to_string(),
        kind: Kind::File,
        mode: 0o660,
        mtime_ns: now,
        ctime_ns: now,
        crtime_ns: now,
        size: offset,
        mime: if up.mime.is_empty() {
            "binary/octet-stream".into()
        } else {
            up.mime.clone()
        },
        xattrs,
        chunks,
        ..Default::default()
    };
    // The upload goes first: its parts' chunks then belong to the object
    // (their references are written again by the put, so none is
    // collected); parts left out are.
    let release = Op::Delete {
        path: dir,
        cond: Cond::Unchanged(Box::new(up)),
        recursive: true,
    };
    // A versioned bucket keeps the replaced object as a version.
    let committed = match super::versions::status(&b) {
        None => {
            let put = Op::Put {
                path: path.clone(),
                entry: object,
                cond: Cond::Any,
            };
            let txn = Txn {
                ops: vec![release, put],
            };
            gw.filer.commit(txn).await.map(|_| None)
        }
        Some(_) => {
            super::versions::commit_current(gw, &b, bucket, key, &path, object, vec![release])
                .await
                .map(Some)
        }
    };
    let vid = match committed {
        Ok(v) => v,
        Err(FilerError::Precondition(_)) | Err(FilerError::NotFound(_)) => {
            return Err(S3Error::new(S3ErrorCode::NoSuchUpload));
        }
        Err(e) => return Err(filer_error(e)),
    };
    let location = format!("/{bucket}/{}", crate::uri::encode_path(key));
    let mut r = reply::ok_xml(responses::complete_multipart_upload(
        &location, bucket, key, &etag,
    ));
    if let Some(v) = vid {
        reply::header(&mut r, "x-amz-version-id", &v);
    }
    Ok(r)
}

pub async fn abort(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> S3Result<Response> {
    gw.bucket(cx, bucket, Action::Write).await?;
    let (dir, _) = upload(gw, bucket, key, upload_id).await?;
    match gw.filer.delete(&dir, true).await {
        Ok(_) | Err(FilerError::NotFound(_)) => Ok(reply::empty(204)),
        Err(e) => Err(filer_error(e)),
    }
}

pub async fn list_parts(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    upload_id: &str,
    max_parts: u32,
    marker: u32,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::List).await?;
    let (dir, _) = upload(gw, bucket, key, upload_id).await?;
    let after = if marker == 0 {
        String::new()
    } else {
        paths::part_name(marker)
    };
    let mut page = gw
        .filer
        .list(&dir, &after, "", max_parts as usize + 1)
        .await
        .map_err(filer_error)?;
    let truncated = page.len() > max_parts as usize;
    page.truncate(max_parts as usize);
    let parts: Vec<responses::PartInfo> = page
        .iter()
        .filter_map(|e| {
            Some(responses::PartInfo {
                part_number: e.name.parse().ok()?,
                last_modified: time_of(e.mtime_ns),
                etag: etag_of(e),
                size: e.size,
            })
        })
        .collect();
    let listing = responses::PartListing {
        bucket: bucket.to_string(),
        key: key.to_string(),
        upload_id: upload_id.to_string(),
        owner: owner_of(b.owner()),
        storage_class: "STANDARD".into(),
        part_number_marker: marker,
        next_part_number_marker: if truncated {
            parts.last().map(|p| p.part_number)
        } else {
            None
        },
        max_parts,
        is_truncated: truncated,
        parts,
    };
    Ok(reply::ok_xml(responses::list_parts(&listing)))
}

pub async fn list_uploads(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    p: ListUploadsParams,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::List).await?;
    let root = paths::uploads_dir(bucket);
    // Uploads are few and short-lived: read them all, then order by key.
    let mut all: Vec<(String, String, SystemTime)> = Vec::new();
    let mut after = String::new();
    loop {
        let page = match gw.filer.list(&root, &after, "", 1000).await {
            Ok(p) => p,
            Err(FilerError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(filer_error(e)),
        };
        let n = page.len();
        for e in page {
            after = e.name.clone();
            if let Some(k) = e
                .xattrs
                .get(paths::UPLOAD_KEY)
                .and_then(|v| String::from_utf8(v.clone()).ok())
                && k.starts_with(&p.prefix)
            {
                all.push((k, e.name.clone(), time_of(e.crtime_ns)));
            }
        }
        if n < 1000 || all.len() >= MAX_UPLOADS_SCANNED {
            break;
        }
    }
    all.sort_by(|a, b| (&a.0, a.2, &a.1).cmp(&(&b.0, b.2, &b.1)));
    let past_marker = |k: &str, id: &str| -> bool {
        if p.key_marker.is_empty() {
            return true;
        }
        if p.upload_id_marker.is_empty() {
            return k > p.key_marker.as_str();
        }
        k > p.key_marker.as_str() || (k == p.key_marker && id > p.upload_id_marker.as_str())
    };
    let mut uploads = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let max = p.max_uploads as usize;
    for (key, id, initiated) in all {
        if !past_marker(&key, &id) {
            continue;
        }
        if let Some(d) = p.delimiter.as_deref()
            && let Some(i) = key[p.prefix.len()..].find(d)
        {
            let cp = key[..p.prefix.len() + i + d.len()].to_string();
            if prefixes.last() == Some(&cp) {
                continue;
            }
            if uploads.len() + prefixes.len() >= max {
                truncated = true;
                break;
            }
            prefixes.push(cp);
            continue;
        }
        if uploads.len() + prefixes.len() >= max {
            truncated = true;
            break;
        }
        uploads.push(responses::UploadInfo {
            key,
            upload_id: id,
            initiated,
        });
    }
    let (next_key, next_id) = match (truncated, uploads.last()) {
        (true, Some(u)) => (Some(u.key.clone()), Some(u.upload_id.clone())),
        _ => (None, None),
    };
    let doc = responses::UploadListing {
        listing: responses::Listing {
            bucket: bucket.to_string(),
            prefix: p.prefix.clone(),
            delimiter: p.delimiter.clone(),
            max_keys: p.max_uploads,
            is_truncated: truncated,
            common_prefixes: prefixes,
            encoding_url: p.encoding_url,
            ..Default::default()
        },
        owner: Some(owner_of(b.owner())),
        key_marker: p.key_marker.clone(),
        upload_id_marker: p.upload_id_marker.clone(),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads,
    };
    Ok(reply::ok_xml(responses::list_multipart_uploads(&doc)))
}
