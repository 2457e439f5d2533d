//! Runs the block-volume commands: builds library configs from flags and
//! calls `kelp_block`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kelp_block::nbd::NbdTlsCreds;

use crate::block_cli::{BlockCommand, DownstairsArgs, NbdTlsMode, UpstairsArgs};
use crate::daemon::{shutdown_signal, wait_for, write_ready_file};

pub async fn block(cmd: BlockCommand) -> anyhow::Result<()> {
    match cmd {
        BlockCommand::Create(a) => {
            let (dir, bs, es, ec) = (
                a.dir.clone(),
                a.block_size,
                a.extent_blocks(),
                a.extent_count,
            );
            let pre = a.preallocate;
            let region = tokio::task::spawn_blocking(move || {
                kelp_block::Region::create_with(&dir, bs, es, ec, pre)
            })
            .await??;
            let def = *region.def();
            println!(
                "created region in {}: {} blocks of {} bytes ({} bytes), {} extents of {} blocks, {}",
                a.dir.display(),
                def.total_blocks(),
                def.block_size,
                def.size_bytes(),
                def.extent_count,
                def.extent_size,
                if pre { "preallocated" } else { "sparse" }
            );
            Ok(())
        }
        BlockCommand::Verify(a) => {
            let dirs = a.dirs.clone();
            let report =
                tokio::task::spawn_blocking(move || kelp_block::verify::verify(&dirs)).await??;
            print!("{report}");
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!("regions differ or fail their checksums")
            }
        }
        BlockCommand::Snapshot(cmd) if crate::block_snapshots::online(&cmd).is_some() => {
            crate::block_snapshots::run_online(cmd).await
        }
        other => tokio::task::spawn_blocking(move || crate::block_snapshots::run(other)).await?,
    }
}

/// Loads the volume secret named by `--secret-file`, warning when others
/// than the owner may read the file.
fn load_secret(path: Option<&Path>) -> anyhow::Result<Option<kelp_block::auth::Secret>> {
    let Some(path) = path else { return Ok(None) };
    let secret = kelp_block::auth::Secret::from_file(path)
        .with_context(|| format!("cannot load the block secret {}", path.display()))?;
    warn_if_shared(path, "the block secret file");
    Ok(Some(secret))
}

/// Loads the NBD pre-shared keys named by `--nbd-tls-psk`, warning when
/// others than the owner may read the file.
fn load_psk(path: &Path) -> anyhow::Result<kelp_block::nbd::psk::PskAcceptor> {
    use kelp_block::nbd::psk::{PskAcceptor, PskKeys};
    let keys = PskKeys::from_file(path).context("--nbd-tls-psk")?;
    warn_if_shared(path, "the NBD pre-shared key file");
    tracing::info!(path = %path.display(), usernames = keys.len(), "NBD TLS-PSK keys loaded");
    PskAcceptor::new(keys).context("NBD TLS-PSK")
}

/// Warns when others than its owner may read a file holding secrets.
fn warn_if_shared(path: &Path, what: &str) {
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "{what} is readable by others than its owner; chmod 600 it");
        }
    }
}

pub async fn downstairs(a: DownstairsArgs) -> anyhow::Result<()> {
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(
            kelp_core::tls::server_config(cert, key, a.tls_ca.as_deref(), &[])
                .context("downstairs TLS")?,
        ),
        _ => None,
    };
    let security = kelp_block::downstairs::Security {
        secret: load_secret(a.secret_file.as_deref())?,
        tls,
    };
    let dir = a.dir.clone();
    let storage = match a.sync {
        crate::cli::SyncMode::Durable => kelp_storage::Storage::real(),
        crate::cli::SyncMode::None => {
            tracing::warn!(dir = %a.dir.display(), "--sync=none: flushes skip fdatasync; a power cut loses acknowledged writes");
            kelp_storage::Storage::new(kelp_storage::Unsynced)
        }
    };
    let region =
        tokio::task::spawn_blocking(move || kelp_block::Region::open_in(storage, &dir, false))
            .await?
            .with_context(|| format!("cannot open region {}", a.dir.display()))?;
    let listener = tokio::net::TcpListener::bind((a.ip.as_str(), a.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", a.ip, a.port))?;
    let port = listener.local_addr()?.port();
    tracing::info!(
        port,
        dir = %a.dir.display(),
        secret = security.secret.is_some(),
        tls = security.tls.is_some(),
        mutual_tls = a.tls_ca.is_some(),
        "downstairs serving"
    );
    write_ready_file(a.ready_file.as_deref(), serde_json::json!({ "port": port }))?;
    let fill = match a.clone_fill {
        crate::block_cli::CloneFillMode::Background => {
            kelp_block::downstairs::CloneFill::Background
        }
        crate::block_cli::CloneFillMode::Off => kelp_block::downstairs::CloneFill::Off,
    };
    kelp_block::downstairs::serve(
        listener,
        region,
        security,
        fill,
        wait_for(shutdown_signal()),
    )
    .await?;
    Ok(())
}

pub async fn upstairs(a: UpstairsArgs) -> anyhow::Result<()> {
    if a.nbd.is_none() && a.nbd_socket.is_none() {
        anyhow::bail!("give --nbd ADDR and/or --nbd-socket PATH");
    }
    let mut cfg = kelp_block::upstairs::UpstairsConfig::new(a.targets.clone(), a.generation);
    cfg.flush_interval = Duration::from_millis(a.flush_interval_ms.max(1));
    cfg.max_replay_jobs = a.max_replay_jobs;
    cfg.security.secret = load_secret(a.secret_file.as_deref())?;
    if let Some(ca) = &a.tls_ca {
        let identity = a.tls_cert.as_deref().zip(a.tls_key.as_deref());
        cfg.security.tls =
            Some(kelp_core::tls::client_config(ca, identity).context("upstairs TLS")?);
    }
    let nbd_creds = match (&a.nbd_tls_cert, &a.nbd_tls_key, &a.nbd_tls_psk) {
        (Some(cert), Some(key), _) => Some(NbdTlsCreds::X509(
            kelp_core::tls::server_config(cert, key, a.nbd_tls_ca.as_deref(), &[])
                .context("NBD TLS")?,
        )),
        (_, _, Some(psk)) => Some(NbdTlsCreds::Psk(Arc::new(load_psk(psk)?))),
        _ => None,
    };
    let nbd_tls = nbd_creds.map(|creds| kelp_block::nbd::NbdTls {
        creds,
        required: a.nbd_tls_mode == NbdTlsMode::Require,
    });
    let stop = shutdown_signal();
    tracing::info!(targets = ?a.targets, generation = a.generation, "upstairs activating");
    let volume = tokio::select! {
        v = kelp_block::upstairs::start(cfg) => v.context("activation failed")?,
        _ = wait_for(stop.clone()) => return Ok(()),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut ready = serde_json::json!({ "size": volume.size_bytes() });
    if let Some(addr) = &a.nbd {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        ready["nbd_port"] = l.local_addr()?.port().into();
        tasks.spawn(kelp_block::nbd::serve_tcp(
            l,
            volume.clone(),
            a.export_name.clone(),
            nbd_tls.clone(),
            wait_for(stop.clone()),
        ));
    }
    if let Some(path) = &a.nbd_socket {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        ready["nbd_socket"] = path.display().to_string().into();
        tasks.spawn(kelp_block::nbd::serve_unix(
            l,
            volume.clone(),
            a.export_name.clone(),
            nbd_tls.clone(),
            wait_for(stop.clone()),
        ));
    }
    if let Some(addr) = &a.nbd_snapshots {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on {addr} (--nbd-snapshots)"))?;
        ready["nbd_snapshots_port"] = l.local_addr()?.port().into();
        tasks.spawn(kelp_block::nbd::serve_snapshots_tcp(
            l,
            volume.clone(),
            nbd_tls.clone(),
            wait_for(stop.clone()),
        ));
    }
    if let Some(addr) = &a.control {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on {addr} (control)"))?;
        ready["control_port"] = l.local_addr()?.port().into();
        let router = kelp_block::control::router(volume.clone());
        let stop = stop.clone();
        // Not joined: it ends with the stop signal, like the NBD servers.
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, router)
                .with_graceful_shutdown(wait_for(stop))
                .await
            {
                tracing::warn!(error = %e, "control API stopped");
            }
        });
    }
    tracing::info!(
        size = volume.size_bytes(),
        nbd_tls = ?nbd_tls.as_ref().map(|t| if t.required { "required" } else { "offered" }),
        nbd_tls_kind = ?nbd_tls.as_ref().map(|t| match t.creds {
            NbdTlsCreds::X509(_) => "x509",
            NbdTlsCreds::Psk(_) => "psk",
        }),
        "volume active; serving NBD"
    );
    write_ready_file(a.ready_file.as_deref(), ready)?;
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    // A clean stop flushes and waits (a while) for all three downstairs to
    // be in sync, so a restarted replica that is still catching up finishes.
    match volume.drain(Duration::from_secs(30)).await {
        Ok(()) => tracing::info!("all three downstairs flushed and in sync"),
        Err(e) => tracing::warn!(error = %e, "stopping before all three downstairs were in sync"),
    }
    Ok(())
}
