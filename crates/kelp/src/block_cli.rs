//! Flags of the block-volume commands (`kelp block`, `kelp downstairs`,
//! `kelp upstairs`). Kept apart from `cli.rs` so the blob-store flags and
//! these evolve independently.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// Whether NBD clients must use TLS (when --nbd-tls-cert or --nbd-tls-psk
/// is given).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdTlsMode {
    Require,
    Allow,
}

#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// Create a region (one replica of a block volume) in a directory.
    Create(BlockCreateArgs),
    /// Check regions against their block contexts and against each other.
    Verify(BlockVerifyArgs),
    /// Create, list or delete snapshots (docs/snapshots.md).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Return a volume to a snapshot (offline: no upstairs attached).
    Rollback(RollbackArgs),
    /// Make a new writable volume from a snapshot; it can be served at once.
    Clone(CloneArgs),
    /// Copy what a linked clone still reads from its origin, now (offline;
    /// a downstairs serving the clone does it in the background).
    Fill(RegionDirs),
    /// Write a snapshot, or the change between two, as a send stream.
    Send(SendArgs),
    /// Read a send stream into a volume's regions (or one standby region).
    Receive(ReceiveArgs),
}

/// The regions of one volume, all given (the replicas of a volume must be
/// changed together; a single standby region is fine too).
#[derive(Args, Debug, Clone)]
pub struct RegionDirs {
    /// Region directories (give --dir several times, or comma separated).
    /// No downstairs may be serving them: each is locked while in use.
    #[arg(long = "dir", value_delimiter = ',', required = true)]
    pub dirs: Vec<PathBuf>,
}

/// Where a snapshot command acts: a running volume's upstairs, or the
/// regions of a stopped one.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct SnapshotTarget {
    /// The control API of the upstairs of a running volume (HOST:PORT, as
    /// given to `kelp upstairs --control`): the snapshot is taken on every
    /// downstairs, holding exactly the writes acknowledged before it.
    #[arg(long = "control", value_name = "HOST:PORT")]
    pub control: Option<String>,
    /// Region directories of a volume no downstairs is serving (give --dir
    /// several times, or comma separated).
    #[arg(long = "dir", value_delimiter = ',')]
    pub dirs: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Take a snapshot named NAME (of a running volume with --control, or
    /// of every region given with --dir).
    Create {
        #[command(flatten)]
        target: SnapshotTarget,
        /// 1 to 64 of A-Z a-z 0-9 . _ - : @, not starting with . or -.
        name: String,
    },
    /// List the snapshots (name, GUID, flush, creation time).
    List {
        #[command(flatten)]
        target: SnapshotTarget,
        /// Print JSON lines instead of a table.
        #[arg(long = "json")]
        json: bool,
    },
    /// Delete snapshot NAME, freeing the space only it held.
    Delete {
        #[command(flatten)]
        target: SnapshotTarget,
        name: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub regions: RegionDirs,
    /// The snapshot to return to.
    pub name: String,
    /// Also destroy the snapshots taken after NAME (like `zfs rollback -r`);
    /// without it a rollback past later snapshots is refused.
    #[arg(long = "destroy-later", short = 'r')]
    pub destroy_later: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CloneArgs {
    #[command(flatten)]
    pub regions: RegionDirs,
    /// The snapshot to clone.
    pub name: String,
    /// New region directories, one per --dir (comma separated). On XFS or
    /// btrfs the clone shares the origin's blocks (reflink) until either
    /// side writes them. Elsewhere (ext4) it is linked: it reads the
    /// origin's snapshot until it has copied it, which the downstairs
    /// serving it does in the background (or `kelp block fill`); the
    /// origin keeps the snapshot until then. The origin's regions may be
    /// in use by a downstairs.
    #[arg(long = "to", value_delimiter = ',', required = true)]
    pub to: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// The region to read: any one replica of the volume, also while a
    /// downstairs serves it (snapshots do not change; blocks that move
    /// while they are read are read again).
    #[arg(long = "dir")]
    pub dir: PathBuf,
    /// The snapshot to send (may be left out with --resume).
    pub snapshot: Option<String>,
    /// Send only what changed since this older snapshot (an incremental
    /// stream, received onto a volume whose newest snapshot is this one).
    #[arg(long = "from", short = 'i', conflicts_with = "from_each")]
    pub from: Option<String>,
    /// Like --from, but one incremental stream per snapshot in between,
    /// so the receiver gets every intermediate snapshot (like zfs send -I).
    #[arg(long = "from-each", short = 'I')]
    pub from_each: Option<String>,
    /// Continue a cut-short receive: the token `kelp block receive
    /// --resumable` printed.
    #[arg(long = "resume", short = 't', conflicts_with = "from_each")]
    pub resume: Option<String>,
    /// Write the stream here instead of standard output.
    #[arg(long = "output", short = 'o')]
    pub output: Option<PathBuf>,
    /// Compress write records with zstd (for slow links; costs CPU).
    #[arg(long = "compress", short = 'c')]
    pub compress: bool,
    /// Never show the progress bar (shown on a terminal stderr otherwise).
    #[arg(long = "quiet", short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub regions: RegionDirs,
    /// Read the stream from this file instead of standard input.
    #[arg(long = "input", short = 'f')]
    pub input: Option<PathBuf>,
    /// If the target was written after its newest snapshot, roll it back
    /// to that snapshot first (otherwise the receive is refused).
    #[arg(long = "force", short = 'F')]
    pub force: bool,
    /// Keep what a cut-short receive got and print a resume token for
    /// `kelp block send --resume`; without it a failed receive leaves the
    /// target exactly as it was.
    #[arg(long = "resumable", short = 's')]
    pub resumable: bool,
    /// Drop a partial receive kept by --resumable: the volume returns to
    /// its newest snapshot.
    #[arg(long = "abort", short = 'A', conflicts_with_all = ["input", "force", "resumable"])]
    pub abort: bool,
    /// Print the resume token of a receive in progress (one that was cut
    /// short or killed) and exit.
    #[arg(long = "status", conflicts_with_all = ["input", "force", "resumable", "abort"])]
    pub status: bool,
    /// With --resumable, record a resume point every this many MiB
    /// applied (each costs a flush of every region).
    #[arg(long = "checkpoint-mib", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_mib: u64,
    /// Never show the progress bar.
    #[arg(long = "quiet", short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BlockCreateArgs {
    /// Directory to create the region in (created if missing; must not hold a region).
    #[arg(long = "dir")]
    pub dir: PathBuf,
    /// Block size in bytes: 512, 1024, 2048 or 4096.
    #[arg(long = "block-size", default_value_t = 4096)]
    pub block_size: u32,
    /// Blocks per extent: the unit of repair and of flush bookkeeping.
    /// Larger extents mean fewer fdatasyncs per flush; a repair copies one
    /// whole extent at a time. [default: 32 MiB worth of blocks, the most
    /// allowed]
    #[arg(long = "extent-size")]
    pub extent_size: Option<u32>,
    /// Number of extents (volume size = extent count × extent size × block size).
    #[arg(long = "extent-count", default_value_t = 16)]
    pub extent_count: u32,
    /// Allocate the extent files in full now (twice the volume size on
    /// disk: every block has two slots) instead of sparsely. Random writes
    /// to a new volume then overwrite allocated blocks instead of filling
    /// holes, which costs the filesystem less CPU.
    #[arg(long = "preallocate")]
    pub preallocate: bool,
}

impl BlockCreateArgs {
    /// The extent size asked for, or the largest a repair frame allows.
    pub fn extent_blocks(&self) -> u32 {
        self.extent_size.unwrap_or_else(|| {
            (kelp_block::region::MAX_EXTENT_BYTES / self.block_size.max(1) as u64) as u32
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct BlockVerifyArgs {
    /// Region directories (give --dir several times, or comma separated).
    #[arg(long = "dir", value_delimiter = ',', required = true)]
    pub dirs: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DownstairsArgs {
    /// Region directory to serve.
    #[arg(long = "dir")]
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long = "ip", default_value = "127.0.0.1")]
    pub ip: String,
    /// TCP port (0 = any free port; see --ready-file).
    #[arg(long = "port", default_value_t = 3810)]
    pub port: u16,
    /// Write {"port": N} here once listening.
    #[arg(long = "ready-file", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// `durable`: a flush is acknowledged only after fdatasync of every
    /// extent it covers. `none` skips every fdatasync (like qemu's
    /// cache=unsafe): a process crash loses nothing, a power cut loses
    /// acknowledged flushes. Only for throwaway volumes and tests.
    #[arg(long = "sync", value_enum, default_value = "durable")]
    pub sync: crate::cli::SyncMode,
    /// The volume's shared secret (at least 16 bytes; surrounding white
    /// space ignored): an upstairs must prove it holds the same secret,
    /// by HMAC challenge-response without sending it, before anything
    /// else is accepted. Without it anyone who reaches the port can
    /// activate the region. Make one with `head -c 32 /dev/urandom |
    /// base64 > FILE; chmod 600 FILE`.
    #[arg(
        long = "secret-file",
        value_name = "PATH",
        env = "KELP_BLOCK_SECRET_FILE"
    )]
    pub secret_file: Option<PathBuf>,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long = "tls-cert", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long = "tls-key", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require every upstairs to present a client certificate signed by
    /// this CA (PEM): mutual TLS. Needs --tls-cert.
    #[arg(long = "tls-ca", value_name = "PEM", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// For a linked clone (`kelp block clone` on a file system without
    /// reflinks): `background` copies what it still reads from its origin,
    /// an extent at a time between jobs, after which the origin may drop
    /// the snapshot; `off` leaves unwritten extents shared with the
    /// origin's snapshot (copy-on-write by extent), which the origin then
    /// keeps.
    #[arg(long = "clone-fill", value_enum, default_value = "background")]
    pub clone_fill: CloneFillMode,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneFillMode {
    Background,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct UpstairsArgs {
    /// A downstairs address host:port; give exactly three.
    #[arg(long = "target", required = true, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Export over NBD on this TCP address (port 0 = any free port).
    #[arg(long = "nbd")]
    pub nbd: Option<String>,
    /// Export over NBD on this unix socket too.
    #[arg(long = "nbd-socket")]
    pub nbd_socket: Option<PathBuf>,
    /// Serve every snapshot of the volume read-only over NBD on this TCP
    /// address (port 0 = any free port) while the volume runs: the NBD
    /// export name chooses the snapshot (e.g.
    /// nbd://127.0.0.1:10811/SNAPNAME); an unknown name is refused,
    /// writes, trims and flushes fail with EPERM. Reads are served by one
    /// active downstairs and checked against its block checksums. Uses
    /// the --nbd-tls-* settings too.
    #[arg(long = "nbd-snapshots", value_name = "ADDR")]
    pub nbd_snapshots: Option<String>,
    /// NBD export name (the empty name also selects it).
    #[arg(long = "export-name", default_value = "kelp")]
    pub export_name: String,
    /// Activation generation; must be higher than any earlier upstairs' (it fences them).
    #[arg(long = "gen", alias = "generation")]
    pub generation: u64,
    /// Milliseconds after unflushed writes before an automatic flush.
    #[arg(long = "flush-interval-ms", default_value_t = 500)]
    pub flush_interval_ms: u64,
    /// A downstairs that returns after more than this many jobs piled up is
    /// live-repaired instead of replayed.
    #[arg(long = "max-replay-jobs", default_value_t = 20_000)]
    pub max_replay_jobs: usize,
    /// Serve a control API on this address (port 0 = any free port):
    /// `GET /status`; `POST /replace?old=HOST:PORT&new=HOST:PORT`, which
    /// puts a new downstairs in the place of a failed one and live-repairs
    /// it; `POST /snapshots` with `{"name": "NAME"}` (a snapshot taken by
    /// all three downstairs), `GET /snapshots`, `DELETE /snapshots/NAME`.
    #[arg(long = "control")]
    pub control: Option<String>,
    /// The volume's shared secret, the same file as its downstairs': each
    /// side proves it holds it without sending it, and a downstairs that
    /// cannot prove it is refused.
    #[arg(
        long = "secret-file",
        value_name = "PATH",
        env = "KELP_BLOCK_SECRET_FILE"
    )]
    pub secret_file: Option<PathBuf>,
    /// Reach the downstairs over TLS, verifying each against this CA (PEM)
    /// as the host of its --target address.
    #[arg(long = "tls-ca", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// The client certificate (PEM) this upstairs presents to downstairs
    /// that require one (their --tls-ca). Needs --tls-key and --tls-ca.
    #[arg(long = "tls-cert", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long = "tls-key", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Offer NBD over TLS (NBD_OPT_STARTTLS) with this certificate chain
    /// (PEM), on --nbd and --nbd-socket; needs --nbd-tls-key. Clients must
    /// use TLS unless --nbd-tls-mode=allow.
    #[arg(long = "nbd-tls-cert", value_name = "PEM", requires = "nbd_tls_key")]
    pub nbd_tls_cert: Option<PathBuf>,
    /// The private key of --nbd-tls-cert (PEM).
    #[arg(long = "nbd-tls-key", value_name = "PEM", requires = "nbd_tls_cert")]
    pub nbd_tls_key: Option<PathBuf>,
    /// Require NBD clients to present a certificate signed by this CA (PEM).
    #[arg(long = "nbd-tls-ca", value_name = "PEM", requires = "nbd_tls_cert")]
    pub nbd_tls_ca: Option<PathBuf>,
    /// Offer NBD over TLS with pre-shared keys instead of certificates
    /// (qemu's tls-creds-psk): FILE is a keys.psk as psktool writes it, one
    /// `username:hexkey` line per client (keys of 16 bytes or more). A
    /// client must name a username of the file and hold its key. On --nbd
    /// and --nbd-socket; clients must use TLS unless --nbd-tls-mode=allow.
    #[arg(
        long = "nbd-tls-psk",
        value_name = "FILE",
        conflicts_with_all = ["nbd_tls_cert", "nbd_tls_key", "nbd_tls_ca"]
    )]
    pub nbd_tls_psk: Option<PathBuf>,
    /// With --nbd-tls-cert or --nbd-tls-psk. `require`: clients that do not
    /// STARTTLS are refused (NBD_REP_ERR_TLS_REQD), as with qemu-nbd;
    /// `allow`: TLS is offered and plain clients are served too.
    #[arg(long = "nbd-tls-mode", value_enum, default_value_t = NbdTlsMode::Require)]
    pub nbd_tls_mode: NbdTlsMode,
    /// Write {"nbd_port": N, "nbd_socket": P, "control_port": C,
    /// "nbd_snapshots_port": S} here once serving.
    #[arg(long = "ready-file", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}
