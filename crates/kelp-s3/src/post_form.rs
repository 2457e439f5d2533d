//! Reading a browser POST upload (`multipart/form-data`).
//!
//! Fields come first, then `file`; fields after `file` are ignored (as S3
//! does). Field names are case-insensitive. Fields are small and bounded;
//! the file is not buffered: [`PostFile`] streams it and enforces the
//! policy's `content-length-range` (`EntityTooLarge` as soon as it is
//! passed, `EntityTooSmall` at the end).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

use crate::error::{S3Error, S3ErrorCode, S3Result, err};
use crate::policy::verify_post_signature;
use crate::request::CannedAcl;
use crate::sigv4::{Credentials, Identity};

/// Most fields before `file`.
pub const MAX_FIELDS: usize = 64;
/// Largest field value (the policy is the big one).
pub const MAX_FIELD: usize = 24 << 10;
/// All fields together.
pub const MAX_FIELDS_TOTAL: usize = 256 << 10;
/// Largest file without a content-length-range (5 GiB, as a single PUT).
pub const MAX_POST_FILE: u64 = 5 << 30;

/// What to answer once the object is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuccessAction {
    /// 200, 201 (with a `PostResponse` body) or 204.
    Status(u16),
    /// 303 to this URL with `bucket`, `key` and `etag` added to its query.
    Redirect(String),
}

impl SuccessAction {
    /// The redirect target for a stored object.
    pub fn redirect_location(url: &str, bucket: &str, key: &str, etag_quoted: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        let e = crate::uri::encode_component;
        format!(
            "{url}{sep}bucket={}&key={}&etag={}",
            e(bucket),
            e(key),
            e(etag_quoted)
        )
    }
}

/// A checked browser upload.
pub struct PostUpload {
    pub identity: Identity,
    pub key: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*` without the prefix, lowercase, sorted.
    pub user_metadata: Vec<(String, String)>,
    pub acl: Option<CannedAcl>,
    pub success: SuccessAction,
    /// Every field read (lowercase names), for the handler's own checks.
    pub fields: Vec<(String, String)>,
    pub file: PostFile,
}

/// The file part, bounded by the policy's length range.
pub struct PostFile {
    field: multer::Field<'static>,
    min: u64,
    max: u64,
    seen: u64,
    done: bool,
}

impl Stream for PostFile {
    type Item = Result<Bytes, S3Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let r = ready!(Pin::new(&mut this.field).poll_next(cx));
        let out = match r {
            Some(Ok(b)) => {
                this.seen += b.len() as u64;
                if this.seen > this.max {
                    Some(Err(S3Error::with_message(
                        S3ErrorCode::EntityTooLarge,
                        "Your proposed upload exceeds the maximum allowed size",
                    )))
                } else {
                    return Poll::Ready(Some(Ok(b)));
                }
            }
            Some(Err(e)) => Some(Err(form_error(e))),
            None if this.seen < this.min => Some(Err(S3Error::with_message(
                S3ErrorCode::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed size",
            ))),
            None => None,
        };
        this.done = true;
        Poll::Ready(out)
    }
}

fn form_error(e: multer::Error) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidRequest,
        format!("malformed POST form: {e}"),
    )
}

/// The last path component of a browser file name (`C:\x\a.png` → `a.png`).
fn base_name(f: &str) -> &str {
    f.rsplit(['/', '\\']).next().unwrap_or(f)
}

/// Reads the form up to the file, verifies signature and policy, and
/// returns the upload with its file stream. `content_type` is the
/// request's `Content-Type` (carrying the boundary).
pub async fn read_post_form<S, E>(
    body: S,
    content_type: &str,
    bucket: &str,
    now: SystemTime,
    creds: &(dyn Credentials + Sync),
) -> S3Result<PostUpload>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "POST needs multipart/form-data with a boundary",
        )
    })?;
    let mut mp = multer::Multipart::new(body, boundary);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    let (file, file_name) = loop {
        let Some(mut field) = mp.next_field().await.map_err(form_error)? else {
            return err(
                S3ErrorCode::InvalidArgument,
                "POST requires exactly one file upload per request.",
            );
        };
        let name = field.name().unwrap_or("").to_ascii_lowercase();
        if name == "file" {
            let fname = field
                .file_name()
                .map(|f| base_name(f).to_owned())
                .unwrap_or_default();
            break (field, fname);
        }
        if fields.len() == MAX_FIELDS {
            return err(S3ErrorCode::InvalidRequest, "too many form fields");
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(form_error)? {
            value.extend_from_slice(&chunk);
            total += chunk.len();
            if value.len() > MAX_FIELD || total > MAX_FIELDS_TOTAL {
                return err(S3ErrorCode::InvalidRequest, "form field too large");
            }
        }
        let value = String::from_utf8(value).map_err(|_| {
            S3Error::with_message(S3ErrorCode::InvalidRequest, "form field is not UTF-8")
        })?;
        if name != "bucket" {
            fields.push((name, value));
        }
    };
    check_form(fields, file_name, bucket, now, creds, file)
}

fn check_form(
    mut fields: Vec<(String, String)>,
    file_name: String,
    bucket: &str,
    now: SystemTime,
    creds: &(dyn Credentials + Sync),
    file: multer::Field<'static>,
) -> S3Result<PostUpload> {
    let get = |fields: &[(String, String)], n: &str| {
        fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    };
    let key = get(&fields, "key").ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Bucket POST must contain a field named 'key'.",
        )
    })?;
    let key = key.replace("${filename}", &file_name);
    crate::names::validate_key(&key)?;
    if let Some(k) = fields.iter_mut().find(|(n, _)| n == "key") {
        k.1 = key.clone();
    }
    let (identity, policy) = verify_post_signature(&fields, creds)?;
    let mut with_bucket = fields.clone();
    with_bucket.push(("bucket".to_owned(), bucket.to_owned()));
    let range = match &policy {
        Some(p) => p.check(&with_bucket, now)?,
        None => None,
    };
    let (min, max) = range.unwrap_or((0, MAX_POST_FILE));
    let success = match (
        get(&fields, "success_action_redirect").or_else(|| get(&fields, "redirect")),
        get(&fields, "success_action_status"),
    ) {
        (Some(url), _) if !url.is_empty() => SuccessAction::Redirect(url),
        (_, Some(s)) if s == "200" || s == "201" => SuccessAction::Status(s.parse().unwrap_or(204)),
        _ => SuccessAction::Status(204),
    };
    let mut user_metadata: Vec<(String, String)> = fields
        .iter()
        .filter_map(|(n, v)| {
            n.strip_prefix("x-amz-meta-")
                .map(|m| (m.to_owned(), v.clone()))
        })
        .collect();
    user_metadata.sort();
    let meta_size: usize = user_metadata.iter().map(|(n, v)| n.len() + v.len()).sum();
    if meta_size > crate::request::headers::MAX_USER_METADATA {
        return Err(S3Error::new(S3ErrorCode::MetadataTooLarge));
    }
    Ok(PostUpload {
        identity,
        key,
        content_type: get(&fields, "content-type"),
        cache_control: get(&fields, "cache-control"),
        content_disposition: get(&fields, "content-disposition"),
        content_encoding: get(&fields, "content-encoding"),
        expires: get(&fields, "expires"),
        user_metadata,
        acl: get(&fields, "acl")
            .map(|a| CannedAcl::parse(&a))
            .transpose()?,
        success,
        file: PostFile {
            field: file,
            min,
            max,
            seen: 0,
            done: false,
        },
        fields,
    })
}

#[cfg(test)]
#[path = "post_form_tests.rs"]
mod tests;
