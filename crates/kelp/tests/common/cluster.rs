//! Checks over a replicated cluster, shared by the multi-process tests.

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

use super::{History, assign, blob};

/// Whether a copy at `url` holds `fid` itself (no proxying).
pub fn local(client: &Client, url: &str, fid: &str) -> Option<(StatusCode, Vec<u8>)> {
    let r = client
        .get(format!("http://{url}/{fid}?proxied=true"))
        .send()
        .ok()?;
    let status = r.status();
    Some((status, r.bytes().ok()?.to_vec()))
}

pub fn locations(client: &Client, master: &str, fid: &str) -> Vec<String> {
    let vid = fid.split(',').next().unwrap();
    client
        .get(format!("{master}/dir/lookup?volumeId={vid}"))
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|v| {
            v["locations"].as_array().map(|a| {
                a.iter()
                    .filter_map(|l| l["url"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Problems left: acknowledged blobs missing or wrong on a copy, deletes
/// not applied on a copy, volumes still read-only (diverged).
pub fn disagreements(
    client: &Client,
    master: &str,
    servers: &[String],
    h: &History,
) -> Vec<String> {
    let mut out = Vec::new();
    for a in &h.acked {
        let locs = locations(client, master, &a.fid);
        if locs.len() != 2 {
            out.push(format!("{} has copies on {locs:?}", a.fid));
        }
        for url in &locs {
            match local(client, url, &a.fid) {
                Some((StatusCode::OK, body)) if body == blob(a.seed, a.len) => {}
                other => out.push(format!(
                    "acknowledged {} on {url}: {:?}",
                    a.fid,
                    other.map(|o| o.0)
                )),
            }
        }
    }
    for fid in &h.deleted {
        for url in &locations(client, master, fid) {
            if let Some((s, _)) = local(client, url, fid)
                && s != StatusCode::NOT_FOUND
            {
                out.push(format!("deleted {fid} still answers {s} on {url}"));
            }
        }
    }
    for url in servers {
        let Some(v) = client
            .get(format!("http://{url}/status"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
        else {
            out.push(format!("{url}: no /status"));
            continue;
        };
        for vol in v["Volumes"].as_array().into_iter().flatten() {
            if vol["ReadOnly"] == Value::Bool(true) {
                out.push(format!("{url}: volume {} still read-only", vol["Id"]));
            }
        }
    }
    out
}

/// A fresh file id on volume `vid` (the key and cookie of a new assign
/// with replication 001), for writing to a chosen volume.
pub fn fid_on(client: &Client, master: &str, vid: u32) -> String {
    let a = assign(client, master, "replication=001");
    format!("{vid},{}", &a.fid[a.fid.find(',').unwrap() + 1..])
}
