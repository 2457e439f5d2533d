//! Send and receive: a snapshot (or the change between two) out of one
//! region as a send stream (stream.rs), and into a volume's regions.
//!
//! # Send
//! A full stream names every block of the target snapshot that holds data
//! or was zeroed; never-written blocks are holes. An incremental stream
//! from snapshot A names exactly the blocks whose version in the target
//! was born after A's flush (`Region::snapshot_versions`, from memory: no
//! unchanged data is read). The end carries the target's content digest.
//!
//! A send may read a region a downstairs is serving (opened read-only,
//! without the lock). A snapshot's content never changes, but where a
//! block's version lives can: when the live volume overwrites it, it is
//! saved to the extent's saved-version file, and its slot is reused after
//! the next flush. So every block read is checked against its context; a
//! run that fails is read again from a freshly opened view of the region
//! (which finds the version where it moved), a few times, before the send
//! fails with the checksum error.
//!
//! # Receive
//! The stream is checked against the target regions before anything
//! changes: geometry; for an incremental, that its base (by GUID) is the
//! targets' newest snapshot and nothing was written since (`--force` rolls
//! the live volume back to it first); for a full stream, that the targets
//! hold no snapshot and no data. Then a receive state file
//! (`receive.kelp`) is written in every region and the records are
//! applied to the live volume as ordinary writes: the earlier snapshots
//! stay intact by copy-on-write, and the new snapshot does not exist until
//! the end, when the live volume's content digest matches the stream's and
//! the snapshot is taken (one atomic catalog rename per region) and the
//! state file removed. Every `CHECKPOINT_BYTES` the regions are flushed and
//! the state file records how far the stream got: that is the resume point.
//!
//! A receive that fails partway (a cut or damaged stream, a full disk)
//! either rolls the live volume back to its newest snapshot, leaving the
//! target exactly as it was, or, when asked to be resumable, keeps what it
//! applied and reports a resume token. `send --resume TOKEN` sends the
//! same stream from the resume point on; `receive --abort` rolls back and
//! removes the state.
//!
//! # Receive state file (`receive.kelp`, little-endian, replaced atomically)
//! ```text
//!  0 [8]  magic "KELPRCV1"
//!  8 [16] base GUID (zero for a full stream)
//! 24 [16] target GUID
//! 40 u64  next block: every block before it is applied and flushed
//! 48 u16  name length | name
//! .. u32  crc32c of everything before
//! ```
//!
//! # Resume token
//! `kelp1-` and the lowercase hex of: `base GUID [16] | target GUID [16] |
//! next block u64 | crc32c u32` of the 40 bytes before. The sender looks
//! the snapshots up by GUID in its own region and refuses a token that
//! names a snapshot it does not hold or that disagrees with `--from` and
//! the snapshot named on its command line, so a token cannot make it send
//! another volume or snapshot.

use std::io::{Read, Write};

use crate::catalog::{Snapshot, now_secs};
use crate::codec::{Reader, Writer};
use crate::context::{BlockContext, block_crc};
use crate::error::{BlockError, Result};
use crate::region::Region;
use crate::stream::{Record, StreamHeader, StreamReader, StreamWriter, content_digest};

pub const RECEIVE_FILE: &str = "receive.kelp";
const RECEIVE_MAGIC: &[u8; 8] = b"KELPRCV1";
/// How much a receive applies between durable resume points.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Blocks read and sent per write run.
const RUN_BLOCKS: u64 = 256;

/// Where a cut-short receive can go on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken {
    pub from: Option<u128>,
    pub to: u128,
    pub next_block: u64,
}

impl ResumeToken {
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(44);
        b.extend_from_slice(&self.from.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&self.to.to_le_bytes());
        b.extend_from_slice(&self.next_block.to_le_bytes());
        let c = crc32c::crc32c(&b);
        b.extend_from_slice(&c.to_le_bytes());
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("kelp1-{hex}")
    }

    pub fn decode(s: &str) -> Result<ResumeToken> {
        let bad = |why: &str| BlockError::Invalid(format!("resume token: {why}"));
        let hex = s
            .trim()
            .strip_prefix("kelp1-")
            .ok_or_else(|| bad("does not start with kelp1-"))?;
        if hex.len() != 88 || !hex.is_ascii() {
            return Err(bad("wrong length"));
        }
        let b: Vec<u8> = (0..44)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("not hexadecimal"))?;
        let stored = u32::from_le_bytes(b[40..44].try_into().unwrap_or_default());
        if crc32c::crc32c(&b[..40]) != stored {
            return Err(bad("checksum mismatch (copied wrong?)"));
        }
        let from = u128::from_le_bytes(b[0..16].try_into().unwrap_or_default());
        Ok(ResumeToken {
            from: (from != 0).then_some(from),
            to: u128::from_le_bytes(b[16..32].try_into().unwrap_or_default()),
            next_block: u64::from_le_bytes(b[32..40].try_into().unwrap_or_default()),
        })
    }
}

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    /// The target snapshot (may be left out with `resume`).
    pub snapshot: Option<String>,
    /// The base of an incremental stream.
    pub from: Option<String>,
    pub resume: Option<ResumeToken>,
    /// zstd-compress write runs.
    pub compress: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub bytes: u64,
    pub blocks_done: u64,
    pub blocks_total: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SendReport {
    pub blocks_sent: u64,
    pub blocks_zeroed: u64,
    pub bytes: u64,
}

fn guid_bytes(g: u128) -> [u8; 16] {
    g.to_le_bytes()
}

fn guid(b: [u8; 16]) -> u128 {
    u128::from_le_bytes(b)
}

/// Counts what goes through a writer.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Resolves what `req` asks of `region`: (base, target).
fn resolve(region: &Region, req: &SendRequest) -> Result<(Option<Snapshot>, Snapshot)> {
    let by_guid = |g: u128, role: &str| {
        region.catalog().by_guid(g).cloned().ok_or_else(|| {
            BlockError::SnapshotConflict(format!(
                "the resume token names a {role} snapshot ({g:032x}) this region does not hold: \
                 it belongs to another volume or snapshot"
            ))
        })
    };
    let to = match (&req.snapshot, &req.resume) {
        (Some(name), Some(t)) => {
            let s = region.snapshot(name)?.clone();
            if s.guid != t.to {
                return Err(BlockError::SnapshotConflict(format!(
                    "the resume token is for another snapshot than {name}"
                )));
            }
            s
        }
        (Some(name), None) => region.snapshot(name)?.clone(),
        (None, Some(t)) => by_guid(t.to, "target")?,
        (None, None) => {
            return Err(BlockError::Invalid(
                "name the snapshot to send (or give --resume)".into(),
            ));
        }
    };
    let from = match (&req.from, &req.resume) {
        (Some(name), t) => {
            let s = region.snapshot(name)?.clone();
            if let Some(t) = t
                && t.from != Some(s.guid)
            {
                return Err(BlockError::SnapshotConflict(format!(
                    "the resume token is not for an incremental from {name}"
                )));
            }
            Some(s)
        }
        (None, Some(t)) => match t.from {
            Some(g) => Some(by_guid(g, "base")?),
            None => None,
        },
        (None, None) => None,
    };
    if let Some(f) = &from
        && f.flush >= to.flush
    {
        return Err(BlockError::Invalid(format!(
            "the base {} is not older than {}",
            f.name, to.name
        )));
    }
    Ok((from, to))
}

/// Writes the stream `req` asks for to `out`. `progress` is called now and
/// then with how far it got.
pub fn send<W: Write>(
    region: &Region,
    req: &SendRequest,
    out: W,
    mut progress: impl FnMut(Progress),
) -> Result<SendReport> {
    let (from, to) = resolve(region, req)?;
    let def = *region.def();
    let total = def.total_blocks();
    let header = StreamHeader {
        block_size: def.block_size,
        total_blocks: total,
        from: from.as_ref().map(|s| guid_bytes(s.guid)),
        to: guid_bytes(to.guid),
        name: to.name.clone(),
        compressed: req.compress,
    };
    let mut w = StreamWriter::new(
        Counted {
            inner: out,
            bytes: 0,
        },
        header,
    )?;
    let since = from.as_ref().map(|s| s.flush);
    let skip_to = req.resume.map_or(0, |t| t.next_block.min(total));
    let mut report = SendReport::default();
    let mut fresh: Option<Region> = None;
    let mut contexts = Vec::with_capacity(total as usize);
    let mut start = 0;
    while start < total {
        let n = (total - start).min(64 * 1024);
        let versions = region.snapshot_versions(to.flush, start, n)?;
        // Runs of blocks to send: (first, count, zero).
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            let b = start + i as u64;
            contexts.push(v.map_or(BlockContext::Unwritten, |v| v.context));
            let Some(v) = v else { continue };
            if b < skip_to || since.is_some_and(|s| v.birth <= s) {
                continue;
            }
            let zero = !matches!(v.context, BlockContext::Data(_));
            match runs.last_mut() {
                Some((f, c, z)) if *z == zero && *f + *c == b && (zero || *c < RUN_BLOCKS) => {
                    *c += 1
                }
                _ => runs.push((b, 1, zero)),
            }
        }
        for (first, count, zero) in runs {
            if zero {
                w.zero(first, count)?;
                report.blocks_zeroed += count;
            } else {
                let data = read_checked(region, &mut fresh, to.flush, first, count)?;
                w.write(first, &data)?;
                report.blocks_sent += count;
            }
        }
        start += n;
        progress(Progress {
            bytes: w_bytes(&w),
            blocks_done: start,
            blocks_total: total,
        });
    }
    let out = w.finish(content_digest(contexts))?;
    report.bytes = out.bytes;
    Ok(report)
}

/// Reads `count` blocks of the snapshot at flush `at`, each checked
/// against its context; on a mismatch, again from a fresh view of the
/// region (see "Send"), kept in `fresh` for later runs.
fn read_checked(
    region: &Region,
    fresh: &mut Option<Region>,
    at: u64,
    first: u64,
    count: u64,
) -> Result<Vec<u8>> {
    let bs = region.def().block_size as usize;
    let mut tries = 0;
    loop {
        let view = fresh.as_ref().unwrap_or(region);
        let (ctxs, data) = view.read_at_flush(at, first, count)?;
        let bad = ctxs
            .iter()
            .zip(data.chunks(bs))
            .position(|(c, blk)| !c.verify(blk));
        let Some(i) = bad else {
            return Ok(data);
        };
        tries += 1;
        if !region.read_only || tries > 5 {
            let c = ctxs[i];
            return Err(BlockError::ChecksumMismatch {
                block: first + i as u64,
                stored: match c {
                    BlockContext::Data(x) => x,
                    _ => 0,
                },
                computed: block_crc(&data[i * bs..(i + 1) * bs]),
            });
        }
        tracing::debug!(
            block = first + i as u64,
            tries,
            "a block moved under the send; reading a fresh view"
        );
        std::thread::sleep(std::time::Duration::from_millis(20 * tries));
        *fresh = Some(Region::open_in(region.storage.clone(), region.dir(), true)?);
    }
}

fn w_bytes<W: Write>(w: &StreamWriter<Counted<W>>) -> u64 {
    w.output().bytes
}

/// A receive in progress, as its state file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveState {
    pub from: Option<u128>,
    pub to: u128,
    pub name: String,
    pub next_block: u64,
}

impl ReceiveState {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.name.len());
        w.bytes(RECEIVE_MAGIC)
            .bytes(&self.from.unwrap_or(0).to_le_bytes())
            .bytes(&self.to.to_le_bytes())
            .u64(self.next_block)
            .u16(self.name.len() as u16)
            .bytes(self.name.as_bytes());
        let c = crc32c::crc32c(&w.buf);
        w.u32(c);
        w.buf
    }

    pub fn decode(b: &[u8]) -> Result<ReceiveState> {
        let what = RECEIVE_FILE;
        if b.len() < 4 {
            return Err(BlockError::corrupt(what, "too short"));
        }
        let (body, c) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(c.try_into().unwrap_or_default()) {
            return Err(BlockError::corrupt(what, "checksum mismatch"));
        }
        let mut r = Reader::new(body, what);
        if r.bytes(8)? != RECEIVE_MAGIC {
            return Err(BlockError::corrupt(what, "bad magic"));
        }
        let from = u128::from_le_bytes(r.array()?);
        let to = u128::from_le_bytes(r.array()?);
        let next_block = r.u64()?;
        let n = r.u16()? as usize;
        let name = String::from_utf8(r.bytes(n)?.to_vec())
            .map_err(|_| BlockError::corrupt(what, "name is not UTF-8"))?;
        r.finish()?;
        Ok(ReceiveState {
            from: (from != 0).then_some(from),
            to,
            name,
            next_block,
        })
    }

    /// The receive in progress in `r`, if any.
    pub fn load(r: &Region) -> Result<Option<ReceiveState>> {
        ReceiveState::load_from(&r.storage, r.dir())
    }

    /// The receive in progress in region directory `dir`, if any, without
    /// opening the region.
    pub fn load_from(
        st: &kelp_storage::Storage,
        dir: &std::path::Path,
    ) -> Result<Option<ReceiveState>> {
        let p = dir.join(RECEIVE_FILE);
        match st.read(&p) {
            Ok(b) => ReceiveState::decode(&b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlockError::io(p.display().to_string(), e)),
        }
    }

    fn store(&self, r: &Region) -> Result<()> {
        let p = r.dir().join(RECEIVE_FILE);
        r.storage
            .write_atomic(&p, &self.encode())
            .map_err(|e| BlockError::io(p.display().to_string(), e))
    }

    pub fn token(&self) -> ResumeToken {
        ResumeToken {
            from: self.from,
            to: self.to,
            next_block: self.next_block,
        }
    }
}

fn remove_state(r: &Region) -> Result<()> {
    let p = r.dir().join(RECEIVE_FILE);
    r.storage
        .remove_if_exists(&p)
        .and_then(|_| r.storage.sync_dir(r.dir()))
        .map_err(|e| BlockError::io(p.display().to_string(), e))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveOptions {
    /// Roll a target changed since its newest snapshot back to it first.
    pub force: bool,
    /// Keep what a failed receive applied and report a resume token
    /// (otherwise the target is rolled back to where it was).
    pub resumable: bool,
    /// Bytes applied between resume points (0: `CHECKPOINT_BYTES`).
    pub checkpoint_bytes: u64,
}

#[derive(Debug)]
pub struct ReceiveReport {
    pub snapshot: Snapshot,
    pub blocks_written: u64,
    pub blocks_zeroed: u64,
    pub resumed_from: Option<u64>,
}

/// A receive that failed partway.
#[derive(Debug)]
pub struct ReceiveFailure {
    pub error: BlockError,
    /// Set when the partial receive was kept: how to resume it.
    pub resume: Option<ResumeToken>,
    /// Rolling the target back failed too (a full disk needs space for
    /// that as well): the partial receive stays until `--abort`.
    pub rollback: Option<Box<BlockError>>,
}

impl std::fmt::Display for ReceiveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(r) = &self.rollback {
            write!(
                f,
                "; rolling the target back failed too ({r}): its snapshots are unchanged, and \
                 kelp block receive --abort returns the volume to its newest one once that is fixed"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ReceiveFailure {}

impl From<BlockError> for ReceiveFailure {
    fn from(error: BlockError) -> Self {
        ReceiveFailure {
            error,
            resume: None,
            rollback: None,
        }
    }
}

/// Finishes a receive that a crash stopped while it was taking the
/// snapshot replica by replica: the replicas still holding a state file
/// for a snapshot another replica already took (every replica had applied
/// and flushed the whole stream by then) take it too, with the same name,
/// GUID and flush number, and their state file goes.
pub fn settle_pending(regions: &mut [Region]) -> Result<()> {
    let taken: Vec<Snapshot> = regions
        .iter()
        .flat_map(|r| r.snapshots().iter().cloned())
        .collect();
    for r in regions.iter_mut() {
        let Some(p) = ReceiveState::load(r)? else {
            continue;
        };
        if r.catalog().by_guid(p.to).is_none() {
            let Some(s) = taken.iter().find(|s| s.guid == p.to) else {
                continue;
            };
            tracing::info!(region = %r.dir().display(), snapshot = %s.name, "finishing a receive a crash interrupted");
            let flush = s.flush.max(r.flush_mark() + 1);
            r.snapshot_take(Snapshot { flush, ..s.clone() })?;
        }
        remove_state(r)?;
    }
    Ok(())
}

/// Checks that the regions are replicas of one volume in the same state.
fn check_targets(regions: &[Region]) -> Result<()> {
    let first = regions
        .first()
        .ok_or_else(|| BlockError::Invalid("no target region".into()))?;
    for r in &regions[1..] {
        if !r.def().same_geometry(first.def()) {
            return Err(BlockError::RegionMismatch(format!(
                "{} and {} have different geometries",
                first.dir().display(),
                r.dir().display()
            )));
        }
        if r.snapshots() != first.snapshots() {
            return Err(BlockError::RegionMismatch(format!(
                "{} and {} hold different snapshots; repair the volume first",
                first.dir().display(),
                r.dir().display()
            )));
        }
    }
    Ok(())
}

/// Whether every live block of the volume reads as zeros (from memory).
fn all_zero(r: &Region) -> Result<bool> {
    let total = r.def().total_blocks();
    Ok(r.snapshot_versions(crate::extent::LIVE, 0, total)?
        .iter()
        .all(|v| v.is_none_or(|v| !matches!(v.context, BlockContext::Data(_)))))
}

/// Receives a stream into `regions` (the replicas of one volume, or one
/// standby region).
// Called once per stream: the size of its error does not matter.
#[allow(clippy::result_large_err)]
pub fn receive<R: Read>(
    regions: &mut [Region],
    input: R,
    opts: ReceiveOptions,
    mut progress: impl FnMut(Progress),
) -> std::result::Result<ReceiveReport, ReceiveFailure> {
    settle_pending(regions)?;
    check_targets(regions)?;
    let mut reader = StreamReader::new(input).map_err(BlockError::from)?;
    let h = reader.header().clone();
    let def = *regions[0].def();
    if h.block_size != def.block_size || h.total_blocks != def.total_blocks() {
        return Err(BlockError::RegionMismatch(format!(
            "the stream is for a volume of {} blocks of {} bytes; the target has {} blocks of {}",
            h.total_blocks,
            h.block_size,
            def.total_blocks(),
            def.block_size
        ))
        .into());
    }
    let from = h.from.map(guid);
    let to = guid(h.to);
    crate::catalog::check_name(&h.name)?;
    let pending = ReceiveState::load(&regions[0])?;
    let resumed_from = match &pending {
        Some(p) if p.from == from && p.to == to => Some(p.next_block),
        Some(p) => {
            return Err(BlockError::SnapshotConflict(format!(
                "a receive of snapshot {} is in progress in {}: resume it (kelp block send --resume {}) \
                 or drop it with kelp block receive --abort",
                p.name,
                regions[0].dir().display(),
                p.token().encode()
            ))
            .into());
        }
        None => None,
    };
    if resumed_from.is_none() {
        check_base(regions, &h, from, to, opts.force)?;
    }
    let mut state = ReceiveState {
        from,
        to,
        name: h.name.clone(),
        next_block: resumed_from.unwrap_or(0),
    };
    if resumed_from.is_none() {
        for r in regions.iter() {
            state.store(r)?;
        }
    }
    let mut report = ReceiveReport {
        snapshot: Snapshot {
            name: h.name.clone(),
            guid: to,
            flush: 0,
            created: now_secs(),
        },
        blocks_written: 0,
        blocks_zeroed: 0,
        resumed_from,
    };
    let every = match opts.checkpoint_bytes {
        0 => CHECKPOINT_BYTES,
        n => n,
    };
    let applied = apply(
        regions,
        &mut reader,
        &mut state,
        &mut report,
        every,
        &mut progress,
    );
    match applied {
        Ok(digest) => {
            let live: Vec<BlockContext> = regions[0]
                .snapshot_versions(crate::extent::LIVE, 0, def.total_blocks())?
                .into_iter()
                .map(|v| v.map_or(BlockContext::Unwritten, |v| v.context))
                .collect();
            if content_digest(live) != digest {
                let e = BlockError::corrupt(
                    "received volume",
                    "its content digest differs from the sender's: the stream did not apply to \
                     the base it names",
                );
                return Err(fail(regions, &state, opts, e));
            }
            let flush = regions.iter().map(|r| r.flush_mark()).max().unwrap_or(0) + 1;
            report.snapshot.flush = flush;
            for r in regions.iter_mut() {
                r.snapshot_take(report.snapshot.clone())?;
                remove_state(r)?;
            }
            Ok(report)
        }
        Err(e) => Err(fail(regions, &state, opts, e)),
    }
}

/// Checks a new receive's base against the targets (module comment).
fn check_base(
    regions: &mut [Region],
    h: &StreamHeader,
    from: Option<u128>,
    to: u128,
    force: bool,
) -> Result<()> {
    let r0 = &regions[0];
    if r0.catalog().by_guid(to).is_some() {
        return Err(BlockError::SnapshotExists(format!(
            "{} (the target already holds this stream's snapshot)",
            h.name
        )));
    }
    if r0.catalog().get(&h.name).is_some() {
        return Err(BlockError::SnapshotExists(h.name.clone()));
    }
    match from {
        None => {
            if !r0.snapshots().is_empty() || !all_zero(r0)? {
                return Err(BlockError::SnapshotConflict(
                    "a full stream is received only into new, empty regions; this target holds \
                     data or snapshots"
                        .into(),
                ));
            }
        }
        Some(base) => {
            let Some(b) = r0.catalog().by_guid(base) else {
                return Err(BlockError::SnapshotConflict(format!(
                    "the stream is an incremental from snapshot {base:032x}, which the target \
                     does not hold; send from a snapshot it has"
                )));
            };
            let newest = r0.catalog().newest().map(|s| s.guid);
            if newest != Some(base) {
                return Err(BlockError::SnapshotConflict(format!(
                    "the stream's base {} is not the target's newest snapshot; \
                     receive the snapshots in order",
                    b.name
                )));
            }
            let name = b.name.clone();
            if r0.changed_since_newest_snapshot() {
                if !force {
                    return Err(BlockError::SnapshotConflict(format!(
                        "the target was written after its snapshot {name}; \
                         --force rolls it back to {name} first"
                    )));
                }
                for r in regions.iter_mut() {
                    r.rollback(&name, false)?;
                }
            }
        }
    }
    Ok(())
}

/// Applies records up to the end; returns the end's digest.
fn apply<R: Read>(
    regions: &mut [Region],
    reader: &mut StreamReader<R>,
    state: &mut ReceiveState,
    report: &mut ReceiveReport,
    checkpoint_bytes: u64,
    progress: &mut impl FnMut(Progress),
) -> Result<[u8; 32]> {
    let bs = regions[0].def().block_size as usize;
    let total = regions[0].def().total_blocks();
    let mut unflushed = 0u64;
    let mut bytes = 0u64;
    loop {
        let rec = reader.next_record()?;
        let (end, digest) = match rec {
            None => {
                return Err(BlockError::protocol(
                    "the stream ended without its end record",
                ));
            }
            Some(Record::End { digest }) => (None, Some(digest)),
            Some(Record::Write { start, data }) => {
                let crcs: Vec<u32> = data.chunks(bs).map(block_crc).collect();
                for r in regions.iter_mut() {
                    r.write(start, &data, &crcs)?;
                }
                report.blocks_written += crcs.len() as u64;
                unflushed += data.len() as u64;
                bytes += data.len() as u64;
                (Some(start + crcs.len() as u64), None)
            }
            Some(Record::Zero { start, count }) => {
                for r in regions.iter_mut() {
                    r.write_zeroes(start, count as u64)?;
                }
                report.blocks_zeroed += count as u64;
                (Some(start + count as u64), None)
            }
        };
        if let Some(d) = digest {
            checkpoint(regions, state, total)?;
            return Ok(d);
        }
        if let Some(e) = end {
            state.next_block = state.next_block.max(e);
        }
        if unflushed >= checkpoint_bytes {
            checkpoint(regions, state, state.next_block)?;
            unflushed = 0;
        }
        progress(Progress {
            bytes,
            blocks_done: state.next_block,
            blocks_total: total,
        });
    }
}

/// Flushes every region and records `next` as the resume point.
fn checkpoint(regions: &mut [Region], state: &mut ReceiveState, next: u64) -> Result<()> {
    let flush = regions.iter().map(|r| r.flush_mark()).max().unwrap_or(0) + 1;
    for r in regions.iter_mut() {
        let g = r.generation();
        r.flush(flush, g)?;
    }
    state.next_block = next;
    for r in regions.iter() {
        state.store(r)?;
    }
    Ok(())
}

/// Ends a failed receive: keeps it resumable, or rolls it back.
fn fail(
    regions: &mut [Region],
    state: &ReceiveState,
    opts: ReceiveOptions,
    error: BlockError,
) -> ReceiveFailure {
    if opts.resumable {
        // What was applied past the last checkpoint is simply sent again.
        return ReceiveFailure {
            error,
            resume: Some(
                ReceiveState::load(&regions[0])
                    .ok()
                    .flatten()
                    .map_or(state.token(), |s| s.token()),
            ),
            rollback: None,
        };
    }
    // A write error poisons a region until it is reopened (region.rs).
    let reopened = regions.iter_mut().try_for_each(|r| r.reopen());
    let rollback = reopened
        .and_then(|_| abort_regions(regions).map(|_| ()))
        .err()
        .map(Box::new);
    ReceiveFailure {
        error,
        resume: None,
        rollback,
    }
}

/// Drops a partial receive: the live volume goes back to the newest
/// snapshot (or to all zeros when there is none) and the state file goes.
pub fn abort_regions(regions: &mut [Region]) -> Result<bool> {
    settle_pending(regions)?;
    let mut any = false;
    for r in regions.iter_mut() {
        if ReceiveState::load(r)?.is_none() {
            continue;
        }
        any = true;
        match r.catalog().newest().map(|s| s.name.clone()) {
            Some(name) => {
                r.rollback(&name, false)?;
            }
            None => {
                let total = r.def().total_blocks();
                r.write_zeroes(0, total)?;
                let (f, g) = (r.flush_mark() + 1, r.generation());
                r.flush(f, g)?;
            }
        }
        remove_state(r)?;
    }
    Ok(any)
}
