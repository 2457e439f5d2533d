//! Flags of the file commands (`kelp filer`, and the filer of `kelp
//! server -filer`). Names follow `weed filer` (`-master`, `-port`,
//! `-maxMB`, `-collection`, `-defaultReplicaPlacement`,
//! `-saveToFilerLimit`); `kelp server` also takes them as `-filer.x`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where the filer keeps its metadata.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// An embedded redb file in the filer's directory (`-dir`).
    Redb,
    /// A PostgreSQL database (`-postgres.url`); several filers may share it.
    Postgres,
}

/// How chunks are compressed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressMode {
    /// Never.
    Off,
    /// Text-like content (text/*, JSON, XML, JavaScript, CSV, SVG, YAML) when zstd saves 10%.
    Auto,
    /// Any content when zstd saves 10%.
    Always,
}

#[derive(Args, Debug, Clone)]
pub struct FilerArgs {
    #[command(flatten)]
    pub common: crate::cli::CommonArgs,

    /// Masters, comma separated (host:port).
    #[arg(
        long = "master",
        default_value = "localhost:9333",
        value_delimiter = ','
    )]
    pub master: Vec<String>,

    /// HTTP port of the filer API.
    #[arg(long = "port", default_value_t = 8888)]
    pub port: u16,

    /// Directory of the filer's metadata (the redb file, the filer's id).
    #[arg(
        long = "dir",
        alias = "defaultStoreDir",
        default_value = "./kelp-data/filer"
    )]
    pub dir: PathBuf,

    #[command(flatten)]
    pub tuning: FilerTuning,
}

/// Filer settings `kelp filer` and `kelp server -filer` share.
#[derive(Args, Debug, Clone)]
pub struct FilerTuning {
    /// Chunk size in MiB: larger files are cut into chunks of this size,
    /// uploaded in parallel.
    #[arg(long = "maxMB", visible_alias = "filer.maxMB", alias = "max-mb", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_mb: u64,

    /// Collection of the chunks the filer writes.
    #[arg(
        long = "collection",
        visible_alias = "filer.collection",
        default_value = ""
    )]
    pub collection: String,

    /// Replica placement of the chunks (xyz; empty: the master's default).
    #[arg(
        long = "defaultReplicaPlacement",
        visible_alias = "filer.defaultReplicaPlacement",
        alias = "default-replica-placement",
        default_value = ""
    )]
    pub replication: String,

    /// Files up to this many bytes are kept in their metadata entry, not on a
    /// volume server: one durable write instead of two, and a read that
    /// never leaves the filer (0: none; SeaweedFS's default is 0). S3
    /// multipart parts always go to volume servers.
    #[arg(
        long = "saveToFilerLimit",
        visible_alias = "filer.saveToFilerLimit",
        alias = "save-to-filer-limit",
        default_value_t = 4096
    )]
    pub inline_limit: usize,

    /// Memory for the redb store's page cache, in MiB: the filer's resident
    /// memory grows to about this much as the namespace grows (the kernel's
    /// page cache keeps the rest of the file warm).
    #[arg(
        long = "cacheMB",
        visible_alias = "filer.cacheMB",
        alias = "cache-mb",
        default_value_t = 256
    )]
    pub cache_mb: u64,

    /// Chunks of one file uploaded at once.
    #[arg(
        long = "concurrentUploads",
        visible_alias = "filer.concurrentUploads",
        alias = "concurrent-uploads",
        default_value_t = 4
    )]
    pub concurrency: usize,

    /// Transparent zstd compression of chunks.
    #[arg(long = "compress", visible_alias = "filer.compress", value_enum, default_value_t = CompressMode::Auto)]
    pub compress: CompressMode,

    /// Metadata store.
    #[arg(long = "store", visible_alias = "filer.store", value_enum, default_value_t = StoreKind::Redb)]
    pub store: StoreKind,

    /// PostgreSQL connection (with -store=postgres), e.g.
    /// postgres://kelp@127.0.0.1:5432/kelp or "host=... user=... dbname=...".
    #[arg(
        long = "postgres.url",
        visible_alias = "filer.postgres.url",
        env = "KELP_FILER_POSTGRES_URL"
    )]
    pub postgres_url: Option<String>,

    /// Seconds between garbage-collector passes (chunks no entry references
    /// any more are deleted from volume servers).
    #[arg(
        long = "gcSeconds",
        visible_alias = "filer.gcSeconds",
        alias = "gc-seconds",
        default_value_t = 10
    )]
    pub gc_seconds: u64,

    /// Hours the change log keeps events for subscribers.
    #[arg(
        long = "eventRetentionHours",
        visible_alias = "filer.eventRetentionHours",
        alias = "event-retention-hours",
        default_value_t = 168
    )]
    pub event_retention_hours: u64,
}

/// S3 gateway settings `kelp s3` and `kelp server -s3` share.
#[derive(Args, Debug, Clone)]
pub struct S3Tuning {
    /// Identities and their keys, in SeaweedFS's s3.json format
    /// ({"identities":[{"name":..,"credentials":[{"accessKey":..,"secretKey":..}],"actions":["Admin"|"Read"|"Write"|"List"|"Tagging"]}]}).
    /// Without it every request is allowed, anonymous ones included.
    #[arg(long = "s3.config", alias = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Domain for virtual-host-style requests (bucket.DOMAIN); path style always works.
    #[arg(long = "s3.domainName", alias = "domainName", value_delimiter = ',')]
    pub domains: Vec<String>,

    /// Region answered by GetBucketLocation.
    #[arg(long = "s3.region", default_value = "us-east-1")]
    pub region: String,
}

#[derive(Args, Debug, Clone)]
pub struct S3Args {
    #[command(flatten)]
    pub common: crate::cli::CommonArgs,

    /// Masters, comma separated (host:port) [default: localhost:9333; with
    /// -filer, the masters that filer reports].
    #[arg(long = "master", value_delimiter = ',')]
    pub master: Option<Vec<String>>,

    /// Serve the namespace of the running `kelp filer` at HOST:PORT instead
    /// of opening a store here (as `weed s3 -filer`): entries are read and
    /// committed through that filer, chunks go straight to the volume
    /// servers, and that filer collects garbage.
    #[arg(long = "filer", value_name = "HOST:PORT")]
    pub remote_filer: Option<String>,

    /// S3 port.
    #[arg(long = "port", default_value_t = 8333)]
    pub port: u16,

    /// Also serve the filer HTTP API of the same namespace on this port
    /// (not with -filer: that filer serves it).
    #[arg(long = "filer.port")]
    pub filer_port: Option<u16>,

    /// Directory of the gateway's filer metadata (with -store=redb, the namespace
    /// itself; with -store=postgres or -filer, only this gateway's id).
    #[arg(long = "dir", default_value = "./kelp-data/filer")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub s3: S3Tuning,

    #[command(flatten)]
    pub filer: FilerTuning,
}
