//! The downstairs: serves one region over TCP to one active upstairs.
//!
//! A connection says Hello (and learns the region), then Activates with a
//! generation number. Activation rules:
//! - a generation below the highest this region has accepted (persisted in
//!   the generation file, or stamped into an extent) is refused;
//! - an equal generation is accepted only from the same upstairs id (a
//!   reconnect), or when no upstairs is active;
//! - a higher generation (or the same upstairs reconnecting) displaces the
//!   active session: it is sent `Fenced` and closed, and its queued jobs are
//!   refused from then on (the worker checks the active session under the
//!   region lock before every job).
//!
//! Jobs of the active session run in dependency order on a blocking thread
//! (`work.rs`).

pub mod work;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::error::{BlockError, Result};
use crate::frame::{FrameReader, Message, write_message};
use crate::region::Region;
use work::{Job, Shared, WorkerHandle};

/// Who is active, and how to fence them.
struct Activation {
    session: u64,
    upstairs_id: Option<u128>,
    generation: u64,
    fence: Option<(mpsc::UnboundedSender<Message>, watch::Sender<bool>)>,
}

struct Server {
    shared: Arc<Shared>,
    activation: Mutex<Activation>,
    next_session: AtomicU64,
}

/// Serves `region` on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    region: Region,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let server = Arc::new(Server {
        shared: Arc::new(Shared::new(region)),
        activation: Mutex::new(Activation {
            session: 0,
            upstairs_id: None,
            generation: 0,
            fence: None,
        }),
        next_session: AtomicU64::new(1),
    });
    tokio::pin!(shutdown);
    // Dropping the set on shutdown aborts every connection, which ends its
    // worker thread and releases the region.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let server = server.clone();
                conns.spawn(async move {
                    if let Err(e) = serve_connection(server, stream).await {
                        tracing::info!(%peer, error = %e, "downstairs connection ended");
                    }
                });
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn writer_task(
    stream: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    let mut w = BufWriter::with_capacity(256 << 10, stream);
    while let Some(m) = rx.recv().await {
        if write_message(&mut w, &m).await.is_err() {
            return;
        }
        // Batch replies that are already queued into one flush.
        while let Ok(m) = rx.try_recv() {
            if write_message(&mut w, &m).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
}

async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Region) -> Result<T> + Send + 'static,
) -> Result<T> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&mut shared.region_between_flushes()))
        .await
        .map_err(|e| BlockError::protocol(format!("blocking task failed: {e}")))?
}

impl Server {
    /// Applies the activation rules; on success this session is the only
    /// one allowed to run jobs.
    async fn activate(
        self: &Arc<Self>,
        session: u64,
        upstairs_id: u128,
        generation: u64,
        me: (mpsc::UnboundedSender<Message>, watch::Sender<bool>),
    ) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut act = lock(&this.activation);
            let mut region = this.shared.region_between_flushes();
            let current = region.generation().max(act.generation);
            let same_upstairs = act.upstairs_id == Some(upstairs_id);
            let occupied = act.fence.is_some();
            if generation < current
                || (generation == current && occupied && !same_upstairs)
                || generation == 0
            {
                return Err(BlockError::GenerationTooLow {
                    offered: generation,
                    current,
                });
            }
            region.set_generation(generation)?;
            if let Some((tx, close)) = act.fence.take()
                && act.session != session
            {
                let _ = tx.send(Message::Fenced { generation });
                let _ = close.send(true);
                tracing::info!(
                    old = act.session,
                    new = session,
                    generation,
                    "upstairs displaced by a newer activation"
                );
            }
            act.session = session;
            act.upstairs_id = Some(upstairs_id);
            act.generation = generation;
            act.fence = Some(me);
            this.shared.active_session.store(session, Ordering::SeqCst);
            Ok(())
        })
        .await
        .map_err(|e| BlockError::protocol(format!("activation task failed: {e}")))?
    }

    fn deactivate(&self, session: u64) {
        let mut act = lock(&self.activation);
        if act.session == session {
            act.fence = None;
        }
    }
}

async fn serve_connection(server: Arc<Server>, stream: TcpStream) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    tokio::spawn(writer_task(wr, reply_rx));
    let (fence_tx, mut fence_rx) = watch::channel(false);
    let session = server.next_session.fetch_add(1, Ordering::SeqCst);
    let mut reader = FrameReader::new(rd);
    let mut jobs: Option<WorkerHandle> = None;
    let shared = server.shared.clone();
    let result = loop {
        let msg = tokio::select! {
            m = reader.next() => m,
            _ = fence_rx.changed() => break Ok(()),
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match msg {
            Message::Hello { .. } => {
                let (region, generation) =
                    blocking(&shared, |r| Ok((*r.def(), r.generation()))).await?;
                let _ = reply_tx.send(Message::HelloAck { region, generation });
            }
            Message::Activate {
                upstairs_id,
                generation,
            } => {
                match server
                    .activate(
                        session,
                        upstairs_id,
                        generation,
                        (reply_tx.clone(), fence_tx.clone()),
                    )
                    .await
                {
                    Ok(()) => {
                        if jobs.is_none() {
                            jobs = Some(WorkerHandle::spawn(
                                shared.clone(),
                                session,
                                reply_tx.clone(),
                            )?);
                        }
                        tracing::info!(session, generation, "upstairs activated");
                        let _ = reply_tx.send(Message::Activated { generation });
                    }
                    Err(e) => {
                        tracing::warn!(session, generation, error = %e, "activation refused");
                        let _ = reply_tx.send(Message::error(&e));
                    }
                }
            }
            Message::ExtentVersionsPlease => {
                let v = blocking(&shared, |r| Ok(r.versions())).await?;
                let _ = reply_tx.send(Message::ExtentVersions(v));
            }
            Message::Ping(n) => {
                let _ = reply_tx.send(Message::Pong(n));
            }
            other => match Job::from_message(other) {
                Some(job) => match &jobs {
                    Some(tx) => {
                        if !tx.send(job) {
                            break Err(BlockError::protocol("worker stopped"));
                        }
                    }
                    None => {
                        let _ = reply_tx.send(Message::job_error(job.id, &BlockError::NotActive));
                    }
                },
                None => {
                    let e = BlockError::protocol("unexpected message from upstairs");
                    let _ = reply_tx.send(Message::error(&e));
                    break Err(e);
                }
            },
        }
    };
    server.deactivate(session);
    result
}
