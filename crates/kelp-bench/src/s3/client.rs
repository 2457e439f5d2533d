//! The few S3 calls the benchmark makes (create bucket, PutObject,
//! GetObject, ListObjectsV2), path-style, over one pooled reqwest client.
//! Requests are signed with SigV4 in the `Authorization` header and carry
//! the body's hex SHA-256 in `x-amz-content-sha256`, as boto3 and awscli
//! do over plain HTTP; without an access key they go anonymous.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use kelp_s3::sigv4::{EMPTY_SHA256, SignedRequest, sha256_hex, sign_request};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use super::listing::{ListPage, parse_list_page};

/// Longest error body kept in a message.
const ERROR_BODY_LIMIT: usize = 300;

#[derive(Clone)]
pub struct S3Client {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    /// The `Host` header (and signed host): `host[:port]`.
    host: String,
    /// (access key, secret key); None: anonymous.
    keys: Option<(String, String)>,
    region: String,
}

impl S3Client {
    /// A client for `endpoint` (`http://host:port`) keeping up to `pool`
    /// idle connections (one per concurrent worker).
    pub fn new(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        pool: usize,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(endpoint)
            .with_context(|| format!("bad S3 endpoint {endpoint:?} (want http://host:port)"))?;
        if url.scheme() != "http" {
            bail!("S3 endpoint {endpoint:?}: only http:// is supported");
        }
        let name = url
            .host_str()
            .with_context(|| format!("S3 endpoint {endpoint:?} names no host"))?;
        let host = match url.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.to_string(),
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool.max(1))
            .tcp_nodelay(true)
            .http1_only()
            .timeout(Duration::from_secs(600))
            .build()?;
        let keys =
            (!access_key.is_empty()).then(|| (access_key.to_string(), secret_key.to_string()));
        Ok(Self {
            http,
            base: format!("http://{host}"),
            host,
            keys,
            region: region.to_string(),
        })
    }

    /// Sends one request; `path` is already percent-encoded, `query` is raw.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
    ) -> anyhow::Result<reqwest::Response> {
        let payload_hash = if body.is_empty() {
            EMPTY_SHA256.to_string()
        } else {
            sha256_hex(&body)
        };
        let amz_date = kelp_s3::time::format_amz_date(SystemTime::now());
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(&self.host)?);
        headers.insert("x-amz-date", HeaderValue::from_str(&amz_date)?);
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(&payload_hash)?,
        );
        if let Some((ak, sk)) = &self.keys {
            let req = SignedRequest {
                method: method.as_str(),
                raw_path: path,
                raw_query: query,
                headers: &headers,
            };
            let auth = sign_request(&req, ak, sk, &self.region, &amz_date, &payload_hash)
                .map_err(|e| anyhow::anyhow!("cannot sign {method} {path}: {}", e.message))?;
            headers.insert("authorization", HeaderValue::from_str(&auth)?);
        }
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let what = format!("{method} {path}");
        self.http
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .with_context(|| what)
    }

    /// Creates `bucket` unless it exists (or is being created by us).
    pub async fn ensure_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let path = bucket_path(bucket);
        let r = self.send(Method::HEAD, &path, "", Bytes::new()).await?;
        if r.status().is_success() {
            return Ok(());
        }
        let r = self.send(Method::PUT, &path, "", Bytes::new()).await?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let text = error_text(r).await;
        if status == StatusCode::CONFLICT && text.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        bail!("creating bucket {bucket}: {status} {text}")
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Bytes) -> anyhow::Result<()> {
        let path = object_path(bucket, key);
        let r = self.send(Method::PUT, &path, "", body).await?;
        check(r, &format!("PUT {path}")).await.map(|_| ())
    }

    pub async fn get_object(&self, bucket: &str, key: &str) -> anyhow::Result<Bytes> {
        let path = object_path(bucket, key);
        let r = self.send(Method::GET, &path, "", Bytes::new()).await?;
        let r = check(r, &format!("GET {path}")).await?;
        r.bytes()
            .await
            .with_context(|| format!("reading the body of GET {path}"))
    }

    /// One ListObjectsV2 page of at most `max_keys` keys.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> anyhow::Result<ListPage> {
        let path = bucket_path(bucket);
        let enc = kelp_s3::uri::encode_component;
        let mut query = format!("list-type=2&max-keys={max_keys}");
        if !prefix.is_empty() {
            query.push_str(&format!("&prefix={}", enc(prefix)));
        }
        if let Some(t) = token {
            query.push_str(&format!("&continuation-token={}", enc(t)));
        }
        let r = self.send(Method::GET, &path, &query, Bytes::new()).await?;
        let r = check(r, &format!("ListObjectsV2 {path}")).await?;
        let body = r
            .bytes()
            .await
            .with_context(|| format!("reading the listing of {path}"))?;
        let text = std::str::from_utf8(&body).context("listing is not UTF-8")?;
        parse_list_page(text, body.len() as u64)
    }
}

fn bucket_path(bucket: &str) -> String {
    format!("/{}", kelp_s3::uri::encode_component(bucket))
}

fn object_path(bucket: &str, key: &str) -> String {
    format!(
        "/{}/{}",
        kelp_s3::uri::encode_component(bucket),
        kelp_s3::uri::encode_path(key)
    )
}

/// The response if it succeeded, else an error naming the S3 code.
async fn check(r: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    bail!("{what}: {status} {}", error_text(r).await)
}

/// The `<Code>` and `<Message>` of an S3 error body, else its start.
async fn error_text(r: reqwest::Response) -> String {
    let body = r.text().await.unwrap_or_default();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => body.chars().take(ERROR_BODY_LIMIT).collect(),
    }
}
