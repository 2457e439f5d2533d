//! Reads that involve more than one server: chunk manifests whose chunks
//! live on this and other volume servers, and reads of volumes held
//! elsewhere (`-readMode` proxy, redirect, local). An in-process Kelp
//! master tells the volume servers where volumes live.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Server, client};
use kelp_core::FileId;
use kelp_volume::ReadMode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(20);

struct Cluster {
    master_http: String,
    /// `host:port.grpcPort` for volume servers.
    master_addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kelp_master::ServerError>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = kelp_master::MasterConfig {
            port: http.local_addr().unwrap().port(),
            grpc_port: grpc.local_addr().unwrap().port(),
            meta_dir: dir.path().to_path_buf(),
            ..kelp_master::MasterConfig::default()
        };
        let master_http = format!("http://127.0.0.1:{}", cfg.port);
        let master_addr = format!("127.0.0.1:{}.{}", cfg.port, cfg.grpc_port);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(kelp_master::run(http, grpc, cfg, async {
            let _ = rx.await;
        }));
        Cluster {
            master_http,
            master_addr,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    async fn volume_server(&self, dir: &std::path::Path, mode: ReadMode) -> Server {
        let master = self.master_addr.clone();
        Server::start(dir.to_path_buf(), move |c| {
            c.masters = vec![master];
            c.read_mode = mode;
        })
        .await
    }

    /// Allocates `vid` on `srv` and waits until the master can place it.
    async fn allocate(&self, srv: &Server, vid: u32) {
        srv.allocate(vid, "").await;
        let c = client();
        let url = format!("{}/dir/lookup?volumeId={vid}", self.master_http);
        kelp_testkit::until_async(
            &format!("the master to learn volume {vid}"),
            DEADLINE,
            || {
                let req = c.get(&url).send();
                async move { req.await.ok().filter(|r| r.status() == StatusCode::OK) }
            },
        )
        .await;
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("master stops")
            .unwrap()
            .unwrap();
    }
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

async fn put(srv: &Server, fid: &FileId, body: Vec<u8>, query: &str) {
    let r = client()
        .post(srv.url(&format!("/{fid}{query}")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "upload {fid}");
}

fn manifest(name: &str, chunks: &[(&FileId, u64, usize)]) -> Vec<u8> {
    let total: usize = chunks.iter().map(|c| c.2).sum();
    json!({
        "name": name,
        "mime": "application/octet-stream",
        "size": total,
        "chunks": chunks.iter().map(|(fid, offset, size)| json!({
            "fid": fid.to_string(), "offset": offset, "size": size, "modifiedTime": 1
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn chunk_manifests_stream_local_and_remote_chunks() {
    let cluster = Cluster::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = cluster.volume_server(da.path(), ReadMode::Proxy).await;
    let b = cluster.volume_server(db.path(), ReadMode::Proxy).await;
    cluster.allocate(&a, 1).await;
    cluster.allocate(&b, 2).await;
    let c = client();

    // Three chunks: local, remote, and local gzip-stored.
    let (c1, c2, c3) = (
        FileId::new(1, 1, 0x11),
        FileId::new(2, 2, 0x22),
        FileId::new(1, 3, 0x33),
    );
    let (d1, d2, d3) = (bytes(1, 1000), bytes(2, 1500), bytes(3, 700));
    put(&a, &c1, d1.clone(), "").await;
    put(&b, &c2, d2.clone(), "").await;
    let r = c
        .post(a.url(&format!("/{c3}")))
        .header("Content-Encoding", "gzip")
        .body(gzip(&d3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let whole = [d1.clone(), d2.clone(), d3.clone()].concat();
    // Listed out of order: the offsets decide.
    let m = FileId::new(1, 4, 0x44);
    let raw = manifest(
        "big.bin",
        &[(&c3, 2500, 700), (&c1, 0, 1000), (&c2, 1000, 1500)],
    );
    put(&a, &m, raw.clone(), "?cm=true").await;
    let url = a.url(&format!("/{m}"));

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-file-store"), "chunked");
    assert_eq!(header(&r, "content-length"), "3200");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(
        header(&r, "content-disposition"),
        "inline; filename=\"big.bin\""
    );
    let etag = header(&r, "etag");
    assert!(!etag.is_empty());
    assert!(r.bytes().await.unwrap().as_ref() == whole.as_slice());

    // A file name in the path wins, and picks the type.
    let r = c
        .get(a.url(&format!("/1/{}/notes.txt?dl=true", m.key_cookie_hex())))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "content-disposition"),
        "attachment; filename=\"notes.txt\""
    );
    assert!(header(&r, "content-type").starts_with("text/plain"));

    // HEAD: the logical length, no body.
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "3200");
    assert!(r.bytes().await.unwrap().is_empty());

    // Ranges over the logical file.
    let r = c
        .get(&url)
        .header("Range", "bytes=900-2600")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 900-2600/3200");
    assert!(r.bytes().await.unwrap().as_ref() == &whole[900..2601]);
    let r = c
        .get(&url)
        .header("Range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap().as_ref() == &whole[3100..]);
    let r = c
        .get(&url)
        .header("Range", "bytes=0-9,3190-3199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(header(&r, "content-type").starts_with("multipart/byteranges"));
    let body = r.bytes().await.unwrap();
    let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(find(&whole[0..10]) && find(&whole[3190..3200]));
    assert!(find(b"Content-Range: bytes 3190-3199/3200"));
    let r = c
        .get(&url)
        .header("Range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Conditional, and the raw manifest on request.
    let r = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c.get(format!("{url}?cm=false")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("x-file-store").is_none());
    assert_eq!(r.bytes().await.unwrap().as_ref(), raw.as_slice());

    // Through the other server: proxied to the holder, expanded there.
    let r = c.get(b.url(&format!("/{m}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.bytes().await.unwrap().as_ref() == whole.as_slice());

    // DELETE takes the chunks, local and remote, with it.
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    assert!(v["size"].as_u64().unwrap() > 0);
    for (srv, fid) in [(&a, &c1), (&b, &c2), (&a, &c3), (&a, &m)] {
        let r = c.get(srv.url(&format!("/{fid}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{fid} deleted");
    }
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn broken_manifests_fail_loudly_or_serve_raw() {
    let cluster = Cluster::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = cluster.volume_server(da.path(), ReadMode::Proxy).await;
    let b = cluster.volume_server(db.path(), ReadMode::Proxy).await;
    cluster.allocate(&a, 1).await;
    cluster.allocate(&b, 2).await;
    let c = client();
    let present = FileId::new(1, 1, 0x11);
    put(&a, &present, bytes(1, 500), "").await;
    let missing_local = FileId::new(1, 9, 0x99);
    let missing_remote = FileId::new(2, 9, 0x99);

    // First chunk missing: an error status, no partial body.
    let m1 = FileId::new(1, 2, 0x22);
    put(
        &a,
        &m1,
        manifest("a", &[(&missing_local, 0, 10), (&present, 10, 500)]),
        "?cm=true",
    )
    .await;
    let r = c.get(a.url(&format!("/{m1}"))).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());

    // A later (remote) chunk missing: the body is cut short, never padded
    // or silently wrong.
    let m2 = FileId::new(1, 3, 0x33);
    put(
        &a,
        &m2,
        manifest("b", &[(&present, 0, 500), (&missing_remote, 500, 10)]),
        "?cm=true",
    )
    .await;
    let r = c.get(a.url(&format!("/{m2}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.is_err(), "a truncated body is an error");

    // A chunk whose size differs from the manifest's is refused.
    let m3 = FileId::new(1, 4, 0x44);
    put(&a, &m3, manifest("c", &[(&present, 0, 499)]), "?cm=true").await;
    let r = c.get(a.url(&format!("/{m3}"))).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());

    // Not a manifest at all: the stored bytes as they are.
    let m4 = FileId::new(1, 5, 0x55);
    put(&a, &m4, b"not json".to_vec(), "?cm=true").await;
    let r = c.get(a.url(&format!("/{m4}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "not json");

    // A chunk that cannot be deleted (its volume is nowhere) keeps the
    // manifest, with a 500 naming the problem.
    let m5 = FileId::new(1, 6, 0x66);
    let nowhere = FileId::new(99, 1, 1);
    put(&a, &m5, manifest("d", &[(&nowhere, 0, 1)]), "?cm=true").await;
    let r = c.delete(a.url(&format!("/{m5}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Delete chunks error: "),
        "{v}"
    );
    let r = c
        .get(a.url(&format!("/{m5}?cm=false")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "manifest kept");
    // The unparsable one deletes alone.
    let r = c.delete(a.url(&format!("/{m4}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn read_modes_for_volumes_held_elsewhere() {
    let cluster = Cluster::start().await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let holder = cluster.volume_server(dirs[0].path(), ReadMode::Proxy).await;
    let proxy = cluster.volume_server(dirs[1].path(), ReadMode::Proxy).await;
    let redirect = cluster
        .volume_server(dirs[2].path(), ReadMode::Redirect)
        .await;
    let local = cluster.volume_server(dirs[3].path(), ReadMode::Local).await;
    cluster.allocate(&holder, 1).await;
    let fid = FileId::new(1, 1, 0xabc);
    let data = bytes(7, 3000);
    let r = client()
        .post(holder.url(&format!("/{fid}")))
        .header("Content-Type", "image/png")
        .header("Seaweed-Color", "teal")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // proxy: status, headers and body of the holder.
    let direct = c.get(holder.url(&format!("/{fid}"))).send().await.unwrap();
    let r = c.get(proxy.url(&format!("/{fid}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for h in [
        "etag",
        "content-type",
        "last-modified",
        "color",
        "content-length",
    ] {
        assert_eq!(header(&r, h), header(&direct, h), "{h}");
    }
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    let r = c
        .get(proxy.url(&format!("/{fid}")))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
    let r = c.head(proxy.url(&format!("/{fid}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "3000");
    let r = c
        .get(proxy.url(&format!("/{}", FileId::new(1, 2, 0xabc))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "holder's 404 relayed");
    // Never forwarded twice, and unknown volumes are 404.
    let r = c
        .get(proxy.url(&format!("/{fid}?proxied=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(proxy.url(&format!("/{}", FileId::new(77, 1, 1))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // redirect: 301 to the holder with proxied=true.
    let r = c
        .get(redirect.url(&format!("/{fid}?x=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        header(&r, "location"),
        format!("{}/{fid}?x=1&proxied=true", holder.http)
    );
    let r = c.get(header(&r, "location")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());

    // local: 404.
    let r = c.get(local.url(&format!("/{fid}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for s in [holder, proxy, redirect, local] {
        s.stop().await;
    }
    cluster.stop().await;
}
