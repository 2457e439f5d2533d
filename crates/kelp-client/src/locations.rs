//! The volume location map: which volume servers hold each volume, as the
//! master last said. Entries are reused for a TTL, dropped when a location
//! fails, and refilled by one request however many callers wait for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp_core::VolumeId;
use parking_lot::Mutex;

use crate::error::ClientError;
use crate::master::Location;

/// Volumes remembered at most; beyond it the map starts over.
const MAX_VOLUMES: usize = 16 * 1024;

#[derive(Default)]
struct Slot {
    cached: Mutex<Option<(Instant, Vec<Location>)>>,
    /// Held while asking the master, so concurrent lookups share one.
    refill: tokio::sync::Mutex<()>,
}

pub(crate) struct LocationMap {
    ttl: Duration,
    slots: Mutex<HashMap<VolumeId, Arc<Slot>>>,
}

/// Locations and whether they were just fetched (rather than cached).
pub(crate) struct Found {
    pub locations: Vec<Location>,
    pub fresh: bool,
}

impl LocationMap {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, vid: VolumeId) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        if slots.len() >= MAX_VOLUMES && !slots.contains_key(&vid) {
            slots.clear();
        }
        slots.entry(vid).or_default().clone()
    }

    fn cached(&self, slot: &Slot) -> Option<Vec<Location>> {
        slot.cached
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, l)| l.clone())
    }

    /// The locations of `vid`: cached ones younger than the TTL, else
    /// `fetch`'s (called by one caller while the others wait for it).
    pub(crate) async fn get<F, Fut>(&self, vid: VolumeId, fetch: F) -> Result<Found, ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Location>, ClientError>>,
    {
        let slot = self.slot(vid);
        if let Some(locations) = self.cached(&slot) {
            return Ok(Found {
                locations,
                fresh: false,
            });
        }
        let _refilling = slot.refill.lock().await;
        // Whoever held the lock before may have refilled it.
        if let Some(locations) = self.cached(&slot) {
            return Ok(Found {
                locations,
                fresh: false,
            });
        }
        let locations = fetch().await?;
        *slot.cached.lock() = Some((Instant::now(), locations.clone()));
        Ok(Found {
            locations,
            fresh: true,
        })
    }

    /// Drops what is known of `vid`: the next lookup asks the master.
    pub(crate) fn forget(&self, vid: VolumeId) {
        let slot = self.slots.lock().get(&vid).cloned();
        if let Some(slot) = slot {
            *slot.cached.lock() = None;
        }
    }

    /// The cached locations of `vid`, if any (expired or not).
    pub(crate) fn peek(&self, vid: VolumeId) -> Option<Vec<Location>> {
        let slot = self.slots.lock().get(&vid).cloned()?;
        let cached = slot.cached.lock();
        cached.as_ref().map(|(_, l)| l.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn loc(url: &str) -> Vec<Location> {
        vec![Location {
            url: url.to_string(),
            public_url: String::new(),
            data_center: String::new(),
        }]
    }

    #[tokio::test]
    async fn caches_shares_and_forgets() {
        let map = Arc::new(LocationMap::new(Duration::from_secs(60)));
        let asked = Arc::new(AtomicUsize::new(0));
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let (map, asked) = (map.clone(), asked.clone());
                tokio::spawn(async move {
                    map.get(1, || async {
                        asked.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(loc("a:1"))
                    })
                    .await
                    .map(|f| f.locations)
                })
            })
            .collect();
        for l in lookups {
            assert_eq!(l.await.unwrap().unwrap(), loc("a:1"));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one request for 8 lookups");
        map.forget(1);
        assert_eq!(map.peek(1), None);
        let f = map.get(1, || async { Ok(loc("b:2")) }).await.unwrap();
        assert!(f.fresh);
        assert_eq!(map.peek(1), Some(loc("b:2")));
    }

    #[tokio::test]
    async fn expires() {
        let map = LocationMap::new(Duration::ZERO);
        map.get(1, || async { Ok(loc("a:1")) }).await.unwrap();
        let f = map.get(1, || async { Ok(loc("b:2")) }).await.unwrap();
        assert!(f.fresh);
        assert_eq!(f.locations, loc("b:2"));
    }
}
