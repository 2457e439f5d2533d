//! Calls to the masters: `/dir/assign` and `/dir/lookup`. Each call goes to
//! the master that answered last; one that cannot be reached or answers
//! 5xx hands the call to the next.

use std::sync::atomic::{AtomicUsize, Ordering};

use kelp_core::VolumeId;
use serde::Deserialize;

use crate::error::{ClientError, Op, Server};
use crate::reply::{bearer, master_json};

/// What to ask `/dir/assign` for. Empty strings leave the master's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignRequest {
    pub collection: String,
    /// Replica placement, `xyz` (`001`: one more copy on the same rack).
    pub replication: String,
    /// `3m`, `4h`, `5d`…
    pub ttl: String,
    /// File ids to reserve (`fid`, `fid_1` … `fid_{count-1}`); 0 means 1.
    pub count: u64,
    pub data_center: String,
    pub rack: String,
    pub data_node: String,
}

/// A file id the master assigned and where to upload it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub fid: String,
    /// The volume server, `host:port`.
    pub url: String,
    pub public_url: String,
    pub count: u64,
    /// The write token when the cluster signs writes (JWT).
    pub auth: Option<String>,
}

/// A volume server holding a volume.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Location {
    pub url: String,
    #[serde(rename = "publicUrl", default)]
    pub public_url: String,
    #[serde(rename = "dataCenter", default)]
    pub data_center: String,
}

#[derive(Deserialize)]
struct AssignReply {
    fid: String,
    url: String,
    #[serde(rename = "publicUrl", default)]
    public_url: String,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    auth: Option<String>,
}

#[derive(Deserialize)]
struct LookupReply {
    #[serde(default)]
    locations: Vec<Location>,
    #[serde(default)]
    auth: Option<String>,
}

pub(crate) struct Masters {
    /// `host:port` of each master's HTTP endpoint.
    addrs: Vec<String>,
    /// Index into `addrs` of the master to ask first.
    current: AtomicUsize,
    http: reqwest::Client,
    scheme: &'static str,
}

/// `host:port` of a master given as `host:port`, `http(s)://host:port/`
/// or `host:port.grpcPort`.
pub(crate) fn http_address(master: &str) -> String {
    let a = master
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    match a.rsplit_once(':') {
        Some((host, port)) => match port.split_once('.') {
            Some((http, _grpc)) => format!("{host}:{http}"),
            None => a.to_string(),
        },
        None => a.to_string(),
    }
}

impl Masters {
    pub(crate) fn new(masters: &[String], http: reqwest::Client, scheme: &'static str) -> Self {
        Self {
            addrs: masters.iter().map(|m| http_address(m)).collect(),
            current: AtomicUsize::new(0),
            http,
            scheme,
        }
    }

    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// GET `path?query` from the masters in turn, parsed as `T`, with the
    /// reply's bearer token.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(T, Option<String>), ClientError> {
        let n = self.addrs.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let addr = &self.addrs[at];
            let server = Server::Master(addr.clone());
            let sent = self
                .http
                .get(format!("{}://{addr}{path}", self.scheme))
                .query(query)
                .send()
                .await;
            let result = match sent {
                Ok(resp) => {
                    let token = bearer(&resp);
                    master_json::<T>(&op, &server, resp)
                        .await
                        .map(|t| (t, token))
                }
                Err(error) => Err(ClientError::transport(&op, &server)(error)),
            };
            match result {
                Ok(v) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.is_retriable() => errors.push(e),
                Err(e) => return Err(e),
            }
        }
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        Err(ClientError::Exhausted { op, errors })
    }

    pub(crate) async fn assign(&self, req: &AssignRequest) -> Result<Assignment, ClientError> {
        let count = req.count.max(1).to_string();
        let mut query = vec![("count", count.as_str())];
        for (k, v) in [
            ("collection", &req.collection),
            ("replication", &req.replication),
            ("ttl", &req.ttl),
            ("dataCenter", &req.data_center),
            ("rack", &req.rack),
            ("dataNode", &req.data_node),
        ] {
            if !v.is_empty() {
                query.push((k, v.as_str()));
            }
        }
        let (r, header): (AssignReply, _) = self.get(Op::Assign, "/dir/assign", &query).await?;
        Ok(Assignment {
            fid: r.fid,
            url: r.url,
            public_url: r.public_url,
            count: r.count,
            auth: r.auth.filter(|a| !a.is_empty()).or(header),
        })
    }

    /// Where volume `vid` lives, as the master says now.
    pub(crate) async fn lookup(&self, vid: VolumeId) -> Result<Vec<Location>, ClientError> {
        let id = vid.to_string();
        let op = Op::Lookup(vid);
        let (r, _): (LookupReply, _) = self
            .get(op.clone(), "/dir/lookup", &[("volumeId", &id)])
            .await?;
        let locations: Vec<Location> = r
            .locations
            .into_iter()
            .filter(|l| !l.url.is_empty())
            .collect();
        if locations.is_empty() {
            return Err(ClientError::Reply {
                op,
                server: Server::Master(self.addrs[self.current.load(Ordering::Relaxed)].clone()),
                reason: format!("no locations for volume {vid}"),
            });
        }
        Ok(locations)
    }

    /// A token for file `fid` from `/dir/lookup?fileId=`: a read token when
    /// `read`, else a write (and delete) token. `None` when the cluster does
    /// not sign.
    pub(crate) async fn token(&self, fid: &str, read: bool) -> Result<Option<String>, ClientError> {
        let mut query = vec![("fileId", fid)];
        if read {
            query.push(("read", "yes"));
        }
        let (r, header): (LookupReply, _) = self
            .get(Op::Token(fid.to_string()), "/dir/lookup", &query)
            .await?;
        Ok(r.auth.filter(|a| !a.is_empty()).or(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses() {
        assert_eq!(http_address("localhost:9333"), "localhost:9333");
        assert_eq!(http_address("http://m:9333/"), "m:9333");
        assert_eq!(http_address("10.0.0.1:9333.19333"), "10.0.0.1:9333");
    }
}
