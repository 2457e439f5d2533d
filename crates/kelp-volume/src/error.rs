//! Errors of the volume server and the one place that maps them to HTTP
//! statuses (and, in `grpc.rs`, to gRPC codes via [`ApiError::grpc_code`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kelp_core::VolumeId;
use kelp_needle::{NeedleError, VolumeError};

use crate::replicate::ReplicationError;
use crate::store::StoreError;

/// Why the volume server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] kelp_net::serve::ServeError),
    #[error("server task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid file id: {0}")]
    BadFileId(String),
    #[error("volume {0} not found")]
    VolumeNotFound(VolumeId),
    #[error("volume {0} already exists")]
    VolumeExists(VolumeId),
    #[error("no free volume slot")]
    NoFreeSlot,
    #[error("not found")]
    NotFound,
    /// A DELETE whose cookie does not match (SeaweedFS answers 400).
    #[error("File Random Cookie does not match.")]
    DeleteCookieMismatch,
    /// A write to an existing key with another cookie (SeaweedFS answers 500).
    #[error("mismatching cookie")]
    WriteCookieMismatch,
    #[error("file over the limited {}", human_size(*.limit))]
    TooLarge { limit: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("Content-MD5 {given} does not match the data ({computed})")]
    Md5Mismatch { given: String, computed: String },
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { len: u64 },
    #[error("volume {0} is read only")]
    ReadOnly(VolumeId),
    #[error("corrupt needle: {0}")]
    Corrupt(String),
    #[error("volume error: {0}")]
    Volume(VolumeError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A missing, invalid, expired or foreign JWT.
    #[error("wrong jwt")]
    WrongJwt,
    /// Deleting a chunk of a chunk manifest failed.
    #[error("Delete chunks error: {0}")]
    ChunkDelete(String),
    /// Another server (master or volume server) could not be reached or
    /// answered wrongly.
    #[error("{0}")]
    Upstream(String),
    /// The request cannot be served right now (too few live replicas).
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full: nothing of this request was acknowledged.
    #[error("volume {vid}: no space left on the device: {why}")]
    NoSpace { vid: VolumeId, why: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadFileId(_) | Self::BadRequest(_) | Self::Md5Mismatch { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::DeleteCookieMismatch => StatusCode::BAD_REQUEST,
            Self::WrongJwt => StatusCode::UNAUTHORIZED,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::VolumeNotFound(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::VolumeExists(_) => StatusCode::CONFLICT,
            Self::NoFreeSlot | Self::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::WriteCookieMismatch
            | Self::ReadOnly(_)
            | Self::Corrupt(_)
            | Self::Volume(_)
            | Self::ChunkDelete(_)
            | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::BadFileId(_)
            | Self::BadRequest(_)
            | Self::Md5Mismatch { .. }
            | Self::TooLarge { .. }
            | Self::RangeNotSatisfiable { .. }
            | Self::DeleteCookieMismatch
            | Self::WriteCookieMismatch => tonic::Code::InvalidArgument,
            Self::VolumeNotFound(_) | Self::NotFound => tonic::Code::NotFound,
            Self::VolumeExists(_) => tonic::Code::AlreadyExists,
            Self::NoFreeSlot | Self::NoSpace { .. } => tonic::Code::ResourceExhausted,
            Self::ReadOnly(_) => tonic::Code::FailedPrecondition,
            Self::Corrupt(_) => tonic::Code::DataLoss,
            Self::Volume(_) | Self::Internal(_) | Self::ChunkDelete(_) => tonic::Code::Internal,
            Self::WrongJwt => tonic::Code::Unauthenticated,
            Self::Upstream(_) | Self::Unavailable(_) => tonic::Code::Unavailable,
        }
    }

    /// Maps a kelp-needle error of an operation on volume `vid`.
    pub fn from_volume(vid: VolumeId, e: VolumeError) -> Self {
        match e {
            VolumeError::NoSpace(why) => Self::NoSpace { vid, why },
            VolumeError::NotFound { .. } => Self::NotFound,
            VolumeError::CookieMismatch { .. } => Self::WriteCookieMismatch,
            VolumeError::Format(NeedleError::TooLarge(what)) => {
                Self::BadRequest(format!("needle too large: {what}"))
            }
            VolumeError::Corrupt { .. } | VolumeError::Format(_) => Self::Corrupt(e.to_string()),
            VolumeError::ReadOnly => Self::ReadOnly(vid),
            VolumeError::Exists(_) => Self::VolumeExists(vid),
            other => Self::Volume(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VolumeNotFound(vid) => Self::VolumeNotFound(vid),
            StoreError::VolumeExists(vid) => Self::VolumeExists(vid),
            StoreError::NoFreeSlot => Self::NoFreeSlot,
            StoreError::ReadOnly(vid) => Self::ReadOnly(vid),
            StoreError::NeedleNotFound => Self::NotFound,
            StoreError::DeleteCookieMismatch => Self::DeleteCookieMismatch,
            StoreError::NotEmpty(_) | StoreError::InvalidRequest(_) => {
                Self::BadRequest(e.to_string())
            }
            StoreError::Volume { vid, source } => Self::from_volume(vid, source),
            StoreError::Dir { .. } | StoreError::Remove { .. } | StoreError::Task(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<ReplicationError> for ApiError {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Store(e) => e.into(),
            ReplicationError::TooFewReplicas { .. } => Self::Unavailable(e.to_string()),
            ReplicationError::Failed(_) => Self::Upstream(e.to_string()),
        }
    }
}

/// `256 MiB` when the limit is whole mebibytes (the usual `-fileSizeLimitMB`),
/// else bytes.
fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request rejected");
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::RangeNotSatisfiable { len } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages() {
        let e = ApiError::TooLarge {
            limit: 256 * 1024 * 1024,
        };
        assert_eq!(e.to_string(), "file over the limited 256 MiB");
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            ApiError::TooLarge { limit: 1000 }.to_string(),
            "file over the limited 1000 bytes"
        );
        assert_eq!(
            ApiError::from_volume(
                1,
                VolumeError::CookieMismatch {
                    key: 1,
                    stored: 1,
                    given: 2
                }
            )
            .status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::from_volume(1, VolumeError::NotFound { key: 1 }).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from_volume(1, NeedleError::TooLarge("data").into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from_volume(
                1,
                NeedleError::BadChecksum {
                    stored: 1,
                    computed: 2
                }
                .into()
            )
            .status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::DeleteCookieMismatch.status(),
            StatusCode::BAD_REQUEST
        );
        let full = ApiError::from_volume(3, VolumeError::NoSpace("No space left".into()));
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(full.to_string().contains("no space left"), "{full}");
    }
}
