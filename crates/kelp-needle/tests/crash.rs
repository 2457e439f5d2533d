//! Seeded crash points on the in-memory page-cache model: a volume takes
//! a random mix of writes, deletes, group-commit syncs, checkpoints and
//! compactions; the power is cut (`Memory::crash`) at a random point; the
//! volume is reopened through the normal recovery path. In half the cases
//! the process also "dies" inside an operation first: an injected EIO on a
//! random write, fdatasync or rename stops everything there, so the crash
//! lands in the middle of an append, a sync, a checkpoint, a compaction
//! commit or the recovery at open. Every acknowledged write or delete
//! (its `sync_through` returned) must read back exactly; a key changed
//! after its last acknowledgement reads as one of the values it had since
//! (or not found, if one of them was a delete), a failed write or delete
//! included; no read ever returns wrong
//! bytes or a corrupt needle. Each case runs two crash rounds, so recovery's
//! own writes are crashed too.
//!
//! A failing seed is printed; `KELP_CRASH_SEED=N` replays just that one.

use std::collections::BTreeMap;
use std::path::Path;

use kelp_needle::{Needle, OpenOptions, Volume, VolumeError, VolumeOptions};
use kelp_storage::{Fault, FaultKind, FaultOp, Memory, Storage, for_each_seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 6;

/// The sequence recorded for a write or delete that returned an error:
/// never acknowledged, but it may have reached `.dat` (the `.idx` write or
/// the fdatasync is what failed), and recovery may then keep it, as a
/// client must expect of any failed request.
const FAILED: u64 = u64::MAX;

/// Per key: the acknowledged value (None = absent) and the values written
/// since, any of which a crash may leave.
#[derive(Default, Clone)]
struct KeyModel {
    acked: Option<Vec<u8>>,
    since: Vec<(u64, Option<Vec<u8>>)>,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<u64, KeyModel>,
}

impl Model {
    fn record(&mut self, key: u64, seq: u64, value: Option<Vec<u8>>) {
        self.keys.entry(key).or_default().since.push((seq, value));
    }

    /// Everything with sequence ≤ `seq` is now acknowledged.
    fn ack(&mut self, seq: u64) {
        for k in self.keys.values_mut() {
            while let Some(i) = k.since.iter().position(|(s, _)| *s <= seq) {
                // Values are pushed in sequence order: the last acked wins.
                let (_, v) = k.since.remove(i);
                k.acked = v;
            }
        }
    }

    /// After a reopen the state read back becomes the new baseline.
    fn settle(&mut self, key: u64, value: Option<Vec<u8>>) {
        self.keys.insert(
            key,
            KeyModel {
                acked: value,
                since: Vec::new(),
            },
        );
    }
}

fn needle(key: u64, data: Vec<u8>) -> Needle {
    Needle {
        id: key,
        cookie: key as u32,
        data: data.into(),
        ..Needle::default()
    }
}

fn data(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..1500usize);
    let b: u8 = rng.random();
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

/// Random operations, stopping at a random point or at the first error
/// (an injected fault: the process dies there).
fn run_ops(v: &Volume, rng: &mut StdRng, model: &mut Model) -> Result<(), VolumeError> {
    let ops = rng.random_range(1..14);
    for _ in 0..ops {
        match rng.random_range(0..20) {
            0..10 => {
                let key = rng.random_range(1..=KEYS);
                let d = data(rng);
                match v.write(&mut needle(key, d.clone())) {
                    Ok(out) => model.record(key, out.seq, Some(d)),
                    Err(e) => {
                        model.record(key, FAILED, Some(d));
                        return Err(e);
                    }
                }
            }
            10..12 => {
                let key = rng.random_range(1..=KEYS);
                match v.delete(key, key as u32) {
                    Ok(out) => model.record(key, out.seq, None),
                    Err(VolumeError::NotFound { .. }) => {}
                    Err(e) => {
                        model.record(key, FAILED, None);
                        return Err(e);
                    }
                }
            }
            12..17 => {
                let seq = v.sync_stats().written_seq;
                v.sync_through(seq)?;
                model.ack(seq);
            }
            17..19 => {
                let seq = v.sync_stats().written_seq;
                v.checkpoint()?;
                model.ack(seq);
            }
            _ => {
                v.compact(None)?;
                if rng.random_bool(0.8) {
                    // A commit leaves everything written so far synced.
                    let seq = v.sync_stats().written_seq;
                    v.commit_compaction()?;
                    model.ack(seq);
                }
            }
        }
    }
    Ok(())
}

/// A backend over `mem` that, in half the cases, fails one random write,
/// fdatasync or rename with EIO.
fn faulty(mem: &Memory, rng: &mut StdRng) -> Storage {
    let fault = Fault::new(mem.storage());
    if rng.random_bool(0.5) {
        let op = [FaultOp::Write, FaultOp::Sync, FaultOp::Rename][rng.random_range(0..3)];
        fault.fail(op, rng.random_range(0..40), FaultKind::Eio);
    }
    fault.storage()
}

fn verify(v: &Volume, model: &mut Model, seed: u64) {
    for key in 1..=KEYS {
        let k = model.keys.get(&key).cloned().unwrap_or_default();
        let got = match v.read(key) {
            Ok(n) => Some(n.data.to_vec()),
            Err(VolumeError::NotFound { .. }) => None,
            Err(e) => panic!("seed {seed}: key {key}: read failed after recovery: {e}"),
        };
        let allowed = std::iter::once(&k.acked)
            .chain(k.since.iter().map(|(_, v)| v))
            .any(|a| *a == got);
        assert!(
            allowed,
            "seed {seed}: key {key} reads {:?} bytes; acknowledged {:?} bytes, unacknowledged since: {:?}",
            got.as_ref().map(Vec::len),
            k.acked.as_ref().map(Vec::len),
            k.since
                .iter()
                .map(|(s, v)| (s, v.as_ref().map(Vec::len)))
                .collect::<Vec<_>>()
        );
        model.settle(key, got);
    }
}

fn crash_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mem = Memory::new();
    let dir = Path::new("/vols");
    Volume::create_in(mem.storage(), dir, "", 1, VolumeOptions::default()).expect("create");
    let mut model = Model::default();
    for round in 0..2u64 {
        // Opening may hit the injected fault too: recovery is crashed then.
        if let Ok(v) = Volume::open_in(faulty(&mem, &mut rng), dir, "", 1, &OpenOptions::default())
        {
            // An error is the injected fault: the process dies there.
            let _ = run_ops(&v, &mut rng, &mut model);
        }
        mem.crash(seed.wrapping_mul(31).wrapping_add(round));
        let v = Volume::open_in(mem.storage(), dir, "", 1, &OpenOptions::default())
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after crash {round}: {e}"));
        verify(&v, &mut model, seed);
    }
}

#[test]
fn acknowledged_blobs_survive_seeded_crashes() {
    for_each_seed(
        "acknowledged_blobs_survive_seeded_crashes",
        2000,
        crash_case,
    );
}
