//! Objects: put, get and head (ranges, conditions, part numbers), delete
//! (one or many) and copy. An object is a filer file; its S3 metadata
//! (user metadata, content headers, tags, a multipart ETag) are extended
//! attributes of the entry. In a versioned bucket writes, reads and
//! deletes go through [`super::versions`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Body;
use axum::response::Response;
use futures::TryStreamExt;
use kelp_filer::store::{Cond, Op, Txn};
use kelp_filer::{Entry, FilerError, FullPath, NewFile};

use super::body::{self, Failure, Promises};
use super::buckets::{small_body, time_of};
use super::identities::Action;
use super::{Ctx, Gateway, filer_error, paths, reply, versions};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::etag::ETag;
use crate::request::{BodyLength, CopyArgs, Directive, GetArgs, ObjectMeta};
use crate::xml::requests::{self, Tag};
use crate::xml::responses;

/// S3's content type when none was sent.
const DEFAULT_MIME: &str = "binary/octet-stream";

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The ETag of a stored object.
pub fn etag_of(e: &Entry) -> ETag {
    if let Some(t) = e
        .xattrs
        .get(paths::ETAG)
        .and_then(|v| std::str::from_utf8(v).ok())
    {
        return ETag::parse(t);
    }
    match &e.md5 {
        Some(m) => ETag::from_md5(m),
        None => ETag::from_md5(&[0; 16]),
    }
}

/// Tags as kept in an entry (URL query form, as `x-amz-tagging`).
pub fn encode_tags(tags: &[Tag]) -> Vec<u8> {
    tags.iter()
        .map(|t| {
            format!(
                "{}={}",
                crate::uri::encode_component(&t.key),
                crate::uri::encode_component(&t.value)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

pub fn decode_tags(e: &Entry) -> Vec<Tag> {
    e.xattrs
        .get(paths::TAGGING)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(crate::uri::parse_query)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect()
        })
        .unwrap_or_default()
}

/// The extended attributes that describe an object, from a request.
pub fn attrs_of(meta: &ObjectMeta) -> BTreeMap<String, Vec<u8>> {
    let mut x = BTreeMap::new();
    for (k, v) in &meta.user_metadata {
        x.insert(format!("{}{k}", paths::META_PREFIX), v.as_bytes().to_vec());
    }
    let fields = [
        &meta.content_disposition,
        &meta.content_encoding,
        &meta.content_language,
        &meta.cache_control,
        &meta.expires,
    ];
    for ((attr, _), v) in paths::CONTENT_HEADERS.iter().zip(fields) {
        if let Some(v) = v {
            x.insert((*attr).to_string(), v.as_bytes().to_vec());
        }
    }
    if !meta.tagging.is_empty() {
        x.insert(paths::TAGGING.into(), encode_tags(&meta.tagging));
    }
    if let Some(a) = meta.acl {
        x.insert(paths::ACL.into(), a.as_str().as_bytes().to_vec());
    }
    x
}

fn is_described(name: &str) -> bool {
    name.starts_with(paths::META_PREFIX)
        || paths::CONTENT_HEADERS.iter().any(|(a, _)| *a == name)
        || name == paths::ACL
}

/// A write body as the filer reads it: checked, with its S3 failure kept.
pub fn body_stream(
    cx: &Ctx,
    body: Body,
    length: BodyLength,
    content_md5: Option<[u8; 16]>,
    checksum: Option<crate::checksum::Checksum>,
    failure: &Failure,
) -> S3Result<impl futures::Stream<Item = Result<bytes::Bytes, String>> + Send + 'static> {
    let checked = body::decode(
        body,
        &cx.auth,
        &cx.headers,
        Promises {
            length,
            content_md5,
            checksum,
        },
        failure.clone(),
    )?;
    Ok(checked.map_err(|e| e.message))
}

/// A filer write error, with the body's own S3 error when it has one.
pub fn write_error(e: FilerError, failure: &Failure) -> S3Error {
    match (e, failure.take()) {
        (FilerError::Body(_), Some(s3)) => s3,
        (e, _) => filer_error(e),
    }
}

pub async fn put(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
    length: BodyLength,
    body: Body,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Write).await?;
    let path = paths::object_path(bucket, key)?;
    if key.ends_with('/') {
        return put_folder(gw, cx, &path, body).await;
    }
    let failure = Failure::default();
    let stream = body_stream(
        cx,
        body,
        length,
        meta.content_md5,
        meta.checksum.clone(),
        &failure,
    )?;
    let f = NewFile {
        mime: meta
            .content_type
            .clone()
            .unwrap_or_else(|| DEFAULT_MIME.into()),
        xattrs: attrs_of(&meta),
        ..Default::default()
    };
    let (e, vid) = match versions::status(&b) {
        None => (gw.filer.write(&path, stream, f).await, None),
        Some(_) => match versions::write(gw, &b, bucket, key, &path, stream, f).await {
            Ok((e, v)) => (Ok(e), Some(v)),
            Err(e) => (Err(e), None),
        },
    };
    let e = e.map_err(|e| write_error(e, &failure))?;
    let mut r = reply::empty(200);
    reply::header(&mut r, "etag", &etag_of(&e).quoted());
    if let Some(v) = vid {
        reply::header(&mut r, "x-amz-version-id", &v);
    }
    if let Some(c) = &meta.checksum {
        reply::header(&mut r, c.algorithm.header_name(), &c.to_base64());
    }
    Ok(r)
}

/// `PUT key/`: a folder object, the directory marked as one.
async fn put_folder(gw: &Gateway, cx: &Ctx, path: &FullPath, body: Body) -> S3Result<Response> {
    if !small_body(cx, body).await?.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "An object whose key ends with / must be empty in Kelp",
        ));
    }
    let dir = gw.filer.mkdir(path).await.map_err(filer_error)?;
    if !dir.xattrs.contains_key(paths::MARKER) {
        let mut e = dir.clone();
        e.xattrs.insert(paths::MARKER.into(), b"1".to_vec());
        let put = Op::Put {
            path: path.clone(),
            entry: e,
            cond: Cond::Unchanged(Box::new(dir)),
        };
        gw.filer.commit(Txn::one(put)).await.map_err(filer_error)?;
    }
    let mut r = reply::empty(200);
    reply::header(&mut r, "etag", &ETag::of_body(b"").quoted());
    Ok(r)
}

/// The object at `key`: a file, or a marked directory for `x/`.
pub async fn find(gw: &Gateway, bucket: &str, key: &str) -> S3Result<(FullPath, Entry)> {
    let path = paths::object_path(bucket, key)?;
    let e = gw.filer.lookup(&path).await.map_err(filer_error)?;
    match e {
        Some(e) if !e.is_dir() && !key.ends_with('/') => Ok((path, e)),
        Some(e) if e.is_dir() && key.ends_with('/') && e.xattrs.contains_key(paths::MARKER) => {
            Ok((path, e))
        }
        _ => Err(S3Error::new(S3ErrorCode::NoSuchKey)),
    }
}

/// Part sizes of a multipart object (`s3.parts`), for `?partNumber=`.
fn part_sizes(e: &Entry) -> Vec<u64> {
    e.xattrs
        .get(super::multipart::PARTS)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

pub async fn get(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    args: GetArgs,
    head: bool,
) -> S3Result<Response> {
    let (_, _, e) = gw
        .readable_object(cx, bucket, key, args.version_id.as_deref())
        .await?;
    if versions::is_marker(&e) {
        let mut r = reply::error(
            &S3Error::new(S3ErrorCode::MethodNotAllowed),
            &cx.request_id,
            head,
        );
        reply::header(&mut r, "x-amz-delete-marker", "true");
        reply::header(&mut r, "x-amz-version-id", &versions::version_of(&e));
        return Ok(r);
    }
    let etag = etag_of(&e);
    let modified = time_of(e.mtime_ns);
    if let Err(err) = args.conditions.evaluate(&etag, modified, true) {
        let mut r = reply::error(&err, &cx.request_id, true);
        reply::header(&mut r, "etag", &etag.quoted());
        return Ok(r);
    }
    let size = if e.is_dir() { 0 } else { e.size };
    let parts = part_sizes(&e);
    let mut span: Option<(u64, u64)> = None;
    if let Some(n) = args.part_number {
        let sizes = if parts.is_empty() {
            vec![size]
        } else {
            parts.clone()
        };
        let i = n as usize;
        if i == 0 || i > sizes.len() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRange,
                "The requested partnumber is not satisfiable",
            ));
        }
        let start: u64 = sizes[..i - 1].iter().sum();
        if sizes[i - 1] > 0 {
            span = Some((start, start + sizes[i - 1] - 1));
        }
    } else if let Some(r) = args.range {
        span = Some(r.resolve(size)?);
    }
    let (status, start, end) = match span {
        Some((a, b)) => (206, a, b + 1),
        None => (200, 0, size),
    };
    let mut r = if head {
        reply::empty(status)
    } else {
        let stream = gw
            .filer
            .read(&e, start..end)
            .map_err(|e| std::io::Error::other(e.to_string()));
        let mut r = Response::new(Body::from_stream(stream));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        r
    };
    let ov = &args.overrides;
    reply::header(&mut r, "content-length", &(end - start).to_string());
    if status == 206 {
        reply::header(
            &mut r,
            "content-range",
            &format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        );
    }
    let mime = if e.mime.is_empty() {
        DEFAULT_MIME
    } else {
        e.mime.as_str()
    };
    reply::header(
        &mut r,
        "content-type",
        ov.content_type.as_deref().unwrap_or(mime),
    );
    reply::header(&mut r, "etag", &etag.quoted());
    reply::header(
        &mut r,
        "last-modified",
        &crate::time::format_http_date(modified),
    );
    reply::header(&mut r, "accept-ranges", "bytes");
    let overrides = [
        &ov.content_disposition,
        &ov.content_encoding,
        &ov.content_language,
        &ov.cache_control,
        &ov.expires,
    ];
    for ((attr, name), over) in paths::CONTENT_HEADERS.iter().zip(overrides) {
        match over {
            Some(v) => reply::header(&mut r, name, v),
            None => {
                if let Some(v) = e
                    .xattrs
                    .get(*attr)
                    .and_then(|v| std::str::from_utf8(v).ok())
                {
                    reply::header(&mut r, name, v);
                }
            }
        }
    }
    for (k, v) in &e.xattrs {
        if let Some(name) = k.strip_prefix(paths::META_PREFIX)
            && let Ok(v) = std::str::from_utf8(v)
        {
            reply::header(&mut r, &format!("x-amz-meta-{name}"), v);
        }
    }
    let tags = decode_tags(&e);
    if !tags.is_empty() {
        reply::header(&mut r, "x-amz-tagging-count", &tags.len().to_string());
    }
    if !parts.is_empty() {
        reply::header(&mut r, "x-amz-mp-parts-count", &parts.len().to_string());
    }
    if e.xattrs.contains_key(paths::VERSION_ID) || args.version_id.is_some() {
        reply::header(&mut r, "x-amz-version-id", &versions::version_of(&e));
    }
    Ok(r)
}

/// Deletes one object; a missing one is fine (S3 answers 204 either way).
/// Directories left empty above it, not marked as folder objects, go too.
async fn delete_one(gw: &Gateway, bucket: &str, key: &str) -> S3Result<()> {
    let path = paths::object_path(bucket, key)?;
    let Some(e) = gw.filer.lookup(&path).await.map_err(filer_error)? else {
        return Ok(());
    };
    match (e.is_dir(), key.ends_with('/')) {
        (false, false) => {
            let del = Op::Delete {
                path: path.clone(),
                cond: Cond::Unchanged(Box::new(e)),
                recursive: false,
            };
            match gw.filer.commit(Txn::one(del)).await {
                Ok(_) | Err(FilerError::NotFound(_)) => {}
                // Replaced meanwhile: the newer object stays, as if it
                // came after this delete.
                Err(FilerError::Precondition(_)) => return Ok(()),
                Err(e) => return Err(filer_error(e)),
            }
        }
        (true, true) if e.xattrs.contains_key(paths::MARKER) => {
            let del = Op::Delete {
                path: path.clone(),
                cond: Cond::Unchanged(Box::new(e.clone())),
                recursive: false,
            };
            match gw.filer.commit(Txn::one(del)).await {
                Ok(_) | Err(FilerError::NotFound(_)) => {}
                // Keys below it remain: only the folder object goes.
                Err(FilerError::NotEmpty(_)) => {
                    let mut plain = e.clone();
                    plain.xattrs.remove(paths::MARKER);
                    let put = Op::Put {
                        path: path.clone(),
                        entry: plain,
                        cond: Cond::Unchanged(Box::new(e)),
                    };
                    let _ = gw.filer.commit(Txn::one(put)).await;
                    return Ok(());
                }
                Err(e) => return Err(filer_error(e)),
            }
        }
        _ => return Ok(()),
    }
    prune(gw, bucket, &path).await;
    Ok(())
}

/// Removes the empty, unmarked directories above `path` (best effort: a
/// directory that gained an entry meanwhile stays).
pub async fn prune(gw: &Gateway, bucket: &str, path: &FullPath) {
    let top = paths::bucket_dir(bucket);
    let mut at = path.clone();
    while let Some((parent, _)) = at.split() {
        if parent == top || !parent.is_within(&top) {
            return;
        }
        let Ok(Some(e)) = gw.filer.lookup(&parent).await else {
            return;
        };
        if !e.is_dir() || e.xattrs.contains_key(paths::MARKER) {
            return;
        }
        let del = Op::Delete {
            path: parent.clone(),
            cond: Cond::Unchanged(Box::new(e)),
            recursive: false,
        };
        if gw.filer.commit(Txn::one(del)).await.is_err() {
            return;
        }
        at = parent;
    }
}

pub async fn delete(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Write).await?;
    if versions::status(&b).is_some() && !key.ends_with('/') {
        let d = versions::delete(gw, cx, &b, bucket, key, version_id.as_deref()).await?;
        let mut r = reply::empty(204);
        reply::header(&mut r, "x-amz-version-id", &d.version_id);
        if d.marker {
            reply::header(&mut r, "x-amz-delete-marker", "true");
        }
        return Ok(r);
    }
    if version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(S3Error::new(S3ErrorCode::NoSuchVersion));
    }
    delete_one(gw, bucket, key).await?;
    Ok(reply::empty(204))
}

pub async fn delete_many(gw: &Gateway, cx: &Ctx, bucket: &str, body: Body) -> S3Result<Response> {
    let b = gw.bucket(cx, bucket, Action::Write).await?;
    let versioned = versions::status(&b).is_some();
    let req = requests::parse_delete(&small_body(cx, body).await?)?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for o in req.objects {
        let r = if versioned && !o.key.ends_with('/') {
            versions::delete(gw, cx, &b, bucket, &o.key, o.version_id.as_deref())
                .await
                .map(Some)
        } else if o.version_id.as_deref().is_some_and(|v| v != "null") {
            Err(S3Error::new(S3ErrorCode::NoSuchVersion))
        } else {
            delete_one(gw, bucket, &o.key).await.map(|()| None)
        };
        match r {
            Ok(None) => deleted.push(responses::Deleted {
                key: o.key,
                version_id: o.version_id,
                ..Default::default()
            }),
            Ok(Some(d)) => {
                let marker_id = d.marker.then(|| d.version_id.clone());
                deleted.push(responses::Deleted {
                    key: o.key,
                    version_id: o.version_id,
                    delete_marker: d.marker,
                    delete_marker_version_id: marker_id,
                })
            }
            Err(e) => errors.push(responses::DeleteFailure {
                key: o.key,
                version_id: o.version_id,
                code: e.code,
                message: e.message,
            }),
        }
    }
    Ok(reply::ok_xml(responses::delete_result(
        req.quiet, &deleted, &errors,
    )))
}

/// The source of a copy, checked against its conditions.
pub async fn copy_source(gw: &Gateway, cx: &Ctx, copy: &CopyArgs) -> S3Result<Entry> {
    gw.bucket(cx, &copy.source.bucket, Action::Read).await?;
    let (_, src) = versions::locate(
        gw,
        &copy.source.bucket,
        &copy.source.key,
        copy.source.version_id.as_deref(),
    )
    .await?;
    if versions::is_marker(&src) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The source of a copy may not be a delete marker",
        ));
    }
    copy.source_conditions
        .evaluate_copy_source(&etag_of(&src), time_of(src.mtime_ns))?;
    Ok(src)
}

pub async fn copy(
    gw: &Gateway,
    cx: &Ctx,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
    copy: CopyArgs,
) -> S3Result<Response> {
    let src = copy_source(gw, cx, &copy).await?;
    let b = gw.bucket(cx, bucket, Action::Write).await?;
    let path = paths::object_path(bucket, key)?;
    // Copying an older version onto its key restores it: not "to itself".
    let same =
        copy.source.bucket == bucket && copy.source.key == key && copy.source.version_id.is_none();
    if same
        && copy.metadata_directive == Directive::Copy
        && copy.tagging_directive == Directive::Copy
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    if src.is_dir() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Folder objects cannot be copied",
        ));
    }
    // What describes the new object: the source's or the request's.
    let mut xattrs: BTreeMap<String, Vec<u8>> = match copy.metadata_directive {
        Directive::Copy => src
            .xattrs
            .iter()
            .filter(|(k, _)| is_described(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Directive::Replace => attrs_of(&ObjectMeta {
            tagging: Vec::new(),
            ..meta.clone()
        }),
    };
    match copy.tagging_directive {
        Directive::Copy => {
            if let Some(t) = src.xattrs.get(paths::TAGGING) {
                xattrs.insert(paths::TAGGING.into(), t.clone());
            }
        }
        Directive::Replace => {
            if !meta.tagging.is_empty() {
                xattrs.insert(paths::TAGGING.into(), encode_tags(&meta.tagging));
            }
        }
    }
    if let Some(a) = meta.acl {
        xattrs.insert(paths::ACL.into(), a.as_str().as_bytes().to_vec());
    }
    let mime = match copy.metadata_directive {
        Directive::Copy => src.mime.clone(),
        Directive::Replace => meta
            .content_type
            .clone()
            .unwrap_or_else(|| DEFAULT_MIME.into()),
    };
    let size = src.size;
    let stream = gw.filer.read(&src, 0..size).map_err(|e| e.to_string());
    let f = NewFile {
        mime,
        xattrs,
        ..Default::default()
    };
    let (e, vid) = match versions::status(&b) {
        None => (gw.filer.write(&path, stream, f).await, None),
        Some(_) => match versions::write(gw, &b, bucket, key, &path, stream, f).await {
            Ok((e, v)) => (Ok(e), Some(v)),
            Err(e) => (Err(e), None),
        },
    };
    let e = e.map_err(filer_error)?;
    let mut r = reply::ok_xml(responses::copy_object_result(
        &etag_of(&e),
        time_of(e.mtime_ns),
    ));
    if let Some(v) = vid {
        reply::header(&mut r, "x-amz-version-id", &v);
    }
    if let Some(v) = &copy.source.version_id {
        reply::header(&mut r, "x-amz-copy-source-version-id", v);
    }
    Ok(r)
}
