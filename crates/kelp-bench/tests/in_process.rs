//! `kelp_bench::run` drives an in-process master and volume server (both on
//! port 0, talked to over loopback HTTP) through a tiny workload with no
//! failed requests, and its report serialises to JSON.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_workload_has_no_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (mh, mg, vh, vg) = (
        listener().await,
        listener().await,
        listener().await,
        listener().await,
    );
    let (mport, mgrpc) = (
        mh.local_addr().unwrap().port(),
        mg.local_addr().unwrap().port(),
    );
    let mcfg = kelp_master::MasterConfig {
        port: mport,
        grpc_port: mgrpc,
        meta_dir: dir.path().join("master"),
        pulse_seconds: 1,
        ..Default::default()
    };
    let vcfg = kelp_volume::VolumeServerConfig {
        dirs: vec![dir.path().join("volume")],
        port: vh.local_addr().unwrap().port(),
        grpc_port: vg.local_addr().unwrap().port(),
        masters: vec![format!("127.0.0.1:{mport}.{mgrpc}")],
        pulse: Duration::from_secs(1),
        ..Default::default()
    };
    let (stop_m, m_rx) = oneshot::channel::<()>();
    let (stop_v, v_rx) = oneshot::channel::<()>();
    let master = tokio::spawn(kelp_master::run(mh, mg, mcfg, async move {
        let _ = m_rx.await;
    }));
    let volume = tokio::spawn(kelp_volume::run(vh, vg, vcfg, async move {
        let _ = v_rx.await;
    }));

    // Wait until the volume server has joined: an assign succeeds.
    let client = kelp_client::Client::new(
        &[format!("127.0.0.1:{mport}")],
        &kelp_core::SecurityConfig::default(),
        kelp_client::ClientOptions::default(),
    )
    .unwrap();
    let benchmark = kelp_client::AssignRequest {
        collection: "benchmark".into(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if client.assign(&benchmark).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "volume server never joined"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cfg = kelp_bench::BenchConfig {
        master: format!("127.0.0.1:{mport}"),
        n: 300,
        concurrency: 8,
        size: 100,
        delete_percent: 10,
        list: dir.path().join("list.txt"),
        progress: kelp_bench::Progress::Off,
        ..Default::default()
    };
    let report = kelp_bench::run(cfg).await.expect("benchmark runs");
    assert_eq!(report.phases.len(), 2);
    for p in &report.phases {
        assert_eq!(p.failed, 0, "{} phase had failures", p.phase);
        assert_eq!(p.completed, 300, "{} phase completed", p.phase);
        assert!(p.requests_per_second > 0.0);
        assert!(p.latency_ms.max >= p.latency_ms.min);
    }
    assert_eq!(report.delete_failures, 0);
    let listed = std::fs::read_to_string(dir.path().join("list.txt")).unwrap();
    let n = listed.lines().filter(|l| !l.is_empty()).count();
    assert!(n > 200 && n < 300, "about 10% deleted, {n} listed");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["phases"][0]["phase"], "write");
    assert_eq!(json["phases"][1]["phase"], "read");

    let _ = stop_v.send(());
    let _ = stop_m.send(());
    volume.await.unwrap().unwrap();
    master.await.unwrap().unwrap();
}
