//! Browser POST uploads: the policy document and its signature.
//!
//! The form's `policy` field is base64 of JSON:
//!
//! ```text
//! {"expiration": "2030-01-01T12:00:00.000Z",
//!  "conditions": [{"bucket": "b"}, ["starts-with", "$key", "user/"],
//!                 {"success_action_status": "201"}, ["eq", "$Content-Type", "image/png"],
//!                 ["content-length-range", 1, 10485760], {"x-amz-meta-tag": "x"}, …]}
//! ```
//!
//! SigV4 signs the base64 text itself: `x-amz-signature` = hex HMAC(signing
//! key for `x-amz-credential`'s day and region, policy). Every form field
//! but `x-amz-signature`, `file`, `policy` and `x-ignore-*` must be named by
//! a condition. The form itself is read by [`crate::post_form`].

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::error::{S3Error, S3ErrorCode, S3Result, err};
use crate::sigv4::{Credentials, Identity, SigningContext, constant_time_eq};

/// Largest base64 policy accepted.
pub const MAX_POLICY: usize = 20 << 10;
/// Most conditions in a policy.
pub const MAX_CONDITIONS: usize = 100;

/// One policy condition; names are lowercase without `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Eq(String, String),
    StartsWith(String, String),
    ContentLengthRange(u64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    pub expiration: SystemTime,
    pub conditions: Vec<Condition>,
}

fn invalid(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, format!("Invalid Policy: {m}"))
}

fn denied(m: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AccessDenied,
        format!("Invalid according to Policy: {m}"),
    )
}

fn length(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl PostPolicy {
    /// Parses the base64 `policy` field.
    pub fn parse_base64(b64: &str) -> S3Result<Self> {
        if b64.len() > MAX_POLICY {
            return Err(invalid("policy too large"));
        }
        let json = B64
            .decode(b64.trim())
            .map_err(|_| invalid("policy is not base64"))?;
        Self::parse_json(&json)
    }

    /// Parses the policy JSON.
    pub fn parse_json(json: &[u8]) -> S3Result<Self> {
        let v: Value = serde_json::from_slice(json).map_err(|_| invalid("policy is not JSON"))?;
        let exp = v
            .get("expiration")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("Policy missing expiration"))?;
        let expiration =
            crate::time::parse_iso8601(exp).ok_or_else(|| invalid("Invalid 'expiration' value"))?;
        let list = v
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("Policy missing conditions"))?;
        if list.len() > MAX_CONDITIONS {
            return Err(invalid("too many conditions"));
        }
        let mut conditions = Vec::new();
        for c in list {
            match c {
                Value::Object(m) => {
                    if m.len() != 1 {
                        return Err(invalid("condition objects hold one field"));
                    }
                    for (k, v) in m {
                        let v = v
                            .as_str()
                            .ok_or_else(|| invalid("condition value must be a string"))?;
                        conditions.push(Condition::Eq(k.to_ascii_lowercase(), v.to_owned()));
                    }
                }
                Value::Array(a) => conditions.push(Self::array_condition(a)?),
                _ => return Err(invalid("condition must be an object or an array")),
            }
        }
        Ok(PostPolicy {
            expiration,
            conditions,
        })
    }

    fn array_condition(a: &[Value]) -> S3Result<Condition> {
        let op = a
            .first()
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        match (op.as_deref(), a.len()) {
            (Some("content-length-range"), 3) => {
                let (min, max) = (length(&a[1]), length(&a[2]));
                match (min, max) {
                    (Some(min), Some(max)) if min <= max => {
                        Ok(Condition::ContentLengthRange(min, max))
                    }
                    _ => Err(invalid(
                        "content-length-range needs two lengths, min <= max",
                    )),
                }
            }
            (Some(op @ ("eq" | "starts-with")), 3) => {
                let name = a[1]
                    .as_str()
                    .and_then(|n| n.strip_prefix('$'))
                    .ok_or_else(|| invalid("condition field must start with $"))?
                    .to_ascii_lowercase();
                let value = a[2]
                    .as_str()
                    .ok_or_else(|| invalid("condition value must be a string"))?
                    .to_owned();
                Ok(if op == "eq" {
                    Condition::Eq(name, value)
                } else {
                    Condition::StartsWith(name, value)
                })
            }
            _ => Err(invalid("unknown condition")),
        }
    }

    /// Checks the form against the policy at `now`. `fields` are the form
    /// fields (lowercase names) with `bucket` added by the caller and
    /// `key` already `${filename}`-substituted. Returns the length range.
    pub fn check(
        &self,
        fields: &[(String, String)],
        now: SystemTime,
    ) -> S3Result<Option<(u64, u64)>> {
        if now > self.expiration {
            return Err(denied("Policy expired."));
        }
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let mut range = None;
        for c in &self.conditions {
            match c {
                Condition::Eq(n, v) => {
                    if get(n) != Some(v.as_str()) {
                        return Err(denied(&format!(
                            "Policy Condition failed: [\"eq\", \"${n}\", \"{v}\"]"
                        )));
                    }
                }
                Condition::StartsWith(n, p) => {
                    let ok = get(n).is_some_and(|f| {
                        // Content-Type may list several values, each checked.
                        if n == "content-type" {
                            f.split(',').all(|t| t.trim().starts_with(p.as_str()))
                        } else {
                            f.starts_with(p.as_str())
                        }
                    });
                    if !ok {
                        return Err(denied(&format!(
                            "Policy Condition failed: [\"starts-with\", \"${n}\", \"{p}\"]"
                        )));
                    }
                }
                Condition::ContentLengthRange(a, b) => range = Some((*a, *b)),
            }
        }
        for (n, _) in fields {
            let exempt = matches!(n.as_str(), "x-amz-signature" | "file" | "policy" | "bucket")
                || n.starts_with("x-ignore-");
            let named = self
                .conditions
                .iter()
                .any(|c| matches!(c, Condition::Eq(k, _) | Condition::StartsWith(k, _) if k == n));
            if !exempt && !named {
                return Err(denied(&format!("Extra input fields: {n}")));
            }
        }
        Ok(range)
    }
}

/// Verifies the form's SigV4 policy signature; anonymous when the form
/// carries no signature fields. Returns the identity and the policy.
pub fn verify_post_signature(
    fields: &[(String, String)],
    creds: &dyn Credentials,
) -> S3Result<(Identity, Option<PostPolicy>)> {
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let Some(sig) = get("x-amz-signature") else {
        if get("awsaccesskeyid").is_some() || get("signature").is_some() {
            return err(
                S3ErrorCode::NotImplemented,
                "Signature Version 2 POST is not supported; use SigV4",
            );
        }
        return Ok((
            Identity::Anonymous,
            get("policy").map(PostPolicy::parse_base64).transpose()?,
        ));
    };
    let policy_b64 = get("policy").ok_or_else(|| invalid("a signed POST needs a policy"))?;
    let policy = PostPolicy::parse_base64(policy_b64)?;
    if get("x-amz-algorithm") != Some("AWS4-HMAC-SHA256") {
        return err(
            S3ErrorCode::InvalidArgument,
            "x-amz-algorithm must be AWS4-HMAC-SHA256",
        );
    }
    let cred = get("x-amz-credential").ok_or_else(|| {
        S3Error::with_message(S3ErrorCode::InvalidArgument, "missing x-amz-credential")
    })?;
    let date = get("x-amz-date")
        .ok_or_else(|| S3Error::with_message(S3ErrorCode::InvalidArgument, "missing x-amz-date"))?;
    let mut parts = cred.rsplitn(5, '/');
    let (term, service, region, day, ak) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    let (Some("aws4_request"), Some("s3"), Some(region), Some(day), Some(ak)) =
        (term, service, region, day, ak)
    else {
        return err(
            S3ErrorCode::InvalidArgument,
            "x-amz-credential must be <key>/<date>/<region>/s3/aws4_request",
        );
    };
    if crate::time::parse_amz_date(date).is_none() || !date.starts_with(day) {
        return err(
            S3ErrorCode::InvalidArgument,
            "x-amz-date does not match the credential date",
        );
    }
    let secret = creds
        .secret_key(ak)
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidAccessKeyId))?;
    let want = SigningContext::new(&secret.0, date, region, "").sign(policy_b64);
    if !constant_time_eq(want.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
        return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
    }
    Ok((
        Identity::User {
            access_key: ak.to_owned(),
        },
        Some(policy),
    ))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
pub(crate) mod tests;
