//! Every error the master reports, and the one place that maps each to an
//! HTTP status and a gRPC status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use kelp_core::VolumeId;

/// Why the master could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the master: {0}")]
    Master(#[from] MasterError),
    #[error(transparent)]
    Serve(#[from] kelp_net::serve::ServeError),
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Malformed or unknown parameter from a client.
    #[error("{0}")]
    BadRequest(String),
    #[error("volume id {0} not found")]
    VolumeNotFound(VolumeId),
    /// No server has room for a volume of the requested layout.
    #[error("No free volumes left for {0}")]
    NoFreeVolumes(String),
    /// Another request is growing this layout and did not finish in time.
    #[error("no writable volumes for {0}, volume growth in progress")]
    GrowthInProgress(String),
    /// Servers were chosen but allocating on them failed.
    #[error("volume growth failed: {0}")]
    GrowthFailed(String),
    /// A volume server refused or failed a request the master made.
    #[error("{0}")]
    VolumeServer(String),
    #[error("master metadata in {path}: {reason}")]
    Meta { path: String, reason: String },
    #[error("persisting master state: {0}")]
    Persist(#[from] std::io::Error),
}

impl MasterError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::VolumeNotFound(_) => StatusCode::NOT_FOUND,
            Self::NoFreeVolumes(_) | Self::GrowthFailed(_) => StatusCode::NOT_ACCEPTABLE,
            Self::GrowthInProgress(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::VolumeServer(_) | Self::Meta { .. } | Self::Persist(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// For RPCs that have no error field. Unavailable makes `weed` clients
    /// retry, which is what a pending growth wants.
    pub fn grpc_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            Self::BadRequest(_) => tonic::Status::invalid_argument(msg),
            Self::VolumeNotFound(_) => tonic::Status::not_found(msg),
            Self::NoFreeVolumes(_) | Self::GrowthFailed(_) => {
                tonic::Status::resource_exhausted(msg)
            }
            Self::GrowthInProgress(_) => tonic::Status::unavailable(msg),
            Self::VolumeServer(_) | Self::Meta { .. } | Self::Persist(_) => {
                tonic::Status::internal(msg)
            }
        }
    }
}

/// SeaweedFS shape: `{"error":"..."}`, plus `Retry-After` on 503.
impl IntoResponse for MasterError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut resp = (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
