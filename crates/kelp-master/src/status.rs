//! JSON bodies of `/dir/status` and `/vol/status`, keyed the way SeaweedFS
//! keys them so existing dashboards and scripts can read them.

use std::collections::BTreeMap;

use kelp_core::VolumeId;
use serde_json::{Value, json};

use crate::topology::{DataNode, Topology, VolumeInfo};

pub const VERSION: &str = concat!("kelp ", env!("CARGO_PKG_VERSION"));

pub fn dir_status(t: &Topology) -> Value {
    let mut dcs: BTreeMap<&str, BTreeMap<&str, Vec<&DataNode>>> = BTreeMap::new();
    for n in t.nodes() {
        dcs.entry(&n.data_center)
            .or_default()
            .entry(&n.rack)
            .or_default()
            .push(n);
    }
    let (mut max, mut free) = (0u64, 0u64);
    let data_centers: Vec<Value> = dcs
        .iter()
        .map(|(dc, racks)| {
            let (mut dc_max, mut dc_free) = (0u64, 0u64);
            let racks: Vec<Value> = racks
                .iter()
                .map(|(rack, nodes)| {
                    let (mut r_max, mut r_free) = (0u64, 0u64);
                    let nodes: Vec<Value> = nodes
                        .iter()
                        .map(|n| {
                            r_max += u64::from(n.max_volumes);
                            r_free += u64::from(n.free_slots());
                            json!({
                                "Url": n.url(),
                                "PublicUrl": n.public_url,
                                "Volumes": n.volumes.len(),
                                "EcShards": 0,
                                "Max": n.max_volumes,
                                "VolumeIds": volume_ranges(n.volumes.keys().copied()),
                            })
                        })
                        .collect();
                    dc_max += r_max;
                    dc_free += r_free;
                    json!({"Id": rack, "Max": r_max, "Free": r_free, "DataNodes": nodes})
                })
                .collect();
            max += dc_max;
            free += dc_free;
            json!({"Id": dc, "Max": dc_max, "Free": dc_free, "Racks": racks})
        })
        .collect();
    let layouts: Vec<Value> = t
        .layouts()
        .into_iter()
        .map(|(k, _all, writables)| {
            json!({
                "replication": k.replication.to_string(),
                "ttl": k.ttl.to_string(),
                "writables": writables,
                "collection": k.collection,
                "diskType": "",
            })
        })
        .collect();
    json!({
        "Topology": {
            "Max": max,
            "Free": free,
            "DataCenters": data_centers,
            "Layouts": layouts,
        },
        "Version": VERSION,
    })
}

pub fn vol_status(t: &Topology) -> Value {
    let mut dcs: BTreeMap<&str, BTreeMap<&str, BTreeMap<String, Vec<Value>>>> = BTreeMap::new();
    let (mut max, mut free) = (0u64, 0u64);
    for n in t.nodes() {
        max += u64::from(n.max_volumes);
        free += u64::from(n.free_slots());
        dcs.entry(&n.data_center)
            .or_default()
            .entry(&n.rack)
            .or_default()
            .insert(n.url(), n.volumes.values().map(volume_json).collect());
    }
    json!({
        "Version": VERSION,
        "Volumes": {"DataCenters": dcs, "Free": free, "Max": max},
    })
}

fn volume_json(v: &VolumeInfo) -> Value {
    let mut rp = serde_json::Map::new();
    for (key, n) in [
        ("node", v.replication.same_rack),
        ("rack", v.replication.diff_rack),
        ("dc", v.replication.diff_data_center),
    ] {
        if n != 0 {
            rp.insert(key.to_string(), json!(n));
        }
    }
    json!({
        "Id": v.id,
        "Size": v.size,
        "ReplicaPlacement": rp,
        "Ttl": {"Count": v.ttl.count, "Unit": v.ttl.unit as u8},
        "DiskType": v.disk_type,
        "DiskId": 0,
        "Collection": v.collection,
        "Version": v.version,
        "FileCount": v.file_count,
        "DeleteCount": v.delete_count,
        "DeletedByteCount": v.deleted_byte_count,
        "ReadOnly": v.read_only,
        "CompactRevision": v.compact_revision,
        "ModifiedAtSecond": v.modified_at_second,
        "RemoteStorageName": "",
        "RemoteStorageKey": "",
    })
}

/// Sorted ids as ranges, each preceded by a space: `" 1-3 5"`.
pub fn volume_ranges(ids: impl Iterator<Item = VolumeId>) -> String {
    let mut out = String::new();
    let mut run: Option<(VolumeId, VolumeId)> = None;
    let flush = |out: &mut String, (a, b): (VolumeId, VolumeId)| {
        if a == b {
            out.push_str(&format!(" {a}"));
        } else {
            out.push_str(&format!(" {a}-{b}"));
        }
    };
    for id in ids {
        run = match run {
            Some((a, b)) if b.checked_add(1) == Some(id) => Some((a, id)),
            Some(r) => {
                flush(&mut out, r);
                Some((id, id))
            }
            None => Some((id, id)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(volume_ranges([1, 2, 3, 5, 7, 8].into_iter()), " 1-3 5 7-8");
        assert_eq!(volume_ranges(std::iter::empty()), "");
        assert_eq!(
            volume_ranges([u32::MAX].into_iter()),
            format!(" {}", u32::MAX)
        );
    }
}
