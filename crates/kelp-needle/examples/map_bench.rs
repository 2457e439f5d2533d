//! Times `NeedleMap::put` and `NeedleMap::get` and reports `memory_bytes`
//! per needle for sequential keys, keys with gaps, and random keys.
//!
//! `cargo run --release -p kelp-needle --example map_bench [count]`

use std::hint::black_box;
use std::time::Instant;

use kelp_needle::NeedleMap;
use kelp_needle::needle::{VERSION3, actual_size};

struct Rng(u64);

type KeyGen = Box<dyn FnMut(&mut Rng) -> u64>;

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Builds a map of `n` needles with keys from `next_key`, sizes of 64–127
/// byte blobs and offsets as appended to `.dat`; returns it with its keys.
fn build(
    n: usize,
    rng: &mut Rng,
    mut next_key: impl FnMut(&mut Rng) -> u64,
) -> (NeedleMap, Vec<u64>, f64) {
    let mut m = NeedleMap::new();
    let mut keys = Vec::with_capacity(n);
    let mut offset = 8u64;
    let t = Instant::now();
    for _ in 0..n {
        let key = next_key(rng);
        let size = 64 + (rng.next() % 64) as u32 + 20;
        m.put(key, offset, size);
        offset += actual_size(size, VERSION3);
        keys.push(key);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    m.shrink_to_fit();
    (m, keys, ns)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut k = 0u64;
    let cases: [(&str, KeyGen); 3] = [
        (
            "sequential",
            Box::new(move |_| {
                k += 1;
                k
            }),
        ),
        ("gaps 1-300", {
            let mut k = 0u64;
            Box::new(move |r: &mut Rng| {
                k += 1 + r.next() % 300;
                k
            })
        }),
        ("random u64", Box::new(|r: &mut Rng| r.next())),
    ];
    for (name, next_key) in cases {
        let (m, keys, put_ns) = build(n, &mut rng, next_key);
        let mut probe: Vec<u64> = (0..n)
            .map(|_| keys[(rng.next() % n as u64) as usize])
            .collect();
        probe.truncate(n.min(1_000_000));
        let t = Instant::now();
        let mut hits = 0usize;
        for &k in &probe {
            hits += black_box(m.get(k)).is_some() as usize;
        }
        let get_ns = t.elapsed().as_nanos() as f64 / probe.len() as f64;
        assert_eq!(hits, probe.len());
        println!(
            "{name:>12}: {n} needles, {:.2} bytes/needle, put {put_ns:.0} ns, get {get_ns:.0} ns",
            m.memory_bytes() as f64 / m.len() as f64
        );
    }
}
