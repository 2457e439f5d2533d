//! Browser POST uploads (`multipart/form-data` to the bucket): the form
//! read and checked by [`crate::post_form`] (policy signature, conditions,
//! length range), the signer's rights on the bucket checked, the file
//! written as PutObject writes one (versioned buckets included), and the
//! answer chosen by `success_action_status` / `success_action_redirect`.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::response::Response;
use futures::TryStreamExt;
use kelp_filer::{FilerError, NewFile};

use super::identities::Action;
use super::objects::{attrs_of, etag_of};
use super::{Ctx, Gateway, filer_error, paths, reply, versions};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::post_form::{SuccessAction, read_post_form};
use crate::request::ObjectMeta;
use crate::sigv4::Auth;
use crate::xml::responses;

pub async fn post(gw: &Gateway, cx: &Ctx, bucket: &str, body: Body) -> S3Result<Response> {
    let content_type = cx
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let form = read_post_form(
        body.into_data_stream(),
        &content_type,
        bucket,
        SystemTime::now(),
        &gw.cfg.identities,
    )
    .await?;
    // The policy's signer is who uploads.
    let signer = Ctx {
        auth: Auth {
            identity: form.identity.clone(),
            region: None,
            payload: crate::sigv4::PayloadMode::Unsigned,
            signing: None,
        },
        headers: cx.headers.clone(),
        request_id: cx.request_id.clone(),
    };
    let b = gw.bucket(&signer, bucket, Action::Write).await?;
    let key = form.key.clone();
    if key.ends_with('/') {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "A POST upload's key cannot end with /",
        ));
    }
    let path = paths::object_path(bucket, &key)?;
    let meta = ObjectMeta {
        content_type: form.content_type.clone(),
        content_disposition: form.content_disposition.clone(),
        content_encoding: form.content_encoding.clone(),
        cache_control: form.cache_control.clone(),
        expires: form.expires.clone(),
        user_metadata: form.user_metadata.clone(),
        acl: form.acl,
        ..Default::default()
    };
    let f = NewFile {
        mime: meta
            .content_type
            .clone()
            .unwrap_or_else(|| "binary/octet-stream".into()),
        xattrs: attrs_of(&meta),
        ..Default::default()
    };
    // The file's own S3 error (too large, too small) wins over the
    // filer's report of a failed body.
    let failed: Arc<Mutex<Option<S3Error>>> = Arc::default();
    let seen = failed.clone();
    let stream = form.file.map_err(move |e| {
        let msg = e.message.clone();
        if let Ok(mut g) = seen.lock() {
            g.get_or_insert(e);
        }
        msg
    });
    let written = match versions::status(&b) {
        None => gw.filer.write(&path, stream, f).await.map(|e| (e, None)),
        Some(_) => versions::write(gw, &b, bucket, &key, &path, stream, f)
            .await
            .map(|(e, v)| (e, Some(v))),
    };
    let (entry, vid) = written.map_err(|e| {
        let own = failed.lock().ok().and_then(|mut g| g.take());
        match (e, own) {
            (FilerError::Body(_), Some(s3)) => s3,
            (e, _) => filer_error(e),
        }
    })?;
    let etag = etag_of(&entry).quoted();
    let host = cx
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let location = format!("http://{host}/{bucket}/{}", crate::uri::encode_path(&key));
    let mut r = match &form.success {
        SuccessAction::Redirect(url) => {
            let mut r = reply::empty(303);
            reply::header(
                &mut r,
                "location",
                &SuccessAction::redirect_location(url, bucket, &key, &etag),
            );
            r
        }
        SuccessAction::Status(201) => reply::xml(
            201,
            responses::post_response(&location, bucket, &key, &etag_of(&entry)),
        ),
        SuccessAction::Status(s) => {
            let mut r = reply::empty(*s);
            reply::header(&mut r, "location", &location);
            r
        }
    };
    reply::header(&mut r, "etag", &etag);
    if let Some(v) = vid.filter(|v| v != versions::NULL) {
        reply::header(&mut r, "x-amz-version-id", &v);
    }
    Ok(r)
}
