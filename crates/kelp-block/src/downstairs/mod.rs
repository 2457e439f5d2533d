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
//!
//! With a secret (`Security::secret`), a connection must first prove it
//! holds it (`auth.rs`); until then it is sent nothing but the challenge
//! and an error, its frames are limited to `PRE_AUTH_MAX_FRAME` bytes and
//! it has `AUTH_TIMEOUT` to finish.

pub mod work;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::auth::{self, Secret, Transcript};
use crate::error::{BlockError, Result};
use crate::frame::{FrameReader, Message, version_mismatch_reply, write_message};
use crate::region::Region;
use crate::transport::{self, ReadHalf, WriteHalf};
use work::{Job, Shared, WorkerHandle};

/// How long an unauthenticated connection may take to prove the secret.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame read before the peer has authenticated (the Auth*
/// messages are under 100 bytes).
const PRE_AUTH_MAX_FRAME: usize = 4096;

/// How a downstairs guards its port. The default (nothing) serves anyone
/// who connects, as before.
#[derive(Clone, Default)]
pub struct Security {
    /// The volume's shared secret: an upstairs must prove it holds it
    /// before anything else is accepted.
    pub secret: Option<Secret>,
    /// TLS: every connection must start with a TLS handshake; with a
    /// client CA in the config, only upstairs with a certificate it signed
    /// get through (mutual TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("secret", &self.secret.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Who is active, and how to fence them.
struct Activation {
    session: u64,
    upstairs_id: Option<u128>,
    generation: u64,
    fence: Option<(mpsc::UnboundedSender<Message>, watch::Sender<bool>)>,
}

struct Server {
    shared: Arc<Shared>,
    security: Security,
    region_uuid: [u8; 16],
    activation: Mutex<Activation>,
    next_session: AtomicU64,
}

/// Serves `region` on `listener` to anyone until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    region: Region,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    serve(
        listener,
        region,
        Security::default(),
        CloneFill::Background,
        shutdown,
    )
    .await
}

/// What a downstairs serving a linked clone does about the extents it
/// still reads from its origin (kelp_region::link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloneFill {
    /// Copies them one by one in the background; the clone then no longer
    /// needs its origin's snapshot.
    #[default]
    Background,
    /// Leaves them shared with the origin's snapshot: an extent is copied
    /// only when first written (copy-on-write by extent), and the origin
    /// keeps the snapshot.
    Off,
}

/// Serves `region` on `listener`, guarded by `security`, until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    region: Region,
    security: Security,
    fill: CloneFill,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let region_uuid = region.def().uuid;
    let server = Arc::new(Server {
        security,
        region_uuid,
        shared: Arc::new(Shared::new(region)),
        activation: Mutex::new(Activation {
            session: 0,
            upstairs_id: None,
            generation: 0,
            fence: None,
        }),
        next_session: AtomicU64::new(1),
    });
    let _filler = match fill {
        CloneFill::Background => Some(Filler::start(server.shared.clone())),
        CloneFill::Off => None,
    };
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
                    match serve_connection(server, stream).await {
                        Err(
                            e @ (BlockError::Auth(_)
                            | BlockError::Tls(_)
                            | BlockError::VersionMismatch { .. }),
                        ) => {
                            tracing::warn!(%peer, error = %e, "upstairs refused");
                        }
                        Err(e) => tracing::info!(%peer, error = %e, "downstairs connection ended"),
                        Ok(()) => {}
                    }
                });
            }
        }
    }
}

/// Copies a linked clone's extents from its origin in the background, one
/// at a time between the jobs (kelp_region::link). Stops when dropped.
struct Filler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    /// Pause between two extents, so that guest IO waiting for the region
    /// lock gets it.
    const PAUSE: std::time::Duration = Duration::from_millis(10);

    fn start(shared: Arc<Shared>) -> Filler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let region = lock(&shared.region);
            let left = region.linked_extents();
            let Some(o) = region.origin().filter(|_| left > 0) else {
                return Filler { stop, thread: None };
            };
            tracing::info!(
                origin = %o.dir.display(),
                snapshot = %o.name,
                extents = left,
                "linked clone: copying from its origin in the background"
            );
        }
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ds-clone-fill".into())
            .spawn(move || {
                let mut backoff = Filler::PAUSE;
                loop {
                    let wake = std::time::Instant::now() + backoff;
                    while std::time::Instant::now() < wake {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Filler::PAUSE);
                    }
                    // The copy is written without the region lock; only
                    // its rename holds the guest's IO back.
                    let job = shared.region_between_flushes().fill_job();
                    let r = match job {
                        Some(job) => job
                            .stage()
                            .and_then(|staged| shared.region_between_flushes().fill_install(&job, &staged)),
                        None => shared.region_between_flushes().fill_next(),
                    };
                    match r {
                        Ok(true) => backoff = Filler::PAUSE,
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "copying a clone extent from its origin failed; retrying");
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            })
            .ok();
        Filler { stop, thread }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn writer_task(stream: WriteHalf, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut w = BufWriter::with_capacity(256 << 10, stream);
    while let Some(m) = rx.recv().await {
        if let Err(e) = write_message(&mut w, &m).await {
            tracing::warn!(error = %e, "sending a reply failed; closing the connection");
            return;
        }
        // Batch replies that are already queued into one flush.
        while let Ok(m) = rx.try_recv() {
            if let Err(e) = write_message(&mut w, &m).await {
                tracing::warn!(error = %e, "sending a reply failed; closing the connection");
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

/// The activation rule (module comment), apart from its effects:
/// `current` is the highest generation this region has accepted, `occupied`
/// whether an upstairs is active, `same_upstairs` whether it is the one
/// asking. Public for the simulator (`tests/sim`).
pub fn admit(current: u64, occupied: bool, same_upstairs: bool, generation: u64) -> Result<()> {
    if generation < current
        || (generation == current && occupied && !same_upstairs)
        || generation == 0
    {
        return Err(BlockError::GenerationTooLow {
            offered: generation,
            current,
        });
    }
    Ok(())
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
            admit(current, occupied, same_upstairs, generation)?;
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

/// Sends `e` to the peer as an Error frame and returns it.
async fn refuse(w: &mut WriteHalf, e: BlockError) -> BlockError {
    let _ = write_message(w, &Message::error(&e)).await;
    let _ = w.flush().await;
    e
}

/// The first frame of a connection. A peer of another protocol version is
/// told so in a frame it can read (`version_mismatch_reply`).
async fn first_frame(
    reader: &mut FrameReader<ReadHalf>,
    w: &mut WriteHalf,
) -> Result<Option<Message>> {
    match reader.next().await {
        Err(BlockError::VersionMismatch { .. }) if transport::looks_like_tls(reader.buffered()) => {
            Err(BlockError::Tls(
                "the upstairs speaks TLS, but this downstairs has no --tls-cert".into(),
            ))
        }
        Err(e @ BlockError::VersionMismatch { theirs, .. }) => {
            let _ = w.write_all(&version_mismatch_reply(theirs)).await;
            let _ = w.flush().await;
            Err(e)
        }
        r => r,
    }
}

/// The downstairs' side of the Auth* exchange (`auth.rs`), `first` being
/// the connection's first message. On failure the peer has been told why.
async fn authenticate(
    secret: &Secret,
    region_uuid: [u8; 16],
    first: Message,
    reader: &mut FrameReader<ReadHalf>,
    w: &mut WriteHalf,
) -> Result<()> {
    let Message::AuthHello {
        upstairs_id,
        nonce: nonce_u,
    } = first
    else {
        return Err(refuse(
            w,
            BlockError::Auth(
                "this downstairs requires the volume's secret: start the upstairs with \
                 --secret-file (the same secret as its downstairs)"
                    .into(),
            ),
        )
        .await);
    };
    let t = Transcript {
        upstairs_id,
        region_uuid,
        nonce_u,
        nonce_d: auth::nonce(),
    };
    let challenge = Message::AuthChallenge {
        region_uuid,
        nonce: t.nonce_d,
        proof: secret.downstairs_proof(&t),
    };
    write_message(w, &challenge).await?;
    w.flush()
        .await
        .map_err(|e| BlockError::io("connection", e))?;
    match reader.next().await? {
        Some(Message::AuthProof { proof }) if secret.check_upstairs(&t, &proof) => Ok(()),
        Some(Message::AuthProof { .. }) => Err(refuse(
            w,
            BlockError::Auth(
                "the upstairs' proof is wrong: it holds a different secret than this downstairs"
                    .into(),
            ),
        )
        .await),
        Some(Message::Error { message, .. }) => Err(BlockError::Auth(format!(
            "the upstairs refused this downstairs: {message}"
        ))),
        Some(m) => Err(refuse(
            w,
            BlockError::Auth(format!(
                "expected AuthProof, got message type {}",
                m.type_code()
            )),
        )
        .await),
        None => Err(BlockError::Auth(
            "the upstairs closed the connection during authentication".into(),
        )),
    }
}

/// How a connection opened.
enum Opened {
    /// The peer left before its first message.
    Closed,
    /// It proved the secret; nothing of it is left to handle.
    Authenticated,
    /// No secret is needed: this first message is still to be handled.
    First(Message),
}

/// Reads the first message and, with a secret, runs the Auth* exchange
/// within `AUTH_TIMEOUT`.
async fn open_connection(
    server: &Server,
    reader: &mut FrameReader<ReadHalf>,
    w: &mut WriteHalf,
) -> Result<Opened> {
    let Some(secret) = &server.security.secret else {
        return match first_frame(reader, w).await? {
            Some(Message::AuthHello { .. } | Message::AuthProof { .. }) => Err(refuse(
                w,
                BlockError::Auth(
                    "this downstairs has no secret, but the upstairs has one: give the \
                         downstairs the same --secret-file (an upstairs with a secret never \
                         trusts a downstairs without one)"
                        .into(),
                ),
            )
            .await),
            Some(m) => Ok(Opened::First(m)),
            None => Ok(Opened::Closed),
        };
    };
    reader.set_max_frame(PRE_AUTH_MAX_FRAME);
    let exchange = async {
        match first_frame(reader, w).await? {
            Some(first) => authenticate(secret, server.region_uuid, first, reader, w).await,
            None => Err(BlockError::Auth(
                "the peer closed the connection before authenticating".into(),
            )),
        }
    };
    match tokio::time::timeout(AUTH_TIMEOUT, exchange).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(refuse(
                w,
                BlockError::Auth(format!(
                    "the upstairs did not authenticate within {AUTH_TIMEOUT:?}"
                )),
            )
            .await);
        }
    }
    reader.set_max_frame(crate::frame::MAX_FRAME_LEN);
    tracing::info!("upstairs authenticated");
    Ok(Opened::Authenticated)
}

/// Starts TLS on a new connection; a peer that sends a Kelp frame instead
/// is told in one it can read.
async fn start_tls(
    stream: TcpStream,
    config: &Arc<rustls::ServerConfig>,
) -> Result<(ReadHalf, WriteHalf)> {
    let mut first = [0u8; 8];
    let n = match tokio::time::timeout(transport::TLS_HANDSHAKE_TIMEOUT, stream.peek(&mut first))
        .await
    {
        Ok(r) => r.map_err(|e| BlockError::io("connection", e))?,
        Err(_) => return Err(BlockError::Tls("no TLS handshake in time".into())),
    };
    if n > 0 && !transport::looks_like_tls(&first[..n]) {
        let e = BlockError::Tls(
            "this downstairs requires TLS: start the upstairs with --tls-ca (and --tls-cert, \
             --tls-key for its client certificate)"
                .into(),
        );
        let version = if n > 4 {
            first[4]
        } else {
            crate::frame::PROTOCOL_VERSION
        };
        let mut stream = stream;
        let _ = stream
            .write_all(&crate::frame::error_frame_as(version, &e))
            .await;
        let _ = stream.flush().await;
        return Err(e);
    }
    transport::accept_tls(stream, config).await
}

async fn serve_connection(server: Arc<Server>, stream: TcpStream) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = match &server.security.tls {
        None => transport::split_tcp(stream),
        Some(config) => start_tls(stream, config).await?,
    };
    let mut reader = FrameReader::new(rd);
    let mut pending = match open_connection(&server, &mut reader, &mut wr).await? {
        Opened::Closed => return Ok(()),
        Opened::Authenticated => None,
        Opened::First(m) => Some(m),
    };
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    tokio::spawn(writer_task(wr, reply_rx));
    let (fence_tx, mut fence_rx) = watch::channel(false);
    let session = server.next_session.fetch_add(1, Ordering::SeqCst);
    let mut jobs: Option<WorkerHandle> = None;
    let shared = server.shared.clone();
    let result = loop {
        let msg = match pending.take() {
            Some(m) => m,
            None => {
                let msg = tokio::select! {
                    m = reader.next() => m,
                    _ = fence_rx.changed() => break Ok(()),
                };
                match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
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
                let m = blocking(&shared, |r| {
                    Ok(Message::ExtentVersions {
                        versions: r.versions(),
                        flush_mark: r.flush_mark(),
                        snapshots: r.snapshots().to_vec(),
                    })
                })
                .await?;
                let _ = reply_tx.send(m);
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
