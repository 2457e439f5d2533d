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
    master: String,
    locations: Arc<RwLock<HashMap<String, Vec<String>>>>,
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
    pub fn new(master: &str, concurrency: usize) -> anyhow::Result<Self> {
        let master = master
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(1) * 2)
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            master,
            locations: Arc::default(),
        })
    }

    pub async fn assign(
        &self,
        collection: &str,
        replication: &str,
    ) -> anyhow::Result<(String, String)> {
        let r: AssignReply = self
            .http
            .get(format!("http://{}/dir/assign", self.master))
            .query(&[("collection", collection), ("replication", replication)])
            .send()
            .await?
            .json()
            .await
            .context("assign reply is not JSON")?;
        match (r.fid, r.url, r.error) {
            (Some(fid), Some(url), None) => Ok((fid, url)),
            (_, _, Some(e)) => bail!("assign: {e}"),
            _ => bail!("assign reply lacks fid or url"),
        }
    }

    /// Multipart POST shaped like `weed benchmark`'s: one part named
    /// `file`, filename `.`, type `image/bench` (so nothing is gzipped).
    pub async fn upload(
        &self,
        url: &str,
        fid: &str,
        body: Vec<u8>,
        fsync: bool,
    ) -> anyhow::Result<()> {
        let part = reqwest::multipart::Part::bytes(body)
            .file_name(".")
            .mime_str("image/bench")?;
        let mut target = format!("http://{url}/{fid}");
        if fsync {
            target.push_str("?fsync=true");
        }
        let r = self
            .http
            .post(target)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("upload answered {}", r.status());
        }
        Ok(())
    }

    pub async fn delete(&self, url: &str, fid: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(format!("http://{url}/{fid}"))
            .send()
            .await?;
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
            .get(format!("http://{}/dir/lookup", self.master))
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
            match self.http.get(format!("http://{url}/{fid}")).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.bytes().await?.len() as u64),
                Ok(r) => last = Some(anyhow::anyhow!("GET {fid} from {url}: {}", r.status())),
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no replica of {fid}")))
    }
}
