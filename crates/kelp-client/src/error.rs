//! [`ClientError`]: every failure names the operation, the server it was
//! talking to (master or volume server) and why it failed.

use std::fmt;

use kelp_core::VolumeId;
use reqwest::StatusCode;

/// Which server a failed call went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A master, `host:port`.
    Master(String),
    /// A volume server, `host:port`.
    Volume(String),
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Master(a) => write!(f, "master {a}"),
            Self::Volume(a) => write!(f, "volume server {a}"),
        }
    }
}

/// What the client was doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Assign,
    /// Locating a volume (`/dir/lookup?volumeId=`).
    Lookup(VolumeId),
    /// Fetching a file token (`/dir/lookup?fileId=`).
    Token(String),
    Upload(String),
    Read(String),
    Delete(String),
    /// A chunked upload, by file name.
    UploadChunked(String),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Assign => write!(f, "assign"),
            Self::Lookup(v) => write!(f, "lookup of volume {v}"),
            Self::Token(fid) => write!(f, "token for {fid}"),
            Self::Upload(fid) => write!(f, "upload of {fid}"),
            Self::Read(fid) => write!(f, "read of {fid}"),
            Self::Delete(fid) => write!(f, "delete of {fid}"),
            Self::UploadChunked(name) => write!(f, "chunked upload of {name:?}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No usable answer: connecting, TLS, a timeout or a broken body.
    #[error("{op}: {server}: {}", chain(.error))]
    Transport {
        op: Op,
        server: Server,
        error: reqwest::Error,
    },
    /// The server answered with an error status (and usually a message).
    #[error("{op}: {server} answered {status}: {message}")]
    Status {
        op: Op,
        server: Server,
        status: StatusCode,
        message: String,
    },
    /// The server's answer is not what the API promises.
    #[error("{op}: {server} sent an unusable reply: {reason}")]
    Reply {
        op: Op,
        server: Server,
        reason: String,
    },
    /// Every server that could answer was tried and failed.
    #[error("{op}: every server failed: {}", join(.errors))]
    Exhausted { op: Op, errors: Vec<ClientError> },
    /// The caller's input is unusable (a malformed file id, say).
    #[error("{op}: {reason}")]
    Invalid { op: Op, reason: String },
    /// The data to upload could not be read.
    #[error("{op}: reading the data to upload: {error}")]
    Source { op: Op, error: std::io::Error },
    /// The HTTP client could not be built (TLS files, say).
    #[error("building the HTTP client: {0}")]
    Setup(String),
}

impl ClientError {
    /// Maps a transport error of `op` against `server` (for `map_err`).
    pub(crate) fn transport(
        op: &Op,
        server: &Server,
    ) -> impl Fn(reqwest::Error) -> ClientError + use<> {
        let (op, server) = (op.clone(), server.clone());
        move |error| ClientError::Transport {
            op: op.clone(),
            server: server.clone(),
            error,
        }
    }

    /// The HTTP status a server answered with, if that is the failure.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// A volume server holding the file's volume answered 404: the file is
    /// not there. (A master's 404 only says it does not know the volume
    /// yet, say before the volume server's first heartbeat.)
    pub fn is_missing_file(&self) -> bool {
        match self {
            Self::Status { status, server, .. } => {
                *status == StatusCode::NOT_FOUND && matches!(server, Server::Volume(_))
            }
            Self::Exhausted { errors, .. } => errors.iter().all(ClientError::is_missing_file),
            _ => false,
        }
    }

    /// The server the failure came from, when there is one.
    pub fn server(&self) -> Option<&Server> {
        match self {
            Self::Transport { server, .. }
            | Self::Status { server, .. }
            | Self::Reply { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Whether another replica (or master) may do better: no answer, or a
    /// server error. Other statuses (404 included) are answers.
    pub(crate) fn is_retriable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => status.is_server_error(),
            Self::Exhausted { errors, .. } => errors.iter().all(ClientError::is_retriable),
            _ => false,
        }
    }
}

/// An error and its causes, `a: b: c` (reqwest's own message is terse).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn join(errors: &[ClientError]) -> String {
    if errors.is_empty() {
        return "no server to ask".to_string();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_server_and_operation() {
        let e = ClientError::Status {
            op: Op::Read("3,01637037d6".into()),
            server: Server::Volume("10.0.0.1:8080".into()),
            status: StatusCode::NOT_FOUND,
            message: "not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "read of 3,01637037d6: volume server 10.0.0.1:8080 answered 404 Not Found: not found"
        );
        assert!(e.is_not_found() && !e.is_retriable());
        let all = ClientError::Exhausted {
            op: Op::Lookup(3),
            errors: vec![ClientError::Reply {
                op: Op::Lookup(3),
                server: Server::Master("m:9333".into()),
                reason: "no JSON".into(),
            }],
        };
        assert_eq!(
            all.to_string(),
            "lookup of volume 3: every server failed: lookup of volume 3: master m:9333 sent an unusable reply: no JSON"
        );
    }
}
