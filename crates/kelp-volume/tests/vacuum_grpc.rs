//! The vacuum RPCs of `volume_server_pb.VolumeServer`: check, compact
//! (a progress stream, rate limited), commit, cleanup, as a master drives
//! them, with blobs read over HTTP before and after.

mod common;

use common::*;
use kelp_proto::volume_server_pb::{
    VacuumVolumeCheckRequest, VacuumVolumeCleanupRequest, VacuumVolumeCommitRequest,
    VacuumVolumeCompactRequest,
};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};

fn fid(key: u64) -> String {
    format!("1,{key:x}1234abcd")
}

fn data(key: u64) -> Vec<u8> {
    (0..50_000u64).map(|i| (i * 7 + key * 13) as u8).collect()
}

#[tokio::test]
async fn check_compact_commit_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path().to_path_buf(), |c| {
        c.compaction_bytes_per_second = 400 << 10;
    })
    .await;
    srv.allocate(1, "").await;
    let c = client();
    for k in 1..=40u64 {
        let form = Form::new().part("file", Part::bytes(data(k)).file_name("b.bin"));
        let r = c
            .post(srv.url(&format!("/{}", fid(k))))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for k in 1..=40u64 {
        if k % 4 != 0 {
            let r = c
                .delete(srv.url(&format!("/{}", fid(k))))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
        }
    }
    let mut g = srv.grpc_client().await;
    let ratio = g
        .vacuum_volume_check(VacuumVolumeCheckRequest { volume_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .garbage_ratio;
    assert!(ratio > 0.7, "garbage ratio {ratio}");
    let missing = g
        .vacuum_volume_check(VacuumVolumeCheckRequest { volume_id: 9 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(
        g.vacuum_volume_commit(VacuumVolumeCommitRequest { volume_id: 1 })
            .await
            .is_err(),
        "commit without a compaction"
    );

    // A compaction that is cleaned up leaves nothing behind.
    let compact =
        |mut g: kelp_proto::volume_server_pb::volume_server_client::VolumeServerClient<_>| async move {
            let mut s = g
                .vacuum_volume_compact(VacuumVolumeCompactRequest {
                    volume_id: 1,
                    preallocate: 0,
                })
                .await
                .unwrap()
                .into_inner();
            let mut progress = Vec::new();
            while let Some(m) = s.message().await.unwrap() {
                progress.push(m.processed_bytes);
            }
            progress
        };
    let progress = compact(g.clone()).await;
    // 10 live blobs of ~50 kB at 400 KiB/s: at least one report on the way.
    assert!(progress.len() >= 2, "progress {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        *progress.last().unwrap() >= 500_000,
        "progress {progress:?}"
    );
    assert!(dir.path().join("1.cpd").exists());
    g.vacuum_volume_cleanup(VacuumVolumeCleanupRequest { volume_id: 1 })
        .await
        .unwrap();
    assert!(!dir.path().join("1.cpd").exists());
    assert!(!dir.path().join("1.cpx").exists());

    let before = std::fs::metadata(dir.path().join("1.dat")).unwrap().len();
    compact(g.clone()).await;
    // A write between compact and commit is carried over.
    let form = Form::new().part("file", Part::bytes(data(100)).file_name("b.bin"));
    let r = c
        .post(srv.url(&format!("/{}", fid(100))))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let commit = g
        .vacuum_volume_commit(VacuumVolumeCommitRequest { volume_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert!(!commit.is_read_only);
    let after = std::fs::metadata(dir.path().join("1.dat")).unwrap().len();
    assert_eq!(commit.volume_size, after);
    assert!(after * 3 < before, ".dat {before} -> {after}");
    let ratio = g
        .vacuum_volume_check(VacuumVolumeCheckRequest { volume_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .garbage_ratio;
    assert_eq!(ratio, 0.0);
    for k in (1..=40u64).chain([100]) {
        let r = c
            .get(srv.url(&format!("/{}", fid(k))))
            .send()
            .await
            .unwrap();
        if k % 4 == 0 || k == 100 {
            assert_eq!(r.status(), StatusCode::OK, "key {k}");
            assert_eq!(r.bytes().await.unwrap().as_ref(), data(k).as_slice());
        } else {
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "key {k}");
        }
    }
    srv.stop().await;
}
