//! One upstairs-to-downstairs connection: connect, authenticate (with a
//! secret: `auth.rs`), negotiate (Hello, Activate, extent versions), then a
//! reader task that forwards messages to the upstairs event loop and a
//! writer task that sends what it is given.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::driver::Event;
use crate::auth::{self, Secret, Transcript};
use crate::catalog::Snapshot;
use crate::error::{BlockError, Result};
use crate::extent::ExtentVersion;
use crate::frame::{ErrorCode, FrameReader, Message, write_message};
use crate::region::RegionDef;
use crate::transport::{self, ReadHalf, WriteHalf};

/// What negotiation learned.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub region: RegionDef,
    pub versions: Vec<ExtentVersion>,
    /// The highest flush number the region has begun.
    pub flush_mark: u64,
    pub snapshots: Vec<Snapshot>,
}

/// A live connection, as the event loop holds it.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<Message>,
    tasks: [JoinHandle<()>; 2],
}

impl Conn {
    pub fn send(&self, m: Message) {
        let _ = self.tx.send(m);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn remote(code: u16, message: String) -> BlockError {
    BlockError::Remote { code, message }
}

async fn expect(reader: &mut FrameReader<ReadHalf>) -> Result<Message> {
    match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
        Err(_) => Err(BlockError::protocol("downstairs did not answer in time")),
        Ok(Ok(Some(Message::Error { code, message }))) if code == ErrorCode::AuthFailed as u16 => {
            Err(BlockError::Auth(format!(
                "the downstairs refused this upstairs: {message}"
            )))
        }
        Ok(Ok(Some(Message::Error { code, message }))) => Err(remote(code, message)),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(BlockError::protocol(
            "downstairs closed the connection (see its log; a downstairs of a release before \
             block protocol version 2 closes without a word)",
        )),
        Ok(Err(e)) => Err(e),
    }
}

/// The upstairs' side of the Auth* exchange: the downstairs must prove the
/// secret first, then we do. A downstairs that cannot is told so and
/// refused.
async fn authenticate(
    secret: &Secret,
    upstairs_id: u128,
    reader: &mut FrameReader<ReadHalf>,
    wr: &mut WriteHalf,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let nonce_u = auth::nonce();
    write_message(
        wr,
        &Message::AuthHello {
            upstairs_id,
            nonce: nonce_u,
        },
    )
    .await?;
    wr.flush().await.map_err(|e| BlockError::io("send", e))?;
    let (region_uuid, nonce_d, proof) = match expect(reader).await? {
        Message::AuthChallenge {
            region_uuid,
            nonce,
            proof,
        } => (region_uuid, nonce, proof),
        m => {
            return Err(BlockError::Auth(format!(
                "expected AuthChallenge, got message type {}",
                m.type_code()
            )));
        }
    };
    let t = Transcript {
        upstairs_id,
        region_uuid,
        nonce_u,
        nonce_d,
    };
    if !secret.check_downstairs(&t, &proof) {
        let e = BlockError::Auth(
            "the downstairs could not prove it holds the volume's secret (a different secret, \
             or not the real downstairs); refusing it"
                .into(),
        );
        let _ = write_message(wr, &Message::error(&e)).await;
        let _ = wr.flush().await;
        return Err(e);
    }
    write_message(
        wr,
        &Message::AuthProof {
            proof: secret.upstairs_proof(&t),
        },
    )
    .await
}

/// How the upstairs reaches its downstairs.
#[derive(Clone, Default)]
pub struct Security {
    /// The volume's shared secret: proven to each downstairs, and each
    /// downstairs must prove it holds it too.
    pub secret: Option<Secret>,
    /// TLS to every downstairs, each verified against the config's CA as
    /// the host of its address; the config's client certificate, if any,
    /// is this upstairs' identity (mutual TLS).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("secret", &self.secret.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Connects and negotiates. Errors that mean "fenced" are reported as such
/// (`is_fenced`) so the caller stops retrying.
pub async fn negotiate(
    addr: &str,
    upstairs_id: u128,
    generation: u64,
    security: &Security,
) -> Result<(FrameReader<ReadHalf>, WriteHalf, Handshake)> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| BlockError::io(format!("connect {addr}"), e))?;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = match &security.tls {
        None => transport::split_tcp(stream),
        Some(config) => transport::connect_tls(stream, addr, config).await?,
    };
    let mut reader = FrameReader::new(rd);
    let io = |e| BlockError::io(format!("send to {addr}"), e);
    if let Some(secret) = &security.secret {
        authenticate(secret, upstairs_id, &mut reader, &mut wr).await?;
    }
    write_message(
        &mut wr,
        &Message::Hello {
            upstairs_id,
            generation,
        },
    )
    .await?;
    let region = match expect(&mut reader).await? {
        Message::HelloAck { region, .. } => region,
        m => {
            return Err(BlockError::protocol(format!(
                "expected HelloAck, got {m:?}"
            )));
        }
    };
    write_message(
        &mut wr,
        &Message::Activate {
            upstairs_id,
            generation,
        },
    )
    .await?;
    match expect(&mut reader).await? {
        Message::Activated { .. } => {}
        m => {
            return Err(BlockError::protocol(format!(
                "expected Activated, got {m:?}"
            )));
        }
    }
    write_message(&mut wr, &Message::ExtentVersionsPlease).await?;
    wr.flush().await.map_err(io)?;
    let (versions, flush_mark, snapshots) = match expect(&mut reader).await? {
        Message::ExtentVersions {
            versions,
            flush_mark,
            snapshots,
        } => (versions, flush_mark, snapshots),
        m => {
            return Err(BlockError::protocol(format!(
                "expected ExtentVersions, got {m:?}"
            )));
        }
    };
    if versions.len() != region.extent_count as usize {
        return Err(BlockError::protocol(
            "extent version count does not match region",
        ));
    }
    Ok((
        reader,
        wr,
        Handshake {
            region,
            versions,
            flush_mark,
            snapshots,
        },
    ))
}

/// Starts the reader and writer tasks of a negotiated connection.
pub(crate) fn spawn(
    client: usize,
    id: u64,
    mut reader: FrameReader<ReadHalf>,
    writer: WriteHalf,
    events: mpsc::UnboundedSender<Event>,
) -> Conn {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let ev = events.clone();
    let wtask = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(256 << 10, writer);
        let mut err = None;
        'outer: while let Some(m) = rx.recv().await {
            if let Err(e) = write_message(&mut w, &m).await {
                err = Some(e);
                break;
            }
            while let Ok(m) = rx.try_recv() {
                if let Err(e) = write_message(&mut w, &m).await {
                    err = Some(e);
                    break 'outer;
                }
            }
            if let Err(e) = w.flush().await {
                err = Some(BlockError::io("send", e));
                break;
            }
        }
        if let Some(e) = err {
            let _ = ev.send(Event::Gone {
                client,
                conn: id,
                error: e.to_string(),
            });
        }
    });
    let rtask = tokio::spawn(async move {
        let error = loop {
            match reader.next().await {
                Ok(Some(msg)) => {
                    if events
                        .send(Event::Ds {
                            client,
                            conn: id,
                            msg,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break "connection closed".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = events.send(Event::Gone {
            client,
            conn: id,
            error,
        });
    });
    Conn {
        id,
        tx,
        tasks: [wtask, rtask],
    }
}

/// Keeps trying to connect until it succeeds or is fenced, then reports.
/// `cancel` stops it (its client was given another address).
pub(crate) async fn connect_loop(
    client: usize,
    addr: String,
    upstairs_id: u128,
    generation: u64,
    security: Security,
    events: mpsc::UnboundedSender<Event>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut logged: Option<String> = None;
    loop {
        if cancel.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        match negotiate(&addr, upstairs_id, generation, &security).await {
            Ok((reader, writer, hs)) => {
                let _ = events.send(Event::Connected {
                    client,
                    addr,
                    reader: Box::new(reader),
                    writer,
                    hs,
                });
                return;
            }
            Err(e) if e.is_fenced() => {
                let _ = events.send(Event::Refused { client, error: e });
                return;
            }
            Err(e) => {
                // Logged once per distinct error: a refusal is worth
                // seeing even after the downstairs was merely down.
                let text = e.to_string();
                if logged.as_deref() != Some(text.as_str()) {
                    match e {
                        BlockError::Auth(_)
                        | BlockError::Tls(_)
                        | BlockError::VersionMismatch { .. } => {
                            tracing::error!(client, %addr, error = %text, "downstairs refused; retrying");
                        }
                        _ => {
                            tracing::info!(client, %addr, error = %text, "downstairs not reachable; retrying");
                        }
                    }
                    logged = Some(text);
                }
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
