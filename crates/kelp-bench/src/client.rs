//! The SeaweedFS HTTP calls the benchmark makes, with a volume-location
//! cache filled from `/dir/lookup`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use parking_lot::RwLock;
use serde::Deserialize;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `http` or `https` (`[https.client] enabled` in security.toml).
    scheme: &'static str,
    master: String,
    locations: Arc<RwLock<HashMap<String, Vec<String>>>>,
}

/// An assigned file id.
pub struct Assigned {
    pub fid: String,
    pub url: String,
    /// `Authorization` header value for the upload, when writes are signed.
    pub auth: Option<String>,
}

fn authorization(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[derive(Deserialize)]
struct AssignReply {
    fid: Option<String>,
    url: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct LookupReply {
    #[serde(default)]
    locations: Vec<LookupLocation>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct LookupLocation {
    url: String,
}

impl Api {
    /// A client of the cluster at `master`, speaking HTTPS when
    /// `security` says so (`[https.client]`).
    pub fn new(
        master: &str,
        concurrency: usize,
        security: &kelp_core::SecurityConfig,
    ) -> anyhow::Result<Self> {
        let master = master
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let http = kelp_net::client::http_builder(security)?
            .pool_max_idle_per_host(concurrency.max(1) * 2)
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            scheme: kelp_net::client::http_scheme(security),
            master,
            locations: Arc::default(),
        })
    }

    /// Returns the file id, the volume server and, when the cluster signs
    /// writes (JWT), the `Authorization` value to upload with.
    pub async fn assign(&self, collection: &str, replication: &str) -> anyhow::Result<Assigned> {
        let resp = self
            .http
            .get(format!("{}://{}/dir/assign", self.scheme, self.master))
            .query(&[("collection", collection), ("replication", replication)])
            .send()
            .await?;
        let auth = authorization(&resp);
        let r: AssignReply = resp.json().await.context("assign reply is not JSON")?;
        match (r.fid, r.url, r.error) {
            (Some(fid), Some(url), None) => Ok(Assigned { fid, url, auth }),
            (_, _, Some(e)) => bail!("assign: {e}"),
            _ => bail!("assign reply lacks fid or url"),
        }
    }

    /// Multipart POST shaped like `weed benchmark`'s: one part named
    /// `file`, filename `.`, type `image/bench` (so nothing is gzipped).
    pub async fn upload(&self, a: &Assigned, body: Vec<u8>, fsync: bool) -> anyhow::Result<()> {
        let part = reqwest::multipart::Part::bytes(body)
            .file_name(".")
            .mime_str("image/bench")?;
        let mut target = format!("{}://{}/{}", self.scheme, a.url, a.fid);
        if fsync {
            target.push_str("?fsync=true");
        }
        let mut req = self
            .http
            .post(target)
            .multipart(reqwest::multipart::Form::new().part("file", part));
        if let Some(auth) = &a.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let r = req.send().await?;
        if !r.status().is_success() {
            bail!("upload answered {}", r.status());
        }
        Ok(())
    }

    /// Deletes a file. When its assign carried a write token (JWT on), the
    /// master's `/dir/lookup?fileId=` supplies a fresh one, as SeaweedFS
    /// clients do; without JWT no lookup is made.
    pub async fn delete(&self, a: &Assigned) -> anyhow::Result<()> {
        let mut req = self
            .http
            .delete(format!("{}://{}/{}", self.scheme, a.url, a.fid));
        if a.auth.is_some() {
            let lookup = self
                .http
                .get(format!("{}://{}/dir/lookup", self.scheme, self.master))
                .query(&[("fileId", a.fid.as_str())])
                .send()
                .await?;
            if let Some(auth) = authorization(&lookup) {
                req = req.header(reqwest::header::AUTHORIZATION, auth);
            }
        }
        let r = req.send().await?;
        if !r.status().is_success() {
            bail!("delete answered {}", r.status());
        }
        Ok(())
    }

    async fn lookup(&self, vid: &str) -> anyhow::Result<Vec<String>> {
        if let Some(urls) = self.locations.read().get(vid) {
            return Ok(urls.clone());
        }
        let r: LookupReply = self
            .http
            .get(format!("{}://{}/dir/lookup", self.scheme, self.master))
            .query(&[("volumeId", vid)])
            .send()
            .await?
            .json()
            .await
            .context("lookup reply is not JSON")?;
        if let Some(e) = r.error {
            bail!("lookup {vid}: {e}");
        }
        let urls: Vec<String> = r.locations.into_iter().map(|l| l.url).collect();
        if urls.is_empty() {
            bail!("volume {vid} has no locations");
        }
        self.locations.write().insert(vid.to_string(), urls.clone());
        Ok(urls)
    }

    /// GETs a file from the first replica that answers; returns its size.
    pub async fn read(&self, fid: &str) -> anyhow::Result<u64> {
        let vid = fid.split(',').next().unwrap_or_default();
        let mut last = None;
        for url in self.lookup(vid).await? {
            match self.get_with_read_token(&url, fid).await {
                Ok(r) if r.status().is_success() => return Ok(r.bytes().await?.len() as u64),
                Ok(r) => last = Some(anyhow::anyhow!("GET {fid} from {url}: {}", r.status())),
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no replica of {fid}")))
    }

    /// GET, and once more with a read token from `/dir/lookup?fileId=&read=yes`
    /// when the server demands one (JWT read key configured).
    async fn get_with_read_token(
        &self,
        url: &str,
        fid: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let r = self
            .http
            .get(format!("{}://{url}/{fid}", self.scheme))
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(r);
        }
        let lookup = self
            .http
            .get(format!("{}://{}/dir/lookup", self.scheme, self.master))
            .query(&[("fileId", fid), ("read", "yes")])
            .send()
            .await?;
        let mut req = self.http.get(format!("{}://{url}/{fid}", self.scheme));
        if let Some(auth) = authorization(&lookup) {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        req.send().await
    }
}
