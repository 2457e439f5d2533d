//! `kelp block verify`: checks replicas against their own block contexts
//! and against each other. Regions are opened read-only; run it on stopped
//! downstairs (or accept that blocks written meanwhile may differ).

use std::fmt;
use std::path::PathBuf;

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
}

impl VerifyReport {
    /// Every block matches its context, the replicas hold the same data,
    /// and they agree on every extent's (generation, flush, dirty): a
    /// replica that missed a flush is not in sync even if its bytes match.
    pub fn ok(&self) -> bool {
        self.bad_checksums.is_empty()
            && self.mismatched_blocks.is_empty()
            && self.version_mismatches().is_empty()
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
                "OK: every block matches its context and all replicas hold identical data and extent versions"
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
        ..Default::default()
    };
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
        }
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
    }
}
