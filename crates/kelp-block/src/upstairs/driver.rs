//! The upstairs' runtime shell: one tokio task that feeds the state machine
//! (`state.rs`) its inputs — guest requests from `Volume` handles, messages
//! and losses from the connection tasks (`client.rs`), ticks — and performs
//! the actions it returns (send on a connection, start or stop a connect
//! loop, close a connection, answer a request). Everything it decides is
//! decided in the core; this file only moves bytes and keeps the handles
//! (connections, connect loops, guests' reply channels) the core names by
//! number.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::UpstairsConfig;
use super::client::{self, Conn, Handshake};
use super::jobs::CLIENTS;
use super::state::{Action, GuestOp, Input, Output, Upstairs};
use crate::error::{BlockError, Result};
use crate::frame::{FrameReader, Message};
use crate::transport::{ReadHalf, WriteHalf};

/// What the connection tasks and the ticker tell the driver.
pub(crate) enum Event {
    Ds {
        client: usize,
        conn: u64,
        msg: Message,
    },
    Gone {
        client: usize,
        conn: u64,
        error: String,
    },
    Connected {
        client: usize,
        /// Where it connected: a connection to an address the client no
        /// longer has (it was replaced meanwhile) is dropped by the core.
        addr: String,
        reader: Box<FrameReader<ReadHalf>>,
        writer: WriteHalf,
        hs: Handshake,
    },
    Refused {
        client: usize,
        error: BlockError,
    },
    Tick,
}

/// A guest request and where to answer it.
pub(crate) type Request = (GuestOp, oneshot::Sender<Result<Output>>);

pub(crate) type Ready = oneshot::Sender<Result<(u32, u64)>>;

pub(crate) struct Driver {
    core: Upstairs,
    cfg: UpstairsConfig,
    epoch: tokio::time::Instant,
    events: mpsc::UnboundedSender<Event>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// Per client, the stop flag of its running connect loop.
    connecting: [Option<Arc<AtomicBool>>; CLIENTS],
    replies: HashMap<u64, oneshot::Sender<Result<Output>>>,
    next_req: u64,
    ready: Option<Ready>,
    /// Activation failed: nothing more to do.
    stop: bool,
}

impl Driver {
    pub fn new(cfg: UpstairsConfig, events: mpsc::UnboundedSender<Event>, ready: Ready) -> Self {
        let epoch = tokio::time::Instant::now();
        Driver {
            core: Upstairs::new(cfg.clone(), std::time::Duration::ZERO),
            cfg,
            epoch,
            events,
            conns: HashMap::new(),
            next_conn: 1,
            connecting: Default::default(),
            replies: HashMap::new(),
            next_req: 1,
            ready: Some(ready),
            stop: false,
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut guest: mpsc::UnboundedReceiver<Request>,
    ) {
        let actions = self.core.start(self.epoch.elapsed());
        self.perform(actions);
        while !self.stop {
            let serving = self.core.serving();
            tokio::select! {
                biased;
                ev = rx.recv() => match ev {
                    Some(ev) => self.event(ev),
                    None => break,
                },
                op = guest.recv(), if serving => match op {
                    Some((op, reply)) => {
                        let req = self.next_req;
                        self.next_req += 1;
                        self.replies.insert(req, reply);
                        self.input(Input::Guest { req, op });
                    }
                    None => break,
                },
            }
        }
        tracing::info!("upstairs stopping");
    }

    fn input(&mut self, input: Input) {
        let actions = self.core.handle(self.epoch.elapsed(), input);
        self.perform(actions);
    }

    fn event(&mut self, ev: Event) {
        let input = match ev {
            Event::Ds { client, conn, msg } => Input::Message { client, conn, msg },
            Event::Gone {
                client,
                conn,
                error,
            } => Input::Disconnected {
                client,
                conn,
                error,
            },
            Event::Connected {
                client,
                addr,
                reader,
                writer,
                hs,
            } => {
                let conn = self.next_conn;
                self.next_conn += 1;
                let c = client::spawn(client, conn, *reader, writer, self.events.clone());
                self.conns.insert(conn, c);
                Input::Connected {
                    client,
                    conn,
                    addr,
                    hs,
                }
            }
            Event::Refused { client, error } => Input::Refused { client, error },
            Event::Tick => Input::Tick,
        };
        self.input(input);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { conn, msg, .. } => {
                    if let Some(c) = self.conns.get(&conn) {
                        c.send(msg);
                    }
                }
                Action::Connect { client, addr } => {
                    let cancel = Arc::new(AtomicBool::new(false));
                    if let Some(old) = self.connecting[client].replace(cancel.clone()) {
                        old.store(true, Ordering::Release);
                    }
                    tokio::spawn(client::connect_loop(
                        client,
                        addr,
                        self.cfg.upstairs_id,
                        self.cfg.generation,
                        self.cfg.security.clone(),
                        self.events.clone(),
                        cancel,
                    ));
                }
                Action::StopConnecting { client } => {
                    if let Some(c) = self.connecting[client].take() {
                        c.store(true, Ordering::Release);
                    }
                }
                Action::Close { conn, .. } => {
                    // Dropping it aborts its tasks.
                    self.conns.remove(&conn);
                }
                Action::Reply { req, result } => {
                    if let Some(r) = self.replies.remove(&req) {
                        let _ = r.send(result);
                    }
                }
                Action::Ready(r) => {
                    self.stop = r.is_err();
                    if let Some(tx) = self.ready.take() {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    }
}
