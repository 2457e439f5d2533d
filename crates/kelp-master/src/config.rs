//! Master settings, filled by the CLI and by tests.

use std::path::PathBuf;

/// Everything the master needs to know that does not come from the network.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Advertised host (what volume servers and clients are told).
    pub ip: String,
    /// Advertised HTTP port.
    pub port: u16,
    /// Advertised gRPC port.
    pub grpc_port: u16,
    /// Directory for persistent state (sequencer ceiling, max volume id).
    pub meta_dir: PathBuf,
    /// A volume stops being writable once its `.dat` reaches this size.
    pub volume_size_limit_mb: u64,
    /// Replication used when an assign does not name one.
    pub default_replication: String,
    /// Heartbeat period expected from volume servers; a node silent for
    /// about three pulses is dropped.
    pub pulse_seconds: u64,
    /// Told to volume servers so they preallocate new volume files.
    pub volume_preallocate: bool,
    /// Garbage ratio above which vacuum compacts a volume.
    pub garbage_threshold: f64,
    /// Period of the automatic vacuum (plus up to 1/7 of it at random, so
    /// masters started together spread out); zero disables it.
    pub vacuum_interval: std::time::Duration,
    /// Logical volumes created per growth; `None` uses SeaweedFS's defaults
    /// by copy count (1 → 7, 2 → 6, 3 → 3, else 1).
    pub volume_growth_count: Option<u32>,
    /// JWT keys: tokens for file ids are minted with assignments and
    /// file-id lookups when a key is set.
    pub security: kelp_core::SecurityConfig,
    /// How long a volume may miss copies before the master has a new one
    /// made on another server; zero turns re-replication off.
    pub replication_grace: std::time::Duration,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            ip: "127.0.0.1".to_string(),
            port: 9333,
            grpc_port: 19333,
            meta_dir: PathBuf::from("."),
            volume_size_limit_mb: 30 * 1024,
            default_replication: "000".to_string(),
            pulse_seconds: 5,
            volume_preallocate: false,
            garbage_threshold: 0.3,
            vacuum_interval: std::time::Duration::from_secs(15 * 60),
            volume_growth_count: None,
            security: kelp_core::SecurityConfig::default(),
            replication_grace: std::time::Duration::from_secs(60),
        }
    }
}

impl MasterConfig {
    pub fn volume_size_limit_bytes(&self) -> u64 {
        self.volume_size_limit_mb.saturating_mul(1024 * 1024)
    }

    /// `ip:port`, the HTTP address.
    pub fn http_address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// `ip:port.grpcPort`, the form SeaweedFS uses for a leader address.
    pub fn leader_address(&self) -> String {
        format!("{}:{}.{}", self.ip, self.port, self.grpc_port)
    }
}
