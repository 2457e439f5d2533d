//! Exports a `Volume` over NBD (TCP or a unix socket). Each connection
//! reads requests in a loop and runs each as its own task (up to
//! `MAX_IN_FLIGHT` at once), so many requests are in flight; replies are
//! written by one writer task, header and data together.
//!
//! Requests that are not block-aligned are served by read-modify-write of
//! the covering blocks, serialised among themselves by one lock (clients
//! that honour the advertised minimum block size never need it).
//!
//! `serve_snapshots_tcp` serves every snapshot of the volume read-only
//! instead, the export name choosing the snapshot (no default export):
//! reads go to one active downstairs and are checked against the block
//! contexts it returns (another downstairs on a mismatch); writes, trims
//! and flushes are answered EPERM.
//!
//! With `NbdTls`, clients may (or, when required, must) upgrade the
//! connection with NBD_OPT_STARTTLS; transmission then runs over TLS with
//! the same code. TLS is x509 (rustls) or a pre-shared key (`psk`,
//! OpenSSL).

pub mod proto;
pub mod psk;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::error::{BlockError, Result};
use crate::upstairs::Volume;
use proto::*;

const MAX_IN_FLIGHT: usize = 64;
/// How long a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// NBD over TLS.
#[derive(Clone, Debug)]
pub struct NbdTls {
    pub creds: NbdTlsCreds,
    /// Refuse clients that do not STARTTLS (NBD_REP_ERR_TLS_REQD), as
    /// qemu-nbd does; otherwise TLS is offered and plain clients are served
    /// too.
    pub required: bool,
}

/// What the server proves itself with, and checks clients against.
#[derive(Clone)]
pub enum NbdTlsCreds {
    /// The server's certificate and key, and, to require client
    /// certificates, the CA that signs them (qemu's `tls-creds-x509`).
    X509(Arc<rustls::ServerConfig>),
    /// Pre-shared keys, one per client username (qemu's `tls-creds-psk`).
    Psk(Arc<psk::PskAcceptor>),
}

impl std::fmt::Debug for NbdTlsCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdTlsCreds::X509(_) => f.write_str("X509(..)"),
            NbdTlsCreds::Psk(a) => write!(f, "Psk({a:?})"),
        }
    }
}

struct Shared {
    volume: Volume,
    exports: Exports,
    rmw: Mutex<()>,
    tls: Option<NbdTls>,
}

/// What a server exports.
enum Exports {
    /// The live volume under one name.
    Live(Export),
    /// Every snapshot, read-only, by its name.
    Snapshots,
}

impl Shared {
    /// The exports a new connection may choose from (the snapshots as
    /// they are when it connects).
    async fn exports(&self) -> Vec<Export> {
        match &self.exports {
            Exports::Live(e) => vec![e.clone()],
            Exports::Snapshots => match self.volume.snapshots().await {
                Ok(list) => list
                    .into_iter()
                    .map(|s| Export {
                        name: s.name,
                        size: self.volume.size_bytes(),
                        block_size: self.volume.block_size,
                        read_only: true,
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the snapshots for an NBD client");
                    vec![]
                }
            },
        }
    }
}

/// Serves NBD on `listener` until `shutdown` resolves (then every open
/// connection is dropped).
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    volume: Volume,
    name: String,
    tls: Option<NbdTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    serve_tcp_shared(listener, shared(volume, name, tls), shutdown).await
}

/// Serves every snapshot of `volume` read-only on `listener`, the NBD
/// export name choosing the snapshot, until `shutdown` resolves.
pub async fn serve_snapshots_tcp(
    listener: tokio::net::TcpListener,
    volume: Volume,
    tls: Option<NbdTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let shared = Arc::new(Shared {
        volume,
        exports: Exports::Snapshots,
        rmw: Mutex::new(()),
        tls,
    });
    serve_tcp_shared(listener, shared, shutdown).await
}

async fn serve_tcp_shared(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            a = listener.accept() => match a {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    let sh = shared.clone();
                    conns.spawn(async move {
                        match serve_connection(s, sh).await {
                            Ok(()) => {}
                            Err(e @ BlockError::Auth(_)) => {
                                tracing::warn!(%peer, error = %e, "nbd client refused");
                            }
                            Err(e) => tracing::info!(%peer, error = %e, "nbd connection ended"),
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "nbd accept failed"),
            }
        }
    }
}

pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    volume: Volume,
    name: String,
    tls: Option<NbdTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let shared = shared(volume, name, tls);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            a = listener.accept() => match a {
                Ok((s, _)) => {
                    let sh = shared.clone();
                    conns.spawn(async move {
                        match serve_connection(s, sh).await {
                            Ok(()) => {}
                            Err(e @ BlockError::Auth(_)) => {
                                tracing::warn!(error = %e, "nbd client refused");
                            }
                            Err(e) => tracing::info!(error = %e, "nbd connection ended"),
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "nbd accept failed"),
            }
        }
    }
}

fn shared(volume: Volume, name: String, tls: Option<NbdTls>) -> Arc<Shared> {
    let export = Export {
        name,
        size: volume.size_bytes(),
        block_size: volume.block_size,
        read_only: false,
    };
    Arc::new(Shared {
        volume,
        exports: Exports::Live(export),
        rmw: Mutex::new(()),
        tls,
    })
}

fn io(e: std::io::Error) -> BlockError {
    BlockError::io("nbd connection", e)
}

/// How option haggling ended.
enum Haggled {
    /// With the export chosen (an index into the exports).
    Transmit(usize),
    Close,
    StartTls,
}

/// Reads and answers options until one ends the haggling.
async fn haggle<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    exports: &[Export],
    no_zeroes: bool,
    tls: Tls,
) -> Result<Haggled> {
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).await.map_err(io)?;
        let (opt, len) = parse_option_header(&h)?;
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await.map_err(io)?;
        let (next, chosen) = handle_option_in(opt, &data, exports, no_zeroes, tls);
        let (bytes, end) = match next {
            Next::Continue(b) => (b, None),
            Next::Transmit(b) => match chosen {
                Some(i) => (b, Some(Haggled::Transmit(i))),
                None => return Err(BlockError::protocol("transmission without an export")),
            },
            Next::Close(b) => (b, Some(Haggled::Close)),
            Next::StartTls(b) => (b, Some(Haggled::StartTls)),
        };
        if tls == Tls::Required && opt != OPT_STARTTLS && end.is_none() {
            tracing::info!(option = opt, "nbd client refused: TLS is required");
        }
        s.write_all(&bytes).await.map_err(io)?;
        s.flush().await.map_err(io)?;
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// Runs the handshake, upgrading to TLS when the client asks, then
/// transmission.
async fn serve_connection<S>(mut stream: S, sh: Arc<Shared>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    stream.write_all(&greeting()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let client_flags = stream.read_u32().await.map_err(io)?;
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    let tls = match &sh.tls {
        None => Tls::Unavailable,
        Some(t) if t.required => Tls::Required,
        Some(_) => Tls::Offered,
    };
    let exports = sh.exports().await;
    match haggle(&mut stream, &exports, no_zeroes, tls).await? {
        Haggled::Close => Ok(()),
        Haggled::Transmit(i) => transmit(stream, sh, exports[i].clone()).await,
        Haggled::StartTls => {
            let Some(t) = &sh.tls else {
                return Err(BlockError::protocol("STARTTLS without TLS settings"));
            };
            match &t.creds {
                NbdTlsCreds::X509(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                    let stream = handshake(async {
                        acceptor.accept(stream).await.map_err(|e| BlockError::Io {
                            what: "nbd TLS handshake".into(),
                            source: e,
                        })
                    })
                    .await?;
                    tracing::debug!("nbd client upgraded to TLS");
                    serve_tls(stream, sh, no_zeroes).await
                }
                NbdTlsCreds::Psk(acceptor) => {
                    let acceptor = acceptor.clone();
                    let stream = handshake(acceptor.accept(stream)).await?;
                    let (version, cipher, identity) = acceptor.describe(&stream);
                    tracing::info!(%identity, %version, %cipher, "nbd client upgraded to TLS-PSK");
                    serve_tls(stream, sh, no_zeroes).await
                }
            }
        }
    }
}

/// Bounds a TLS handshake by `TLS_HANDSHAKE_TIMEOUT`.
async fn handshake<T>(accept: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
        Ok(r) => r,
        Err(_) => Err(BlockError::protocol("nbd TLS handshake timed out")),
    }
}

/// Haggling again inside TLS, then transmission.
async fn serve_tls<S>(mut stream: S, sh: Arc<Shared>, no_zeroes: bool) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exports = sh.exports().await;
    match haggle(&mut stream, &exports, no_zeroes, Tls::Active).await? {
        Haggled::Transmit(i) => transmit(stream, sh, exports[i].clone()).await,
        Haggled::Close => Ok(()),
        Haggled::StartTls => Err(BlockError::protocol("STARTTLS inside TLS")),
    }
}

type ReplyMsg = (Vec<u8>, Option<Bytes>);

/// The transmission phase: requests in, replies out.
async fn transmit<S>(stream: S, sh: Arc<Shared>, export: Export) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<ReplyMsg>();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(256 << 10, wr);
        while let Some((head, data)) = rx.recv().await {
            let mut ok = w.write_all(&head).await.is_ok();
            if let Some(d) = data {
                ok = ok && w.write_all(&d).await.is_ok();
            }
            if ok && rx.is_empty() {
                ok = w.flush().await.is_ok();
            }
            if !ok {
                return;
            }
        }
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    });
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let export = Arc::new(export);
    let result = loop {
        let mut h = [0u8; REQUEST_LEN];
        if let Err(e) = rd.read_exact(&mut h).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(io(e))
            };
        }
        let req = match parse_request(&h) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        let mut payload = None;
        if req.cmd == CMD_WRITE {
            if req.len > MAX_REQUEST_LEN {
                break Err(BlockError::protocol(format!(
                    "write of {} bytes is too large",
                    req.len
                )));
            }
            match crate::buffers::read_payload(&mut rd, req.len as usize).await {
                Ok(buf) => payload = Some(buf),
                Err(e) => break Err(io(e)),
            }
        }
        if req.cmd == CMD_DISC {
            break Ok(());
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        let (sh, tx, export) = (sh.clone(), tx.clone(), export.clone());
        tokio::spawn(async move {
            let reply = match execute(&sh, &export, &req, payload).await {
                Ok(data) => (simple_reply(0, req.cookie), data),
                Err(e) => {
                    tracing::debug!(cmd = req.cmd, offset = req.offset, len = req.len, error = %e, "nbd request failed");
                    (simple_reply(errno(&e), req.cookie), None)
                }
            };
            let _ = tx.send(reply);
            drop(permit);
        });
    };
    // Let requests in flight finish and their replies go out.
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    drop(tx);
    let _ = writer.await;
    result
}

fn check_range(export: &Export, offset: u64, len: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|e| e > export.size) {
        return Err(BlockError::OutOfRange {
            start: offset,
            end: offset.saturating_add(len),
            total: export.size,
        });
    }
    Ok(())
}

async fn execute(
    sh: &Shared,
    export: &Export,
    req: &Request,
    payload: Option<Bytes>,
) -> Result<Option<Bytes>> {
    let v = &sh.volume;
    if export.read_only && req.cmd != CMD_READ {
        // A snapshot never changes: writes, trims and flushes are EPERM.
        return Err(BlockError::ReadOnly);
    }
    let bs = v.block_size as u64;
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let (off, len) = (req.offset, req.len as u64);
    match req.cmd {
        CMD_READ => {
            if req.len > MAX_REQUEST_LEN {
                return Err(BlockError::BadLength {
                    len: req.len as usize,
                    blocks: 0,
                    block_size: v.block_size,
                });
            }
            check_range(export, off, len)?;
            if len == 0 {
                return Ok(Some(Bytes::new()));
            }
            let first = off / bs;
            let end = (off + len).div_ceil(bs);
            let data = if export.read_only {
                v.read_snapshot(&export.name, first, end - first).await?
            } else {
                v.read(first, end - first).await?
            };
            let skip = (off - first * bs) as usize;
            Ok(Some(data.slice(skip..skip + len as usize)))
        }
        CMD_WRITE => {
            let data = payload.unwrap_or_default();
            check_range(export, off, len)?;
            if off.is_multiple_of(bs) && len.is_multiple_of(bs) {
                v.write(off / bs, data, fua).await?;
            } else {
                rmw(sh, off, &data, fua).await?;
            }
            Ok(None)
        }
        CMD_FLUSH => {
            v.flush().await?;
            Ok(None)
        }
        CMD_TRIM | CMD_WRITE_ZEROES => {
            check_range(export, off, len)?;
            let first = off.div_ceil(bs);
            let end = (off + len) / bs;
            if req.cmd == CMD_WRITE_ZEROES {
                // Partial blocks at either edge are zeroed by RMW.
                let head_end = (first * bs).min(off + len);
                if head_end > off {
                    rmw(sh, off, &vec![0u8; (head_end - off) as usize], false).await?;
                }
                let tail_start = (end * bs).max(head_end);
                if off + len > tail_start {
                    rmw(
                        sh,
                        tail_start,
                        &vec![0u8; (off + len - tail_start) as usize],
                        false,
                    )
                    .await?;
                }
            }
            // TRIM is advisory: only whole blocks are dropped.
            if end > first {
                v.write_zeroes(first, end - first, fua).await?;
            } else if fua {
                v.flush().await?;
            }
            Ok(None)
        }
        _ => Err(BlockError::protocol(format!(
            "unsupported command {}",
            req.cmd
        ))),
    }
}

/// Read-modify-write for a write that is not block-aligned.
async fn rmw(sh: &Shared, off: u64, data: &[u8], fua: bool) -> Result<()> {
    let v = &sh.volume;
    let bs = v.block_size as u64;
    let first = off / bs;
    let end = (off + data.len() as u64).div_ceil(bs);
    let _g = sh.rmw.lock().await;
    let old = v.read(first, end - first).await?;
    let mut buf = old.to_vec();
    let at = (off - first * bs) as usize;
    buf[at..at + data.len()].copy_from_slice(data);
    v.write(first, Bytes::from(buf), fua).await
}
