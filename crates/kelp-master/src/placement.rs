//! Choosing servers for the copies of one new volume, honouring replica
//! placement `xyz`: the main server plus `z` more in the same rack, one in
//! each of `y` other racks of the same data center, and one in each of `x`
//! other data centers. Only servers with a free slot are candidates.
//!
//! Pure: callers pass a snapshot of the candidates and a random source, so
//! the rules are testable without a topology.

use std::collections::BTreeMap;

use kelp_core::ReplicaPlacement;
use rand::Rng;

/// A server that could hold a copy.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub data_center: String,
    pub rack: String,
    pub free_slots: u32,
}

/// Optional pins from the assign request: the main copy goes there.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    pub data_center: Option<String>,
    pub rack: Option<String>,
    pub data_node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no data center has free servers for replication {0}")]
    NoDataCenter(ReplicaPlacement),
    #[error("only {have} other data centers with free servers, replication {rp} needs {need}")]
    OtherDataCenters {
        rp: ReplicaPlacement,
        have: usize,
        need: usize,
    },
}

type Racks<'a> = BTreeMap<&'a str, Vec<&'a Candidate>>;

/// Returns the chosen server ids, main copy first, all distinct.
pub fn pick(
    candidates: &[Candidate],
    rp: ReplicaPlacement,
    pins: &Pins,
    rng: &mut impl Rng,
) -> Result<Vec<String>, PlacementError> {
    let mut dcs: BTreeMap<&str, Racks<'_>> = BTreeMap::new();
    for c in candidates.iter().filter(|c| c.free_slots > 0) {
        dcs.entry(c.data_center.as_str())
            .or_default()
            .entry(c.rack.as_str())
            .or_default()
            .push(c);
    }
    let same_rack = rp.same_rack as usize;
    let diff_rack = rp.diff_rack as usize;
    let diff_dc = rp.diff_data_center as usize;

    let rack_ok = |rack: &str, servers: &[&Candidate]| {
        pins.rack.as_deref().is_none_or(|r| r == rack)
            && servers.len() > same_rack
            && pins
                .data_node
                .as_deref()
                .is_none_or(|n| servers.iter().any(|s| s.id == n))
    };
    let dc_ok = |dc: &str, racks: &Racks<'_>| {
        pins.data_center.as_deref().is_none_or(|d| d == dc)
            && racks.len() > diff_rack
            && racks.iter().any(|(r, s)| rack_ok(r, s))
    };

    let main_dcs: Vec<(&str, u64)> = dcs
        .iter()
        .filter(|(dc, racks)| dc_ok(dc, racks))
        .map(|(dc, racks)| (*dc, free_of(racks.values().flatten().copied())))
        .collect();
    let main_dc = weighted(&main_dcs, rng).ok_or(PlacementError::NoDataCenter(rp))?;
    if dcs.len() - 1 < diff_dc {
        return Err(PlacementError::OtherDataCenters {
            rp,
            have: dcs.len() - 1,
            need: diff_dc,
        });
    }

    let racks = &dcs[main_dc];
    let main_racks: Vec<(&str, u64)> = racks
        .iter()
        .filter(|(r, s)| rack_ok(r, s))
        .map(|(r, s)| (*r, free_of(s.iter().copied())))
        .collect();
    // dc_ok guarantees at least one rack qualifies.
    let main_rack = weighted(&main_racks, rng).ok_or(PlacementError::NoDataCenter(rp))?;

    let mut chosen: Vec<String> = Vec::with_capacity(rp.copy_count());
    let mut rack_servers: Vec<&Candidate> = racks[main_rack].clone();
    if let Some(pinned) = pins.data_node.as_deref()
        && let Some(i) = rack_servers.iter().position(|s| s.id == pinned)
    {
        chosen.push(rack_servers.swap_remove(i).id.clone());
    }
    while chosen.len() < same_rack + 1 {
        let s = take_weighted(&mut rack_servers, rng).ok_or(PlacementError::NoDataCenter(rp))?;
        chosen.push(s.id.clone());
    }

    let mut other_racks: Vec<&Vec<&Candidate>> = racks
        .iter()
        .filter(|(r, _)| **r != main_rack)
        .map(|(_, s)| s)
        .collect();
    for _ in 0..diff_rack {
        let i = rng.random_range(0..other_racks.len());
        let mut servers = other_racks.swap_remove(i).clone();
        let s = take_weighted(&mut servers, rng).ok_or(PlacementError::NoDataCenter(rp))?;
        chosen.push(s.id.clone());
    }

    let mut other_dcs: Vec<&Racks<'_>> = dcs
        .iter()
        .filter(|(dc, _)| **dc != main_dc)
        .map(|(_, r)| r)
        .collect();
    for _ in 0..diff_dc {
        let i = rng.random_range(0..other_dcs.len());
        let mut servers: Vec<&Candidate> = other_dcs
            .swap_remove(i)
            .values()
            .flatten()
            .copied()
            .collect();
        let s = take_weighted(&mut servers, rng).ok_or(PlacementError::NoDataCenter(rp))?;
        chosen.push(s.id.clone());
    }
    Ok(chosen)
}

/// Where a copy lives, for placement checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    pub data_center: String,
    pub rack: String,
}

/// Whether copies at `spots` fit placement `rp` so far: some copy can be
/// the main one with at most `same_rack` others in its rack, others in
/// distinct other racks of its data center (at most `diff_rack`), and in
/// distinct other data centers (at most `diff_data_center`). A full set
/// that fits is exactly the placement.
pub fn fits(rp: ReplicaPlacement, spots: &[Spot]) -> bool {
    if spots.len() > rp.copy_count() {
        return false;
    }
    if spots.is_empty() {
        return true;
    }
    spots.iter().enumerate().any(|(i, main)| {
        let others = spots
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s);
        let (mut same_rack, mut racks, mut dcs) = (0usize, Vec::new(), Vec::new());
        for o in others {
            if o.data_center != main.data_center {
                dcs.push(o.data_center.as_str());
            } else if o.rack != main.rack {
                racks.push(o.rack.as_str());
            } else {
                same_rack += 1;
            }
        }
        let distinct = |v: &mut Vec<&str>| {
            let n = v.len();
            v.sort_unstable();
            v.dedup();
            v.len() == n
        };
        same_rack <= rp.same_rack as usize
            && racks.len() <= rp.diff_rack as usize
            && dcs.len() <= rp.diff_data_center as usize
            && distinct(&mut racks)
            && distinct(&mut dcs)
    })
}

/// One more server for a volume whose copies are at `holders` (ids in
/// `held_by`): a candidate with a free slot that keeps the copies fitting
/// `rp`, chosen at random among those that do.
pub fn pick_additional(
    candidates: &[Candidate],
    rp: ReplicaPlacement,
    holders: &[Spot],
    held_by: &[String],
    rng: &mut impl Rng,
) -> Option<String> {
    use rand::seq::IndexedRandom;
    let fitting: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.free_slots > 0 && !held_by.contains(&c.id))
        .filter(|c| {
            let mut spots = holders.to_vec();
            spots.push(Spot {
                data_center: c.data_center.clone(),
                rack: c.rack.clone(),
            });
            fits(rp, &spots)
        })
        .collect();
    fitting.choose(rng).map(|c| c.id.clone())
}

fn free_of<'a>(servers: impl Iterator<Item = &'a Candidate>) -> u64 {
    servers.map(|s| u64::from(s.free_slots)).sum()
}

/// Random choice weighted by free slots, so emptier places fill first.
fn weighted<'a>(items: &[(&'a str, u64)], rng: &mut impl Rng) -> Option<&'a str> {
    let total: u64 = items.iter().map(|(_, w)| *w).sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.random_range(0..total);
    for (name, w) in items {
        if x < *w {
            return Some(name);
        }
        x -= w;
    }
    None
}

fn take_weighted<'a>(
    servers: &mut Vec<&'a Candidate>,
    rng: &mut impl Rng,
) -> Option<&'a Candidate> {
    let total = free_of(servers.iter().copied());
    if total == 0 {
        return None;
    }
    let mut x = rng.random_range(0..total);
    let i = servers.iter().position(|s| {
        let w = u64::from(s.free_slots);
        if x < w {
            true
        } else {
            x -= w;
            false
        }
    })?;
    Some(servers.swap_remove(i))
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    fn spot(dc: &str, rack: &str) -> Spot {
        Spot {
            data_center: dc.into(),
            rack: rack.into(),
        }
    }

    #[test]
    fn fits_checks_each_level() {
        let rp = |s: &str| s.parse::<ReplicaPlacement>().unwrap();
        assert!(fits(rp("001"), &[spot("d", "r"), spot("d", "r")]));
        assert!(!fits(rp("001"), &[spot("d", "r"), spot("d", "r2")]));
        assert!(fits(rp("010"), &[spot("d", "r"), spot("d", "r2")]));
        assert!(!fits(rp("010"), &[spot("d", "r"), spot("d", "r")]));
        assert!(fits(rp("100"), &[spot("d", "r"), spot("e", "r")]));
        assert!(!fits(
            rp("200"),
            &[spot("d", "r"), spot("e", "r"), spot("e", "x")]
        ));
        assert!(fits(
            rp("011"),
            &[spot("d", "r"), spot("d", "r"), spot("d", "x")]
        ));
        assert!(
            fits(rp("011"), &[spot("d", "x"), spot("d", "r")]),
            "partial"
        );
        assert!(!fits(rp("000"), &[spot("d", "r"), spot("d", "r")]));
    }

    #[test]
    fn pick_additional_skips_holders_and_full_servers() {
        let rp: ReplicaPlacement = "001".parse().unwrap();
        let c = |id: &str, rack: &str, free| Candidate {
            id: id.into(),
            data_center: "d".into(),
            rack: rack.into(),
            free_slots: free,
        };
        let cands = vec![
            c("a", "r", 5),
            c("b", "r", 0),
            c("x", "other", 5),
            c("d", "r", 5),
        ];
        let mut rng = rand::rng();
        for _ in 0..20 {
            let got = pick_additional(&cands, rp, &[spot("d", "r")], &["a".into()], &mut rng);
            assert_eq!(got.as_deref(), Some("d"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::{HashMap, HashSet};

    fn node(id: &str, dc: &str, rack: &str, free: u32) -> Candidate {
        Candidate {
            id: id.to_string(),
            data_center: dc.to_string(),
            rack: rack.to_string(),
            free_slots: free,
        }
    }

    fn cluster() -> Vec<Candidate> {
        vec![
            node("a1", "dc1", "r1", 3),
            node("a2", "dc1", "r1", 3),
            node("a3", "dc1", "r2", 3),
            node("a4", "dc1", "r3", 0),
            node("b1", "dc2", "r1", 3),
            node("c1", "dc3", "r9", 1),
        ]
    }

    fn check(cands: &[Candidate], rp: &str, seeds: u64) {
        let rp: ReplicaPlacement = rp.parse().unwrap();
        let by_id: HashMap<&str, &Candidate> = cands.iter().map(|c| (c.id.as_str(), c)).collect();
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let got = pick(cands, rp, &Pins::default(), &mut rng).unwrap();
            assert_eq!(got.len(), rp.copy_count());
            assert_eq!(
                got.iter().collect::<HashSet<_>>().len(),
                got.len(),
                "distinct"
            );
            let main = by_id[got[0].as_str()];
            let rest: Vec<&Candidate> = got[1..].iter().map(|id| by_id[id.as_str()]).collect();
            assert!(got.iter().all(|id| by_id[id.as_str()].free_slots > 0));
            let same_rack = rest
                .iter()
                .filter(|c| c.data_center == main.data_center && c.rack == main.rack)
                .count();
            let other_rack: Vec<&str> = rest
                .iter()
                .filter(|c| c.data_center == main.data_center && c.rack != main.rack)
                .map(|c| c.rack.as_str())
                .collect();
            let other_dc: Vec<&str> = rest
                .iter()
                .filter(|c| c.data_center != main.data_center)
                .map(|c| c.data_center.as_str())
                .collect();
            assert_eq!(same_rack, rp.same_rack as usize, "{rp} {got:?}");
            assert_eq!(other_rack.len(), rp.diff_rack as usize, "{rp} {got:?}");
            assert_eq!(
                other_rack.iter().collect::<HashSet<_>>().len(),
                other_rack.len()
            );
            assert_eq!(other_dc.len(), rp.diff_data_center as usize, "{rp} {got:?}");
            assert_eq!(
                other_dc.iter().collect::<HashSet<_>>().len(),
                other_dc.len()
            );
        }
    }

    #[test]
    fn honours_xyz() {
        let c = cluster();
        for rp in ["000", "001", "010", "100", "200", "011", "110", "111"] {
            check(&c, rp, 50);
        }
    }

    #[test]
    fn impossible_layouts_fail() {
        let c = cluster();
        let mut rng = StdRng::seed_from_u64(1);
        for rp in ["002", "020", "003", "120"] {
            let rp: ReplicaPlacement = rp.parse().unwrap();
            assert!(pick(&c, rp, &Pins::default(), &mut rng).is_err(), "{rp}");
        }
        // a4 is full, so dc1/r3 does not count as a rack.
        let only_dc1: Vec<Candidate> = c
            .iter()
            .filter(|n| n.data_center == "dc1")
            .cloned()
            .collect();
        assert!(
            pick(
                &only_dc1,
                "020".parse().unwrap(),
                &Pins::default(),
                &mut rng
            )
            .is_err()
        );
        assert!(pick(&[], ReplicaPlacement::default(), &Pins::default(), &mut rng).is_err());
    }

    #[test]
    fn full_servers_are_never_chosen() {
        let c = vec![node("full", "dc", "r", 0), node("free", "dc", "r", 1)];
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            assert_eq!(
                pick(&c, ReplicaPlacement::default(), &Pins::default(), &mut rng).unwrap(),
                vec!["free".to_string()]
            );
        }
    }

    #[test]
    fn pins_are_honoured() {
        let c = cluster();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let pins = Pins {
                data_center: Some("dc2".into()),
                ..Pins::default()
            };
            let got = pick(&c, "100".parse().unwrap(), &pins, &mut rng).unwrap();
            assert_eq!(got[0], "b1");
            let pins = Pins {
                data_node: Some("a2".into()),
                ..Pins::default()
            };
            let got = pick(&c, "001".parse().unwrap(), &pins, &mut rng).unwrap();
            assert_eq!(got, vec!["a2".to_string(), "a1".to_string()]);
        }
        let mut rng = StdRng::seed_from_u64(0);
        let pins = Pins {
            rack: Some("nope".into()),
            ..Pins::default()
        };
        assert!(pick(&c, ReplicaPlacement::default(), &pins, &mut rng).is_err());
    }
}
