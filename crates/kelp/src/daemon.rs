//! Starts daemons: binds listeners, builds library configs from flags,
//! writes the ready file, and shuts down on SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kelp_master::MasterConfig;
use kelp_volume::VolumeServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{
    BenchmarkArgs, Command, CommonArgs, MasterArgs, MasterTuning, ReadMode, ServerArgs, SyncMode,
    TokenArgs, VolumeArgs, VolumeTuning,
};

pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => server(args).await,
        Command::Master(args) => master(args).await,
        Command::Volume(args) => volume(args).await,
        Command::Filer(args) => crate::files_daemon::filer(args).await,
        Command::S3(args) => crate::files_daemon::s3(args).await,
        Command::Benchmark(args) => benchmark(args).await,
        Command::Token(args) => token(args),
        // Block volumes live in block_daemon.rs.
        Command::Block(cmd) => crate::block_daemon::block(cmd).await,
        Command::Downstairs(args) => crate::block_daemon::downstairs(args).await,
        Command::Upstairs(args) => crate::block_daemon::upstairs(args).await,
    }
}

/// `kelp token`: a token from this host's security settings, on stdout.
fn token(args: TokenArgs) -> anyhow::Result<()> {
    let sec = security(&args.common)?;
    let token = match args.what.as_str() {
        "peer" => sec.peer_token().ok_or_else(|| {
            anyhow::anyhow!(
                "peer calls are open: no cluster key ([cluster] key, -cluster.key) and no JWT \
                 write key to derive one from"
            )
        })?,
        fid => {
            let read = args.read;
            fid.parse::<kelp_core::FileId>()
                .with_context(|| format!("{fid:?} is neither `peer` nor a file id"))?;
            let key = if read { &sec.read } else { &sec.signing };
            key.mint(fid).ok_or_else(|| {
                anyhow::anyhow!(
                    "no JWT {} key is set ([jwt.signing{}] key)",
                    if read { "read" } else { "write" },
                    if read { ".read" } else { "" }
                )
            })?
        }
    };
    println!("{token}");
    Ok(())
}

fn progress_mode(json: bool) -> kelp_bench::Progress {
    use std::io::IsTerminal;
    match (std::io::stderr().is_terminal(), json) {
        (true, _) => kelp_bench::Progress::Bar,
        (false, false) => kelp_bench::Progress::Lines,
        (false, true) => kelp_bench::Progress::Off,
    }
}

/// `kelp benchmark -s3`.
async fn benchmark_s3(args: BenchmarkArgs) -> anyhow::Result<()> {
    let s3 = args.s3;
    let cfg = kelp_bench::s3::S3BenchConfig {
        endpoint: s3.endpoint,
        access_key: s3.access_key,
        secret_key: s3.secret_key,
        region: s3.region,
        bucket: s3.bucket,
        prefix: s3.prefix,
        n: args.n,
        concurrency: args.c,
        size: args.size,
        put: !args.read_only && !s3.list_only,
        get: !args.write_only && !s3.list_only,
        list: s3.list_objects || s3.list_only,
        progress: progress_mode(args.json),
    };
    let report = kelp_bench::s3::run(cfg).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

async fn benchmark(args: BenchmarkArgs) -> anyhow::Result<()> {
    if args.s3.s3 {
        return benchmark_s3(args).await;
    }
    let mut cfg = kelp_bench::BenchConfig {
        master: args.master,
        n: args.n,
        concurrency: args.c,
        size: args.size,
        collection: args.collection,
        replication: args.replication,
        delete_percent: args.delete_percent,
        read_only: args.read_only,
        write_only: args.write_only,
        fsync: args.fsync,
        progress: progress_mode(args.json),
        // HTTPS as security.toml's [https.client] says, as weed benchmark.
        security: kelp_core::SecurityConfig::load()?,
        ..kelp_bench::BenchConfig::default()
    };
    if let Some(list) = args.list {
        cfg.list = list;
    }
    let report = kelp_bench::run(cfg).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// A pair of listeners for one daemon, HTTP and gRPC. A gRPC port that is
/// not given follows SeaweedFS: HTTP port + 10000 (or any free port when
/// the HTTP port is 0).
struct Listeners {
    http: TcpListener,
    grpc: TcpListener,
}

impl Listeners {
    async fn bind(host: &str, port: u16, grpc_port: Option<u16>) -> anyhow::Result<Self> {
        let http = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        let grpc_port = grpc_port.unwrap_or(if port == 0 {
            0
        } else {
            kelp_proto::default_grpc_port(port)
        });
        let grpc = TcpListener::bind((host, grpc_port))
            .await
            .with_context(|| format!("cannot listen on {host}:{grpc_port} (gRPC)"))?;
        Ok(Self { http, grpc })
    }

    fn ports(&self) -> anyhow::Result<(u16, u16)> {
        Ok((
            self.http.local_addr()?.port(),
            self.grpc.local_addr()?.port(),
        ))
    }
}

fn bind_host(common: &CommonArgs) -> String {
    common.bind.clone().unwrap_or_else(|| common.ip.clone())
}

/// Resolves when the process gets SIGINT or SIGTERM; every daemon task
/// watches the same signal.
pub(crate) fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

pub(crate) async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

pub(crate) fn write_ready_file(path: Option<&Path>, body: serde_json::Value) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{body}\n"))
        .with_context(|| format!("cannot write ready file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write ready file {}", path.display()))?;
    Ok(())
}

/// Keys, white list and TLS: `security.toml` (searched like `weed` does),
/// then the `WEED_JWT_SIGNING_*` and `KELP_CLUSTER_KEY` environment, then
/// the command-line flags.
pub(crate) fn security(common: &CommonArgs) -> anyhow::Result<kelp_core::SecurityConfig> {
    let mut sec = kelp_core::SecurityConfig::load()?;
    sec.override_keys(
        common.jwt_signing_key.as_deref(),
        common.jwt_signing_read_key.as_deref(),
    );
    if let Some(k) = &common.cluster_key {
        sec.cluster.key = k.clone();
    }
    if let Some(w) = &common.white_list {
        sec.white_list = w.parse().with_context(|| format!("bad -whiteList {w:?}"))?;
    }
    tracing::info!(security = %sec.describe(), "security settings");
    Ok(sec)
}

fn read_mode(mode: ReadMode) -> kelp_volume::ReadMode {
    match mode {
        ReadMode::Proxy => kelp_volume::ReadMode::Proxy,
        ReadMode::Redirect => kelp_volume::ReadMode::Redirect,
        ReadMode::Local => kelp_volume::ReadMode::Local,
    }
}

/// The master's settings from its flags: the one place they are built,
/// for `kelp master` and `kelp server` alike.
fn master_config(
    common: &CommonArgs,
    ports: (u16, u16),
    meta_dir: PathBuf,
    pulse_seconds: u64,
    t: &MasterTuning,
    security: kelp_core::SecurityConfig,
) -> anyhow::Result<MasterConfig> {
    t.default_replication
        .parse::<kelp_core::ReplicaPlacement>()
        .with_context(|| format!("bad -defaultReplication {:?}", t.default_replication))?;
    Ok(MasterConfig {
        ip: common.ip.clone(),
        port: ports.0,
        grpc_port: ports.1,
        meta_dir,
        volume_size_limit_mb: t.volume_size_limit_mb,
        default_replication: t.default_replication.clone(),
        pulse_seconds: pulse_seconds.max(1),
        garbage_threshold: t.garbage_threshold,
        vacuum_interval: Duration::from_secs(t.vacuum_interval_seconds),
        replication_grace: Duration::from_secs(t.replication_grace_seconds),
        security,
        ..MasterConfig::default()
    })
}

/// Where a volume server lives and whom it reports to; the rest of its
/// settings come from [`VolumeTuning`].
struct VolumePlace {
    dirs: Vec<PathBuf>,
    max_volumes: u32,
    ports: (u16, u16),
    public_url: String,
    data_center: String,
    rack: String,
    masters: Vec<String>,
}

/// The volume server's settings from its flags: the one place they are
/// built, for `kelp volume` and `kelp server` alike.
fn volume_config(
    common: &CommonArgs,
    place: VolumePlace,
    t: &VolumeTuning,
    security: kelp_core::SecurityConfig,
) -> VolumeServerConfig {
    VolumeServerConfig {
        dirs: place.dirs,
        max_volumes: place.max_volumes,
        ip: common.ip.clone(),
        port: place.ports.0,
        grpc_port: place.ports.1,
        public_url: place.public_url,
        data_center: place.data_center,
        rack: place.rack,
        masters: place.masters,
        durable: t.sync == SyncMode::Durable,
        file_size_limit: t.file_size_limit_mb.saturating_mul(1024 * 1024),
        concurrent_upload_limit: t.concurrent_upload_limit_mb.saturating_mul(1024 * 1024),
        pulse: Duration::from_secs(t.pulse_seconds.max(1)),
        offset_width_5: t.idx_offset_bytes == 5,
        read_mode: read_mode(t.read_mode),
        security,
        compaction_bytes_per_second: t.compaction_mbps.saturating_mul(1 << 20),
        anti_entropy_interval: Duration::from_secs(t.anti_entropy_seconds),
        scrub_bytes_per_second: t.scrub_mbps.saturating_mul(1 << 20),
        scrub_pause: Duration::from_secs(t.scrub_interval_seconds),
    }
}

async fn master(args: MasterArgs) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&bind_host(&args.common), args.port, args.grpc_port).await?;
    let ports = listeners.ports()?;
    let cfg = master_config(
        &args.common,
        ports,
        args.mdir.clone(),
        args.pulse_seconds,
        &args.tuning,
        security(&args.common)?,
    )?;
    let stop = shutdown_signal();
    tracing::info!(http = ports.0, grpc = ports.1, dir = %args.mdir.display(), "master starting");
    write_ready_file(
        args.common.ready_file.as_deref(),
        serde_json::json!({"master_port": ports.0, "master_grpc_port": ports.1}),
    )?;
    Ok(kelp_master::run(listeners.http, listeners.grpc, cfg, wait_for(stop)).await?)
}

async fn volume(args: VolumeArgs) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&bind_host(&args.common), args.port, args.grpc_port).await?;
    let ports = listeners.ports()?;
    let place = VolumePlace {
        dirs: args.dir.clone(),
        max_volumes: args.max,
        ports,
        public_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}:{}", args.common.ip, ports.0)),
        data_center: args.data_center.clone(),
        rack: args.rack.clone(),
        masters: args.mserver.clone(),
    };
    let cfg = volume_config(&args.common, place, &args.tuning, security(&args.common)?);
    let stop = shutdown_signal();
    tracing::info!(http = ports.0, grpc = ports.1, masters = ?args.mserver, "volume server starting");
    write_ready_file(
        args.common.ready_file.as_deref(),
        serde_json::json!({"volume_port": ports.0, "volume_grpc_port": ports.1}),
    )?;
    Ok(kelp_volume::run(listeners.http, listeners.grpc, cfg, wait_for(stop)).await?)
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let host = bind_host(&args.common);
    let master_listeners = Listeners::bind(&host, args.master_port, args.master_grpc_port).await?;
    let volume_listeners = Listeners::bind(&host, args.volume_port, args.volume_grpc_port).await?;
    let mports = master_listeners.ports()?;
    let vports = volume_listeners.ports()?;
    let meta_dir = args
        .master_dir
        .clone()
        .unwrap_or_else(|| args.dir.join("master"));
    let security = security(&args.common)?;
    // The master expects heartbeats at the pace its volume server sends them.
    let mcfg = master_config(
        &args.common,
        mports,
        meta_dir,
        args.volume.pulse_seconds,
        &args.master,
        security.clone(),
    )?;
    let place = VolumePlace {
        dirs: vec![args.dir.clone()],
        max_volumes: args.volume_max,
        ports: vports,
        public_url: format!("{}:{}", args.common.ip, vports.0),
        data_center: args.data_center.clone(),
        rack: args.rack.clone(),
        masters: vec![format!("{}:{}.{}", args.common.ip, mports.0, mports.1)],
    };
    let vcfg = volume_config(&args.common, place, &args.volume, security.clone());
    let filer = if args.filer || args.s3 {
        let l = TcpListener::bind((host.as_str(), args.filer_port))
            .await
            .with_context(|| format!("cannot listen on {host}:{} (filer)", args.filer_port))?;
        let dir = args
            .filer_dir
            .clone()
            .unwrap_or_else(|| args.dir.join("filer"));
        let masters = vec![format!("{}:{}", args.common.ip, mports.0)];
        let f =
            crate::files_daemon::open_filer(&dir, &masters, &args.filer_tuning, &security).await?;
        Some((l, f))
    } else {
        None
    };
    let filer_port = match &filer {
        Some((l, _)) => Some(l.local_addr()?.port()),
        None => None,
    };
    let s3 = match (&filer, args.s3) {
        (Some((_, f)), true) => {
            let l = TcpListener::bind((host.as_str(), args.s3_port))
                .await
                .with_context(|| format!("cannot listen on {host}:{} (S3)", args.s3_port))?;
            let gw = kelp_s3::gateway::Gateway::new(
                f.clone(),
                crate::files_daemon::gateway_config(&args.s3_tuning)?,
            );
            Some((l, gw))
        }
        _ => None,
    };
    let stop = shutdown_signal();
    tracing::info!(
        master = mports.0,
        master_grpc = mports.1,
        volume = vports.0,
        volume_grpc = vports.1,
        dir = %args.dir.display(),
        "server starting (master and volume server in one process)"
    );
    let mut ready = serde_json::json!({"master_port": mports.0, "master_grpc_port": mports.1, "volume_port": vports.0, "volume_grpc_port": vports.1});
    if let Some(p) = filer_port {
        tracing::info!(filer = p, "filer starting");
        ready["filer_port"] = p.into();
    }
    if let Some((l, _)) = &s3 {
        let p = l.local_addr()?.port();
        tracing::info!(s3 = p, "S3 gateway starting");
        ready["s3_port"] = p.into();
    }
    write_ready_file(args.common.ready_file.as_deref(), ready)?;
    let filer_task =
        filer.map(|(l, f)| tokio::spawn(kelp_filer::http::run(l, f, wait_for(stop.clone()))));
    let s3_task =
        s3.map(|(l, gw)| tokio::spawn(kelp_s3::gateway::run(l, gw, wait_for(stop.clone()))));
    let master = tokio::spawn(kelp_master::run(
        master_listeners.http,
        master_listeners.grpc,
        mcfg,
        wait_for(stop.clone()),
    ));
    let volume = tokio::spawn(kelp_volume::run(
        volume_listeners.http,
        volume_listeners.grpc,
        vcfg,
        wait_for(stop),
    ));
    let (m, v) = tokio::join!(master, volume);
    m.context("master task panicked")??;
    v.context("volume task panicked")??;
    if let Some(f) = filer_task {
        f.await.context("filer task panicked")??;
    }
    if let Some(t) = s3_task {
        t.await.context("S3 task panicked")??;
    }
    Ok(())
}
