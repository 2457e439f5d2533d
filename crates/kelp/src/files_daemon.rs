//! Starts the filer (`kelp filer`, and in `kelp server -filer`): opens its
//! metadata store, connects to the masters and serves the HTTP API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kelp_filer::store::Backend;
use kelp_filer::{Compress, Filer, FilerOptions};
use tokio::net::TcpListener;

use crate::daemon::{shutdown_signal, wait_for, write_ready_file};
use crate::files_cli::{CompressMode, FilerArgs, FilerTuning, S3Args, S3Tuning, StoreKind};

/// The filer's store, from its flags.
async fn open_store(dir: &std::path::Path, t: &FilerTuning) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match t.store {
        StoreKind::Redb => Arc::new(kelp_filer::store::redb::RedbBackend::open_with_cache(
            dir,
            (t.cache_mb as usize) << 20,
        )?),
        StoreKind::Postgres => {
            let url = t
                .postgres_url
                .as_deref()
                .context("-store=postgres needs -postgres.url (or $KELP_FILER_POSTGRES_URL)")?;
            postgres_store(url).await?
        }
    })
}

async fn postgres_store(url: &str) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(Arc::new(
        kelp_filer::store::postgres::PostgresBackend::connect(url).await?,
    ))
}

/// A stable name for this filer's file-id leases, kept in its directory.
fn owner_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("filer.id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = format!("filer-{:016x}", rand::random::<u64>());
    // Durably: leases name their filer, and a filer that lost its id in a
    // power cut would never reap its own leases (found by the power-cut test).
    let storage = kelp_storage::Storage::real();
    storage
        .write_atomic(&path, format!("{id}\n").as_bytes())
        .and_then(|()| storage.sync_parent(dir))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// A filer's options from its flags.
fn filer_options(dir: &std::path::Path, t: &FilerTuning) -> anyhow::Result<FilerOptions> {
    Ok(FilerOptions {
        chunk_size: (t.max_mb as usize) << 20,
        concurrency: t.concurrency.max(1),
        inline_limit: t.inline_limit,
        compress: match t.compress {
            CompressMode::Off => Compress::Off,
            CompressMode::Auto => Compress::Auto,
            CompressMode::Always => Compress::Always,
        },
        assign: kelp_client::AssignRequest {
            collection: t.collection.clone(),
            replication: t.replication.clone(),
            ..Default::default()
        },
        owner: owner_id(dir)?,
        gc_interval: Duration::from_secs(t.gc_seconds.max(1)),
        event_retention: Duration::from_secs(t.event_retention_hours.saturating_mul(3600)),
        ..FilerOptions::default()
    })
}

/// A filer from its flags, over the cluster of `masters`.
pub async fn open_filer(
    dir: &std::path::Path,
    masters: &[String],
    t: &FilerTuning,
    security: &kelp_core::SecurityConfig,
) -> anyhow::Result<Filer> {
    let store = open_store(dir, t).await?;
    let client =
        kelp_client::Client::new(masters, security, kelp_client::ClientOptions::default())?;
    let opts = filer_options(dir, t)?;
    tracing::info!(store = %store.describe(), owner = %opts.owner, chunk_mib = t.max_mb, "filer opening");
    Ok(Filer::open(store, client, opts).await?)
}

/// How long a gateway waits for its remote filer to answer at start.
const REMOTE_FILER_WAIT: Duration = Duration::from_secs(30);

/// A filer over the store of the running filer at `addr` (`kelp s3
/// -filer`), writing chunks through `masters`, or through the masters that
/// filer reports. Its leases are recorded in that store under this
/// gateway's id (`<dir>/filer.id`), so reaping at open works as for a
/// filer of its own.
pub async fn open_remote_filer(
    dir: &std::path::Path,
    addr: &str,
    masters: Option<&[String]>,
    t: &FilerTuning,
    security: &kelp_core::SecurityConfig,
) -> anyhow::Result<Filer> {
    if t.store != StoreKind::Redb {
        anyhow::bail!(
            "-store selects a store of the gateway's own; with -filer={addr} the namespace is that filer's store"
        );
    }
    let remote = kelp_filer::store::remote::RemoteBackend::new(addr)?;
    let status = remote
        .status_within(REMOTE_FILER_WAIT)
        .await
        .with_context(|| format!("-filer={addr}"))?;
    let masters = match masters {
        Some(m) if !m.is_empty() => m.to_vec(),
        _ if status.masters.is_empty() => {
            anyhow::bail!("the filer at {addr} reports no masters: give them with -master")
        }
        _ => status.masters.clone(),
    };
    let client =
        kelp_client::Client::new(&masters, security, kelp_client::ClientOptions::default())?;
    let opts = filer_options(dir, t)?;
    tracing::info!(filer = %addr, filer_store = %status.store, masters = ?masters, owner = %opts.owner, chunk_mib = t.max_mb, "filer opening over a remote filer");
    Ok(Filer::open(Arc::new(remote), client, opts).await?)
}

pub async fn filer(args: FilerArgs) -> anyhow::Result<()> {
    let host = args
        .common
        .bind
        .clone()
        .unwrap_or_else(|| args.common.ip.clone());
    let listener = TcpListener::bind((host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {host}:{}", args.port))?;
    let port = listener.local_addr()?.port();
    let security = crate::daemon::security(&args.common)?;
    let filer = open_filer(&args.dir, &args.master, &args.tuning, &security).await?;
    let stop = shutdown_signal();
    tracing::info!(http = port, masters = ?args.master, dir = %args.dir.display(), "filer starting");
    write_ready_file(
        args.common.ready_file.as_deref(),
        serde_json::json!({ "filer_port": port }),
    )?;
    kelp_filer::http::run(listener, filer, wait_for(stop)).await?;
    Ok(())
}

/// The S3 gateway's settings from its flags.
pub fn gateway_config(t: &S3Tuning) -> anyhow::Result<kelp_s3::gateway::GatewayConfig> {
    let identities = match &t.config {
        Some(p) => {
            kelp_s3::gateway::identities::Identities::load(p).map_err(|e| anyhow::anyhow!(e))?
        }
        None => {
            tracing::warn!(
                "no -s3.config: the S3 gateway allows every request, anonymous ones included"
            );
            kelp_s3::gateway::identities::Identities::open()
        }
    };
    Ok(kelp_s3::gateway::GatewayConfig {
        identities,
        addressing: kelp_s3::request::Addressing {
            domains: t.domains.clone(),
        },
        region: t.region.clone(),
    })
}

/// `kelp s3`: an S3 gateway with its own filer over the cluster (sharing a
/// namespace with other filers and gateways through -store=postgres), or
/// over the namespace of a running filer (`-filer=HOST:PORT`).
pub async fn s3(args: S3Args) -> anyhow::Result<()> {
    if let (Some(addr), Some(p)) = (&args.remote_filer, args.filer_port) {
        anyhow::bail!(
            "-filer.port={p} cannot be used with -filer={addr}: the filer at {addr} already serves the filer API of this namespace"
        );
    }
    let host = args
        .common
        .bind
        .clone()
        .unwrap_or_else(|| args.common.ip.clone());
    let listener = TcpListener::bind((host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {host}:{} (S3)", args.port))?;
    let port = listener.local_addr()?.port();
    let filer_listener = match args.filer_port {
        Some(p) => Some(
            TcpListener::bind((host.as_str(), p))
                .await
                .with_context(|| format!("cannot listen on {host}:{p} (filer)"))?,
        ),
        None => None,
    };
    let security = crate::daemon::security(&args.common)?;
    let filer = match &args.remote_filer {
        Some(addr) => {
            open_remote_filer(
                &args.dir,
                addr,
                args.master.as_deref(),
                &args.filer,
                &security,
            )
            .await?
        }
        None => {
            let masters = args
                .master
                .clone()
                .unwrap_or_else(|| vec!["localhost:9333".to_string()]);
            open_filer(&args.dir, &masters, &args.filer, &security).await?
        }
    };
    let gw = kelp_s3::gateway::Gateway::new(filer.clone(), gateway_config(&args.s3)?);
    let stop = shutdown_signal();
    let mut ready = serde_json::json!({ "s3_port": port });
    let filer_task = match filer_listener {
        Some(l) => {
            ready["filer_port"] = l.local_addr()?.port().into();
            Some(tokio::spawn(kelp_filer::http::run(
                l,
                filer.clone(),
                wait_for(stop.clone()),
            )))
        }
        // A remote filer collects its namespace's garbage itself.
        None if args.remote_filer.is_some() => None,
        // The collector runs with the filer API, or here without it.
        None => Some(tokio::spawn({
            let f = filer.clone();
            let stop = stop.clone();
            async move {
                f.run_collector(wait_for(stop)).await;
                Ok(())
            }
        })),
    };
    tracing::info!(s3 = port, filer = ?args.remote_filer, "S3 gateway starting");
    write_ready_file(args.common.ready_file.as_deref(), ready)?;
    kelp_s3::gateway::run(listener, gw, wait_for(stop)).await?;
    if let Some(t) = filer_task {
        t.await.context("filer task panicked")??;
    }
    Ok(())
}
