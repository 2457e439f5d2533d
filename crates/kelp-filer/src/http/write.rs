//! `POST` and `PUT`: files (raw or `multipart/form-data`), directories,
//! moves and quotas.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::Params;
use crate::error::FilerError;
use crate::filer::{Filer, NewFile};
use crate::path::FullPath;
use crate::store::Cond;

/// Bytes of `Seaweed-*` headers kept per file.
const MAX_XATTR_BYTES: usize = 64 << 10;

pub async fn put(
    filer: &Filer,
    path: &FullPath,
    dir_form: bool,
    p: &Params,
    h: &HeaderMap,
    body: Body,
) -> Result<Response, FilerError> {
    if let Some(from) = p.get("mv.from") {
        let from = FullPath::parse(from)?;
        filer.rename(&from, path).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if p.contains_key("quota.bytes") || p.contains_key("quota.entries") {
        let num = |k: &str| -> Result<u64, FilerError> {
            match p.get(k) {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| FilerError::BadRequest(format!("{k} {v:?} is not a number"))),
            }
        };
        let e = filer
            .set_quota(path, num("quota.bytes")?, num("quota.entries")?)
            .await?;
        return Ok(axum::Json(super::json::entry(path, &e)).into_response());
    }
    let content_type = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut f = NewFile {
        mime: content_type.clone(),
        ..Default::default()
    };
    if let Some(m) = p.get("mode") {
        f.mode = Some(
            u32::from_str_radix(m, 8)
                .map_err(|_| FilerError::BadRequest(format!("mode {m:?} is not octal")))?,
        );
    }
    let mut xattr_bytes = 0;
    for (k, v) in h {
        let name = k.as_str();
        if let Some(rest) = name.strip_prefix("seaweed-") {
            xattr_bytes += name.len() + v.len();
            if xattr_bytes > MAX_XATTR_BYTES {
                return Err(FilerError::BadRequest(format!(
                    "Seaweed-* headers over {MAX_XATTR_BYTES} bytes"
                )));
            }
            f.xattrs.insert(
                format!("Seaweed-{}", canonical(rest)),
                v.as_bytes().to_vec(),
            );
        }
    }
    if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == "*") {
        f.cond = Cond::Absent;
    }
    if let Ok(boundary) = multer::parse_boundary(&content_type) {
        let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| FilerError::Body(e.to_string()))?
        {
            let Some(file_name) = field.file_name().map(str::to_string) else {
                continue;
            };
            let target = if dir_form || file_name.is_empty() && path.is_root() {
                path.child(FullPath::parse(&file_name)?.name())
            } else {
                path.clone()
            };
            f.mime = field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let e = filer
                .write(&target, field.map_err(|e| e.to_string()), f)
                .await?;
            return Ok(created(&e));
        }
        return Err(FilerError::BadRequest(
            "multipart form without a file".into(),
        ));
    }
    let empty = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "0")
        || (h.get(header::CONTENT_LENGTH).is_none() && h.get(header::TRANSFER_ENCODING).is_none());
    if dir_form && empty {
        filer.mkdir(path).await?;
        return Ok(StatusCode::CREATED.into_response());
    }
    if dir_form {
        return Err(FilerError::BadRequest(format!(
            "{path}/: a file needs a name (or send multipart/form-data)"
        )));
    }
    let e = filer
        .write(path, body.into_data_stream().map_err(|e| e.to_string()), f)
        .await?;
    Ok(created(&e))
}

fn created(e: &crate::entry::Entry) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "name": e.name, "size": e.size })),
    )
        .into_response()
}

/// `color-name` → `Color-Name`, as Go canonicalises header names.
fn canonical(s: &str) -> String {
    s.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
