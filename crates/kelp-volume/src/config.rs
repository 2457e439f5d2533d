//! Volume server configuration, filled by the CLI or by tests.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a volume server needs to start. `Default` gives the SeaweedFS
/// defaults (8 slots, 256 MiB file limit, 5 s pulse) plus Kelp's durable
/// writes.
#[derive(Debug, Clone)]
pub struct VolumeServerConfig {
    /// Data directories; created if missing.
    pub dirs: Vec<PathBuf>,
    /// Volume slots for this server (SeaweedFS `-max`).
    pub max_volumes: u32,
    /// Advertised address; `port` is the HTTP port.
    pub ip: String,
    pub port: u16,
    pub grpc_port: u16,
    /// Advertised public address; empty means `ip:port`.
    pub public_url: String,
    /// Empty means the master's `DefaultDataCenter` / `DefaultRack`.
    pub data_center: String,
    pub rack: String,
    /// Master addresses, `host:port` (gRPC at port+10000) or
    /// `host:port.grpcPort`.
    pub masters: Vec<String>,
    /// Acknowledge writes only after the group-commit fdatasync. `false`
    /// behaves like SeaweedFS (no fsync unless `?fsync=true`).
    pub durable: bool,
    /// Largest accepted upload, in bytes; larger uploads get 413.
    pub file_size_limit: u64,
    /// Bytes of upload bodies held in memory at once (uploads past it
    /// wait); 0 means no limit (SeaweedFS `-concurrentUploadLimitMB`).
    pub concurrent_upload_limit: u64,
    /// Period of full heartbeats.
    pub pulse: Duration,
    /// New volumes use 5-byte `.idx` offsets (the `weed` large-disk build).
    pub offset_width_5: bool,
    /// What a read for a volume held elsewhere gets (`-readMode`).
    pub read_mode: ReadMode,
    /// JWT keys checked on requests (and used for requests to peers).
    pub security: kelp_core::SecurityConfig,
    /// Read-rate limit of compaction (vacuum), bytes per second; 0 means
    /// unlimited (SeaweedFS `-compactionMBps`).
    pub compaction_bytes_per_second: u64,
    /// Period of anti-entropy passes over replicated volumes; zero turns
    /// them off.
    pub anti_entropy_interval: Duration,
    /// Read budget of the background scrub, bytes per second; 0 turns it
    /// off.
    pub scrub_bytes_per_second: u64,
    /// Pause between two scrub passes over every needle.
    pub scrub_pause: Duration,
}

/// Default budget of upload bodies in memory: 256 MiB.
pub const DEFAULT_CONCURRENT_UPLOAD_LIMIT: u64 = 256 << 20;

/// Default anti-entropy period.
pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(60);

/// Default compaction rate limit: 64 MiB/s.
pub const DEFAULT_COMPACTION_BYTES_PER_SECOND: u64 = 64 << 20;

/// SeaweedFS `-readMode`: how a `GET`/`HEAD` for a volume this server does
/// not hold is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Look the volume up on the master and relay the holder's answer.
    #[default]
    Proxy,
    /// 301 to the holder's public URL with `proxied=true`.
    Redirect,
    /// 404.
    Local,
}

impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "proxy" => Ok(Self::Proxy),
            "redirect" => Ok(Self::Redirect),
            "local" => Ok(Self::Local),
            other => Err(format!(
                "unknown read mode {other:?} (proxy, redirect or local)"
            )),
        }
    }
}

impl Default for VolumeServerConfig {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from(".")],
            max_volumes: 8,
            ip: "127.0.0.1".to_string(),
            port: 8080,
            grpc_port: 18080,
            public_url: String::new(),
            data_center: String::new(),
            rack: String::new(),
            masters: Vec::new(),
            durable: true,
            file_size_limit: 256 * 1024 * 1024,
            concurrent_upload_limit: DEFAULT_CONCURRENT_UPLOAD_LIMIT,
            pulse: Duration::from_secs(5),
            offset_width_5: true,
            read_mode: ReadMode::Proxy,
            security: kelp_core::SecurityConfig::default(),
            compaction_bytes_per_second: DEFAULT_COMPACTION_BYTES_PER_SECOND,
            anti_entropy_interval: DEFAULT_ANTI_ENTROPY_INTERVAL,
            scrub_bytes_per_second: 8 << 20,
            scrub_pause: Duration::from_secs(3600),
        }
    }
}

impl VolumeServerConfig {
    /// The public URL actually advertised.
    pub fn effective_public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("{}:{}", self.ip, self.port)
        } else {
            self.public_url.clone()
        }
    }
}

/// Turns a master address into the `host:grpcPort` to dial. Accepts
/// `host:port` (gRPC on port+10000) and `host:port.grpcPort`.
pub fn master_grpc_address(addr: &str) -> Option<String> {
    let addr = addr.trim();
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let (host, port) = addr.rsplit_once(':')?;
    if host.is_empty() {
        return None;
    }
    let grpc = match port.split_once('.') {
        Some((_, grpc)) => grpc.parse::<u16>().ok()?,
        None => kelp_proto::default_grpc_port(port.parse::<u16>().ok()?),
    };
    Some(format!("{host}:{grpc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses() {
        assert_eq!(
            master_grpc_address("localhost:9333").as_deref(),
            Some("localhost:19333")
        );
        assert_eq!(
            master_grpc_address("127.0.0.1:9433.19500").as_deref(),
            Some("127.0.0.1:19500")
        );
        assert_eq!(master_grpc_address("nohost").as_deref(), None);
        assert_eq!(master_grpc_address("h:x").as_deref(), None);
        assert_eq!(master_grpc_address(":1").as_deref(), None);
    }

    #[test]
    fn read_modes() {
        assert_eq!("proxy".parse(), Ok(ReadMode::Proxy));
        assert_eq!("redirect".parse(), Ok(ReadMode::Redirect));
        assert_eq!("local".parse(), Ok(ReadMode::Local));
        assert!("x".parse::<ReadMode>().is_err());
    }
}
