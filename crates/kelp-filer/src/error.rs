//! [`FilerError`]: every way a filer operation fails, each mapped to the
//! HTTP status the filer answers with.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FilerError {
    #[error("bad path: {0}")]
    BadPath(String),
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{0}: not a directory")]
    NotDirectory(String),
    #[error("{0}: is a directory")]
    IsDirectory(String),
    #[error("{0}: directory not empty (use ?recursive=true)")]
    NotEmpty(String),
    #[error("{0}: precondition failed")]
    Precondition(String),
    #[error("quota exceeded on {dir}: {what}")]
    Quota { dir: String, what: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("range not satisfiable: {0}")]
    Range(String),
    #[error("blob store: {0}")]
    Blob(#[from] kelp_client::ClientError),
    #[error("metadata store: {0}")]
    Store(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("upload body: {0}")]
    Body(String),
    #[error("the filer is shutting down")]
    ShuttingDown,
}

impl FilerError {
    pub fn status(&self) -> u16 {
        match self {
            FilerError::BadPath(_) | FilerError::BadRequest(_) | FilerError::Body(_) => 400,
            FilerError::NotFound(_) => 404,
            FilerError::Exists(_) | FilerError::NotDirectory(_) | FilerError::IsDirectory(_) => 409,
            FilerError::NotEmpty(_) => 409,
            FilerError::Precondition(_) => 412,
            FilerError::Quota { .. } => 507,
            FilerError::Range(_) => 416,
            FilerError::Blob(_) => 502,
            FilerError::Store(_) | FilerError::Corrupt(_) => 500,
            FilerError::ShuttingDown => 503,
        }
    }

    pub(crate) fn store(e: impl std::fmt::Display) -> Self {
        FilerError::Store(e.to_string())
    }
}
