//! A filer over an in-process blob cluster and a redb store in a temp dir.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kelp_client::{Client, ClientOptions};
use kelp_core::SecurityConfig;
use kelp_filer::store::redb::RedbBackend;
use kelp_filer::{Filer, FilerOptions, FullPath, NewFile};
pub use kelp_testkit::cluster::Cluster;

pub struct Setup {
    pub cluster: Cluster,
    pub meta: tempfile::TempDir,
    pub filer: Filer,
}

pub fn client(cluster: &Cluster) -> Client {
    Client::new(
        std::slice::from_ref(&cluster.master.addr),
        &SecurityConfig::default(),
        ClientOptions::default(),
    )
    .unwrap()
}

pub async fn open_filer(cluster: &Cluster, meta: &std::path::Path, opts: FilerOptions) -> Filer {
    let store = Arc::new(RedbBackend::open(meta).unwrap());
    Filer::open(store, client(cluster), opts).await.unwrap()
}

pub async fn setup(opts: FilerOptions) -> Setup {
    let cluster = Cluster::start(1, SecurityConfig::default()).await;
    let meta = tempfile::tempdir().unwrap();
    let filer = open_filer(&cluster, meta.path(), opts).await;
    Setup {
        cluster,
        meta,
        filer,
    }
}

pub fn p(s: &str) -> FullPath {
    FullPath::parse(s).unwrap()
}

/// `data` as a body arriving in uneven pieces.
pub fn body(
    data: &[u8],
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(7919)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces)
}

pub async fn write(filer: &Filer, path: &str, data: &[u8]) -> kelp_filer::Entry {
    filer
        .write(&p(path), body(data), NewFile::default())
        .await
        .unwrap()
}

pub async fn read_all(filer: &Filer, path: &str) -> Vec<u8> {
    let e = filer.lookup(&p(path)).await.unwrap().unwrap();
    let size = e.size;
    let parts: Vec<Bytes> = filer.read(&e, 0..size).try_collect().await.unwrap();
    parts.concat()
}

pub async fn read_range(filer: &Filer, path: &str, r: std::ops::Range<u64>) -> Vec<u8> {
    let e = filer.lookup(&p(path)).await.unwrap().unwrap();
    let parts: Vec<Bytes> = filer.read(&e, r).map(|b| b.unwrap()).collect().await;
    parts.concat()
}

pub fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}
