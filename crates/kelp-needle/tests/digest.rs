//! Replica digests and raw needle copies between two volumes, as
//! anti-entropy uses them.

use kelp_needle::digest::KeyState;
use kelp_needle::{Needle, Volume, VolumeOptions};

fn needle(key: u64, data: &[u8]) -> Needle {
    Needle {
        id: key,
        cookie: 0x1234_5678,
        data: data.to_vec().into(),
        name: b"n.txt".to_vec(),
        mime: b"text/plain".to_vec(),
        last_modified: 1_700_000_000,
        ..Needle::default()
    }
}

#[test]
fn digest_lists_live_and_deleted_keys_and_copies_make_replicas_equal() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let a = Volume::create(&dir.path().join("a"), "", 1, VolumeOptions::default()).unwrap();
    let b = Volume::create(&dir.path().join("b"), "", 1, VolumeOptions::default()).unwrap();
    for (k, d) in [(3u64, &b"three"[..]), (1, b"one"), (2, b"two")] {
        a.write(&mut needle(k, d)).unwrap();
    }
    a.delete(2, 0x1234_5678).unwrap();
    let d = a.digest().unwrap();
    let keys: Vec<u64> = d.iter().map(|e| e.key).collect();
    assert_eq!(keys, vec![1, 2, 3], "sorted by key");
    assert_eq!(d[1].state, KeyState::Deleted);
    assert!(matches!(d[0].state, KeyState::Live { size, .. } if size > 3));

    // Copying every live needle and the delete makes b's digest equal.
    for e in &d {
        match e.state {
            KeyState::Live { .. } => {
                b.import_needle(e.key, a.raw_needle(e.key).unwrap())
                    .unwrap();
            }
            KeyState::Deleted => {
                b.write(&mut needle(e.key, b"soon gone")).unwrap();
                b.delete(e.key, 0x1234_5678).unwrap();
            }
        }
    }
    assert_eq!(b.digest().unwrap(), d);
    let copy = b.read(1).unwrap();
    assert_eq!(&copy.data[..], b"one");
    assert_eq!(copy.name, b"n.txt");
    assert_eq!(copy.last_modified, 1_700_000_000);

    // A damaged copy or one for another key is refused.
    let mut raw = a.raw_needle(3).unwrap();
    raw[20] ^= 1;
    assert!(b.import_needle(3, raw).is_err());
    assert!(b.import_needle(9, a.raw_needle(3).unwrap()).is_err());
}
