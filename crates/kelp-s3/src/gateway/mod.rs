//! The S3 gateway: S3 requests served over the filer's namespace.
//!
//! A request is authenticated ([`crate::sigv4`]), classified
//! ([`crate::request`]), authorised ([`identities`]) and dispatched to the
//! module that owns the operation: [`buckets`], [`objects`], [`listing`],
//! [`multipart`], [`versions`], [`tagging`], [`cors`], [`acl`], [`post`].
//! Where things live in the namespace is in [`paths`];
//! bodies are decoded and checked in [`body`]. See `docs/s3.md`.

mod acl;
pub mod body;
mod buckets;
mod cors;
pub mod identities;
mod listing;
mod multipart;
mod objects;
pub mod paths;
mod post;
mod reply;
mod tagging;
mod versions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request};
use axum::response::Response;
use kelp_filer::{Entry, Filer, FilerError, FullPath};

use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::request::{Addressing, CannedAcl, HttpRequest, S3Op, classify};
use crate::sigv4::{self, Auth, Identity, PayloadMode, SignedRequest};
use identities::{Action, Identities};

/// How a gateway answers.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub identities: Identities,
    pub addressing: Addressing,
    /// The region `GetBucketLocation` answers.
    pub region: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            identities: Identities::open(),
            addressing: Addressing::default(),
            region: "us-east-1".into(),
        }
    }
}

/// An S3 gateway over a filer. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) filer: Filer,
    pub(crate) cfg: Arc<GatewayConfig>,
    requests: Arc<AtomicU64>,
}

impl Gateway {
    pub fn new(filer: Filer, cfg: GatewayConfig) -> Self {
        Self {
            filer,
            cfg: Arc::new(cfg),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The gateway's routes: every path is S3's.
pub fn router(gw: Gateway) -> Router {
    Router::new().fallback(handle).with_state(gw)
}

/// Serves S3 on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    gw: Gateway,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    kelp_net::serve::http(listener, router(gw), None, shutdown).await
}

/// One request: what the handlers need besides the operation.
pub(crate) struct Ctx {
    pub auth: Auth,
    pub headers: http::HeaderMap,
    pub request_id: String,
}

async fn handle(State(gw): State<Gateway>, req: Request<Body>) -> Response {
    let n = gw.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("{:016X}", (n << 20) ^ u64::from(std::process::id()));
    let head = req.method() == http::Method::HEAD;
    // A request with `Expect: 100-continue` whose body is never read gets
    // no 100, and its client may or may not send the body after our
    // answer: the connection's next bytes are unknown, so it is closed.
    // That is every error answered before the body (a bad key, a missing
    // bucket: once, hyper took the next request's first bytes for the old
    // body and answered it 400), and botocore's empty bodies, which it
    // sends with `Expect` and waits on.
    let expects = req.headers().get(http::header::EXPECT).is_some();
    let empty = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0");
    let mut resp = match serve(&gw, req, &request_id).await {
        Ok(r) => r,
        Err(e) => reply::error(&e, &request_id, head),
    };
    let close =
        expects && (empty || resp.status().is_client_error() || resp.status().is_server_error());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amz-request-id", v);
    }
    h.insert(http::header::SERVER, HeaderValue::from_static("Kelp"));
    if close {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn serve(gw: &Gateway, req: Request<Body>, request_id: &str) -> S3Result<Response> {
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let auth = authenticate(gw, &parts.method, raw_path, raw_query, &parts.headers)?;
    let op = classify(
        &HttpRequest {
            method: &parts.method,
            raw_path,
            raw_query,
            headers: &parts.headers,
        },
        &gw.cfg.addressing,
    )?;
    let resource = op.resource();
    // An actual cross-origin request: its answer gets the bucket's CORS
    // headers (a preflight answers its own).
    let cors = match (parts.headers.get(http::header::ORIGIN), op.bucket()) {
        (Some(o), Some(b)) if !matches!(op, S3Op::Preflight { .. }) => o
            .to_str()
            .ok()
            .map(|o| (b.to_string(), o.to_string(), parts.method.to_string())),
        _ => None,
    };
    let head = parts.method == http::Method::HEAD;
    let cx = Ctx {
        auth,
        headers: parts.headers,
        request_id: request_id.to_string(),
    };
    let answer = dispatch(gw, &cx, op, body).await.map_err(|e| {
        if e.resource.is_none() {
            e.with_resource(resource)
        } else {
            e
        }
    });
    let mut r = match answer {
        Ok(r) => r,
        // An error to a cross-origin request gets the CORS headers too, so
        // that the page may read it.
        Err(e) if cors.is_some() => reply::error(&e, request_id, head),
        Err(e) => return Err(e),
    };
    if let Some((bucket, origin, method)) = cors {
        cors::decorate(gw, &bucket, &origin, &method, &mut r).await;
    }
    Ok(r)
}

fn authenticate(
    gw: &Gateway,
    method: &http::Method,
    raw_path: &str,
    raw_query: &str,
    headers: &http::HeaderMap,
) -> S3Result<Auth> {
    if gw.cfg.identities.is_open() {
        // No identities: nothing to verify a signature with. Bodies are
        // still decoded, and a declared SHA-256 still checked.
        let payload = match headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
        {
            Some(v) => match PayloadMode::parse(v)? {
                m if m.is_chunked() => PayloadMode::StreamingUnsignedTrailer,
                m => m,
            },
            None => PayloadMode::Unsigned,
        };
        return Ok(Auth {
            identity: Identity::Anonymous,
            region: None,
            payload,
            signing: None,
        });
    }
    sigv4::verify(
        &SignedRequest {
            method: method.as_str(),
            raw_path,
            raw_query,
            headers,
        },
        SystemTime::now(),
        &gw.cfg.identities,
    )
}

async fn dispatch(gw: &Gateway, cx: &Ctx, op: S3Op, body: Body) -> S3Result<Response> {
    use S3Op::*;
    match op {
        ListBuckets => buckets::list(gw, cx).await,
        CreateBucket { bucket, acl } => buckets::create(gw, cx, &bucket, acl, body).await,
        DeleteBucket { bucket } => buckets::delete(gw, cx, &bucket).await,
        HeadBucket { bucket } => buckets::head(gw, cx, &bucket).await,
        GetBucketLocation { bucket } => buckets::location(gw, cx, &bucket).await,
        GetBucketAcl { bucket } => buckets::get_acl(gw, cx, &bucket).await,
        PutBucketAcl { bucket, acl } => buckets::put_acl(gw, cx, &bucket, acl, body).await,
        ListObjectsV1 { bucket, params } => listing::v1(gw, cx, &bucket, params).await,
        ListObjectsV2 { bucket, params } => listing::v2(gw, cx, &bucket, params).await,
        PutObject {
            bucket,
            key,
            meta,
            length,
        } => objects::put(gw, cx, &bucket, &key, meta, length, body).await,
        GetObject { bucket, key, args } => objects::get(gw, cx, &bucket, &key, args, false).await,
        HeadObject { bucket, key, args } => objects::get(gw, cx, &bucket, &key, args, true).await,
        DeleteObject {
            bucket,
            key,
            version_id,
        } => objects::delete(gw, cx, &bucket, &key, version_id).await,
        DeleteObjects { bucket } => objects::delete_many(gw, cx, &bucket, body).await,
        CopyObject {
            bucket,
            key,
            meta,
            copy,
        } => objects::copy(gw, cx, &bucket, &key, meta, copy).await,
        CreateMultipartUpload { bucket, key, meta } => {
            multipart::create(gw, cx, &bucket, &key, meta).await
        }
        UploadPart {
            bucket,
            key,
            upload_id,
            part_number,
            content_md5,
            length,
        } => {
            multipart::upload_part(
                gw,
                cx,
                multipart::PartTarget {
                    bucket: &bucket,
                    key: &key,
                    upload_id: &upload_id,
                    part_number,
                },
                content_md5,
                length,
                body,
            )
            .await
        }
        UploadPartCopy {
            bucket,
            key,
            upload_id,
            part_number,
            copy,
            range,
        } => {
            multipart::upload_part_copy(
                gw,
                cx,
                multipart::PartTarget {
                    bucket: &bucket,
                    key: &key,
                    upload_id: &upload_id,
                    part_number,
                },
                copy,
                range,
            )
            .await
        }
        CompleteMultipartUpload {
            bucket,
            key,
            upload_id,
        } => multipart::complete(gw, cx, &bucket, &key, &upload_id, body).await,
        AbortMultipartUpload {
            bucket,
            key,
            upload_id,
        } => multipart::abort(gw, cx, &bucket, &key, &upload_id).await,
        ListParts {
            bucket,
            key,
            upload_id,
            max_parts,
            part_number_marker,
        } => {
            multipart::list_parts(
                gw,
                cx,
                &bucket,
                &key,
                &upload_id,
                max_parts,
                part_number_marker,
            )
            .await
        }
        ListMultipartUploads { bucket, params } => {
            multipart::list_uploads(gw, cx, &bucket, params).await
        }
        ListObjectVersions { bucket, params } => versions::list(gw, cx, &bucket, params).await,
        GetBucketVersioning { bucket } => versions::get_versioning(gw, cx, &bucket).await,
        PutBucketVersioning { bucket } => versions::put_versioning(gw, cx, &bucket, body).await,
        GetBucketCors { bucket } => cors::get(gw, cx, &bucket).await,
        PutBucketCors { bucket } => cors::put(gw, cx, &bucket, body).await,
        DeleteBucketCors { bucket } => cors::delete(gw, cx, &bucket).await,
        Preflight {
            bucket, preflight, ..
        } => cors::preflight(gw, &bucket, &preflight).await,
        GetBucketTagging { bucket } => tagging::get_bucket(gw, cx, &bucket).await,
        PutBucketTagging { bucket } => tagging::put_bucket(gw, cx, &bucket, body).await,
        DeleteBucketTagging { bucket } => tagging::delete_bucket(gw, cx, &bucket).await,
        GetObjectTagging {
            bucket,
            key,
            version_id,
        } => tagging::get_object(gw, cx, &bucket, &key, version_id).await,
        PutObjectTagging {
            bucket,
            key,
            version_id,
        } => tagging::put_object(gw, cx, &bucket, &key, version_id, body).await,
        DeleteObjectTagging {
            bucket,
            key,
            version_id,
        } => tagging::delete_object(gw, cx, &bucket, &key, version_id).await,
        GetObjectAcl {
            bucket,
            key,
            version_id,
        } => acl::get(gw, cx, &bucket, &key, version_id).await,
        PutObjectAcl {
            bucket,
            key,
            version_id,
            acl,
        } => acl::put(gw, cx, &bucket, &key, version_id, acl, body).await,
        PostObject { bucket } => post::post(gw, cx, &bucket, body).await,
        #[allow(unreachable_patterns)]
        other => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!("{} is not implemented yet", op_name(&other)),
        )),
    }
}

fn op_name(op: &S3Op) -> String {
    let s = format!("{op:?}");
    s.split([' ', '{', '('])
        .next()
        .unwrap_or("This operation")
        .to_string()
}

/// A bucket's directory entry and what it says about access.
pub(crate) struct BucketInfo {
    pub dir: FullPath,
    pub entry: Entry,
}

impl BucketInfo {
    pub fn owner(&self) -> Option<&str> {
        self.entry
            .xattrs
            .get(paths::OWNER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn acl(&self) -> Option<CannedAcl> {
        acl_of(&self.entry)
    }
}

/// The canned ACL kept on a bucket's directory or an object's entry.
pub(crate) fn acl_of(e: &Entry) -> Option<CannedAcl> {
    e.xattrs
        .get(paths::ACL)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| CannedAcl::parse(s).ok())
}

impl Gateway {
    /// The bucket, checked to exist and to allow `action` to the caller.
    pub(crate) async fn bucket(
        &self,
        cx: &Ctx,
        bucket: &str,
        action: Action,
    ) -> S3Result<BucketInfo> {
        let dir = paths::bucket_dir(bucket);
        let entry = match self.filer.lookup(&dir).await.map_err(filer_error)? {
            Some(e) if e.is_dir() => e,
            _ => return Err(S3Error::new(S3ErrorCode::NoSuchBucket)),
        };
        let info = BucketInfo { dir, entry };
        if !self.cfg.identities.allows(
            &cx.auth.identity,
            action,
            Some(bucket),
            info.owner(),
            info.acl(),
        ) {
            return Err(S3Error::new(S3ErrorCode::AccessDenied));
        }
        Ok(info)
    }

    /// The object `key` (its version `vid`) for a reader: allowed by its
    /// bucket, or else by the object's own ACL. A denied caller learns
    /// nothing of whether the object exists.
    pub(crate) async fn readable_object(
        &self,
        cx: &Ctx,
        bucket: &str,
        key: &str,
        vid: Option<&str>,
    ) -> S3Result<(BucketInfo, FullPath, Entry)> {
        match self.bucket(cx, bucket, Action::Read).await {
            Ok(b) => {
                let (path, e) = versions::locate(self, bucket, key, vid).await?;
                Ok((b, path, e))
            }
            Err(denied) if denied.code == S3ErrorCode::AccessDenied => {
                let dir = paths::bucket_dir(bucket);
                let b = match self.filer.lookup(&dir).await.map_err(filer_error)? {
                    Some(entry) => BucketInfo { dir, entry },
                    None => return Err(denied),
                };
                match versions::locate(self, bucket, key, vid).await {
                    Ok((path, e))
                        if self
                            .cfg
                            .identities
                            .object_acl_allows_read(&cx.auth.identity, acl_of(&e)) =>
                    {
                        Ok((b, path, e))
                    }
                    _ => Err(denied),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Every child of `dir`, read page by page; a directory that is not
    /// there (or is a file) has none.
    pub(crate) async fn children(&self, dir: &FullPath) -> S3Result<Vec<Entry>> {
        const PAGE: usize = 1000;
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = match self.filer.list(dir, &after, "", PAGE).await {
                Ok(p) => p,
                Err(FilerError::NotFound(_)) | Err(FilerError::NotDirectory(_)) => break,
                Err(e) => return Err(filer_error(e)),
            };
            let n = page.len();
            if let Some(last) = page.last() {
                after = last.name.clone();
            }
            out.extend(page);
            if n < PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// The caller's name for ownership (`None`: anonymous or open).
    pub(crate) fn caller(&self, cx: &Ctx) -> Option<String> {
        self.cfg
            .identities
            .user(&cx.auth.identity)
            .map(|u| u.name.clone())
    }
}

/// A filer error as S3 sees it.
pub(crate) fn filer_error(e: FilerError) -> S3Error {
    use S3ErrorCode as C;
    let (code, msg) = match &e {
        FilerError::NotFound(_) => (C::NoSuchKey, None),
        FilerError::Quota { .. } => (C::QuotaExceeded, Some(e.to_string())),
        FilerError::Precondition(_) => (C::PreconditionFailed, None),
        FilerError::Exists(_)
        | FilerError::NotDirectory(_)
        | FilerError::IsDirectory(_)
        | FilerError::NotEmpty(_) => (
            C::InvalidRequest,
            Some(format!(
                "{e} (a key cannot be both an object and a prefix of other keys in Kelp)"
            )),
        ),
        FilerError::BadPath(_) | FilerError::BadRequest(_) => {
            (C::InvalidArgument, Some(e.to_string()))
        }
        FilerError::Range(_) => (C::InvalidRange, None),
        FilerError::Body(_) => (C::IncompleteBody, Some(e.to_string())),
        FilerError::Blob(_) | FilerError::ShuttingDown => {
            (C::ServiceUnavailable, Some(e.to_string()))
        }
        FilerError::Store(_) | FilerError::Corrupt(_) => (C::InternalError, Some(e.to_string())),
    };
    if code == C::InternalError || code == C::ServiceUnavailable {
        tracing::warn!(error = %e, "S3 request failed in the filer");
    }
    match msg {
        Some(m) => S3Error::with_message(code, m),
        None => S3Error::new(code),
    }
}
