//! Command-line flags. Names follow SeaweedFS (`-dir`, `-master.port`,
//! `-mserver`, `-volumeSizeLimitMB`) so existing scripts keep working; each
//! also has a lowercase kebab alias. Single-dash spellings are accepted (see
//! `args.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "kelp",
    version,
    about = "Kelp: a SeaweedFS-compatible blob store with durable writes, in one binary",
    long_about = "Kelp stores blobs in SeaweedFS-format volumes. `kelp server` runs a master and a \
                  volume server in one process; `kelp master` and `kelp volume` run them apart. \
                  Flags may be written Go-style with one dash (-dir=/data) or with two (--dir /data)."
)]
pub struct Cli {
    /// Log filter, e.g. `info`, `debug`, `kelp_volume=debug` (default: $RUST_LOG, else info).
    #[arg(long = "log-level", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a master and a volume server in one process (a one-machine cluster).
    Server(ServerArgs),
    /// Run a master: hands out file ids, tracks volume servers, grows volumes.
    Master(MasterArgs),
    /// Run a volume server: stores blobs in volume files, heartbeats to a master.
    Volume(VolumeArgs),
    /// Run a filer: a namespace of directories and files whose contents are chunks on
    /// volume servers, served over the SeaweedFS filer HTTP API (docs/filer.md).
    Filer(crate::files_cli::FilerArgs),
    /// Run an S3 gateway: buckets and objects over a filer namespace (docs/s3.md).
    S3(crate::files_cli::S3Args),
    /// Load-test a cluster through the SeaweedFS HTTP API (the `weed benchmark` workload),
    /// or an S3 gateway with -s3.
    Benchmark(BenchmarkArgs),
    /// Print a token minted from this host's security settings: a peer token for admin
    /// routes (`curl -H "Authorization: Bearer $(kelp token peer)" .../vol/vacuum`), or a
    /// file token.
    Token(TokenArgs),

    // ---- block volumes (crates/kelp-block) ----
    /// Block-volume regions: create, verify, snapshots, rollback, clone, send and receive.
    #[command(subcommand)]
    Block(crate::block_cli::BlockCommand),
    /// Serve one region to an upstairs (one replica of a block volume).
    Downstairs(crate::block_cli::DownstairsArgs),
    /// Replicate a block volume to three downstairs and export it over NBD.
    #[command(alias = "nbd")]
    Upstairs(crate::block_cli::UpstairsArgs),
}

/// How writes become durable before they are acknowledged.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge a write or delete only after fdatasync; concurrent writers share one
    /// fdatasync (group commit).
    Durable,
    /// Acknowledge once the bytes are in the page cache (SeaweedFS's default); a power
    /// loss can drop recent acknowledged writes.
    None,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Address this server advertises to clients and peers (and binds, unless -ip.bind is set).
    #[arg(long = "ip", default_value = "127.0.0.1")]
    pub ip: String,

    /// Address to bind listeners to (default: the -ip address).
    #[arg(long = "ip.bind", alias = "bind")]
    pub bind: Option<String>,

    /// Write the bound addresses as JSON to this file once listening (for scripts and
    /// tests that pass port 0).
    #[arg(long = "ready-file", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// JWT signing key for writes and deletes; overrides [jwt.signing] key of
    /// security.toml (./, ~/.seaweedfs/, /usr/local/etc/seaweedfs/, /etc/seaweedfs/) and
    /// $WEED_JWT_SIGNING_KEY. Empty: no write tokens.
    #[arg(long = "jwt.signing.key", value_name = "KEY")]
    pub jwt_signing_key: Option<String>,

    /// JWT signing key for reads; overrides [jwt.signing.read] key of security.toml and
    /// $WEED_JWT_SIGNING_READ_KEY. Empty: no read tokens.
    #[arg(long = "jwt.signing.read.key", value_name = "KEY")]
    pub jwt_signing_read_key: Option<String>,

    /// Key that masters and volume servers prove themselves to each other with on admin
    /// routes and peer RPCs; overrides [cluster] key of security.toml and $KELP_CLUSTER_KEY.
    /// Default: derived from the JWT write key, so setting that key also closes the admin
    /// routes. Every server of a cluster needs the same key.
    #[arg(long = "cluster.key", value_name = "KEY")]
    pub cluster_key: Option<String>,

    /// Comma-separated IP addresses and CIDR ranges that may call anything but health
    /// checks (reads of file ids stay open, as in SeaweedFS); overrides [guard] white_list of
    /// security.toml. Empty: everyone.
    #[arg(long = "whiteList", alias = "white-list", value_name = "IPS")]
    pub white_list: Option<String>,
}

/// SeaweedFS `-readMode`: what a read for a volume held by another server gets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Fetch it from the holder (found through the master) and relay the answer.
    Proxy,
    /// Answer 301 to the holder, with proxied=true.
    Redirect,
    /// Answer 404.
    Local,
}

#[derive(Args, Debug, Clone)]
pub struct MasterArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// HTTP port of the master API (/dir/assign, /dir/lookup, ...).
    #[arg(long = "port", default_value_t = 9333)]
    pub port: u16,

    /// gRPC port (SeaweedFS master_pb.Seaweed); default: HTTP port + 10000.
    #[arg(long = "port.grpc", alias = "grpc-port")]
    pub grpc_port: Option<u16>,

    /// Directory for the master's own state (volume id and file key ceilings).
    #[arg(
        long = "mdir",
        alias = "meta-dir",
        default_value = "./kelp-data/master"
    )]
    pub mdir: PathBuf,

    /// Seconds between the heartbeats volume servers are expected to send.
    #[arg(long = "pulseSeconds", alias = "pulse-seconds", default_value_t = 5)]
    pub pulse_seconds: u64,

    #[command(flatten)]
    pub tuning: MasterTuning,
}

/// Master settings `kelp master` and `kelp server` share. `weed master`
/// spells them `-x` and `weed server` `-master.x`; both spellings work on
/// both commands.
#[derive(Args, Debug, Clone)]
pub struct MasterTuning {
    /// A volume stops taking writes once its .dat reaches this many MiB.
    #[arg(long = "volumeSizeLimitMB", visible_alias = "master.volumeSizeLimitMB", alias = "volume-size-limit-mb",
          default_value_t = 30 * 1024)]
    pub volume_size_limit_mb: u64,

    /// Replica placement used when an assign names none (xyz: other DCs, other racks, same rack).
    #[arg(
        long = "defaultReplication",
        visible_alias = "master.defaultReplication",
        alias = "default-replication",
        default_value = "000"
    )]
    pub default_replication: String,

    /// Garbage ratio above which a volume is compacted.
    #[arg(
        long = "garbageThreshold",
        visible_alias = "master.garbageThreshold",
        alias = "garbage-threshold",
        default_value_t = 0.3
    )]
    pub garbage_threshold: f64,

    /// Seconds between automatic vacuum runs (0 disables them; /vol/vacuum still works).
    #[arg(
        long = "vacuumIntervalSeconds",
        visible_alias = "master.vacuumIntervalSeconds",
        alias = "vacuum-interval-seconds",
        default_value_t = 900
    )]
    pub vacuum_interval_seconds: u64,

    /// Seconds a volume may miss copies (a server died) before a new copy
    /// is made on another server, filled from the survivors (0 disables).
    #[arg(
        long = "replicationGraceSeconds",
        visible_alias = "master.replicationGraceSeconds",
        alias = "replication-grace-seconds",
        default_value_t = 60
    )]
    pub replication_grace_seconds: u64,
}

#[derive(Args, Debug, Clone)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// HTTP port of the volume API (upload, read, delete blobs).
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,

    /// gRPC port (SeaweedFS volume_server_pb.VolumeServer); default: HTTP port + 10000.
    #[arg(long = "port.grpc", alias = "grpc-port")]
    pub grpc_port: Option<u16>,

    /// Data directories, comma separated; created if missing.
    #[arg(long = "dir", default_value = "./kelp-data", value_delimiter = ',')]
    pub dir: Vec<PathBuf>,

    /// Masters to heartbeat to, comma separated: host:port (gRPC at port+10000) or
    /// host:port.grpcPort.
    #[arg(
        long = "mserver",
        default_value = "localhost:9333",
        value_delimiter = ','
    )]
    pub mserver: Vec<String>,

    /// Address clients should use to reach this server (default: ip:port).
    #[arg(long = "publicUrl", alias = "public-url")]
    pub public_url: Option<String>,

    /// Data center this server is in, for replica placement.
    #[arg(long = "dataCenter", alias = "data-center", default_value = "")]
    pub data_center: String,

    /// Rack this server is in, for replica placement.
    #[arg(long = "rack", default_value = "")]
    pub rack: String,

    /// Maximum number of volumes on this server.
    #[arg(long = "max", default_value_t = 8)]
    pub max: u32,

    #[command(flatten)]
    pub tuning: VolumeTuning,
}

/// Volume-server settings `kelp volume` and `kelp server` share. `weed
/// volume` spells them `-x` and `weed server` `-volume.x`; both spellings
/// work on both commands.
#[derive(Args, Debug, Clone)]
pub struct VolumeTuning {
    /// Largest accepted upload in MiB; larger ones get 413.
    #[arg(
        long = "fileSizeLimitMB",
        visible_alias = "volume.fileSizeLimitMB",
        alias = "file-size-limit-mb",
        default_value_t = 256
    )]
    pub file_size_limit_mb: u64,

    /// MiB of upload bodies held in memory at once: an upload reserves its
    /// Content-Length before its body is read, and uploads past the budget
    /// wait (up to 60 s, then 503). 0 means no limit.
    #[arg(
        long = "concurrentUploadLimitMB",
        visible_alias = "volume.concurrentUploadLimitMB",
        default_value_t = 256
    )]
    pub concurrent_upload_limit_mb: u64,

    /// Durability of acknowledged writes.
    #[arg(long = "sync", value_enum, default_value_t = SyncMode::Durable)]
    pub sync: SyncMode,

    /// Offset width of new volumes' .idx entries: 5 (17-byte entries, 8 TiB volumes, what
    /// the `weed` large-disk build reads) or 4 (16-byte entries, standard `weed` builds).
    #[arg(long = "idxOffsetBytes", visible_alias = "volume.idxOffsetBytes", alias = "idx-offset-bytes",
          default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub idx_offset_bytes: u8,

    /// Seconds between heartbeats to the master (in `kelp server`, also what the master
    /// expects).
    #[arg(
        long = "pulseSeconds",
        visible_alias = "volume.pulseSeconds",
        alias = "pulse-seconds",
        default_value_t = 5
    )]
    pub pulse_seconds: u64,

    /// Reads for volumes on other servers: proxy, redirect or local.
    #[arg(long = "readMode", visible_alias = "volume.readMode", alias = "read-mode", value_enum,
          default_value_t = ReadMode::Proxy)]
    pub read_mode: ReadMode,

    /// Read-rate limit of compaction (vacuum) in MiB/s; 0 means unlimited.
    #[arg(
        long = "compactionMBps",
        visible_alias = "volume.compactionMBps",
        alias = "compaction-mbps",
        default_value_t = 64
    )]
    pub compaction_mbps: u64,

    /// Seconds between anti-entropy passes: each replicated volume is
    /// compared with its other replicas and missing needles and deletes
    /// are copied here. 0 turns it off.
    #[arg(
        long = "antiEntropySeconds",
        visible_alias = "volume.antiEntropySeconds",
        alias = "anti-entropy-seconds",
        default_value_t = 60
    )]
    pub anti_entropy_seconds: u64,

    /// Read budget of the background scrub in MiB/s (it re-reads every
    /// needle, checks its CRC and repairs a corrupt one from a replica);
    /// 0 turns it off.
    #[arg(
        long = "scrubMBps",
        visible_alias = "volume.scrubMBps",
        alias = "scrub-mbps",
        default_value_t = 8
    )]
    pub scrub_mbps: u64,

    /// Seconds between the end of one scrub pass and the next.
    #[arg(
        long = "scrubIntervalSeconds",
        visible_alias = "volume.scrubIntervalSeconds",
        alias = "scrub-interval-seconds",
        default_value_t = 3600
    )]
    pub scrub_interval_seconds: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Data directory for volumes (and, unless -master.dir is set, the master's state
    /// under <dir>/master).
    #[arg(long = "dir", default_value = "./kelp-data")]
    pub dir: PathBuf,

    /// Master HTTP port.
    #[arg(long = "master.port", default_value_t = 9333)]
    pub master_port: u16,

    /// Master gRPC port; default: master HTTP port + 10000.
    #[arg(long = "master.port.grpc")]
    pub master_grpc_port: Option<u16>,

    /// Master state directory (default: <dir>/master).
    #[arg(long = "master.dir")]
    pub master_dir: Option<PathBuf>,

    /// Volume server HTTP port.
    #[arg(long = "volume.port", default_value_t = 8080)]
    pub volume_port: u16,

    /// Volume server gRPC port; default: volume HTTP port + 10000.
    #[arg(long = "volume.port.grpc")]
    pub volume_grpc_port: Option<u16>,

    /// Maximum number of volumes on the volume server.
    #[arg(long = "volume.max", default_value_t = 8)]
    pub volume_max: u32,

    /// Data center of the volume server.
    #[arg(long = "dataCenter", default_value = "")]
    pub data_center: String,

    /// Rack of the volume server.
    #[arg(long = "rack", default_value = "")]
    pub rack: String,

    #[command(flatten)]
    pub master: MasterTuning,

    #[command(flatten)]
    pub volume: VolumeTuning,

    /// Also run a filer (as `weed server -filer`): files and directories over this
    /// cluster, on -filer.port.
    #[arg(long = "filer", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub filer: bool,

    /// Filer HTTP port.
    #[arg(long = "filer.port", default_value_t = 8888)]
    pub filer_port: u16,

    /// Filer metadata directory (default: <dir>/filer).
    #[arg(long = "filer.dir")]
    pub filer_dir: Option<PathBuf>,

    #[command(flatten)]
    pub filer_tuning: crate::files_cli::FilerTuning,

    /// Also run an S3 gateway over the filer (implies -filer), on -s3.port.
    #[arg(long = "s3", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub s3: bool,

    /// S3 gateway port.
    #[arg(long = "s3.port", default_value_t = 8333)]
    pub s3_port: u16,

    #[command(flatten)]
    pub s3_tuning: crate::files_cli::S3Tuning,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// `peer` for a peer token (the cluster key's), which opens admin routes such as
    /// /vol/grow, /vol/vacuum, /col/delete and /admin/replica/*; or a file id (e.g.
    /// 3,01637037d6) for a file token (the JWT write key's, the read key's with --read).
    #[arg(value_name = "peer|FID")]
    pub what: String,

    /// With a file id: mint a read token instead of a write token.
    #[arg(long)]
    pub read: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchmarkArgs {
    /// Master HTTP address (host:port); Kelp and SeaweedFS masters both work.
    #[arg(long = "master", default_value = "localhost:9333")]
    pub master: String,

    /// Total number of files to write, and of random reads.
    #[arg(short = 'n', default_value_t = 1024 * 1024)]
    pub n: u64,

    /// Concurrent requests.
    #[arg(short = 'c', default_value_t = 16)]
    pub c: usize,

    /// File size in bytes; each file adds a random 0..63.
    #[arg(long = "size", default_value_t = 1024)]
    pub size: usize,

    /// Collection to write into.
    #[arg(long = "collection", default_value = "benchmark")]
    pub collection: String,

    /// Replica placement of the written volumes.
    #[arg(long = "replication", default_value = "000")]
    pub replication: String,

    /// Percent of written files to delete again (0..100).
    #[arg(long = "deletePercent", alias = "delete-percent", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub delete_percent: u32,

    /// Only read the files named in the list file.
    #[arg(long = "readOnly", alias = "read-only", num_args = 0..=1, default_missing_value = "true",
          default_value_t = false, conflicts_with = "write_only")]
    pub read_only: bool,

    /// Only write, skip the read phase.
    #[arg(long = "writeOnly", alias = "write-only", num_args = 0..=1, default_missing_value = "true",
          default_value_t = false)]
    pub write_only: bool,

    /// Ask volume servers to fsync every write (?fsync=true).
    #[arg(long = "fsync", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub fsync: bool,

    /// File listing the written file ids, one per line (default: $TMPDIR/benchmark_list.txt).
    #[arg(long = "list")]
    pub list: Option<PathBuf>,

    /// Print the figures as JSON on stdout instead of the text report.
    #[arg(long = "json", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub json: bool,

    #[command(flatten)]
    pub s3: S3BenchArgs,
}

/// `kelp benchmark -s3`: PUT n objects of -size bytes with -c clients, GET n
/// random ones (checking their bytes), and with -listObjects list the bucket
/// with ListObjectsV2 pages of 1000. -n, -c, -size, -readOnly, -writeOnly and
/// -json keep their meaning.
#[derive(Args, Debug, Clone)]
pub struct S3BenchArgs {
    /// Benchmark an S3 gateway (Kelp's or `weed s3`) instead of the blob API.
    #[arg(long = "s3", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub s3: bool,

    /// S3 endpoint, http://host:port.
    #[arg(long = "endpoint", default_value = "http://127.0.0.1:8333")]
    pub endpoint: String,

    /// Access key to sign requests with (SigV4); empty: anonymous requests.
    #[arg(
        long = "accessKey",
        alias = "access-key",
        default_value = "",
        env = "AWS_ACCESS_KEY_ID"
    )]
    pub access_key: String,

    /// Secret key matching -accessKey.
    #[arg(
        long = "secretKey",
        alias = "secret-key",
        default_value = "",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_key: String,

    /// Region to sign for.
    #[arg(long = "region", default_value = "us-east-1")]
    pub region: String,

    /// Bucket to use; created if missing.
    #[arg(long = "bucket", default_value = "bench")]
    pub bucket: String,

    /// Prefix of every key (keys are <prefix><index, 10 digits>).
    #[arg(long = "prefix", default_value = "")]
    pub prefix: String,

    /// Also list the whole bucket (under -prefix) with ListObjectsV2, timed.
    #[arg(long = "listObjects", alias = "list-objects", num_args = 0..=1, default_missing_value = "true",
          default_value_t = false)]
    pub list_objects: bool,

    /// Only list (no PUT or GET phase).
    #[arg(long = "listOnly", alias = "list-only", num_args = 0..=1, default_missing_value = "true",
          default_value_t = false)]
    pub list_only: bool,
}
