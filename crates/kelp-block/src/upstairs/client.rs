//! One upstairs-to-downstairs connection: connect, negotiate (Hello,
//! Activate, extent versions), then a reader task that forwards messages to
//! the upstairs event loop and a writer task that sends what it is given.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Event;
use crate::error::{BlockError, Result};
use crate::extent::ExtentVersion;
use crate::frame::{ErrorCode, FrameReader, Message, write_message};
use crate::region::RegionDef;

/// What negotiation learned.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub region: RegionDef,
    pub versions: Vec<ExtentVersion>,
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

impl BlockError {
    /// True for errors that mean a newer upstairs owns the region.
    pub fn is_fenced(&self) -> bool {
        match self {
            BlockError::Fenced(_) | BlockError::GenerationTooLow { .. } => true,
            BlockError::Remote { code, .. } => {
                *code == ErrorCode::Fenced as u16 || *code == ErrorCode::GenerationTooLow as u16
            }
            _ => false,
        }
    }
}

async fn expect(reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>) -> Result<Message> {
    match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
        Err(_) => Err(BlockError::protocol("downstairs did not answer in time")),
        Ok(Ok(Some(Message::Error { code, message }))) => Err(remote(code, message)),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(BlockError::protocol("downstairs closed the connection")),
        Ok(Err(e)) => Err(e),
    }
}

/// Connects and negotiates. Errors that mean "fenced" are reported as such
/// (`is_fenced`) so the caller stops retrying.
pub async fn negotiate(
    addr: &str,
    upstairs_id: u128,
    generation: u64,
) -> Result<(
    FrameReader<tokio::net::tcp::OwnedReadHalf>,
    OwnedWriteHalf,
    Handshake,
)> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| BlockError::io(format!("connect {addr}"), e))?;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd);
    let io = |e| BlockError::io(format!("send to {addr}"), e);
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
    let versions = match expect(&mut reader).await? {
        Message::ExtentVersions(v) => v,
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
    Ok((reader, wr, Handshake { region, versions }))
}

/// Starts the reader and writer tasks of a negotiated connection.
pub(crate) fn spawn(
    client: usize,
    id: u64,
    mut reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    writer: OwnedWriteHalf,
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
    events: mpsc::UnboundedSender<Event>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut logged = false;
    loop {
        if cancel.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        match negotiate(&addr, upstairs_id, generation).await {
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
                if !logged {
                    tracing::info!(client, %addr, error = %e, "downstairs not reachable; retrying");
                    logged = true;
                }
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
