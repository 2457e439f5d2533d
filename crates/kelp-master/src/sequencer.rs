//! Hands out needle keys and volume ids, never the same one twice, even
//! across restarts.
//!
//! Invariant: every key handed out is `< persisted.key_ceiling` and every
//! volume id handed out is `<= persisted.max_volume_id`, where `persisted`
//! is what `master.meta` holds on disk. Keys are reserved in blocks so the
//! file is written once per `KEY_BLOCK` keys, not per assign.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use kelp_core::{NeedleId, VolumeId};

use crate::error::MasterError;
use crate::meta::Meta;

/// Keys reserved on disk beyond the ones asked for.
const KEY_BLOCK: u64 = 10_000;

pub struct Sequencer {
    dir: PathBuf,
    state: tokio::sync::Mutex<State>,
    /// Mirror of `State::max_volume_id` for synchronous readers (status).
    max_volume_id: AtomicU32,
}

struct State {
    next_key: NeedleId,
    max_volume_id: VolumeId,
    persisted: Meta,
}

impl Sequencer {
    pub async fn open(dir: PathBuf) -> Result<Self, MasterError> {
        let load_dir = dir.clone();
        let persisted = tokio::task::spawn_blocking(move || Meta::load(&load_dir))
            .await
            .map_err(std::io::Error::other)??;
        tracing::info!(
            key_ceiling = persisted.key_ceiling,
            max_volume_id = persisted.max_volume_id,
            "loaded master metadata"
        );
        Ok(Self {
            dir,
            max_volume_id: AtomicU32::new(persisted.max_volume_id),
            state: tokio::sync::Mutex::new(State {
                next_key: persisted.key_ceiling.max(1),
                max_volume_id: persisted.max_volume_id,
                persisted,
            }),
        })
    }

    /// Reserves `count` consecutive keys and returns the first.
    pub async fn next_keys(&self, count: u64) -> Result<NeedleId, MasterError> {
        let count = count.max(1);
        let mut st = self.state.lock().await;
        let start = st.next_key;
        let end = start
            .checked_add(count)
            .ok_or_else(|| MasterError::BadRequest(format!("count {count} is too large")))?;
        if end > st.persisted.key_ceiling {
            let meta = Meta {
                key_ceiling: end.saturating_add(KEY_BLOCK),
                ..st.persisted
            };
            self.persist(meta).await?;
            st.persisted = meta;
        }
        st.next_key = end;
        Ok(start)
    }

    /// A volume server reports the largest key it holds (`SetMax`).
    pub async fn observe_key(&self, max_file_key: NeedleId) {
        let mut st = self.state.lock().await;
        st.next_key = st.next_key.max(max_file_key.saturating_add(1));
    }

    /// A fresh volume id, persisted before it is returned.
    pub async fn next_volume_id(&self) -> Result<VolumeId, MasterError> {
        let mut st = self.state.lock().await;
        let vid = st
            .max_volume_id
            .checked_add(1)
            .ok_or_else(|| MasterError::GrowthFailed("volume ids exhausted".to_string()))?;
        let meta = Meta {
            max_volume_id: vid,
            ..st.persisted
        };
        self.persist(meta).await?;
        st.persisted = meta;
        st.max_volume_id = vid;
        self.max_volume_id.store(vid, Ordering::Relaxed);
        Ok(vid)
    }

    /// A heartbeat shows volume `vid` exists; never hand it out again, even
    /// if its server is gone when the master next starts.
    pub async fn observe_volume_id(&self, vid: VolumeId) -> Result<(), MasterError> {
        let mut st = self.state.lock().await;
        if vid <= st.max_volume_id {
            return Ok(());
        }
        st.max_volume_id = vid;
        self.max_volume_id.store(vid, Ordering::Relaxed);
        if vid > st.persisted.max_volume_id {
            let meta = Meta {
                max_volume_id: vid,
                ..st.persisted
            };
            self.persist(meta).await?;
            st.persisted = meta;
        }
        Ok(())
    }

    pub fn max_volume_id(&self) -> VolumeId {
        self.max_volume_id.load(Ordering::Relaxed)
    }

    async fn persist(&self, meta: Meta) -> Result<(), MasterError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || meta.store(&dir))
            .await
            .map_err(std::io::Error::other)??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_consecutive_and_never_repeat_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _round in 0..3 {
            let seq = Sequencer::open(dir.path().to_path_buf()).await.unwrap();
            let a = seq.next_keys(5).await.unwrap();
            let b = seq.next_keys(1).await.unwrap();
            assert_eq!(b, a + 5, "count=5 reserves five consecutive keys");
            let c = seq.next_keys(KEY_BLOCK * 2).await.unwrap();
            for k in a..c + KEY_BLOCK * 2 {
                assert!(seen.insert(k), "key {k} handed out twice");
            }
            // Dropped without any shutdown hook, like a crash.
        }
    }

    #[tokio::test]
    async fn heartbeat_raises_keys_and_volume_ids() {
        let dir = tempfile::tempdir().unwrap();
        let seq = Sequencer::open(dir.path().to_path_buf()).await.unwrap();
        seq.observe_key(500).await;
        assert_eq!(seq.next_keys(1).await.unwrap(), 501);
        assert_eq!(seq.next_volume_id().await.unwrap(), 1);
        seq.observe_volume_id(40).await.unwrap();
        assert_eq!(seq.max_volume_id(), 40);
        drop(seq);
        let seq = Sequencer::open(dir.path().to_path_buf()).await.unwrap();
        assert_eq!(seq.max_volume_id(), 40);
        assert_eq!(seq.next_volume_id().await.unwrap(), 41);
        assert!(seq.next_keys(1).await.unwrap() > 501);
    }

    #[tokio::test]
    async fn huge_count_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let seq = Sequencer::open(dir.path().to_path_buf()).await.unwrap();
        assert!(seq.next_keys(u64::MAX).await.is_err());
        assert_eq!(seq.next_keys(1).await.unwrap(), 1);
    }
}
