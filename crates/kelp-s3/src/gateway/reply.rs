//! Building answers: XML documents, empty answers, errors.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use crate::error::S3Error;

pub fn xml(status: u16, doc: String) -> Response {
    let mut r = Response::new(Body::from(doc));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

pub fn ok_xml(doc: String) -> Response {
    xml(200, doc)
}

pub fn empty(status: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r
}

pub fn error(e: &S3Error, request_id: &str, head: bool) -> Response {
    if e.status() >= 500 {
        tracing::warn!(code = ?e.code, message = %e.message, "S3 request failed");
    }
    if !e.has_body() || head {
        return empty(e.status());
    }
    xml(e.status(), e.to_xml(request_id))
}

/// Sets `name: value` when the value is a valid header value.
pub fn header(r: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        http::header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}
