//! Turning HTTP answers into values or [`ClientError`]s: bounded bodies,
//! the servers' `{"error": …}` messages, and the bearer tokens masters
//! hand out.

use reqwest::Response;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Op, Server};

/// Master replies (assign, lookup) larger than this are refused.
const MAX_REPLY: usize = 1 << 20;
/// Bytes of an error body kept for the message.
const MAX_MESSAGE: usize = 500;

/// The body, at most `cap` bytes; `None` when there were more.
pub(crate) async fn capped_body(
    mut resp: Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > cap {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// The server's own words for a failure: `error` of a JSON body, else the
/// start of the body text.
pub(crate) fn message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorJson {
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorJson>(body) {
        return e.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut cut = text.len().min(MAX_MESSAGE);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        text[..cut].to_string()
    }
}

/// The error for a response with a failure status; reads its message.
pub(crate) async fn status_error(op: Op, server: Server, resp: Response) -> ClientError {
    let status = resp.status();
    let body = capped_body(resp, 64 * 1024)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    ClientError::Status {
        op,
        server,
        status,
        message: message(&body),
    }
}

/// Parses a master's JSON reply. A failure status, or a 200 whose JSON
/// carries a non-empty `error`, is a [`ClientError::Status`].
pub(crate) async fn master_json<T: DeserializeOwned>(
    op: &Op,
    server: &Server,
    resp: Response,
) -> Result<T, ClientError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(status_error(op.clone(), server.clone(), resp).await);
    }
    let body = capped_body(resp, MAX_REPLY)
        .await
        .map_err(ClientError::transport(op, server))?
        .ok_or_else(|| ClientError::Reply {
            op: op.clone(),
            server: server.clone(),
            reason: format!("larger than {MAX_REPLY} bytes"),
        })?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ClientError::Reply {
            op: op.clone(),
            server: server.clone(),
            reason: format!("not JSON: {e}"),
        })?;
    if let Some(e) = value.get("error").and_then(|e| e.as_str())
        && !e.is_empty()
    {
        return Err(ClientError::Status {
            op: op.clone(),
            server: server.clone(),
            status,
            message: e.to_string(),
        });
    }
    serde_json::from_value(value).map_err(|e| ClientError::Reply {
        op: op.clone(),
        server: server.clone(),
        reason: e.to_string(),
    })
}

/// The token of an `Authorization: Bearer <t>` response header.
pub(crate) fn bearer(resp: &Response) -> Option<String> {
    let v = resp
        .headers()
        .get(reqwest::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let t = v.strip_prefix("Bearer ").unwrap_or(v).trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            message(br#"{"error":"volume id 9 not found"}"#),
            "volume id 9 not found"
        );
        assert_eq!(message(b"  plain text\n"), "plain text");
        assert_eq!(message(b""), "(no message)");
        let long = "é".repeat(600);
        assert!(message(long.as_bytes()).len() <= MAX_MESSAGE);
    }
}
