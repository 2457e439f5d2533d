//! The memory budget of uploads being received (`-concurrentUploadLimitMB`).
//!
//! A volume server holds an upload's body in memory until the needle is
//! written: a needle's Size comes before its data and its CRC after, so
//! the data cannot go to `.dat` before all of it has arrived. Without a
//! bound, 16 clients uploading 64 MiB each hold a GiB.
//!
//! So each upload reserves its Content-Length (without one, the file size
//! limit) before its body is read, and gives it back once answered.
//! Uploads past the budget wait, their bodies left in the kernel's socket
//! buffers (which slows the senders down), for up to `WAIT`, then get
//! `503`. The semaphore is fair, so a large upload is not starved by small
//! ones; one larger than the whole budget reserves all of it and runs
//! alone.
//!
//! Replica writes from peers (`type=replicate`) reserve nothing: their
//! origin reserved them, and two servers each waiting on the other's
//! budget for their replicas would deadlock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How long an upload waits for room in the budget before it gets `503`.
const WAIT: Duration = Duration::from_secs(60);

/// Bytes of upload bodies a server holds at once, counted in KiB.
pub struct UploadBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    wait: Duration,
}

impl UploadBudget {
    /// A budget of `bytes`; `None` (no limit) for 0.
    pub fn new(bytes: u64) -> Option<Arc<Self>> {
        Self::with_wait(bytes, WAIT)
    }

    fn with_wait(bytes: u64, wait: Duration) -> Option<Arc<Self>> {
        if bytes == 0 {
            return None;
        }
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Some(Arc::new(Self {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            wait,
        }))
    }

    /// Reserves room for a body of `bytes` (all of the budget if it is
    /// larger), waiting for earlier uploads to finish if need be. The
    /// reservation ends when the permit is dropped.
    pub async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        match tokio::time::timeout(self.wait, self.kib.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ApiError::Unavailable(
                "the server is shutting down".to_string(),
            )),
            Err(_) => Err(ApiError::Unavailable(format!(
                "busy: uploads in progress hold the whole upload budget ({} MiB, \
                 -concurrentUploadLimitMB) and none finished within {} s; retry later",
                self.total_kib / 1024,
                self.wait.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uploads_past_the_budget_wait_then_get_503() {
        assert!(UploadBudget::new(0).is_none(), "0 means no limit");
        let b = UploadBudget::with_wait(10 << 20, Duration::from_millis(500)).unwrap();
        let first = b.reserve(6 << 20).await.unwrap();
        let second = b.reserve(4 << 20).await.unwrap();
        // Full: the next waits, and is let in once room is given back.
        let third = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(3 << 20).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!third.is_finished());
        drop(first);
        let third = third.await.unwrap().unwrap();
        // Larger than the whole budget: takes all of it once it is free.
        let huge = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(1 << 30).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!huge.is_finished());
        drop((second, third));
        let huge = huge.await.unwrap().unwrap();
        assert_eq!(huge.num_permits(), 10 << 10);
        // Nothing is given back within the wait: 503 with the reason.
        let err = b.reserve(1).await.unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("concurrentUploadLimitMB"), "{err}");
    }
}
