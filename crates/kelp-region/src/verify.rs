//! `kelp block verify`: checks replicas against their own block contexts
//! and against each other. Regions are opened read-only; run it on stopped
//! downstairs (or accept that blocks written meanwhile may differ).

use std::fmt;
use std::path::PathBuf;

use crate::catalog::Snapshot;
use crate::error::{BlockError, Result};
use crate::extent::ExtentVersion;
use crate::region::Region;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub regions: Vec<PathBuf>,
    pub blocks: u64,
    /// (region index, block) whose data fails its own context.
    pub bad_checksums: Vec<(usize, u64)>,
    /// Blocks whose contents differ between replicas.
    pub mismatched_blocks: Vec<u64>,
    /// Per region, per extent (generation, flush, dirty).
    pub versions: Vec<Vec<ExtentVersion>>,
    /// Per region, its snapshot catalog: replicas must hold the same
    /// snapshots (name, GUID, flush).
    pub catalogs: Vec<Vec<Snapshot>>,
    /// Blocks whose live version was born between different snapshots on
    /// different replicas (snapshots and incremental sends would differ).
    /// Birth numbers themselves may differ: a downstairs restarted after
    /// a flush that stamped nothing there forgets that flush's number, and
    /// the writes replayed to it are born earlier, though still after
    /// every snapshot it holds.
    pub mismatched_births: Vec<u64>,
    /// (snapshot, block): the snapshot, held by every replica, reads a
    /// different version (birth or context) of the block on some replica.
    pub snapshot_mismatches: Vec<(String, u64)>,
}

impl VerifyReport {
    /// Every block matches its context, the replicas hold the same data,
    /// and they agree on every extent's (generation, flush, dirty): a
    /// replica that missed a flush is not in sync even if its bytes match.
    pub fn ok(&self) -> bool {
        self.bad_checksums.is_empty()
            && self.mismatched_blocks.is_empty()
            && self.version_mismatches().is_empty()
            && self.catalog_mismatches().is_empty()
            && self.mismatched_births.is_empty()
            && self.snapshot_mismatches.is_empty()
    }

    /// Snapshots not held identically (name, GUID, flush) by every
    /// replica, with the regions (indexes) that hold them.
    pub fn catalog_mismatches(&self) -> Vec<(Snapshot, Vec<usize>)> {
        let mut out: Vec<(Snapshot, Vec<usize>)> = vec![];
        for c in &self.catalogs {
            for s in c {
                if out.iter().any(|(o, _)| o == s) {
                    continue;
                }
                let holders: Vec<usize> = (0..self.catalogs.len())
                    .filter(|&i| self.catalogs[i].contains(s))
                    .collect();
                if holders.len() != self.catalogs.len() {
                    out.push((s.clone(), holders));
                }
            }
        }
        out
    }

    /// Extents whose (generation, flush, dirty) differ between replicas.
    pub fn version_mismatches(&self) -> Vec<u32> {
        let Some(first) = self.versions.first() else {
            return vec![];
        };
        (0..first.len())
            .filter(|&e| self.versions.iter().any(|v| v.get(e) != first.get(e)))
            .map(|e| e as u32)
            .collect()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} regions, {} blocks each",
            self.regions.len(),
            self.blocks
        )?;
        for (i, r) in self.regions.iter().enumerate() {
            let dirty = self.versions[i].iter().filter(|v| v.dirty).count();
            let maxf = self.versions[i].iter().map(|v| v.flush).max().unwrap_or(0);
            let maxg = self.versions[i]
                .iter()
                .map(|v| v.generation)
                .max()
                .unwrap_or(0);
            writeln!(
                f,
                "  [{i}] {}: max flush {maxf}, max generation {maxg}, {dirty} dirty extents",
                r.display()
            )?;
        }
        let vm = self.version_mismatches();
        if !vm.is_empty() {
            writeln!(
                f,
                "extent versions differ on {} extents: {:?}",
                vm.len(),
                &vm[..vm.len().min(16)]
            )?;
        }
        for (s, holders) in self.catalog_mismatches() {
            writeln!(
                f,
                "snapshot {} (GUID {:032x}, flush {}) is held only by regions {holders:?}",
                s.name, s.guid, s.flush
            )?;
        }
        if !self.mismatched_births.is_empty() {
            writeln!(
                f,
                "{} blocks were born at different flushes on different replicas, first: {:?}",
                self.mismatched_births.len(),
                &self.mismatched_births[..self.mismatched_births.len().min(16)]
            )?;
        }
        for (name, b) in self.snapshot_mismatches.iter().take(16) {
            writeln!(
                f,
                "snapshot {name} reads a different version of block {b} on different replicas"
            )?;
        }
        for (r, b) in self.bad_checksums.iter().take(16) {
            writeln!(f, "checksum mismatch: region [{r}] block {b}")?;
        }
        if !self.mismatched_blocks.is_empty() {
            writeln!(
                f,
                "{} blocks differ between replicas, first: {:?}",
                self.mismatched_blocks.len(),
                &self.mismatched_blocks[..self.mismatched_blocks.len().min(16)]
            )?;
        }
        if self.ok() {
            writeln!(
                f,
                "OK: every block matches its context and all replicas hold identical data, extent versions, snapshots and births between them"
            )?;
        }
        Ok(())
    }
}

pub fn verify(dirs: &[PathBuf]) -> Result<VerifyReport> {
    let regions: Vec<Region> = dirs
        .iter()
        .map(|d| Region::open(d, true))
        .collect::<Result<_>>()?;
    let Some(first) = regions.first() else {
        return Err(BlockError::BadOptions("no regions to verify".into()));
    };
    let def = *first.def();
    for (i, r) in regions.iter().enumerate() {
        if !r.def().same_geometry(&def) {
            return Err(BlockError::RegionMismatch(format!(
                "{} has geometry {:?}, {} has {:?}",
                dirs[i].display(),
                r.def(),
                dirs[0].display(),
                def
            )));
        }
    }
    let mut report = VerifyReport {
        regions: dirs.to_vec(),
        blocks: def.total_blocks(),
        versions: regions.iter().map(|r| r.versions()).collect(),
        catalogs: regions.iter().map(|r| r.snapshots().to_vec()).collect(),
        ..Default::default()
    };
    // Births and snapshot versions, from memory: the live volume (at the
    // last flush there can be), then every snapshot all replicas hold.
    let mut views: Vec<(Option<&Snapshot>, u64)> = vec![(None, u64::MAX)];
    views.extend(
        first
            .snapshots()
            .iter()
            .filter(|s| report.catalogs.iter().all(|c| c.contains(s)))
            .map(|s| (Some(s), s.flush)),
    );
    // Which snapshots a birth falls between: the snapshots, as held by
    // every replica, born-after-or-at compared by position, not number.
    let flushes: Vec<u64> = views.iter().skip(1).map(|(_, at)| *at).collect();
    let epoch = |birth: u64| flushes.partition_point(|&f| f < birth);
    for (snap, at) in views {
        let mut start = 0;
        while start < def.total_blocks() {
            let n = (def.extent_size as u64).min(def.total_blocks() - start);
            let vs: Vec<_> = regions
                .iter()
                .map(|r| r.snapshot_versions(at, start, n))
                .collect::<Result<_>>()?;
            let seen = |i: usize, k: usize| vs[i][k].map(|v| (epoch(v.birth), v.context));
            for k in 0..n as usize {
                if (1..vs.len()).all(|i| seen(i, k) == seen(0, k)) {
                    continue;
                }
                let b = start + k as u64;
                match snap {
                    None => report.mismatched_births.push(b),
                    Some(s) => report.snapshot_mismatches.push((s.name.clone(), b)),
                }
            }
            start += n;
        }
    }
    let bs = def.block_size as usize;
    let step = def.extent_size as u64;
    let mut start = 0;
    while start < def.total_blocks() {
        let n = step.min(def.total_blocks() - start);
        let reads: Vec<_> = regions
            .iter()
            .map(|r| r.read(start, n))
            .collect::<Result<_>>()?;
        for k in 0..n as usize {
            let blk = |i: usize| &reads[i].1[k * bs..(k + 1) * bs];
            for (i, (ctxs, _)) in reads.iter().enumerate() {
                if !ctxs[k].verify(blk(i)) {
                    report.bad_checksums.push((i, start + k as u64));
                }
            }
            if (1..reads.len()).any(|i| blk(i) != blk(0)) {
                report.mismatched_blocks.push(start + k as u64);
            }
        }
        start += n;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(versions: Vec<Vec<ExtentVersion>>) -> VerifyReport {
        VerifyReport {
            regions: vec![
                PathBuf::from("r0"),
                PathBuf::from("r1"),
                PathBuf::from("r2"),
            ],
            blocks: 8,
            bad_checksums: vec![],
            mismatched_blocks: vec![],
            versions,
            catalogs: vec![vec![]; 3],
            mismatched_births: vec![],
            snapshot_mismatches: vec![],
        }
    }

    /// Births are compared by the snapshots they fall between, not by
    /// number; a snapshot one replica lacks, or reads differently, is not
    /// ok.
    #[test]
    fn births_and_snapshots_are_compared() {
        let crc = |b: u8| vec![crate::context::block_crc(&[b; 512])];
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        let mut a = Region::create(&paths[0], 512, 4, 1).unwrap();
        let mut b = Region::create(&paths[1], 512, 4, 1).unwrap();
        b.flush(3, 1).unwrap();
        for r in [&mut a, &mut b] {
            r.write(0, &[1; 512], &crc(1)).unwrap();
            r.flush(5, 1).unwrap();
            let s = Snapshot {
                name: "s".into(),
                guid: 9,
                flush: 6,
                created: 0,
            };
            r.snapshot_take(s).unwrap();
        }
        let report = verify(&paths).unwrap();
        assert!(report.ok(), "born 1 and 4, both before s: {report}");
        // Written before `t` on one replica, after it on the other.
        a.write(1, &[2; 512], &crc(2)).unwrap();
        a.flush(7, 1).unwrap();
        a.snapshot_take(Snapshot {
            name: "t".into(),
            guid: 10,
            flush: 8,
            created: 0,
        })
        .unwrap();
        b.flush(7, 1).unwrap();
        b.snapshot_take(Snapshot {
            name: "t".into(),
            guid: 10,
            flush: 8,
            created: 0,
        })
        .unwrap();
        b.write(1, &[2; 512], &crc(2)).unwrap();
        b.flush(9, 1).unwrap();
        a.extent_stamp(0, 9, 1).unwrap();
        let report = verify(&paths).unwrap();
        assert_eq!(report.mismatched_births, vec![1], "{report}");
        assert_eq!(
            report.snapshot_mismatches,
            vec![("t".to_string(), 1)],
            "{report}"
        );
        assert!(!report.ok());
        b.snapshot_delete("t").unwrap();
        let report = verify(&paths).unwrap();
        assert_eq!(report.catalog_mismatches().len(), 1, "{report}");
        assert!(report.to_string().contains("snapshot t "), "{report}");
    }

    #[test]
    fn a_replica_that_missed_a_flush_is_not_ok() {
        let v = |flush| ExtentVersion {
            generation: 1,
            flush,
            dirty: false,
        };
        let same = report(vec![vec![v(3), v(4)]; 3]);
        assert!(same.ok(), "{same}");
        assert!(same.to_string().contains("OK"));
        let behind = report(vec![vec![v(3), v(4)], vec![v(3), v(4)], vec![v(3), v(2)]]);
        assert_eq!(behind.version_mismatches(), vec![1]);
        assert!(!behind.ok(), "{behind}");
        assert!(!behind.to_string().contains("OK"), "{behind}");
        let s = |name: &str, flush| Snapshot {
            name: name.into(),
            guid: flush as u128,
            flush,
            created: 0,
        };
        let mut missing = report(vec![vec![v(3), v(4)]; 3]);
        missing.catalogs = vec![
            vec![s("a", 2), s("b", 4)],
            vec![s("a", 2)],
            vec![s("a", 2), s("b", 4)],
        ];
        assert_eq!(missing.catalog_mismatches(), vec![(s("b", 4), vec![0, 2])]);
        assert!(!missing.ok());
        let text = missing.to_string();
        assert!(
            text.contains("snapshot b ") && text.contains("[0, 2]"),
            "{text}"
        );
    }
}
