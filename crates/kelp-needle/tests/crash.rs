//! Seeded crash points on the in-memory page-cache model: a volume takes
//! a random mix of writes, deletes, group-commit syncs and checkpoints; the
//! power is cut (`Memory::crash`) at a random point; the volume is reopened
//! through the normal recovery path. Every acknowledged write or delete
//! (its `sync_through` returned) must read back exactly; a key changed
//! after its last acknowledgement reads as one of the values it had since
//! (or not found, if one of them was a delete); no read ever returns wrong
//! bytes or a corrupt needle. Each case runs two crash rounds, so recovery's
//! own writes are crashed too.
//!
//! A failing seed is printed; `KELP_CRASH_SEED=N` replays just that one.

use std::collections::BTreeMap;
use std::path::Path;

use kelp_needle::{Needle, OpenOptions, Volume, VolumeError, VolumeOptions};
use kelp_storage::{Memory, for_each_seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 6;

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
        data,
        ..Needle::default()
    }
}

fn data(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..1500usize);
    let b: u8 = rng.random();
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

/// Random operations, stopping at a random point; returns the open volume.
fn run_ops(v: &Volume, rng: &mut StdRng, model: &mut Model) {
    let ops = rng.random_range(1..14);
    for _ in 0..ops {
        match rng.random_range(0..10) {
            0..5 => {
                let key = rng.random_range(1..=KEYS);
                let d = data(rng);
                let out = v.write(&mut needle(key, d.clone())).expect("write");
                model.record(key, out.seq, Some(d));
            }
            5 => {
                let key = rng.random_range(1..=KEYS);
                match v.delete(key, key as u32) {
                    Ok(out) => model.record(key, out.seq, None),
                    Err(VolumeError::NotFound { .. }) => {}
                    Err(e) => panic!("delete: {e}"),
                }
            }
            6..9 => {
                let seq = v.sync_stats().written_seq;
                v.sync_through(seq).expect("sync");
                model.ack(seq);
            }
            _ => {
                let seq = v.sync_stats().written_seq;
                v.checkpoint().expect("checkpoint");
                model.ack(seq);
            }
        }
    }
}

fn verify(v: &Volume, model: &mut Model, seed: u64) {
    for key in 1..=KEYS {
        let k = model.keys.get(&key).cloned().unwrap_or_default();
        let got = match v.read(key) {
            Ok(n) => Some(n.data),
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
    let v = Volume::create_in(mem.storage(), dir, "", 1, VolumeOptions::default()).expect("create");
    let mut model = Model::default();
    let mut v = Some(v);
    for round in 0..2u64 {
        let vol = v.take().expect("open volume");
        run_ops(&vol, &mut rng, &mut model);
        drop(vol);
        mem.crash(seed.wrapping_mul(31).wrapping_add(round));
        let vol = Volume::open_in(mem.storage(), dir, "", 1, &OpenOptions::default())
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after crash {round}: {e}"));
        verify(&vol, &mut model, seed);
        v = Some(vol);
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
