//! The state machine driven by plain function calls: inputs in, actions
//! out, no sockets, tasks or clock.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::UpstairsConfig;
use super::client::Handshake;
use super::state::{Action, GuestOp, Input, Output, Upstairs};
use crate::catalog::Snapshot;
use crate::context::{BlockContext, block_crc};
use crate::error::{BlockError, Result};
use crate::extent::ExtentVersion;
use crate::frame::Message;
use crate::region::RegionDef;

const BS: usize = 512;

/// One upstairs core and what it has asked for so far.
struct Harness {
    up: Upstairs,
    now: Duration,
    /// Current connection of each downstairs.
    conn: [u64; 3],
    next_conn: u64,
    /// Frames sent, per downstairs, not yet looked at.
    sent: [Vec<Message>; 3],
    replies: HashMap<u64, Result<Output>>,
    ready: Option<Result<(u32, u64)>>,
    connects: Vec<usize>,
    closed: Vec<u64>,
    next_req: u64,
    def: RegionDef,
}

fn block(fill: u8) -> Vec<u8> {
    vec![fill; BS]
}

impl Harness {
    fn new() -> Harness {
        let targets = (0..3).map(|i| format!("ds{i}")).collect();
        let mut cfg = UpstairsConfig::new(targets, 2);
        cfg.upstairs_id = 7;
        let mut h = Harness {
            up: Upstairs::new(cfg, Duration::ZERO),
            now: Duration::ZERO,
            conn: [0; 3],
            next_conn: 1,
            sent: Default::default(),
            replies: HashMap::new(),
            ready: None,
            connects: vec![],
            closed: vec![],
            next_req: 1,
            def: RegionDef::new(BS as u32, 4, 2).unwrap(),
        };
        let a = h.up.start(h.now);
        h.take(a);
        h
    }

    fn take(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { client, conn, msg } => {
                    assert_eq!(conn, self.conn[client], "sent on a stale connection");
                    self.sent[client].push(msg);
                }
                Action::Connect { client, .. } => self.connects.push(client),
                Action::StopConnecting { .. } => {}
                Action::Close { conn, .. } => self.closed.push(conn),
                Action::Reply { req, result } => {
                    assert!(self.replies.insert(req, result).is_none(), "answered twice");
                }
                Action::Ready(r) => self.ready = Some(r),
            }
        }
    }

    fn input(&mut self, i: Input) {
        let a = self.up.handle(self.now, i);
        self.take(a);
    }

    fn connect(&mut self, c: usize, versions: Vec<ExtentVersion>) {
        self.connect_with(c, versions, 0, vec![]);
    }

    fn connect_with(
        &mut self,
        c: usize,
        versions: Vec<ExtentVersion>,
        flush_mark: u64,
        snapshots: Vec<Snapshot>,
    ) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conn[c] = conn;
        let hs = Handshake {
            region: RegionDef {
                uuid: [c as u8; 16],
                ..self.def
            },
            versions,
            flush_mark,
            snapshots,
        };
        self.input(Input::Connected {
            client: c,
            conn,
            addr: format!("ds{c}"),
            hs,
        });
    }

    fn msg(&mut self, c: usize, msg: Message) {
        let conn = self.conn[c];
        self.input(Input::Message {
            client: c,
            conn,
            msg,
        });
    }

    fn guest(&mut self, op: GuestOp) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        self.input(Input::Guest { req, op });
        req
    }

    fn write(&mut self, start: u64, fill: u8) -> u64 {
        let data = block(fill);
        self.guest(GuestOp::Write {
            start,
            crcs: vec![block_crc(&data)],
            data: Bytes::from(data),
            fua: false,
        })
    }

    /// Takes the frames sent to `c` so far.
    fn drain(&mut self, c: usize) -> Vec<Message> {
        std::mem::take(&mut self.sent[c])
    }

    /// Acknowledges every job frame sent to `c` (reads get `fill`).
    fn ack_all(&mut self, c: usize) {
        for m in self.drain(c) {
            let reply = match m {
                Message::Read { job, count, .. } => {
                    let data = block(0).repeat(count as usize);
                    Message::ReadReply {
                        job,
                        contexts: vec![BlockContext::Unwritten; count as usize],
                        data: Bytes::from(data),
                    }
                }
                Message::Write { job, .. }
                | Message::Flush { job, .. }
                | Message::SnapshotRecord { job, .. }
                | Message::SnapshotDelete { job, .. }
                | Message::ExtentStamp { job, .. } => Message::Ack { job },
                Message::Ping(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            };
            self.msg(c, reply);
        }
    }

    /// All three connect with clean, equal extents and the first flush is
    /// acknowledged everywhere.
    fn active() -> Harness {
        let mut h = Harness::new();
        for c in 0..3 {
            h.connect(c, vec![ExtentVersion::default(); 2]);
        }
        for c in 0..3 {
            h.ack_all(c);
        }
        h
    }

    fn reply(&self, req: u64) -> Option<&Result<Output>> {
        self.replies.get(&req)
    }
}

fn job_of(m: &Message) -> u64 {
    match m {
        Message::Write { job, .. }
        | Message::Read { job, .. }
        | Message::Flush { job, .. }
        | Message::WriteZeroes { job, .. } => *job,
        other => panic!("not a job: {other:?}"),
    }
}

#[test]
fn activation_waits_for_all_three_then_serves() {
    let mut h = Harness::new();
    assert_eq!(h.connects, vec![0, 1, 2], "dials all three at start");
    h.connect(0, vec![ExtentVersion::default(); 2]);
    h.connect(1, vec![ExtentVersion::default(); 2]);
    assert!(h.ready.is_none() && !h.up.serving(), "two are not enough");
    h.connect(2, vec![ExtentVersion::default(); 2]);
    assert!(matches!(h.ready, Some(Ok((512, 8)))), "{:?}", h.ready);
    assert!(h.up.serving());
    for c in 0..3 {
        let sent = h.drain(c);
        assert!(
            matches!(sent[..], [Message::Flush { .. }]),
            "a first flush starts the replay horizon: {sent:?}"
        );
    }
}

#[test]
fn activation_copies_the_freshest_extent() {
    let mut h = Harness::new();
    let stale = vec![ExtentVersion::default(); 2];
    let mut fresh = stale.clone();
    fresh[1] = ExtentVersion {
        generation: 1,
        flush: 3,
        dirty: false,
    };
    h.connect(0, stale.clone());
    h.connect(1, fresh);
    h.connect(2, stale);
    assert!(h.ready.is_none(), "not serving before the repair");
    let fetch = h.drain(1);
    assert!(
        matches!(fetch[..], [Message::ExtentFetch { extent: 1, .. }]),
        "{fetch:?}"
    );
}

#[test]
fn a_write_is_acknowledged_by_the_second_ack() {
    let mut h = Harness::active();
    let req = h.write(0, 0xA1);
    let frames: Vec<_> = (0..3).map(|c| h.drain(c)).collect();
    let job = job_of(&frames[0][0]);
    for f in &frames {
        assert!(matches!(f[..], [Message::Write { .. }]), "{f:?}");
    }
    h.msg(2, Message::Ack { job });
    assert!(h.reply(req).is_none(), "one ack is not a quorum");
    h.msg(0, Message::Ack { job });
    assert!(matches!(h.reply(req), Some(Ok(Output::Done))));
    let flush = h.guest(GuestOp::Flush);
    let fjob = job_of(&h.drain(1)[0]);
    h.msg(1, Message::Ack { job: fjob });
    assert!(h.reply(flush).is_none());
    h.msg(2, Message::Ack { job: fjob });
    assert!(matches!(h.reply(flush), Some(Ok(Output::Done))));
}

#[test]
fn a_bad_block_is_read_elsewhere_and_written_back() {
    let mut h = Harness::active();
    let req = h.guest(GuestOp::Read { start: 3, count: 1 });
    let (c, job) = (0..3)
        .find_map(|c| h.drain(c).first().map(|m| (c, job_of(m))))
        .expect("the read went somewhere");
    let good = block(0x5A);
    let mut bad = good.clone();
    bad[7] ^= 1;
    h.msg(
        c,
        Message::ReadReply {
            job,
            contexts: vec![BlockContext::Data(block_crc(&good))],
            data: Bytes::from(bad),
        },
    );
    assert!(h.reply(req).is_none(), "damaged data is never returned");
    let (c2, job2) = (0..3)
        .find_map(|c| h.drain(c).first().map(|m| (c, job_of(m))))
        .expect("the read is retried");
    assert_ne!(c2, c, "retried on another downstairs");
    h.msg(
        c2,
        Message::ReadReply {
            job: job2,
            contexts: vec![BlockContext::Data(block_crc(&good))],
            data: Bytes::from(good.clone()),
        },
    );
    assert!(
        matches!(h.reply(req), Some(Ok(Output::Data(d))) if d[..] == good[..]),
        "the good copy is returned"
    );
    for d in 0..3 {
        let sent = h.drain(d);
        assert!(
            matches!(&sent[..], [Message::Write { start: 3, data, .. }] if data[..] == good[..]),
            "good data written back to {d}: {sent:?}"
        );
    }
}

#[test]
fn an_offline_downstairs_is_replayed_in_order() {
    let mut h = Harness::active();
    let w1 = h.write(0, 1);
    h.ack_all(0);
    h.ack_all(1);
    h.ack_all(2);
    let old = h.conn[2];
    h.input(Input::Disconnected {
        client: 2,
        conn: old,
        error: "reset".into(),
    });
    assert_eq!(h.up.status().modes[2], "offline");
    assert_eq!(h.connects.last(), Some(&2), "it is dialled again");
    let w2 = h.write(1, 2);
    assert!(h.drain(2).is_empty(), "nothing is sent while it is away");
    h.ack_all(0);
    h.ack_all(1);
    assert!(matches!(h.reply(w1), Some(Ok(_))) && matches!(h.reply(w2), Some(Ok(_))));
    // A message on the old connection is ignored.
    h.input(Input::Message {
        client: 2,
        conn: old,
        msg: Message::Ack { job: 1 },
    });
    h.connect(2, vec![ExtentVersion::default(); 2]);
    let replayed: Vec<u64> = h
        .drain(2)
        .iter()
        .map(|m| match m {
            Message::Write { start, .. } => *start,
            other => panic!("replay sends the writes since its last flush: {other:?}"),
        })
        .collect();
    assert_eq!(replayed, vec![0, 1], "both writes, in order");
    assert_eq!(h.up.status().modes[2], "active");
}

#[test]
fn a_fenced_upstairs_fails_all_io_and_sends_nothing() {
    let mut h = Harness::active();
    let w = h.write(0, 1);
    for c in 0..3 {
        h.drain(c);
    }
    h.msg(1, Message::Fenced { generation: 3 });
    assert!(matches!(h.reply(w), Some(Err(BlockError::Fenced(_)))));
    assert!(h.up.status().fenced);
    assert_eq!(h.closed.len(), 3, "every connection is dropped");
    let w2 = h.write(1, 2);
    assert!(matches!(h.reply(w2), Some(Err(e)) if e.is_fenced()));
    h.now += Duration::from_secs(60);
    h.input(Input::Tick);
    assert!(
        h.sent.iter().all(|s| s.is_empty()),
        "a fenced upstairs sends nothing"
    );
}

#[test]
fn ticks_flush_after_the_interval_and_drop_a_silent_downstairs() {
    let mut h = Harness::active();
    h.write(0, 1);
    h.ack_all(0);
    h.ack_all(1);
    h.ack_all(2);
    h.now += Duration::from_millis(100);
    h.input(Input::Tick);
    assert!(
        !h.drain(0)
            .iter()
            .any(|m| matches!(m, Message::Flush { .. }))
    );
    h.now += Duration::from_millis(500);
    h.input(Input::Tick);
    assert!(
        h.drain(0)
            .iter()
            .any(|m| matches!(m, Message::Flush { .. })),
        "automatic flush once the interval has passed"
    );
    // Downstairs 1 stays silent past the IO timeout; the others answer.
    h.now += Duration::from_secs(16);
    h.msg(0, Message::Pong(0));
    h.msg(2, Message::Pong(0));
    let conn = h.conn[1];
    h.input(Input::Tick);
    assert!(h.closed.contains(&conn), "the silent one is dropped");
    assert_eq!(h.up.status().modes[1], "offline");
}

fn snap_req(name: &str) -> GuestOp {
    GuestOp::Snapshot {
        name: name.into(),
        guid: 0xabc,
        created: 5,
    }
}

/// A snapshot is a flush behind every earlier job, with the next flush
/// number, sent to all three, and succeeds only when all three have
/// acknowledged it (two are not enough); then it is listed, a second one of
/// the same name is refused, and a delete goes to all three.
#[test]
fn a_snapshot_needs_every_downstairs() {
    let mut h = Harness::active();
    let w = h.write(0, 0xA1);
    let wjob = job_of(&h.drain(0)[0]);
    let _ = (h.drain(1), h.drain(2));
    let next = h.up.status().next_flush;
    let req = h.guest(snap_req("s1"));
    let mut job = 0;
    for c in 0..3 {
        let sent = h.drain(c);
        match &sent[..] {
            [
                Message::Flush {
                    job: j,
                    deps,
                    flush,
                    snapshot: Some(s),
                    ..
                },
            ] => {
                assert_eq!(*flush, next);
                assert_eq!(s.flush, next);
                assert_eq!((s.name.as_str(), s.guid, s.created), ("s1", 0xabc, 5));
                assert_eq!(deps, &vec![wjob], "behind the earlier write");
                job = *j;
            }
            other => panic!("expected a snapshot flush: {other:?}"),
        }
    }
    for c in 0..3 {
        h.msg(c, Message::Ack { job: wjob });
    }
    assert!(matches!(h.reply(w), Some(Ok(Output::Done))));
    h.msg(0, Message::Ack { job });
    h.msg(2, Message::Ack { job });
    assert!(h.reply(req).is_none(), "two of three are not enough");
    h.msg(1, Message::Ack { job });
    match h.reply(req) {
        Some(Ok(Output::Snapshot(s))) => assert_eq!((s.name.as_str(), s.flush), ("s1", next)),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.up.status().next_flush, next + 1);
    let dup = h.guest(snap_req("s1"));
    assert!(
        matches!(h.reply(dup), Some(Err(BlockError::SnapshotExists(_)))),
        "{:?}",
        h.reply(dup)
    );
    let bad = h.guest(snap_req(".bad"));
    assert!(matches!(h.reply(bad), Some(Err(BlockError::Invalid(_)))));
    let list = h.guest(GuestOp::Snapshots);
    match h.reply(list) {
        Some(Ok(Output::Snapshots(v))) => assert_eq!(v.len(), 1),
        other => panic!("{other:?}"),
    }
    let del = h.guest(GuestOp::SnapshotDelete { name: "s1".into() });
    let mut djob = 0;
    for c in 0..3 {
        match &h.drain(c)[..] {
            [Message::SnapshotDelete { job, name, .. }] if name == "s1" => djob = *job,
            other => panic!("expected a delete: {other:?}"),
        }
    }
    for c in 0..3 {
        h.msg(c, Message::Ack { job: djob });
    }
    assert!(matches!(h.reply(del), Some(Ok(Output::Done))));
    let gone = h.guest(GuestOp::SnapshotDelete { name: "s1".into() });
    assert!(matches!(
        h.reply(gone),
        Some(Err(BlockError::NoSuchSnapshot(_)))
    ));
}

/// One downstairs failing the snapshot fails the request, naming it; one
/// not active refuses it up front.
#[test]
fn a_snapshot_fails_without_every_downstairs() {
    let mut h = Harness::active();
    let req = h.guest(snap_req("s1"));
    let job = job_of(&h.drain(0)[0]);
    let _ = (h.drain(1), h.drain(2));
    h.msg(0, Message::Ack { job });
    h.msg(1, Message::Ack { job });
    h.msg(
        2,
        Message::JobError {
            job,
            code: crate::frame::ErrorCode::Io as u16,
            message: "disk on fire".into(),
        },
    );
    match h.reply(req) {
        Some(Err(BlockError::NoQuorum(m))) => {
            assert!(m.contains("missing downstairs 2 (ds2"), "{m}");
            assert!(m.contains("0 (ds0), 1 (ds1)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let again = h.guest(snap_req("s2"));
    match h.reply(again) {
        Some(Err(BlockError::NoQuorum(m))) => assert!(m.contains("downstairs 2 (ds2)"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Flush numbers go on above every downstairs' flush mark, not only above
/// the extents' flushes: a snapshot of a clean region stamps no extent.
#[test]
fn reconcile_starts_above_the_flush_mark() {
    let mut h = Harness::new();
    let snap = Snapshot {
        name: "s".into(),
        guid: 1,
        flush: 9,
        created: 0,
    };
    let v = vec![
        ExtentVersion {
            generation: 1,
            flush: 4,
            dirty: false,
        };
        2
    ];
    h.connect_with(0, v.clone(), 9, vec![snap.clone()]);
    h.connect_with(1, v.clone(), 7, vec![snap]);
    h.connect_with(2, v, 4, vec![]);
    assert!(matches!(h.ready, Some(Ok(_))));
    let sent = h.drain(0);
    assert!(
        matches!(sent[..], [Message::Flush { flush: 10, .. }]),
        "{sent:?}"
    );
    // A name any replica holds is taken.
    for c in 0..3 {
        h.ack_all(c);
    }
    let r = h.guest(snap_req("s"));
    assert!(matches!(
        h.reply(r),
        Some(Err(BlockError::SnapshotExists(_)))
    ));
}

/// A downstairs that took the snapshot but lost the connection before its
/// acknowledgement arrived is not sent it again when it returns (it would
/// refuse the name): its snapshot list shows it ran, and the request
/// succeeds.
#[test]
fn a_snapshot_whose_ack_was_lost_is_not_replayed() {
    let mut h = Harness::active();
    let req = h.guest(snap_req("s1"));
    let sent = h.drain(2);
    let Some(Message::Flush {
        job,
        flush,
        snapshot: Some(s),
        ..
    }) = sent.first().cloned()
    else {
        panic!("{sent:?}")
    };
    let _ = (h.drain(0), h.drain(1));
    h.msg(0, Message::Ack { job });
    h.msg(1, Message::Ack { job });
    let conn = h.conn[2];
    h.input(Input::Disconnected {
        client: 2,
        conn,
        error: "gone".into(),
    });
    assert!(
        h.reply(req).is_none(),
        "an offline replica may still take it"
    );
    let taken = Snapshot { flush, ..s };
    h.connect_with(2, vec![ExtentVersion::default(); 2], flush, vec![taken]);
    let resent = h.drain(2);
    assert!(
        !resent.iter().any(|m| matches!(m, Message::Flush { .. })),
        "{resent:?}"
    );
    assert!(
        matches!(h.reply(req), Some(Ok(Output::Snapshot(_)))),
        "{:?}",
        h.reply(req)
    );
}

/// A downstairs that crashed after stamping its extents for a snapshot's
/// flush but before recording the snapshot does not count as having taken
/// it: the flush is sent again (its region refuses it, the flush number
/// being behind it now), and the request fails naming that replica instead
/// of answering 200 with the snapshot on two replicas of three.
#[test]
fn a_snapshot_stamped_but_not_recorded_is_not_counted() {
    let mut h = Harness::active();
    let req = h.guest(snap_req("s1"));
    let sent = h.drain(2);
    let Some(Message::Flush { job, flush, .. }) = sent.first().cloned() else {
        panic!("{sent:?}")
    };
    let _ = (h.drain(0), h.drain(1));
    h.msg(0, Message::Ack { job });
    h.msg(1, Message::Ack { job });
    let conn = h.conn[2];
    h.input(Input::Disconnected {
        client: 2,
        conn,
        error: "gone".into(),
    });
    let stamped = ExtentVersion {
        generation: 2,
        flush,
        dirty: false,
    };
    h.connect_with(2, vec![stamped; 2], flush, vec![]);
    let resent = h.drain(2);
    let again = resent.iter().find_map(|m| match m {
        Message::Flush {
            job,
            snapshot: Some(_),
            ..
        } => Some(*job),
        _ => None,
    });
    let Some(again) = again else {
        panic!("the snapshot flush is sent again: {resent:?}")
    };
    h.msg(
        2,
        Message::JobError {
            job: again,
            code: crate::frame::ErrorCode::Invalid as u16,
            message: "snapshot s1 at flush is not after this region's flush mark".into(),
        },
    );
    match h.reply(req) {
        Some(Err(BlockError::NoQuorum(m))) => assert!(m.contains("ds2"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn snapshot(name: &str, flush: u64) -> Snapshot {
    Snapshot {
        name: name.into(),
        guid: 0x100 + flush as u128,
        flush,
        created: 1,
    }
}

/// At activation a downstairs with a lower flush mark is given the
/// snapshots the freshest downstairs hold and loses the ones only it holds
/// (deleted while it was away), deletes first, after the extent copies and
/// before the first flush.
#[test]
fn reconcile_brings_a_lagging_replica_to_the_others_snapshots() {
    let mut h = Harness::new();
    let v = |flush| ExtentVersion {
        generation: 1,
        flush,
        dirty: false,
    };
    let (s1, old, s2) = (snapshot("s1", 5), snapshot("old", 7), snapshot("s2", 12));
    // Extent 1 was written after s1 and flushed at 8; ds2 missed it.
    h.connect_with(0, vec![v(5), v(8)], 12, vec![s1.clone(), s2.clone()]);
    h.connect_with(1, vec![v(5), v(8)], 12, vec![s1.clone(), s2.clone()]);
    h.connect_with(2, vec![v(5), v(7)], 9, vec![s1.clone(), old.clone()]);
    assert!(h.ready.is_none(), "extent 1 is copied first");
    let fetch = h.drain(0);
    let Some(Message::ExtentFetch { job, extent: 1, .. }) = fetch.first().cloned() else {
        panic!("{fetch:?}")
    };
    assert!(
        h.drain(2).is_empty(),
        "nothing for ds2 before the copy: {:?}",
        h.sent[2]
    );
    let data = vec![0u8; 4 * BS];
    h.msg(
        0,
        Message::ExtentData {
            job,
            version: v(8),
            contexts: vec![BlockContext::Unwritten; 4],
            births: vec![0; 4],
            saved: vec![],
            data: Bytes::from(data),
        },
    );
    let mut replaces = vec![];
    for c in [1, 2] {
        let sent = h.drain(c);
        let [Message::ExtentReplace { job, .. }] = sent[..] else {
            panic!("{c}: {sent:?}")
        };
        replaces.push((c, job));
    }
    for (c, job) in replaces {
        h.msg(c, Message::Ack { job });
    }
    assert!(matches!(h.ready, Some(Ok(_))));
    let sent = h.drain(2);
    match &sent[..] {
        [
            Message::SnapshotDelete { name, .. },
            Message::SnapshotRecord { snapshot, deps, .. },
            Message::Flush {
                flush: 13,
                deps: fdeps,
                ..
            },
        ] => {
            assert_eq!(name, "old");
            assert_eq!(snapshot, &s2);
            assert_eq!(deps.len(), 1, "after the delete");
            assert_eq!(fdeps.len(), 2, "the flush after both");
        }
        other => panic!("{other:?}"),
    }
    for c in 0..2 {
        let sent = h.drain(c);
        assert!(
            matches!(sent[..], [Message::Flush { flush: 13, .. }]),
            "{sent:?}"
        );
    }
    let list = h.guest(GuestOp::Snapshots);
    assert!(
        matches!(h.reply(list), Some(Ok(Output::Snapshots(v))) if v == &vec![s1.clone(), s2.clone()])
    );
    for (m, c) in sent.iter().zip([2, 2, 2]) {
        h.msg(c, Message::Ack { job: job_of_any(m) });
    }
    assert_eq!(h.up.clients_snapshots(2), vec![s1, s2]);
}

fn job_of_any(m: &Message) -> u64 {
    match m {
        Message::SnapshotDelete { job, .. }
        | Message::SnapshotRecord { job, .. }
        | Message::ExtentStamp { job, .. } => *job,
        other => job_of(other),
    }
}

/// A downstairs faulted during a snapshot (it failed it) is given the
/// snapshot when live repair starts, before any extent copy or guest write
/// reaches it, followed by a flush that brings its flush mark to the
/// others'.
#[test]
fn live_repair_gives_the_returning_replica_the_snapshot_first() {
    let mut h = Harness::active();
    let req = h.guest(snap_req("s1"));
    let job = job_of(&h.drain(0)[0]);
    let _ = (h.drain(1), h.drain(2));
    h.msg(0, Message::Ack { job });
    h.msg(1, Message::Ack { job });
    h.msg(
        2,
        Message::JobError {
            job,
            code: crate::frame::ErrorCode::Io as u16,
            message: "killed".into(),
        },
    );
    assert!(matches!(h.reply(req), Some(Err(BlockError::NoQuorum(_)))));
    let taken = match h.up.clients_snapshots(0).first() {
        Some(s) => s.clone(),
        None => panic!("ds0 took it"),
    };
    // It comes back without the snapshot, one extent dirty.
    let dirty = ExtentVersion {
        dirty: true,
        ..ExtentVersion::default()
    };
    h.connect_with(
        2,
        vec![dirty, ExtentVersion::default()],
        taken.flush - 1,
        vec![],
    );
    let sent = h.drain(2);
    match &sent[..] {
        [
            Message::ExtentStamp { extent: 0, .. },
            Message::SnapshotRecord { snapshot, .. },
            Message::Flush { flush, .. },
        ] => {
            assert_eq!(snapshot, &taken);
            assert!(*flush > taken.flush);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            h.drain(0).last(),
            Some(Message::ExtentFetch { extent: 0, .. })
        ),
        "then the extents"
    );
    for m in &sent {
        h.msg(2, Message::Ack { job: job_of_any(m) });
    }
    assert_eq!(h.up.clients_snapshots(2), vec![taken]);
}

/// A downstairs that reconnects before the loss of its old connection is
/// seen (kill -9 and a quick restart) is treated as having dropped out
/// then: a snapshot it had not acknowledged is answered, not left waiting.
#[test]
fn a_quick_reconnect_during_a_snapshot_answers_it() {
    let mut h = Harness::active();
    let req = h.guest(snap_req("s1"));
    let job = job_of(&h.drain(0)[0]);
    let _ = (h.drain(1), h.drain(2));
    h.msg(0, Message::Ack { job });
    h.msg(2, Message::Ack { job });
    h.connect_with(1, vec![ExtentVersion::default(); 2], 0, vec![]);
    let resent = h.drain(1);
    let Some(Message::Flush { job: again, .. }) = resent.first().cloned() else {
        panic!("replayed: {resent:?}")
    };
    h.msg(1, Message::Ack { job: again });
    assert!(
        matches!(h.reply(req), Some(Ok(Output::Snapshot(_)))),
        "{:?} {:?}",
        h.reply(req),
        h.up.status()
    );
}
