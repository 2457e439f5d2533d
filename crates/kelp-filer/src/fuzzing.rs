//! Entry points of the filer's fuzz targets (`fuzz/fuzz_targets/`), kept
//! here so that the corpus replay test (`tests/fuzz_corpus.rs`) runs the
//! same code on stable.

use crate::entry::Entry;
use crate::store::wire::{self, Payload};
use crate::store::{Event, Lease, Replaced, Rows};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target: its name (the corpus directory) and its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("filer_records_decode", filer_records_decode),
    ("filer_store_wire_decode", filer_store_wire_decode),
];

/// The records the filer reads back from its store: an entry, an event or
/// a lease (the first byte picks which). Decoding never panics, and what
/// decodes encodes back to the same value.
pub fn filer_records_decode(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(e) = Entry::decode("n", rest) {
                assert_eq!(Entry::decode("n", &e.encode()).ok(), Some(e));
            }
        }
        1 => {
            if let Ok(e) = Event::decode(7, rest) {
                assert_eq!(Event::decode(7, &e.encode()).ok(), Some(e));
            }
        }
        _ => {
            if let Ok(l) = Lease::decode(7, rest) {
                assert_eq!(Lease::decode(7, &l.encode()).ok(), Some(l));
            }
        }
    }
}

/// The store wire format (`store/wire.rs`) a filer reads from gateways and
/// a gateway from its filer: a get, range or commit request, or a get,
/// range or commit answer (the first byte picks which). Decoding never
/// panics, and what decodes encodes to bytes that decode and encode back
/// to themselves.
pub fn filer_store_wire_decode(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok((t, k)) = wire::decode_get(rest) {
                assert_eq!(wire::encode_get(t, &k), rest);
            }
        }
        1 => {
            if let Ok((t, s, e, l)) = wire::decode_range(rest) {
                assert_eq!(wire::encode_range(t, &s, &e, l), rest);
            }
        }
        2 => {
            if let Ok(txn) = wire::decode_txn(rest) {
                let once = wire::encode_txn(&txn);
                let again = wire::decode_txn(&once).expect("an encoded txn decodes");
                assert_eq!(wire::encode_txn(&again), once);
            }
        }
        3 => answer::<Option<Vec<u8>>>(rest),
        4 => answer::<Rows>(rest),
        _ => answer::<Replaced>(rest),
    }
}

fn answer<P: Payload>(b: &[u8]) {
    if let Ok(a) = wire::decode_answer::<P>(b) {
        let once = wire::encode_answer(&a);
        let again = wire::decode_answer::<P>(&once).expect("an encoded answer decodes");
        assert_eq!(wire::encode_answer(&again), once);
    }
}
