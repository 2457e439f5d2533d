//! The client against an in-process master and volume servers, over
//! loopback HTTP: round trips, replica failover, chunked files, JWT, and
//! errors that name the server and the failure.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, assign, client};
use futures::StreamExt;
use kelp_client::{
    ChunkedOptions, Client, ClientError, ClientOptions, Server, UploadBody, UploadOptions,
};
use kelp_core::{JwtKey, SecurityConfig};

fn volume_of(fid: &str) -> u32 {
    fid.split(',').next().unwrap().parse().unwrap()
}

/// Deterministic bytes that differ from chunk to chunk.
fn pattern(len: usize) -> Vec<u8> {
    kelp_testkit::blob(1, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_upload_read_delete() {
    let cluster = Cluster::start(1, SecurityConfig::default()).await;
    let client = client(&cluster);
    let a = client.assign(&assign("")).await.unwrap();
    assert_eq!(a.url, cluster.volumes[0].addr);
    assert_eq!(a.auth, None);
    let opts = UploadOptions {
        name: "hello.txt".into(),
        mime: "text/plain".into(),
        ..UploadOptions::default()
    };
    let up = client
        .upload(&a, Bytes::from_static(b"hello, kelp"), &opts)
        .await
        .unwrap();
    assert_eq!(up.size, 11);
    assert!(!up.etag.is_empty());
    assert_eq!(client.read(&a.fid).await.unwrap(), &b"hello, kelp"[..]);
    assert_eq!(
        client.read_range(&a.fid, 7..11).await.unwrap(),
        &b"kelp"[..]
    );
    let vid = volume_of(&a.fid);
    assert_eq!(
        client.cached_locations(vid).unwrap()[0].url,
        cluster.volumes[0].addr
    );

    // A streamed body, read back as a stream.
    let b = client.assign(&assign("")).await.unwrap();
    let data = pattern(300_000);
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(7000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let up = client
        .upload(
            &b,
            UploadBody::stream(futures::stream::iter(pieces)),
            &UploadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(up.size, data.len() as u64);
    let mut stream = client.read_stream(&b.fid).await.unwrap();
    assert_eq!(stream.content_length, Some(data.len() as u64));
    let mut back = Vec::new();
    while let Some(part) = stream.next().await {
        back.extend_from_slice(&part.unwrap());
    }
    assert_eq!(back, data);

    client.delete(&a.fid).await.unwrap();
    let gone = client.read(&a.fid).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert_eq!(
        gone.server(),
        Some(&Server::Volume(cluster.volumes[0].addr.clone()))
    );
    let again = client.delete(&a.fid).await.unwrap_err();
    assert!(again.is_not_found(), "{again}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_fails_over_to_another_replica() {
    let mut cluster = Cluster::start(2, SecurityConfig::default()).await;
    let client = client(&cluster);
    let a = client.assign(&assign("001")).await.unwrap();
    client
        .upload(&a, b"replicated".to_vec(), &UploadOptions::default())
        .await
        .unwrap();
    let vid = volume_of(&a.fid);
    let locations = client.lookup(vid).await.unwrap();
    assert_eq!(locations.len(), 2, "{locations:?}");
    assert_eq!(client.read(&a.fid).await.unwrap(), &b"replicated"[..]);

    // Stop the replica the client tries first.
    let first = locations[0].url.clone();
    let survivor = locations[1].url.clone();
    let i = cluster
        .volumes
        .iter()
        .position(|v| v.addr == first)
        .unwrap();
    cluster.volumes[i].stop().await;

    assert_eq!(client.read(&a.fid).await.unwrap(), &b"replicated"[..]);
    assert_eq!(
        client.cached_locations(vid),
        None,
        "a failed location drops the volume from the map"
    );

    // Reads keep working while the master notices; then the map holds
    // only the survivor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(client.read(&a.fid).await.unwrap(), &b"replicated"[..]);
        let cached: Option<Vec<String>> = client
            .cached_locations(vid)
            .map(|l| l.into_iter().map(|l| l.url).collect());
        if cached.as_deref() == Some(&[survivor.clone()][..]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "map never refreshed: {cached:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_file_round_trip_and_delete() {
    let cluster = Cluster::start(1, SecurityConfig::default()).await;
    let client = client(&cluster);
    let data = pattern(3 * 1024 * 1024 + 12345);
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let opts = ChunkedOptions {
        chunk_size: 1024 * 1024,
        name: "big.bin".into(),
        mime: "application/octet-stream".into(),
        ..ChunkedOptions::default()
    };
    let up = client
        .upload_chunked(futures::stream::iter(pieces), &opts)
        .await
        .unwrap();
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(up.chunks.len(), 4);
    let back = client.read(&up.fid).await.unwrap();
    assert!(back == data, "chunked file reads back byte-identical");
    let start = 1024 * 1024 - 10;
    let part = client.read_range(&up.fid, start..start + 20).await.unwrap();
    assert_eq!(&part[..], &data[start as usize..start as usize + 20]);
    for c in &up.chunks {
        client.read(c).await.expect("chunk stored");
    }

    client.delete(&up.fid).await.unwrap();
    for c in &up.chunks {
        let e = client.read(c).await.unwrap_err();
        assert!(e.is_not_found(), "chunk {c} deleted with its manifest: {e}");
    }
    assert!(client.read(&up.fid).await.unwrap_err().is_not_found());

    // A source that fails is reported as such, and leaves no chunks.
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 1024 * 1024 + 1])),
        Err(std::io::Error::other("disk on fire")),
    ]);
    let e = client.upload_chunked(failing, &opts).await.unwrap_err();
    assert!(matches!(e, ClientError::Source { .. }), "{e}");
    assert!(e.to_string().contains("disk on fire"), "{e}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_end_to_end() {
    let security = SecurityConfig {
        signing: JwtKey::new("write-secret", 10),
        read: JwtKey::new("read-secret", 10),
        ..SecurityConfig::default()
    };
    let cluster = Cluster::start(1, security).await;

    // A client that knows the cluster signs, and one that learns it from
    // the 401s: both get their tokens from the master.
    let knowing = client(&cluster);
    let unaware = Client::new(
        &[cluster.master.addr.as_str()],
        &SecurityConfig::default(),
        ClientOptions::default(),
    )
    .unwrap();
    for client in [knowing, unaware] {
        let a = client.assign(&assign("")).await.unwrap();
        assert!(a.auth.is_some(), "assign carries a write token");
        client
            .upload(&a, b"secret".to_vec(), &UploadOptions::default())
            .await
            .unwrap();
        assert_eq!(client.read(&a.fid).await.unwrap(), &b"secret"[..]);
        client.delete(&a.fid).await.unwrap();
        assert!(client.read(&a.fid).await.unwrap_err().is_not_found());

        // Without its token an upload is refused, and the error says so.
        let b = client.assign(&assign("")).await.unwrap();
        let unsigned = kelp_client::UploadTarget {
            fid: &b.fid,
            url: &b.url,
            auth: None,
        };
        let e = client
            .upload(unsigned, b"x".to_vec(), &UploadOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(reqwest::StatusCode::UNAUTHORIZED), "{e}");
        assert!(e.to_string().contains(&b.url), "{e}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_server_and_the_failure() {
    let mut cluster = Cluster::start(1, SecurityConfig::default()).await;
    let client = client(&cluster);
    let master = cluster.master.addr.clone();

    // A volume no master knows.
    let e = client.read("9999,01637037d6").await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.server(), Some(&Server::Master(master.clone())), "{text}");
    assert!(
        text.contains(&format!(
            "lookup of volume 9999: master {master} answered 404"
        )) && text.contains("volume id 9999 not found"),
        "{text}"
    );

    // Not a file id at all.
    let e = client.read("nonsense").await.unwrap_err();
    assert!(matches!(e, ClientError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("read of nonsense"), "{e}");

    // The only replica is down.
    let a = client.assign(&assign("")).await.unwrap();
    client
        .upload(&a, b"x".to_vec(), &UploadOptions::default())
        .await
        .unwrap();
    client.read(&a.fid).await.unwrap();
    let volume = cluster.volumes[0].addr.clone();
    cluster.volumes[0].stop().await;
    let e = client.read(&a.fid).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("volume server {volume}")) && text.contains(&a.fid),
        "{text}"
    );

    // The master is down.
    cluster.master.stop().await;
    let e = client.assign(&assign("")).await.unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("assign: master {master}")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connect"), "{text}");
}
