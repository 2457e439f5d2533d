//! Entry points of the filer's fuzz targets (`fuzz/fuzz_targets/`), kept
//! here so that the corpus replay test (`tests/fuzz_corpus.rs`) runs the
//! same code on stable.

use crate::entry::Entry;
use crate::store::{Event, Lease};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target: its name (the corpus directory) and its entry point.
pub const TARGETS: &[(&str, Target)] = &[("filer_records_decode", filer_records_decode)];

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
