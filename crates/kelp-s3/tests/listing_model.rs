//! ListObjects against a model: random keys (chosen to stress the order
//! of nested directories: `a`, `a.x`, `a-`, `a/…`, `a0`…) are written
//! through the gateway, then listed with random prefixes, delimiters,
//! page sizes and start points, V1 and V2; every listing, followed page
//! by page, must equal what a sorted set of the keys gives. Seeded:
//! `KELP_LIST_SEED=N` replays one.

use std::collections::BTreeSet;
use std::sync::Arc;

use kelp_client::{Client, ClientOptions};
use kelp_core::SecurityConfig;
use kelp_filer::store::redb::RedbBackend;
use kelp_filer::{Filer, FilerOptions};
use kelp_s3::gateway::{Gateway, GatewayConfig};
use kelp_testkit::cluster::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

async fn gateway() -> (Cluster, tempfile::TempDir, String) {
    let cluster = Cluster::start(1, SecurityConfig::default()).await;
    let meta = tempfile::tempdir().unwrap();
    let client = Client::new(
        std::slice::from_ref(&cluster.master.addr),
        &SecurityConfig::default(),
        ClientOptions::default(),
    )
    .unwrap();
    let store = Arc::new(RedbBackend::open(meta.path()).unwrap());
    let filer = Filer::open(
        store,
        client,
        FilerOptions {
            inline_limit: 64,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let gw = Gateway::new(filer, GatewayConfig::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(kelp_s3::gateway::run(l, gw, std::future::pending()));
    (cluster, meta, url)
}

/// The model's answer: items (keys and common prefixes) after `floor`.
fn expected(
    keys: &BTreeSet<String>,
    prefix: &str,
    delim: Option<&str>,
    floor: &str,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys.range(floor.to_string()..) {
        if k.as_str() <= floor || !k.starts_with(prefix) {
            continue;
        }
        let item = match delim.and_then(|d| k[prefix.len()..].find(d).map(|i| (i, d))) {
            Some((i, d)) => k[..prefix.len() + i + d.len()].to_string(),
            None => k.clone(),
        };
        if item.as_str() <= floor || out.last() == Some(&item) {
            continue;
        }
        out.push(item);
    }
    out
}

fn tag_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.match_indices(&open)
        .filter_map(|(i, _)| {
            let rest = &xml[i + open.len()..];
            rest.find(&close).map(|j| &rest[..j])
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Follows a listing page by page; returns keys and prefixes in order.
async fn list_all(
    http: &reqwest::Client,
    url: &str,
    v2: bool,
    prefix: &str,
    delim: Option<&str>,
    floor: &str,
    page: u32,
) -> Vec<String> {
    let enc = |s: &str| kelp_s3::uri::encode_component(s);
    let mut out = Vec::new();
    let mut marker = floor.to_string();
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let mut q = format!("prefix={}&max-keys={page}", enc(prefix));
        if let Some(d) = delim {
            q += &format!("&delimiter={}", enc(d));
        }
        if v2 {
            q += "&list-type=2";
            match &token {
                Some(t) => q += &format!("&continuation-token={}", enc(t)),
                None if !floor.is_empty() => q += &format!("&start-after={}", enc(floor)),
                None => {}
            }
        } else if !marker.is_empty() {
            q += &format!("&marker={}", enc(&marker));
        }
        let xml = http
            .get(format!("{url}/lst?{q}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(xml.contains("<ListBucketResult"), "{xml}");
        // Contents and CommonPrefixes interleave in key order.
        let mut items: Vec<String> = tag_values(&xml, "Key").into_iter().map(unescape).collect();
        items.extend(
            tag_values(&xml, "CommonPrefixes")
                .iter()
                .flat_map(|c| tag_values(c, "Prefix"))
                .map(unescape),
        );
        items.sort();
        assert!(
            items.len() <= page as usize,
            "{} items for max-keys {page}",
            items.len()
        );
        let truncated = xml.contains("<IsTruncated>true</IsTruncated>");
        // Every page moves forward: no item comes twice.
        if let (Some(prev), Some(first)) = (out.last(), items.first()) {
            assert!(
                first > prev,
                "a page went back: {first:?} after {prev:?} ({q})"
            );
        }
        out.extend(items.iter().cloned());
        if !truncated {
            return out;
        }
        assert!(!items.is_empty(), "a truncated page without items");
        if v2 {
            token = Some(unescape(tag_values(&xml, "NextContinuationToken")[0]));
        } else {
            marker = match tag_values(&xml, "NextMarker").first() {
                Some(m) => unescape(m),
                None => items.last().unwrap().clone(),
            };
        }
    }
    panic!("listing never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_match_a_sorted_set() {
    let seed: u64 = std::env::var("KELP_LIST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17);
    let mut rng = StdRng::seed_from_u64(seed);
    let (_cluster, _meta, url) = gateway().await;
    let http = reqwest::Client::new();
    assert!(
        http.put(format!("{url}/lst"))
            .body("")
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let parts = ["a", "a.x", "a-", "a0", "b", "é", "a b", "+%&"];
    let mut keys = BTreeSet::new();
    // Up to 120 keys; a key that clashes is drawn again (a bounded number
    // of times: short keys taken as files can leave few valid ones).
    for _ in 0..5000 {
        if keys.len() >= 120 {
            break;
        }
        let depth = rng.random_range(1..=3);
        let segs: Vec<&str> = (0..depth)
            .map(|_| parts[rng.random_range(0..parts.len())])
            .collect();
        let key = segs.join("/");
        // A key cannot also be a directory of other keys in Kelp.
        let clash = keys.iter().any(|k: &String| {
            k.starts_with(&format!("{key}/")) || key.starts_with(&format!("{k}/"))
        });
        if clash {
            continue;
        }
        let r = http
            .put(format!("{url}/lst/{}", kelp_s3::uri::encode_path(&key)))
            .body(key.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{key}: {}",
            r.text().await.unwrap()
        );
        keys.insert(key);
    }
    // A folder object and a deleted key.
    keys.insert("fold/".into());
    let r = http
        .put(format!("{url}/lst/fold/"))
        .body("")
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "fold/: {}",
        r.text().await.unwrap()
    );
    let gone = keys.iter().nth(7).unwrap().clone();
    http.delete(format!("{url}/lst/{}", kelp_s3::uri::encode_path(&gone)))
        .send()
        .await
        .unwrap();
    keys.remove(&gone);
    for case in 0..60 {
        let prefix = match rng.random_range(0..4) {
            0 => String::new(),
            1 => "a".into(),
            2 => "a/".into(),
            _ => keys
                .iter()
                .nth(rng.random_range(0..keys.len()))
                .unwrap()
                .chars()
                .take(1)
                .collect(),
        };
        let delim = match rng.random_range(0..3) {
            0 => None,
            1 => Some("/"),
            _ => Some("."),
        };
        let floor = if rng.random_bool(0.3) {
            keys.iter()
                .nth(rng.random_range(0..keys.len()))
                .unwrap()
                .clone()
        } else {
            String::new()
        };
        let page = [1, 2, 3, 7, 1000][rng.random_range(0..5)];
        let v2 = rng.random_bool(0.5);
        let got = list_all(&http, &url, v2, &prefix, delim, &floor, page).await;
        let want = expected(&keys, &prefix, delim, &floor);
        assert_eq!(
            got, want,
            "seed {seed} case {case}: prefix {prefix:?} delimiter {delim:?} after {floor:?} pages of {page} v2 {v2}"
        );
    }
}
