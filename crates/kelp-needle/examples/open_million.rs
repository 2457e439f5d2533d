//! Builds a volume with 1,000,000 tiny needles (writing `.dat` and `.idx`
//! directly, as a SeaweedFS volume would look), then times opening it
//! without a checkpoint (full `.idx` replay) and with one.
//!
//! `cargo run --release -p kelp-needle --example open_million [count]`

use std::io::Write;
use std::time::Instant;

use kelp_needle::needle::{VERSION3, crc32c};
use kelp_needle::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let width = OffsetWidth::Five;
    Volume::create(dir.path(), "", 1, VolumeOptions::default())?.close()?;
    for ext in ["knm", "kwm"] {
        std::fs::remove_file(dir.path().join(format!("1.{ext}")))?;
    }

    let t = Instant::now();
    let mut dat = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("1.dat"))?,
    );
    let mut idx = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("1.idx"))?,
    );
    let mut offset = 8u64;
    let mut entry = Vec::with_capacity(17);
    for key in 1..=count {
        let data = [key as u8];
        let n = Needle {
            cookie: key as u32 ^ 0x5a5a_5a5a,
            id: key,
            data: data.to_vec().into(),
            checksum: crc32c(&data),
            append_at_ns: 1_700_000_000_000_000_000 + key,
            ..Needle::default()
        };
        let bytes = n.encode(VERSION3)?;
        dat.write_all(&bytes)?;
        entry.clear();
        IdxEntry::new(key, offset / 8, n.body_size() as u32).encode(width, &mut entry)?;
        idx.write_all(&entry)?;
        offset += bytes.len() as u64;
    }
    dat.flush()?;
    idx.flush()?;
    drop((dat, idx));
    println!(
        "built {count} needles ({} MiB .dat) in {:?}",
        offset >> 20,
        t.elapsed()
    );

    let t = Instant::now();
    let v = Volume::open(dir.path(), "", 1, &OpenOptions::default())?;
    let full = t.elapsed();
    let info = v.info();
    assert_eq!(info.live_count, count);
    println!("open with full .idx replay: {full:?}");
    println!(
        "needle map: {} bytes, {:.2} bytes per needle",
        info.map_memory_bytes,
        info.map_memory_bytes as f64 / count as f64
    );

    let t = Instant::now();
    v.close()?;
    println!("close (sync + checkpoint): {:?}", t.elapsed());

    let t = Instant::now();
    let v = Volume::open(dir.path(), "", 1, &OpenOptions::default())?;
    let ckpt = t.elapsed();
    assert_eq!(v.info().live_count, count);
    assert_eq!(v.read(count / 2)?.data[..], [(count / 2) as u8]);
    println!("open from checkpoint: {ckpt:?}");
    Ok(())
}
