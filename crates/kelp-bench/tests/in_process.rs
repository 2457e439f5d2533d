//! `kelp_bench::run` drives an in-process master and volume server (both on
//! port 0, talked to over loopback HTTP) through a tiny workload with no
//! failed requests, and its report serialises to JSON.

use kelp_core::SecurityConfig;
use kelp_testkit::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_workload_has_no_failures() {
    let cluster = Cluster::start(1, SecurityConfig::default()).await;
    let list = cluster.dir.path().join("list.txt");
    let cfg = kelp_bench::BenchConfig {
        master: cluster.master.addr.clone(),
        n: 300,
        concurrency: 8,
        size: 100,
        delete_percent: 10,
        list: list.clone(),
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
    let listed = std::fs::read_to_string(&list).unwrap();
    let n = listed.lines().filter(|l| !l.is_empty()).count();
    assert!(n > 200 && n < 300, "about 10% deleted, {n} listed");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["phases"][0]["phase"], "write");
    assert_eq!(json["phases"][1]["phase"], "read");
    cluster.stop().await;
}
