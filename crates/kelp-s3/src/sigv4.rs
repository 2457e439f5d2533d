//! AWS Signature Version 4 verification for S3.
//!
//! Three ways a request arrives:
//!
//! - header: `Authorization: AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,
//!   SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=<64 hex>`
//!   with `x-amz-date` (or `Date`) and `x-amz-content-sha256`;
//! - presigned query: `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
//!   `X-Amz-Expires` (1..=604800 s), `X-Amz-SignedHeaders`, `X-Amz-Signature`;
//! - neither: anonymous.
//!
//! Canonical request (S3 flavour, no path normalisation, no double encoding):
//!
//! ```text
//! METHOD \n UriEncode(decoded path, keep '/') \n
//! sorted "enc(name)=enc(value)" joined by '&' \n
//! "name:trimmed,collapsed values\n" for each signed header \n
//! signed;headers \n payload-hash
//! ```
//!
//! String to sign: `AWS4-HMAC-SHA256\n<amz-date>\n<yyyymmdd>/<region>/s3/aws4_request\n<hex sha256(canonical request)>`.
//! Signing key: HMAC chain `"AWS4"+secret` → date → region → `s3` → `aws4_request`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use ring::{digest, hmac};

use crate::error::{S3Error, S3ErrorCode, S3Result, err};
use crate::{hex, time, uri};

/// Allowed clock skew between client and server.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest presigned URL lifetime (7 days).
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;
/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A user's secret access key.
#[derive(Clone)]
pub struct SecretKey(pub String);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Looks up the secret of an access key.
pub trait Credentials {
    fn secret_key(&self, access_key: &str) -> Option<SecretKey>;
}

impl<F: Fn(&str) -> Option<SecretKey>> Credentials for F {
    fn secret_key(&self, access_key: &str) -> Option<SecretKey> {
        self(access_key)
    }
}

/// Who sent the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User { access_key: String },
}

/// What the client says about the body (`x-amz-content-sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadMode {
    /// `UNSIGNED-PAYLOAD` (or presigned, or anonymous): body not checked.
    Unsigned,
    /// A hex SHA-256 the body must hash to: see [`PayloadHasher`].
    Sha256([u8; 32]),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: aws-chunked, signed chunks.
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks and trailer.
    StreamingSignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked, checksum trailer.
    StreamingUnsignedTrailer,
}

impl PayloadMode {
    /// Parses an `x-amz-content-sha256` value.
    pub fn parse(v: &str) -> S3Result<Self> {
        Ok(match v {
            "UNSIGNED-PAYLOAD" => PayloadMode::Unsigned,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => PayloadMode::StreamingSigned,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => PayloadMode::StreamingSignedTrailer,
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => PayloadMode::StreamingUnsignedTrailer,
            h => match hex::decode(h).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                Some(b) if h.len() == 64 => PayloadMode::Sha256(b),
                _ => {
                    return err(
                        S3ErrorCode::InvalidArgument,
                        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a hex SHA-256",
                    );
                }
            },
        })
    }

    /// Whether the body is `aws-chunked`.
    pub fn is_chunked(self) -> bool {
        matches!(
            self,
            PayloadMode::StreamingSigned
                | PayloadMode::StreamingSignedTrailer
                | PayloadMode::StreamingUnsignedTrailer
        )
    }
}

/// What chunk signatures chain from: the derived key, timestamp, scope and
/// the request's own signature (the seed).
#[derive(Clone)]
pub struct SigningContext {
    key: hmac::Key,
    pub amz_date: String,
    /// `yyyymmdd/region/s3/aws4_request`.
    pub scope: String,
    pub seed_signature: String,
}

impl std::fmt::Debug for SigningContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningContext")
            .field("amz_date", &self.amz_date)
            .field("scope", &self.scope)
            .field("seed_signature", &self.seed_signature)
            .finish_non_exhaustive()
    }
}

impl SigningContext {
    /// Builds a context from a secret (tests, fuzzing, clients).
    pub fn new(secret: &str, amz_date: &str, region: &str, seed_signature: &str) -> Self {
        let day = amz_date.get(..8).unwrap_or("");
        SigningContext {
            key: signing_key(secret, day, region),
            amz_date: amz_date.to_owned(),
            scope: format!("{day}/{region}/s3/aws4_request"),
            seed_signature: seed_signature.to_owned(),
        }
    }

    /// Hex HMAC of a string to sign.
    pub fn sign(&self, string_to_sign: &str) -> String {
        hex::encode(hmac::sign(&self.key, string_to_sign.as_bytes()).as_ref())
    }

    /// The signature of a chunk whose data hashes to `chunk_sha256_hex`.
    pub fn chunk_signature(&self, prev_signature: &str, chunk_sha256_hex: &str) -> String {
        self.sign(&format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{prev_signature}\n{EMPTY_SHA256}\n{chunk_sha256_hex}",
            self.amz_date, self.scope
        ))
    }

    /// The signature of the trailer block (`name:value\n` lines).
    pub fn trailer_signature(&self, prev_signature: &str, trailer: &[u8]) -> String {
        self.sign(&format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{prev_signature}\n{}",
            self.amz_date,
            self.scope,
            sha256_hex(trailer)
        ))
    }
}

/// The result of verifying a request.
#[derive(Debug, Clone)]
pub struct Auth {
    pub identity: Identity,
    /// The region the client signed for (any is accepted).
    pub region: Option<String>,
    pub payload: PayloadMode,
    /// Set for signed requests: what aws-chunked bodies chain from.
    pub signing: Option<SigningContext>,
}

/// The parts of a request SigV4 covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub raw_path: &'a str,
    /// The query as sent, without `?`.
    pub raw_query: &'a str,
    /// Must include `host` (for HTTP/2 the caller adds it from :authority).
    pub headers: &'a HeaderMap,
}

/// Verifies a request's signature. `now` is the server clock.
pub fn verify(req: &SignedRequest<'_>, now: SystemTime, creds: &dyn Credentials) -> S3Result<Auth> {
    let query = uri::parse_query(req.raw_query)
        .ok_or_else(|| S3Error::with_message(S3ErrorCode::InvalidArgument, "query is not UTF-8"))?;
    if let Some(auth) = req.headers.get(http::header::AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| S3Error::new(S3ErrorCode::AuthorizationHeaderMalformed))?;
        if query.iter().any(|(n, _)| n == "X-Amz-Signature") {
            return err(
                S3ErrorCode::InvalidArgument,
                "Only one auth mechanism allowed",
            );
        }
        return verify_header(req, auth, &query, now, creds);
    }
    if query
        .iter()
        .any(|(n, _)| n == "X-Amz-Algorithm" || n == "X-Amz-Signature" || n == "X-Amz-Credential")
    {
        return verify_presigned(req, &query, now, creds);
    }
    if query
        .iter()
        .any(|(n, _)| n == "Signature" || n == "AWSAccessKeyId")
    {
        return err(
            S3ErrorCode::NotImplemented,
            "Signature Version 2 is not supported; use SigV4",
        );
    }
    Ok(Auth {
        identity: Identity::Anonymous,
        region: None,
        payload: PayloadMode::Unsigned,
        signing: None,
    })
}

struct Credential {
    access_key: String,
    day: String,
    region: String,
}

fn parse_credential(v: &str, code: S3ErrorCode) -> S3Result<Credential> {
    let bad = |m: &str| S3Error::with_message(code, m.to_owned());
    // The access key may itself contain '/': split from the right.
    let mut it = v.rsplitn(5, '/');
    let (term, service, region, day, ak) = (it.next(), it.next(), it.next(), it.next(), it.next());
    let (Some(term), Some(service), Some(region), Some(day), Some(ak)) =
        (term, service, region, day, ak)
    else {
        return Err(bad(
            "Credential must be <key>/<date>/<region>/s3/aws4_request",
        ));
    };
    if term != "aws4_request" {
        return Err(bad("Credential must end with aws4_request"));
    }
    if service != "s3" {
        return Err(bad("Credential service must be s3"));
    }
    if day.len() != 8
        || !day.bytes().all(|c| c.is_ascii_digit())
        || ak.is_empty()
        || region.is_empty()
    {
        return Err(bad("Credential date, region or key is malformed"));
    }
    Ok(Credential {
        access_key: ak.to_owned(),
        day: day.to_owned(),
        region: region.to_owned(),
    })
}

fn verify_header(
    req: &SignedRequest<'_>,
    auth: &str,
    query: &[(String, String)],
    now: SystemTime,
    creds: &dyn Credentials,
) -> S3Result<Auth> {
    let malformed =
        |m: &str| S3Error::with_message(S3ErrorCode::AuthorizationHeaderMalformed, m.to_owned());
    if auth.starts_with("AWS ") {
        return err(
            S3ErrorCode::NotImplemented,
            "Signature Version 2 is not supported; use SigV4",
        );
    }
    let rest = auth
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            malformed("The authorization mechanism is not supported; use AWS4-HMAC-SHA256")
        })?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("Authorization component is not name=value"))?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return Err(malformed("unknown Authorization component")),
        }
    }
    let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
        return Err(malformed(
            "Authorization needs Credential, SignedHeaders and Signature",
        ));
    };
    let cred = parse_credential(cred, S3ErrorCode::AuthorizationHeaderMalformed)?;
    let (amz_date, t) = request_date(req.headers)?;
    check_skew(t, now)?;
    if amz_date[..8] != cred.day {
        return Err(malformed("Credential date does not match x-amz-date"));
    }
    let payload_str = header_str(req.headers, "x-amz-content-sha256").ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Missing required header for this request: x-amz-content-sha256",
        )
    })?;
    let payload = PayloadMode::parse(payload_str)?;
    let signed = signed_header_list(signed, S3ErrorCode::AuthorizationHeaderMalformed)?;
    let canonical = canonical_request(req, query, &signed, payload_str, false);
    check_signature(&cred, &amz_date, &canonical, sig, creds, payload)
}

fn verify_presigned(
    req: &SignedRequest<'_>,
    query: &[(String, String)],
    now: SystemTime,
    creds: &dyn Credentials,
) -> S3Result<Auth> {
    let qerr = |m: &str| {
        S3Error::with_message(S3ErrorCode::AuthorizationQueryParametersError, m.to_owned())
    };
    let get = |name: &str| -> S3Result<&str> {
        let mut it = query.iter().filter(|(n, _)| n == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) => Ok(v.as_str()),
            _ => Err(qerr(&format!(
                "Query-string authentication requires exactly one {name} parameter"
            ))),
        }
    };
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(qerr("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""));
    }
    let cred = parse_credential(
        get("X-Amz-Credential")?,
        S3ErrorCode::AuthorizationQueryParametersError,
    )?;
    let amz_date = get("X-Amz-Date")?;
    let t = time::parse_amz_date(amz_date).ok_or_else(|| {
        qerr("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    let expires: u64 = get("X-Amz-Expires")?
        .parse()
        .map_err(|_| qerr("X-Amz-Expires should be a number"))?;
    if expires > MAX_PRESIGN_EXPIRES {
        return Err(qerr(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    if amz_date[..8] != cred.day {
        return Err(qerr("Credential date does not match X-Amz-Date"));
    }
    let signed = signed_header_list(
        get("X-Amz-SignedHeaders")?,
        S3ErrorCode::AuthorizationQueryParametersError,
    )?;
    let sig = get("X-Amz-Signature")?;
    if t > now + MAX_SKEW {
        return Err(S3Error::new(S3ErrorCode::RequestTimeTooSkewed));
    }
    if now > t + Duration::from_secs(expires) {
        return Err(S3Error::expired());
    }
    let payload_str = header_str(req.headers, "x-amz-content-sha256").unwrap_or("UNSIGNED-PAYLOAD");
    let payload = PayloadMode::parse(payload_str)?;
    let canonical = canonical_request(req, query, &signed, payload_str, true);
    check_signature(&cred, amz_date, &canonical, sig, creds, payload)
}

fn check_signature(
    cred: &Credential,
    amz_date: &str,
    canonical: &str,
    sig: &str,
    creds: &dyn Credentials,
    payload: PayloadMode,
) -> S3Result<Auth> {
    let secret = creds
        .secret_key(&cred.access_key)
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidAccessKeyId))?;
    let ctx = SigningContext::new(&secret.0, amz_date, &cred.region, "");
    let sts = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        ctx.scope,
        sha256_hex(canonical.as_bytes())
    );
    let want = ctx.sign(&sts);
    if !constant_time_eq(want.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
        return Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch));
    }
    Ok(Auth {
        identity: Identity::User {
            access_key: cred.access_key.clone(),
        },
        region: Some(cred.region.clone()),
        payload,
        signing: Some(SigningContext {
            seed_signature: want,
            ..ctx
        }),
    })
}

/// `x-amz-date`, else `Date`; returns the amz form and the time.
fn request_date(h: &HeaderMap) -> S3Result<(String, SystemTime)> {
    if let Some(v) = header_str(h, "x-amz-date") {
        let t = time::parse_amz_date(v).ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "AWS authentication requires a valid Date or x-amz-date header",
            )
        })?;
        return Ok((v.to_owned(), t));
    }
    if let Some(t) = header_str(h, "date").and_then(time::parse_http_date) {
        return Ok((time::format_amz_date(t), t));
    }
    err(
        S3ErrorCode::AccessDenied,
        "AWS authentication requires a valid Date or x-amz-date header",
    )
}

fn check_skew(t: SystemTime, now: SystemTime) -> S3Result<()> {
    let skew = match now.duration_since(t) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > MAX_SKEW {
        return Err(S3Error::new(S3ErrorCode::RequestTimeTooSkewed));
    }
    Ok(())
}

/// At most this many signed headers.
const MAX_SIGNED_HEADERS: usize = 64;

fn signed_header_list(v: &str, code: S3ErrorCode) -> S3Result<Vec<String>> {
    let list: Vec<String> = v
        .split(';')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    if list.len() > MAX_SIGNED_HEADERS || list.iter().any(String::is_empty) {
        return err(code, "SignedHeaders is malformed");
    }
    if !list.iter().any(|h| h == "host") {
        return err(code, "SignedHeaders must include host");
    }
    Ok(list)
}

fn header_str<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Builds the canonical request (public for tests and the POST policy).
pub fn canonical_request(
    req: &SignedRequest<'_>,
    query: &[(String, String)],
    signed_headers: &[String],
    payload_hash: &str,
    presigned: bool,
) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(req.method);
    out.push('\n');
    let path = if req.raw_path.is_empty() {
        "/"
    } else {
        req.raw_path
    };
    out.push_str(&uri::encode_path_bytes(&uri::decode_path_bytes(path)));
    out.push('\n');
    let mut q: Vec<(String, String)> = query
        .iter()
        .filter(|(n, _)| !(presigned && n == "X-Amz-Signature"))
        .map(|(n, v)| (uri::encode_component(n), uri::encode_component(v)))
        .collect();
    q.sort();
    let q: Vec<String> = q.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    out.push_str(&q.join("&"));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs a request with header auth, as an S3 client does, and returns
/// the `Authorization` value. Every header in `req.headers` is signed; it
/// must hold `host`, `x-amz-date` (equal to `amz_date`) and
/// `x-amz-content-sha256` (equal to `payload_hash`, a hex SHA-256 or
/// `UNSIGNED-PAYLOAD`). Fails only if the query is not UTF-8.
pub fn sign_request(
    req: &SignedRequest<'_>,
    access_key: &str,
    secret: &str,
    region: &str,
    amz_date: &str,
    payload_hash: &str,
) -> S3Result<String> {
    let query = uri::parse_query(req.raw_query)
        .ok_or_else(|| S3Error::with_message(S3ErrorCode::InvalidArgument, "query is not UTF-8"))?;
    let mut signed: Vec<String> = req
        .headers
        .keys()
        .map(|k| k.as_str().to_ascii_lowercase())
        .filter(|k| k != "authorization")
        .collect();
    signed.sort();
    signed.dedup();
    let canonical = canonical_request(req, &query, &signed, payload_hash, false);
    let ctx = SigningContext::new(secret, amz_date, region, "");
    let sts = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        ctx.scope,
        sha256_hex(canonical.as_bytes())
    );
    Ok(format!(
        "{ALGORITHM} Credential={access_key}/{},SignedHeaders={},Signature={}",
        ctx.scope,
        signed.join(";"),
        ctx.sign(&sts)
    ))
}

/// The SigV4 signing key for a day (`yyyymmdd`) and region.
pub fn signing_key(secret: &str, day: &str, region: &str) -> hmac::Key {
    let step = |k: &[u8], d: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), d.as_bytes());
    let k = step(format!("AWS4{secret}").as_bytes(), day);
    let k = step(k.as_ref(), region);
    let k = step(k.as_ref(), "s3");
    let k = step(k.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b).as_ref())
}

/// Compares without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hashes a body as it streams by and checks it against
/// `x-amz-content-sha256` at the end.
pub struct PayloadHasher {
    ctx: digest::Context,
    want: [u8; 32],
}

impl PayloadHasher {
    pub fn new(want: [u8; 32]) -> Self {
        PayloadHasher {
            ctx: digest::Context::new(&digest::SHA256),
            want,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
    }

    /// `XAmzContentSHA256Mismatch` unless the body hashed to the value sent.
    pub fn finish(self) -> S3Result<()> {
        if constant_time_eq(self.ctx.finish().as_ref(), &self.want) {
            Ok(())
        } else {
            Err(S3Error::new(S3ErrorCode::XAmzContentSHA256Mismatch))
        }
    }
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
