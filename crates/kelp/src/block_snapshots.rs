//! `kelp block snapshot|rollback|clone|send|receive`: snapshot commands on
//! region directories no downstairs is serving (docs/snapshots.md). The
//! work is in kelp-region (`snapshot`, `transfer`); this is the command
//! line around it: opening every replica, the same snapshot on each, the
//! progress bar, and what is printed.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kelp_block::Region;
use kelp_block::catalog::Snapshot;
use kelp_block::control::SnapshotInfo;
use kelp_block::transfer::{self, Progress, ReceiveOptions, ResumeToken, SendRequest};

use crate::block_cli::{BlockCommand, SnapshotCommand};

pub fn run(cmd: BlockCommand) -> anyhow::Result<()> {
    match cmd {
        BlockCommand::Snapshot(SnapshotCommand::Create { target, name }) => {
            let started = Instant::now();
            let mut rs = open_all(&target.dirs)?;
            let flush = rs.iter().map(|r| r.flush_mark()).max().unwrap_or(0) + 1;
            let snap = Snapshot {
                flush,
                ..rs[0].next_snapshot(&name)
            };
            for r in &mut rs {
                r.snapshot_take(snap.clone())
                    .with_context(|| format!("snapshot of {}", r.dir().display()))?;
            }
            println!(
                "created snapshot {} (guid {:032x}, flush {}) on {} region(s) in {} ms",
                snap.name,
                snap.guid,
                snap.flush,
                rs.len(),
                started.elapsed().as_millis()
            );
            Ok(())
        }
        BlockCommand::Snapshot(SnapshotCommand::List { target, json }) => {
            let rs: Vec<Region> = target
                .dirs
                .iter()
                .map(|d| Region::open(d, true).with_context(|| format!("opening {}", d.display())))
                .collect::<anyhow::Result<_>>()?;
            for r in &rs[1..] {
                if r.snapshots() != rs[0].snapshots() {
                    eprintln!(
                        "warning: {} and {} hold different snapshots; listing the first",
                        rs[0].dir().display(),
                        r.dir().display()
                    );
                }
            }
            if !json {
                println!(
                    "{:<24} {:<32} {:>8} {:>12}",
                    "NAME", "GUID", "FLUSH", "CREATED"
                );
            }
            for s in rs[0].snapshots() {
                if json {
                    println!(
                        "{{\"name\":\"{}\",\"guid\":\"{:032x}\",\"flush\":{},\"created\":{}}}",
                        s.name, s.guid, s.flush, s.created
                    );
                } else {
                    println!(
                        "{:<24} {:032x} {:>8} {:>12}",
                        s.name, s.guid, s.flush, s.created
                    );
                }
            }
            if !json {
                println!(
                    "{} snapshot(s); saved versions take {} bytes per region",
                    rs[0].snapshots().len(),
                    rs[0].saved_bytes()
                );
                for r in &rs {
                    if let Some(o) = r.origin() {
                        println!(
                            "{} is a linked clone of {} at {}: {} of {} extent(s) still read from it",
                            r.dir().display(),
                            o.dir.display(),
                            o.name,
                            r.linked_extents(),
                            r.def().extent_count
                        );
                    }
                }
            }
            Ok(())
        }
        BlockCommand::Snapshot(SnapshotCommand::Delete { target, name }) => {
            let mut rs = open_all(&target.dirs)?;
            for r in &rs {
                r.snapshot(&name)
                    .with_context(|| format!("in {}", r.dir().display()))?;
            }
            let mut freed = 0;
            for r in &mut rs {
                freed = freed.max(r.snapshot_delete(&name)?);
            }
            println!("deleted snapshot {name}; freed {freed} bytes per region");
            Ok(())
        }
        BlockCommand::Rollback(a) => {
            let mut rs = open_all(&a.regions.dirs)?;
            for r in &rs {
                r.snapshot(&a.name)
                    .with_context(|| format!("in {}", r.dir().display()))?;
            }
            let mut destroyed = Vec::new();
            for r in &mut rs {
                destroyed = r.rollback(&a.name, a.destroy_later)?;
            }
            println!("rolled back to {}", a.name);
            if !destroyed.is_empty() {
                println!("destroyed later snapshots: {}", destroyed.join(", "));
            }
            Ok(())
        }
        BlockCommand::Clone(a) => {
            if a.to.len() != a.regions.dirs.len() {
                bail!(
                    "give one --to directory per --dir ({} and {})",
                    a.to.len(),
                    a.regions.dirs.len()
                );
            }
            let reports = kelp_block::snapshot::clone_volume_in(
                &kelp_storage::Storage::real(),
                &a.regions.dirs,
                &a.to,
                &a.name,
            )
            .with_context(|| format!("cloning snapshot {}", a.name))?;
            for (to, report) in a.to.iter().zip(reports) {
                if report.linked > 0 {
                    println!(
                        "cloned {} to {}: linked, {} extent(s) to copy from the origin \
                         (in the background once served, or `kelp block fill`)",
                        a.name,
                        to.display(),
                        report.linked
                    );
                } else {
                    println!(
                        "cloned {} to {}: {} file(s) shared (reflink)",
                        a.name,
                        to.display(),
                        report.reflinked
                    );
                }
            }
            Ok(())
        }
        BlockCommand::Fill(a) => {
            let mut rs = open_all(&a.dirs)?;
            for r in &mut rs {
                let left = r.linked_extents();
                let origin = r.origin().map(|o| (o.dir.clone(), o.name.clone()));
                r.fill_all()
                    .with_context(|| format!("copying {} from its origin", r.dir().display()))?;
                match origin {
                    Some((dir, name)) => println!(
                        "{}: copied {left} extent(s) from {} at {name}; it no longer reads its origin",
                        r.dir().display(),
                        dir.display()
                    ),
                    None => println!("{}: not a linked clone; nothing to copy", r.dir().display()),
                }
            }
            Ok(())
        }
        BlockCommand::Send(a) => send(a),
        BlockCommand::Receive(a) => receive(a),
        BlockCommand::Create(_) | BlockCommand::Verify(_) => {
            bail!("handled by block_daemon")
        }
    }
}

/// The control address of a snapshot command aimed at a running volume.
pub fn online(cmd: &SnapshotCommand) -> Option<&str> {
    match cmd {
        SnapshotCommand::Create { target, .. }
        | SnapshotCommand::List { target, .. }
        | SnapshotCommand::Delete { target, .. } => target.control.as_deref(),
    }
}

/// A snapshot command through a running volume's upstairs control API.
pub async fn run_online(cmd: SnapshotCommand) -> anyhow::Result<()> {
    use kelp_block::control::client;
    let addr = online(&cmd).context("no --control")?.to_string();
    match cmd {
        SnapshotCommand::Create { name, .. } => {
            let started = Instant::now();
            let s = client::create_snapshot(&addr, &name)
                .await
                .with_context(|| format!("snapshot {name} through {addr}"))?;
            println!(
                "created snapshot {} (guid {}, flush {}) on every downstairs in {} ms",
                s.name,
                s.guid,
                s.flush,
                started.elapsed().as_millis()
            );
        }
        SnapshotCommand::List { json, .. } => {
            let list = client::list_snapshots(&addr).await?;
            print_list(&list, json);
        }
        SnapshotCommand::Delete { name, .. } => {
            client::delete_snapshot(&addr, &name)
                .await
                .with_context(|| format!("deleting {name} through {addr}"))?;
            println!("deleted snapshot {name}");
        }
    }
    Ok(())
}

fn print_list(list: &[SnapshotInfo], json: bool) {
    if json {
        for s in list {
            println!(
                "{}",
                serde_json::json!({"name": s.name, "guid": s.guid, "flush": s.flush, "created": s.created})
            );
        }
        return;
    }
    println!(
        "{:<24} {:<32} {:>8} {:>12}",
        "NAME", "GUID", "FLUSH", "CREATED"
    );
    for s in list {
        println!(
            "{:<24} {:<32} {:>8} {:>12}",
            s.name, s.guid, s.flush, s.created
        );
    }
}

/// Opens every region for writing (each locked: a running downstairs
/// makes this fail with a clear error) and checks they are one volume.
fn open_all(dirs: &[PathBuf]) -> anyhow::Result<Vec<Region>> {
    let rs: Vec<Region> = dirs
        .iter()
        .map(|d| Region::open(d, false).with_context(|| format!("opening {}", d.display())))
        .collect::<anyhow::Result<_>>()?;
    for r in &rs[1..] {
        if !r.def().same_geometry(rs[0].def()) {
            bail!(
                "{} and {} are not replicas of one volume (different geometry)",
                rs[0].dir().display(),
                r.dir().display()
            );
        }
    }
    Ok(rs)
}

fn send(a: crate::block_cli::SendArgs) -> anyhow::Result<()> {
    // Read-only and unlocked: a downstairs may be serving the region
    // (transfer.rs, "Send").
    let region =
        Region::open(&a.dir, true).with_context(|| format!("opening {}", a.dir.display()))?;
    let resume = a.resume.as_deref().map(ResumeToken::decode).transpose()?;
    // One request per stream: -I sends each step from the base on.
    let mut requests = Vec::new();
    match &a.from_each {
        Some(base) => {
            let target = a
                .snapshot
                .clone()
                .context("name the snapshot to send up to")?;
            let lo = region.snapshot(base)?.flush;
            let hi = region.snapshot(&target)?.flush;
            let mut prev = base.clone();
            for s in region
                .snapshots()
                .iter()
                .filter(|s| s.flush > lo && s.flush <= hi)
            {
                requests.push(SendRequest {
                    snapshot: Some(s.name.clone()),
                    from: Some(prev.clone()),
                    resume: None,
                    compress: a.compress,
                });
                prev = s.name.clone();
            }
            if requests.is_empty() {
                bail!("{target} is not newer than {base}");
            }
        }
        None => requests.push(SendRequest {
            snapshot: a.snapshot.clone(),
            from: a.from.clone(),
            resume,
            compress: a.compress,
        }),
    }
    let out: Box<dyn Write> = match &a.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut bar = Bar::new(a.quiet, "sent");
    for req in &requests {
        let report = transfer::send(&region, req, &mut out, |p| bar.update(p))?;
        bar.done();
        eprintln!(
            "sent {}: {} block(s) written, {} zeroed, {} bytes",
            req.snapshot.as_deref().unwrap_or("(resumed)"),
            report.blocks_sent,
            report.blocks_zeroed,
            report.bytes
        );
    }
    out.flush().context("writing the stream")?;
    Ok(())
}

fn receive(a: crate::block_cli::ReceiveArgs) -> anyhow::Result<()> {
    let mut rs = open_all(&a.regions.dirs)?;
    if a.status {
        match transfer::ReceiveState::load(&rs[0])? {
            Some(p) => {
                println!("receiving snapshot {} from block {}", p.name, p.next_block);
                println!("resume token: {}", p.token().encode());
            }
            None => println!("no receive in progress"),
        }
        return Ok(());
    }
    if a.abort {
        if transfer::abort_regions(&mut rs)? {
            println!("dropped the partial receive; the volume is back at its newest snapshot");
        } else {
            println!("no receive in progress");
        }
        return Ok(());
    }
    let input: Box<dyn Read> = match &a.input {
        Some(p) => {
            Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?)
        }
        None => Box::new(std::io::stdin().lock()),
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let opts = ReceiveOptions {
        force: a.force,
        resumable: a.resumable,
        checkpoint_bytes: a.checkpoint_mib << 20,
    };
    let mut bar = Bar::new(a.quiet, "received");
    let mut streams = 0;
    loop {
        match transfer::receive(&mut rs, &mut input, opts, |p| bar.update(p)) {
            Ok(r) => {
                bar.done();
                streams += 1;
                println!(
                    "received snapshot {} (guid {:032x}): {} block(s) written, {} zeroed{}",
                    r.snapshot.name,
                    r.snapshot.guid,
                    r.blocks_written,
                    r.blocks_zeroed,
                    r.resumed_from
                        .map(|b| format!(", resumed at block {b}"))
                        .unwrap_or_default()
                );
            }
            Err(f) => {
                bar.done();
                if let Some(t) = f.resume {
                    eprintln!(
                        "the receive stopped: {}\nwhat arrived is kept; continue with\n  \
                         kelp block send --resume {} --dir SOURCE | kelp block receive --resumable --dir ...\n\
                         or drop it with kelp block receive --abort --dir ...",
                        f.error,
                        t.encode()
                    );
                    println!("resume token: {}", t.encode());
                    bail!("receive interrupted; resume token {}", t.encode());
                }
                return Err(anyhow::anyhow!("{f}").context(if streams == 0 {
                    "receive failed; the target is as it was"
                } else {
                    "receive failed after earlier streams were received; the target holds those"
                }));
            }
        }
        // -I sends several streams back to back.
        if input.fill_buf().context("reading the stream")?.is_empty() {
            return Ok(());
        }
    }
}

/// A progress line on stderr (bytes, rate, ETA) when it is a terminal.
struct Bar {
    on: bool,
    verb: &'static str,
    started: Instant,
    last: Instant,
    drawn: bool,
}

impl Bar {
    fn new(quiet: bool, verb: &'static str) -> Bar {
        let now = Instant::now();
        Bar {
            on: !quiet && std::io::stderr().is_terminal(),
            verb,
            started: now,
            last: now,
            drawn: false,
        }
    }

    fn update(&mut self, p: Progress) {
        if !self.on || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = p.bytes as f64 / secs;
        let frac = p.blocks_done as f64 / p.blocks_total.max(1) as f64;
        let eta = if frac > 0.0 {
            secs * (1.0 - frac) / frac
        } else {
            0.0
        };
        eprint!(
            "\r{} {:>10} {:>5.1}%  {:>10}/s  ETA {:>4.0} s ",
            self.verb,
            human(p.bytes as f64),
            frac * 100.0,
            human(rate),
            eta
        );
        self.drawn = true;
    }

    fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

fn human(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}
