//! S3 errors: the code, its HTTP status, and the XML error body.
//!
//! Wire format (every status but 304 and HEAD responses carries it):
//!
//! ```text
//! <?xml version="1.0" encoding="UTF-8"?>
//! <Error><Code>NoSuchKey</Code><Message>…</Message>
//! <Resource>/bucket/key</Resource><RequestId>…</RequestId></Error>
//! ```

use std::fmt;

use crate::xml::escape;

/// Every error code the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3ErrorCode {
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NoSuchTagSet,
    NoSuchCORSConfiguration,
    BucketNotEmpty,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    InvalidBucketName,
    KeyTooLongError,
    SignatureDoesNotMatch,
    AccessDenied,
    InvalidAccessKeyId,
    RequestTimeTooSkewed,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    MissingSecurityHeader,
    InvalidPart,
    InvalidPartOrder,
    EntityTooSmall,
    EntityTooLarge,
    MalformedXML,
    InvalidArgument,
    InvalidRequest,
    InvalidTag,
    MetadataTooLarge,
    InvalidRange,
    PreconditionFailed,
    NotModified,
    MethodNotAllowed,
    NotImplemented,
    InternalError,
    ServiceUnavailable,
    XAmzContentSHA256Mismatch,
    BadDigest,
    InvalidDigest,
    IncompleteBody,
    MissingContentLength,
    /// Kelp's own: a bucket or user quota is full.
    QuotaExceeded,
    /// A CORS preflight that no rule allows.
    CORSResponse,
}

impl S3ErrorCode {
    /// The HTTP status S3 answers with.
    pub fn status(self) -> u16 {
        use S3ErrorCode::*;
        match self {
            NoSuchBucket
            | NoSuchKey
            | NoSuchUpload
            | NoSuchVersion
            | NoSuchTagSet
            | NoSuchCORSConfiguration => 404,
            BucketNotEmpty | BucketAlreadyExists | BucketAlreadyOwnedByYou => 409,
            SignatureDoesNotMatch
            | AccessDenied
            | InvalidAccessKeyId
            | RequestTimeTooSkewed
            | QuotaExceeded
            | CORSResponse => 403,
            InvalidBucketName
            | KeyTooLongError
            | AuthorizationHeaderMalformed
            | AuthorizationQueryParametersError
            | MissingSecurityHeader
            | InvalidPart
            | InvalidPartOrder
            | EntityTooSmall
            | EntityTooLarge
            | MalformedXML
            | InvalidArgument
            | InvalidRequest
            | InvalidTag
            | MetadataTooLarge
            | XAmzContentSHA256Mismatch
            | BadDigest
            | InvalidDigest
            | IncompleteBody => 400,
            InvalidRange => 416,
            PreconditionFailed => 412,
            NotModified => 304,
            MethodNotAllowed => 405,
            MissingContentLength => 411,
            NotImplemented => 501,
            InternalError => 500,
            ServiceUnavailable => 503,
        }
    }

    /// The `<Code>` string.
    pub fn as_str(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NoSuchVersion => "NoSuchVersion",
            NoSuchTagSet => "NoSuchTagSet",
            NoSuchCORSConfiguration => "NoSuchCORSConfiguration",
            BucketNotEmpty => "BucketNotEmpty",
            BucketAlreadyExists => "BucketAlreadyExists",
            BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            InvalidBucketName => "InvalidBucketName",
            KeyTooLongError => "KeyTooLongError",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            AccessDenied => "AccessDenied",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            AuthorizationQueryParametersError => "AuthorizationQueryParametersError",
            MissingSecurityHeader => "MissingSecurityHeader",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            EntityTooSmall => "EntityTooSmall",
            EntityTooLarge => "EntityTooLarge",
            MalformedXML => "MalformedXML",
            InvalidArgument => "InvalidArgument",
            InvalidRequest => "InvalidRequest",
            InvalidTag => "InvalidTag",
            MetadataTooLarge => "MetadataTooLarge",
            InvalidRange => "InvalidRange",
            PreconditionFailed => "PreconditionFailed",
            NotModified => "NotModified",
            MethodNotAllowed => "MethodNotAllowed",
            NotImplemented => "NotImplemented",
            InternalError => "InternalError",
            ServiceUnavailable => "ServiceUnavailable",
            XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
            BadDigest => "BadDigest",
            InvalidDigest => "InvalidDigest",
            IncompleteBody => "IncompleteBody",
            MissingContentLength => "MissingContentLength",
            QuotaExceeded => "QuotaExceeded",
            CORSResponse => "CORSResponse",
        }
    }

    /// S3's usual message for the code.
    pub fn default_message(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            NoSuchBucket => "The specified bucket does not exist",
            NoSuchKey => "The specified key does not exist.",
            NoSuchUpload => "The specified upload does not exist.",
            NoSuchVersion => "The specified version does not exist.",
            NoSuchTagSet => "The TagSet does not exist",
            NoSuchCORSConfiguration => "The CORS configuration does not exist",
            BucketNotEmpty => "The bucket you tried to delete is not empty",
            BucketAlreadyExists => "The requested bucket name is not available.",
            BucketAlreadyOwnedByYou => {
                "Your previous request to create the named bucket succeeded and you already own it."
            }
            InvalidBucketName => "The specified bucket is not valid.",
            KeyTooLongError => "Your key is too long",
            SignatureDoesNotMatch => {
                "The request signature we calculated does not match the signature you provided. Check your key and signing method."
            }
            AccessDenied => "Access Denied",
            InvalidAccessKeyId => {
                "The AWS Access Key Id you provided does not exist in our records."
            }
            RequestTimeTooSkewed => {
                "The difference between the request time and the server's time is too large."
            }
            AuthorizationHeaderMalformed => "The authorization header is malformed.",
            AuthorizationQueryParametersError => "Error parsing the X-Amz-Credential parameter.",
            MissingSecurityHeader => "Your request is missing a required header.",
            InvalidPart => "One or more of the specified parts could not be found.",
            InvalidPartOrder => "The list of parts was not in ascending order.",
            EntityTooSmall => {
                "Your proposed upload is smaller than the minimum allowed object size."
            }
            EntityTooLarge => "Your proposed upload exceeds the maximum allowed object size.",
            MalformedXML => {
                "The XML you provided was not well-formed or did not validate against our published schema."
            }
            InvalidArgument => "Invalid Argument",
            InvalidRequest => "Invalid Request",
            InvalidTag => "The tag provided was not a valid tag.",
            MetadataTooLarge => "Your metadata headers exceed the maximum allowed metadata size.",
            InvalidRange => "The requested range is not satisfiable",
            PreconditionFailed => "At least one of the pre-conditions you specified did not hold",
            NotModified => "Not Modified",
            MethodNotAllowed => "The specified method is not allowed against this resource.",
            NotImplemented => "A header you provided implies functionality that is not implemented",
            InternalError => "We encountered an internal error. Please try again.",
            ServiceUnavailable => "Please reduce your request rate.",
            XAmzContentSHA256Mismatch => {
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            }
            BadDigest => {
                "The Content-MD5 or checksum you specified did not match what we received."
            }
            InvalidDigest => "The Content-MD5 you specified is not valid.",
            IncompleteBody => {
                "You did not provide the number of bytes specified by the Content-Length HTTP header."
            }
            MissingContentLength => "You must provide the Content-Length HTTP header.",
            QuotaExceeded => "The quota for this bucket or account is exceeded.",
            CORSResponse => "CORSResponse: This CORS request is not allowed.",
        }
    }
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An S3 error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub code: S3ErrorCode,
    pub message: String,
    /// The path the request addressed (`/bucket/key`), when known.
    pub resource: Option<String>,
}

pub type S3Result<T> = Result<T, S3Error>;

impl S3Error {
    /// The code with its usual message.
    pub fn new(code: S3ErrorCode) -> Self {
        S3Error {
            code,
            message: code.default_message().to_owned(),
            resource: None,
        }
    }

    pub fn with_message(code: S3ErrorCode, message: impl Into<String>) -> Self {
        S3Error {
            code,
            message: message.into(),
            resource: None,
        }
    }

    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Expired presigned URL: S3 answers 403 AccessDenied with this message.
    pub fn expired() -> Self {
        Self::with_message(S3ErrorCode::AccessDenied, "Request has expired")
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// Whether the answer carries the XML body (304 never does; HEAD
    /// responses drop it at the HTTP layer).
    pub fn has_body(&self) -> bool {
        self.code != S3ErrorCode::NotModified
    }

    /// The XML error document.
    pub fn to_xml(&self, request_id: &str) -> String {
        let mut s = String::with_capacity(256);
        s.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        s.push_str("<Error><Code>");
        s.push_str(self.code.as_str());
        s.push_str("</Code><Message>");
        s.push_str(&escape(&self.message));
        s.push_str("</Message><Resource>");
        s.push_str(&escape(self.resource.as_deref().unwrap_or("")));
        s.push_str("</Resource><RequestId>");
        s.push_str(&escape(request_id));
        s.push_str("</RequestId></Error>");
        s
    }
}

impl From<S3ErrorCode> for S3Error {
    fn from(code: S3ErrorCode) -> Self {
        S3Error::new(code)
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for S3Error {}

/// Shorthand for an error with a message.
pub(crate) fn err<T>(code: S3ErrorCode, message: impl Into<String>) -> S3Result<T> {
    Err(S3Error::with_message(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        use S3ErrorCode::*;
        for (c, s) in [
            (NoSuchBucket, 404),
            (NoSuchKey, 404),
            (BucketNotEmpty, 409),
            (SignatureDoesNotMatch, 403),
            (QuotaExceeded, 403),
            (CORSResponse, 403),
            (InvalidRange, 416),
            (PreconditionFailed, 412),
            (NotModified, 304),
            (MethodNotAllowed, 405),
            (MissingContentLength, 411),
            (NotImplemented, 501),
            (InternalError, 500),
            (ServiceUnavailable, 503),
            (XAmzContentSHA256Mismatch, 400),
        ] {
            assert_eq!(c.status(), s, "{c}");
        }
        assert_eq!(S3Error::expired().status(), 403);
        assert_eq!(S3Error::expired().code, AccessDenied);
        assert!(!S3Error::new(NotModified).has_body());
    }

    #[test]
    fn xml_escapes() {
        let e = S3Error::with_message(S3ErrorCode::NoSuchKey, "a<b>&\"'").with_resource("/b/k&<x>");
        let x = e.to_xml("req-1");
        assert_eq!(
            x,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>\
             <Message>a&lt;b&gt;&amp;&quot;&apos;</Message><Resource>/b/k&amp;&lt;x&gt;</Resource>\
             <RequestId>req-1</RequestId></Error>"
        );
    }
}
