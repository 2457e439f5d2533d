//! The simulated world of one seed: upstairs cores (the current one and any
//! older ones still running), three downstairs, the connections between
//! them, a clock and one RNG. Each step the scheduler picks one enabled
//! event at random (deliver the next frame of a connection in one
//! direction, a connect attempt, a tick, a guest request, or a fault) and
//! the invariants are checked as its effects happen.
//!
//! Fault model (TCP's): frames of one connection arrive in order, once;
//! frames of different connections and directions interleave freely and
//! wait arbitrarily long (delay). A drop is a connection reset: frames in
//! flight both ways are lost and both ends see it close. A duplicate is a
//! frame sent again on a new connection after a reset (the upstairs
//! replays). A downstairs can be killed (its connections close after what
//! it already sent arrives) and restarted from its region on disk, keeping
//! every write it made; its host can lose power, which also drops or tears
//! unsynced writes (`SimDownstairs::power_cut`); the upstairs can be
//! restarted with a higher generation, the old one either dead or still
//! running (and fenced); a power cut kills everything and cuts all three
//! hosts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use kelp_block::context::block_crc;
use kelp_block::frame::Message;
use kelp_block::upstairs::{Action, GuestOp, Input, Output, Upstairs, UpstairsConfig};

use crate::downstairs::SimDownstairs;
use crate::oracle::{BS, Issued, Oracle, pattern};

pub const BLOCKS: u64 = 8;
const TICK: Duration = Duration::from_millis(100);
/// How often (percent of steps) a fault happens while faults are on.
const FAULT_PERCENT: u64 = 3;

/// splitmix64: small, fast, and the same on every platform forever.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

enum Pending {
    Write(Issued),
    Flush { seq: u64, incarnation: u32 },
    Read { start: u64, floors: Vec<u64> },
}

struct Up {
    core: Upstairs,
    generation: u64,
    id: u128,
    incarnation: u32,
    alive: bool,
    connecting: [bool; 3],
    pending: HashMap<u64, Pending>,
    next_req: u64,
    /// The drain's FlushAll request and its answer.
    drain: Option<(u64, Option<bool>)>,
}

struct Conn {
    up: usize,
    client: usize,
    to_ds: VecDeque<Message>,
    to_up: VecDeque<Message>,
    /// The downstairs end has closed (it died, or fenced this session):
    /// what it sent still arrives, then the upstairs sees the close.
    closing: bool,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    ToDs(u64),
    Work(usize, u64),
    ToUp(u64),
    Closed(u64),
    Connect(usize, usize),
    Tick,
    Guest,
    ZombieWrite(usize),
    Reset(u64),
    Kill(usize),
    /// Kill, and the downstairs' host loses power.
    HostPowerCut(usize),
    Restart(usize),
    NewUpstairs {
        keep_old: bool,
    },
    PowerCut,
}

pub struct World {
    rng: Rng,
    now: Duration,
    ups: Vec<Up>,
    ds: Vec<SimDownstairs>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    oracle: Oracle,
    trace: bool,
    steps: u64,
    max_replay_jobs: usize,
    failure: Option<String>,
}

/// What a seed did, for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub steps: u64,
    pub upstairs: usize,
}

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let ds = (0..3).map(|_| SimDownstairs::new()).collect();
        let mut rng = Rng::new(seed);
        let max_replay_jobs = 4 + rng.below(60) as usize;
        let mut w = World {
            rng,
            now: Duration::ZERO,
            ups: vec![],
            ds,
            conns: BTreeMap::new(),
            next_conn: 1,
            oracle: Oracle::new(BLOCKS),
            trace,
            steps: 0,
            max_replay_jobs,
            failure: None,
        };
        w.new_upstairs();
        w
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[step {} t={:?}] {}", self.steps, self.now, what());
        }
    }

    fn fail(&mut self, why: String) {
        self.log(|| format!("INVARIANT VIOLATED: {why}"));
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    fn current(&self) -> usize {
        self.ups.len() - 1
    }

    fn new_upstairs(&mut self) {
        let generation = self.ups.iter().map(|u| u.generation).max().unwrap_or(0) + 1;
        let targets = (0..3).map(|i| format!("ds{i}")).collect();
        let mut cfg = UpstairsConfig::new(targets, generation);
        cfg.upstairs_id = self.rng.next() as u128;
        cfg.max_replay_jobs = self.max_replay_jobs;
        let incarnation = self.ups.len() as u32;
        self.oracle.new_incarnation(incarnation);
        let mut core = Upstairs::new(cfg.clone(), self.now);
        let actions = core.start(self.now);
        self.ups.push(Up {
            core,
            generation,
            id: cfg.upstairs_id,
            incarnation,
            alive: true,
            connecting: [false; 3],
            pending: HashMap::new(),
            next_req: 1,
            drain: None,
        });
        self.log(|| format!("upstairs {incarnation} starts with generation {generation}"));
        let u = self.current();
        self.perform(u, actions);
    }

    /// Runs `chaos` steps with faults, then heals everything and checks
    /// that the replicas converge.
    pub fn run(&mut self, chaos: u64) -> Result<Stats, String> {
        for _ in 0..chaos {
            self.step(true);
            if let Some(f) = &self.failure {
                return Err(f.clone());
            }
        }
        self.heal()?;
        self.final_read()?;
        Ok(Stats {
            steps: self.steps,
            upstairs: self.ups.len(),
        })
    }

    fn events(&mut self, chaos: bool) -> Vec<(u64, Event)> {
        let mut ev = vec![];
        for (&id, c) in &self.conns {
            if !c.to_ds.is_empty() && !c.closing {
                ev.push((10, Event::ToDs(id)));
            }
            if !c.to_up.is_empty() {
                ev.push((10, Event::ToUp(id)));
            }
            if c.closing && c.to_up.is_empty() {
                ev.push((5, Event::Closed(id)));
            }
        }
        for (u, up) in self.ups.iter().enumerate() {
            if !up.alive {
                continue;
            }
            for c in 0..3 {
                if up.connecting[c] && self.ds[c].up() {
                    ev.push((4, Event::Connect(u, c)));
                }
            }
        }
        ev.push((3, Event::Tick));
        let cur = self.current();
        let up = &self.ups[cur];
        if chaos && up.alive && up.core.serving() && up.pending.len() < 8 {
            ev.push((6, Event::Guest));
        }
        for i in 0..3 {
            if !self.ds[i].up() {
                ev.push((2, Event::Restart(i)));
            }
            for conn in self.ds[i].busy_sessions() {
                ev.push((8, Event::Work(i, conn)));
            }
        }
        if chaos {
            for (u, up) in self.ups.iter().enumerate() {
                if u != cur && up.alive && up.core.serving() && !up.core.halted() {
                    ev.push((2, Event::ZombieWrite(u)));
                }
            }
        }
        ev
    }

    /// A fault, if one applies now.
    fn fault(&mut self) -> Option<Event> {
        Some(match self.rng.below(20) {
            0..8 => {
                let ids: Vec<u64> = self.conns.keys().copied().collect();
                Event::Reset(*ids.get(self.rng.below(ids.len() as u64) as usize)?)
            }
            8..13 => {
                let up: Vec<usize> = (0..3).filter(|&i| self.ds[i].up()).collect();
                Event::Kill(*up.get(self.rng.below(up.len() as u64) as usize)?)
            }
            13..15 => {
                let up: Vec<usize> = (0..3).filter(|&i| self.ds[i].up()).collect();
                Event::HostPowerCut(*up.get(self.rng.below(up.len() as u64) as usize)?)
            }
            15..17 => Event::NewUpstairs { keep_old: true },
            17..19 => Event::NewUpstairs { keep_old: false },
            _ => Event::PowerCut,
        })
    }

    /// One scheduler step: with faults allowed, a fault now and then;
    /// otherwise one of the enabled events, at random by weight.
    fn step(&mut self, chaos: bool) {
        self.steps += 1;
        if chaos
            && self.rng.chance(FAULT_PERCENT)
            && let Some(f) = self.fault()
        {
            self.apply(f);
            return;
        }
        let ev = self.events(chaos);
        let total: u64 = ev.iter().map(|(w, _)| w).sum();
        let mut pick = self.rng.below(total);
        let mut chosen = ev[0].1;
        for (w, e) in &ev {
            if pick < *w {
                chosen = *e;
                break;
            }
            pick -= w;
        }
        self.apply(chosen);
    }

    fn apply(&mut self, e: Event) {
        match e {
            Event::ToDs(id) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                let Some(msg) = c.to_ds.pop_front() else {
                    return;
                };
                let client = c.client;
                self.log(|| format!("conn {id} -> ds{client}: {}", short(&msg)));
                let out = self.ds[client].deliver(id, msg);
                if let Some(why) = out.fenced_write {
                    self.fail(format!("ds{client}: a fenced generation wrote: {why}"));
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.to_up.extend(out.replies);
                }
            }
            Event::Work(i, id) => {
                let out = self.ds[i].work(id);
                if let Some(why) = out.fenced_write {
                    self.fail(format!("ds{i}: a fenced generation wrote: {why}"));
                }
                if !out.replies.is_empty() {
                    self.log(|| format!("ds{i} runs a job of conn {id}"));
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.to_up.extend(out.replies);
                }
            }
            Event::ToUp(id) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                let Some(msg) = c.to_up.pop_front() else {
                    return;
                };
                let (u, client) = (c.up, c.client);
                self.log(|| format!("ds{client} -> up{u} conn {id}: {}", short(&msg)));
                self.input(
                    u,
                    Input::Message {
                        client,
                        conn: id,
                        msg,
                    },
                );
            }
            Event::Closed(id) => self.close(id, true, "connection closed by the downstairs"),
            Event::Reset(id) => self.close(id, true, "connection reset"),
            Event::Connect(u, c) => self.connect(u, c),
            Event::Tick => {
                self.now += TICK;
                for u in 0..self.ups.len() {
                    if self.ups[u].alive {
                        self.input(u, Input::Tick);
                    }
                }
            }
            Event::Guest => self.guest(),
            Event::ZombieWrite(u) => {
                let start = self.rng.below(BLOCKS);
                self.write(u, start..start + 1, false, false);
            }
            Event::Kill(i) => {
                self.log(|| format!("KILL ds{i}"));
                self.kill_ds(i);
            }
            Event::HostPowerCut(i) => {
                self.log(|| format!("POWER CUT of ds{i}'s host"));
                self.kill_ds(i);
                self.cut_power(i);
            }
            Event::Restart(i) => {
                self.log(|| format!("RESTART ds{i}"));
                self.restart_ds(i);
            }
            Event::NewUpstairs { keep_old } => {
                let cur = self.current();
                if keep_old {
                    self.log(|| format!("NEW UPSTAIRS; upstairs {cur} keeps running"));
                } else {
                    self.log(|| format!("KILL UPSTAIRS {cur}; a new one starts"));
                    self.kill_up(cur);
                }
                self.new_upstairs();
            }
            Event::PowerCut => {
                self.log(|| "POWER CUT".into());
                for u in 0..self.ups.len() {
                    self.kill_up(u);
                }
                for i in 0..3 {
                    self.kill_ds(i);
                }
                for i in 0..3 {
                    self.cut_power(i);
                }
                self.new_upstairs();
            }
        }
    }

    fn kill_ds(&mut self, i: usize) {
        self.ds[i].kill();
        for c in self.conns.values_mut() {
            if c.client == i {
                c.closing = true;
                c.to_ds.clear();
            }
        }
    }

    /// Downstairs `i`'s host (its process already dead) loses power.
    fn cut_power(&mut self, i: usize) {
        let seed = self.rng.next();
        self.log(|| format!("ds{i}'s disk crashes (crash seed {seed})"));
        self.ds[i].power_cut(seed);
    }

    fn restart_ds(&mut self, i: usize) {
        if let Err(e) = self.ds[i].restart() {
            self.fail(format!("ds{i} cannot reopen its region: {e}"));
        }
    }

    fn kill_up(&mut self, u: usize) {
        self.ups[u].alive = false;
        self.ups[u].pending.clear();
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.up == u)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.close(id, false, "upstairs died");
        }
    }

    /// Ends connection `id`; the upstairs hears of it if `tell`.
    fn close(&mut self, id: u64, tell: bool, why: &str) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        self.log(|| format!("conn {id} (up{} ds{}) ends: {why}", c.up, c.client));
        self.ds[c.client].hangup(id);
        if tell && self.ups[c.up].alive {
            self.input(
                c.up,
                Input::Disconnected {
                    client: c.client,
                    conn: id,
                    error: why.into(),
                },
            );
        }
    }

    fn connect(&mut self, u: usize, c: usize) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let (id, generation) = (self.ups[u].id, self.ups[u].generation);
        self.ups[u].connecting[c] = false;
        match self.ds[c].negotiate(conn, id, generation) {
            Ok((hs, displaced)) => {
                self.log(|| {
                    format!(
                        "up{u} connects to ds{c} as conn {conn} (gen {generation}); versions {:?}",
                        hs.versions
                            .iter()
                            .map(|v| (v.generation, v.flush, v.dirty))
                            .collect::<Vec<_>>()
                    )
                });
                self.conns.insert(
                    conn,
                    Conn {
                        up: u,
                        client: c,
                        to_ds: VecDeque::new(),
                        to_up: VecDeque::new(),
                        closing: false,
                    },
                );
                if let Some(old) = displaced.and_then(|d| self.conns.get_mut(&d)) {
                    old.to_up.push_back(Message::Fenced { generation });
                    old.closing = true;
                }
                self.input(
                    u,
                    Input::Connected {
                        client: c,
                        conn,
                        addr: format!("ds{c}"),
                        hs,
                    },
                );
            }
            Err(e) if e.is_fenced() => {
                self.log(|| format!("ds{c} refuses up{u}: {e}"));
                self.input(
                    u,
                    Input::Refused {
                        client: c,
                        error: e,
                    },
                );
            }
            Err(e) => {
                self.log(|| format!("ds{c} negotiation failed for up{u}: {e}"));
                self.ups[u].connecting[c] = true;
            }
        }
    }

    fn input(&mut self, u: usize, input: Input) {
        let actions = self.ups[u].core.handle(self.now, input);
        self.perform(u, actions);
    }

    fn perform(&mut self, u: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { conn, msg, .. } => {
                    if let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.closing) {
                        c.to_ds.push_back(msg);
                    }
                }
                Action::Connect { client, .. } => self.ups[u].connecting[client] = true,
                Action::StopConnecting { client } => self.ups[u].connecting[client] = false,
                Action::Close { conn, .. } => self.close(conn, false, "closed by the upstairs"),
                Action::Reply { req, result } => self.reply(u, req, result),
                Action::Ready(r) => {
                    self.log(|| format!("up{u} ready: {r:?}"));
                    if let Err(e) = r
                        && u == self.current()
                    {
                        self.fail(format!("the newest upstairs failed to activate: {e}"));
                    }
                }
            }
        }
    }

    fn reply(&mut self, u: usize, req: u64, result: kelp_block::Result<Output>) {
        if let Some((r, answer)) = &mut self.ups[u].drain
            && *r == req
        {
            *answer = Some(result.is_ok());
            return;
        }
        let Some(p) = self.ups[u].pending.remove(&req) else {
            return;
        };
        match (p, result) {
            (Pending::Write(w), Ok(_)) => {
                self.log(|| format!("up{u} write seq {} acked", w.seq));
                self.oracle.write_acked(&w);
            }
            (Pending::Flush { seq, incarnation }, Ok(_)) => {
                self.log(|| format!("up{u} flush seq {seq} acked"));
                self.oracle.flush_acked(seq, incarnation);
            }
            (Pending::Read { start, floors }, Ok(Output::Data(d))) => {
                if d.len() != floors.len() * BS {
                    self.fail(format!("read at {start}: {} bytes back", d.len()));
                    return;
                }
                for (k, floor) in floors.iter().enumerate() {
                    let b = start + k as u64;
                    if let Err(e) = self.oracle.check_block(b, &d[k * BS..(k + 1) * BS], *floor) {
                        self.fail(format!("up{u} read: {e}"));
                    }
                }
            }
            (_, Ok(other)) => self.fail(format!("unexpected answer {other:?}")),
            (_, Err(e)) => self.log(|| format!("up{u} request {req} failed: {e}")),
        }
    }

    fn request(&mut self, u: usize, op: GuestOp, pending: Pending) {
        let req = self.ups[u].next_req;
        self.ups[u].next_req += 1;
        self.ups[u].pending.insert(req, pending);
        self.input(u, Input::Guest { req, op });
    }

    fn write(&mut self, u: usize, range: Range<u64>, zero: bool, fua: bool) {
        let inc = self.ups[u].incarnation;
        let (tag, issued) = self.oracle.write(range.clone(), zero, fua, inc);
        self.log(|| {
            format!(
                "up{u} guest write seq {} tag {tag} blocks {range:?}{}",
                issued.seq,
                if fua { " fua" } else { "" }
            )
        });
        let op = if zero {
            GuestOp::WriteZeroes {
                start: range.start,
                count: range.end - range.start,
                fua,
            }
        } else {
            let data: Vec<u8> = range.clone().flat_map(|b| pattern(tag, b)).collect();
            GuestOp::Write {
                start: range.start,
                crcs: data.chunks(BS).map(block_crc).collect(),
                data: Bytes::from(data),
                fua,
            }
        };
        self.request(u, op, Pending::Write(issued));
    }

    fn read(&mut self, u: usize, range: Range<u64>) {
        let floors = self.oracle.floors(range.clone());
        self.log(|| format!("up{u} guest read {range:?} floors {floors:?}"));
        let op = GuestOp::Read {
            start: range.start,
            count: range.end - range.start,
        };
        self.request(
            u,
            op,
            Pending::Read {
                start: range.start,
                floors,
            },
        );
    }

    fn guest(&mut self) {
        let u = self.current();
        let start = self.rng.below(BLOCKS);
        let count = (1 + self.rng.below(2)).min(BLOCKS - start);
        match self.rng.below(100) {
            0..45 => {
                let zero = self.rng.chance(10);
                let fua = self.rng.chance(10);
                self.write(u, start..start + count, zero, fua);
            }
            45..80 => self.read(u, start..start + count),
            _ => {
                let seq = self.oracle.seq();
                let incarnation = self.ups[u].incarnation;
                self.log(|| format!("up{u} guest flush seq {seq}"));
                self.request(u, GuestOp::Flush, Pending::Flush { seq, incarnation });
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.conns
            .values()
            .any(|c| !c.to_ds.is_empty() || !c.to_up.is_empty() || c.closing)
            || self
                .conns
                .iter()
                .any(|(id, c)| !c.closing && self.ds[c.client].busy_sessions().contains(id))
    }

    /// No more faults: old upstairs stop, every downstairs comes back, and
    /// the current upstairs must get all three active and flushed; then the
    /// replicas must be identical and hold every acknowledged flush.
    fn heal(&mut self) -> Result<(), String> {
        self.log(|| "---- healing: no more faults ----".into());
        let cur = self.current();
        for u in 0..cur {
            if self.ups[u].alive {
                self.kill_up(u);
            }
        }
        for i in 0..3 {
            if !self.ds[i].up() {
                self.restart_ds(i);
            }
        }
        let deadline = self.now + Duration::from_secs(600);
        loop {
            if let Some(f) = &self.failure {
                return Err(f.clone());
            }
            if self.now > deadline {
                return Err(format!(
                    "no convergence within 600 s of healing: {:?}",
                    self.ups[cur].core.status()
                ));
            }
            let up = &self.ups[cur];
            let all_active =
                up.core.serving() && up.core.status().modes.iter().all(|m| m == "active");
            match up.drain {
                None if all_active => {
                    let req = self.ups[cur].next_req;
                    self.ups[cur].next_req += 1;
                    self.ups[cur].drain = Some((req, None));
                    self.log(|| "drain: FlushAll".into());
                    self.input(
                        cur,
                        Input::Guest {
                            req,
                            op: GuestOp::FlushAll,
                        },
                    );
                    continue;
                }
                Some((_, Some(true))) if !self.in_flight() && self.ups[cur].pending.is_empty() => {
                    break;
                }
                Some((_, Some(false))) => self.ups[cur].drain = None,
                _ => {}
            }
            self.step(false);
        }
        let contents: Vec<_> = self.ds.iter().map(|d| d.contents()).collect();
        let Some((data0, versions0)) = contents[0].clone() else {
            return Err("ds0 unreadable after healing".into());
        };
        for (i, c) in contents.iter().enumerate().skip(1) {
            let Some((data, versions)) = c else {
                return Err(format!("ds{i} unreadable after healing"));
            };
            if versions != &versions0 {
                return Err(format!(
                    "replicas differ after repair: extent versions ds0 {versions0:?}, ds{i} {versions:?}"
                ));
            }
            if let Some(b) = (0..BLOCKS as usize)
                .find(|&b| data[b * BS..(b + 1) * BS] != data0[b * BS..(b + 1) * BS])
            {
                return Err(format!(
                    "replicas differ after repair: block {b}, ds0 and ds{i}"
                ));
            }
        }
        for b in 0..BLOCKS {
            let floor = self.oracle.durable[b as usize];
            self.oracle
                .check_block(b, &data0[b as usize * BS..(b as usize + 1) * BS], floor)
                .map_err(|e| format!("after healing, on disk: {e}"))?;
        }
        Ok(())
    }

    /// Reads every block through the upstairs and checks it.
    fn final_read(&mut self) -> Result<(), String> {
        let cur = self.current();
        self.read(cur, 0..BLOCKS);
        for _ in 0..100_000 {
            if self.ups[cur].pending.is_empty() {
                break;
            }
            self.step(false);
        }
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        if !self.ups[cur].pending.is_empty() {
            return Err("the final read never finished".into());
        }
        Ok(())
    }
}

/// A frame in a trace line.
fn short(m: &Message) -> String {
    match m {
        Message::Write {
            job, start, crcs, ..
        } => format!("Write job {job} blocks {start}+{}", crcs.len()),
        Message::ReadReply { job, .. } => format!("ReadReply job {job}"),
        Message::ExtentData { job, version, .. } => format!("ExtentData job {job} {version:?}"),
        Message::ExtentReplace {
            job,
            extent,
            version,
            ..
        } => format!("ExtentReplace job {job} extent {extent} {version:?}"),
        other => format!("{other:?}"),
    }
}
