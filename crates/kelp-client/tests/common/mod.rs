//! The client's tests run against kelp-testkit's in-process cluster.

#![allow(dead_code)]

use kelp_client::{AssignRequest, Client, ClientOptions};
pub use kelp_testkit::cluster::Cluster;

/// A client of `cluster`'s master, with its security settings.
pub fn client(cluster: &Cluster) -> Client {
    Client::new(
        &[cluster.master.addr.as_str()],
        &cluster.security,
        ClientOptions::default(),
    )
    .unwrap()
}

/// An assign request for `replication`.
pub fn assign(replication: &str) -> AssignRequest {
    AssignRequest {
        replication: replication.to_string(),
        ..AssignRequest::default()
    }
}
