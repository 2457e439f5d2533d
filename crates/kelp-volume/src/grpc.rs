//! `volume_server_pb.VolumeServer`: the RPCs a master calls on a volume
//! server, vacuum included. Compaction (kelp-needle `compaction.rs`) runs
//! on a blocking thread while the volume keeps taking reads and writes;
//! `VacuumVolumeCompact` streams its progress about once a second.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use kelp_core::FileId;
use kelp_proto::volume_server_pb::volume_server_server::VolumeServer;
use kelp_proto::volume_server_pb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::store::{AllocateRequest, Store, blocking};

/// How often `VacuumVolumeCompact` reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub struct VolumeGrpc {
    store: Arc<Store>,
    /// Read-rate limit of compaction; 0 means unlimited.
    compaction_bytes_per_second: u64,
}

impl VolumeGrpc {
    pub fn new(store: Arc<Store>, compaction_bytes_per_second: u64) -> Self {
        Self {
            store,
            compaction_bytes_per_second,
        }
    }
}

/// The 1-minute load average, as SeaweedFS reports it with compaction
/// progress (0 when unknown).
fn load_avg_1m() -> f32 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

type CompactStream =
    Pin<Box<dyn Stream<Item = Result<VacuumVolumeCompactResponse, Status>> + Send + 'static>>;

/// Access class of each `volume_server_pb.VolumeServer` method: all are
/// peer calls (masters, other servers, filers), including any added later.
pub fn access(_method_path: &str) -> kelp_net::Access {
    kelp_net::Access::Peer
}

#[tonic::async_trait]
impl VolumeServer for VolumeGrpc {
    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.file_ids.len());
        for file_id in req.file_ids {
            let fid = match file_id.parse::<FileId>() {
                Ok(f) => f,
                Err(e) => {
                    results.push(DeleteResult {
                        file_id,
                        status: 400,
                        error: e.to_string(),
                        ..DeleteResult::default()
                    });
                    continue;
                }
            };
            let cookie = if req.skip_cookie_check {
                match self.stored_cookie(fid).await {
                    Some(c) => c,
                    None => fid.cookie,
                }
            } else {
                fid.cookie
            };
            let (status, error, size) = match self
                .store
                .delete(fid.volume_id, fid.key, cookie, false)
                .await
            {
                Ok(size) => (202, String::new(), size),
                Err(e) => {
                    let e = ApiError::from(e);
                    (e.status().as_u16() as i32, e.to_string(), 0)
                }
            };
            results.push(DeleteResult {
                file_id,
                status,
                error,
                size,
                version: self
                    .store
                    .volume(fid.volume_id)
                    .map_or(0, |v| v.version() as u32),
            });
        }
        Ok(Response::new(BatchDeleteResponse { results }))
    }

    async fn vacuum_volume_check(
        &self,
        request: Request<VacuumVolumeCheckRequest>,
    ) -> Result<Response<VacuumVolumeCheckResponse>, Status> {
        let vid = request.into_inner().volume_id;
        let vol = self.store.volume(vid)?;
        // A diverged volume keeps its tombstones until its replicas agree:
        // compaction would drop them, and anti-entropy would then copy the
        // deleted needle back from a replica that missed the delete.
        let garbage_ratio = if self.store.is_diverged(vid) {
            0.0
        } else {
            vol.garbage_ratio()
        };
        Ok(Response::new(VacuumVolumeCheckResponse { garbage_ratio }))
    }

    type VacuumVolumeCompactStream = CompactStream;

    /// Streams `processed_bytes` while the compaction runs; the stream ends
    /// when it is done, or with an error status if it failed. Reads and
    /// writes of the volume continue meanwhile.
    async fn vacuum_volume_compact(
        &self,
        request: Request<VacuumVolumeCompactRequest>,
    ) -> Result<Response<Self::VacuumVolumeCompactStream>, Status> {
        let vid = request.into_inner().volume_id;
        let vol = self.store.volume(vid)?;
        if self.store.is_diverged(vid) {
            return Err(Status::failed_precondition(format!(
                "volume {vid} has diverged replicas; not compacting until anti-entropy repairs them"
            )));
        }
        let bps = Some(self.compaction_bytes_per_second).filter(|b| *b > 0);
        let processed = Arc::new(AtomicU64::new(0));
        let mut job = tokio::task::spawn_blocking({
            let processed = processed.clone();
            move || vol.compact_with_progress(bps, &mut |n| processed.store(n, Ordering::Relaxed))
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    done = &mut job => {
                        let msg = match done {
                            Ok(Ok(report)) => Ok(VacuumVolumeCompactResponse {
                                processed_bytes: i64::try_from(report.processed_bytes).unwrap_or(i64::MAX),
                                load_avg_1m: load_avg_1m(),
                            }),
                            Ok(Err(e)) => Err(Status::from(ApiError::from_volume(vid, e))),
                            Err(e) => Err(Status::internal(format!("compaction task failed: {e}"))),
                        };
                        if let Err(status) = &msg {
                            tracing::warn!(volume = vid, error = %status.message(), "compaction failed");
                        }
                        let _ = tx.send(msg).await;
                        return;
                    }
                    _ = tick.tick() => {
                        let n = processed.load(Ordering::Relaxed);
                        // A client that went away does not stop the
                        // compaction; its cleanup call will.
                        let _ = tx.try_send(Ok(VacuumVolumeCompactResponse {
                            processed_bytes: i64::try_from(n).unwrap_or(i64::MAX),
                            load_avg_1m: load_avg_1m(),
                        }));
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn vacuum_volume_commit(
        &self,
        request: Request<VacuumVolumeCommitRequest>,
    ) -> Result<Response<VacuumVolumeCommitResponse>, Status> {
        let vid = request.into_inner().volume_id;
        let vol = self.store.volume(vid)?;
        let (report, read_only) =
            blocking(move || vol.commit_compaction().map(|r| (r, vol.is_read_only())))
                .await?
                .map_err(|e| ApiError::from_volume(vid, e))?;
        Ok(Response::new(VacuumVolumeCommitResponse {
            is_read_only: read_only,
            volume_size: report.dat_size,
        }))
    }

    async fn vacuum_volume_cleanup(
        &self,
        request: Request<VacuumVolumeCleanupRequest>,
    ) -> Result<Response<VacuumVolumeCleanupResponse>, Status> {
        let vid = request.into_inner().volume_id;
        let vol = self.store.volume(vid)?;
        blocking(move || vol.cleanup_compaction())
            .await?
            .map_err(|e| ApiError::from_volume(vid, e))?;
        Ok(Response::new(VacuumVolumeCleanupResponse {}))
    }

    async fn delete_collection(
        &self,
        request: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        let req = request.into_inner();
        self.store.delete_collection(&req.collection).await?;
        Ok(Response::new(DeleteCollectionResponse {}))
    }

    async fn allocate_volume(
        &self,
        request: Request<AllocateVolumeRequest>,
    ) -> Result<Response<AllocateVolumeResponse>, Status> {
        let req = request.into_inner();
        tracing::debug!(
            volume = req.volume_id,
            collection = req.collection,
            replication = req.replication,
            ttl = req.ttl,
            "AllocateVolume"
        );
        self.store
            .allocate(AllocateRequest {
                id: req.volume_id,
                collection: req.collection,
                replication: req.replication,
                ttl: req.ttl,
                version: req.version,
            })
            .await?;
        Ok(Response::new(AllocateVolumeResponse {}))
    }

    async fn volume_delete(
        &self,
        request: Request<VolumeDeleteRequest>,
    ) -> Result<Response<VolumeDeleteResponse>, Status> {
        let req = request.into_inner();
        self.store
            .delete_volume(req.volume_id, req.only_empty)
            .await?;
        Ok(Response::new(VolumeDeleteResponse {}))
    }

    async fn volume_mark_readonly(
        &self,
        request: Request<VolumeMarkReadonlyRequest>,
    ) -> Result<Response<VolumeMarkReadonlyResponse>, Status> {
        let req = request.into_inner();
        self.store
            .set_read_only(req.volume_id, true, req.persist)
            .await?;
        Ok(Response::new(VolumeMarkReadonlyResponse {}))
    }

    async fn volume_mark_writable(
        &self,
        request: Request<VolumeMarkWritableRequest>,
    ) -> Result<Response<VolumeMarkWritableResponse>, Status> {
        let req = request.into_inner();
        // Persisted, so a volume made read-only with `persist` comes back
        // writable after a restart too.
        self.store.set_read_only(req.volume_id, false, true).await?;
        Ok(Response::new(VolumeMarkWritableResponse {}))
    }
}

impl VolumeGrpc {
    /// The cookie stored for `fid`'s key, for `skip_cookie_check` deletes.
    async fn stored_cookie(&self, fid: FileId) -> Option<u32> {
        let vol = self.store.volume(fid.volume_id).ok()?;
        crate::store::blocking(move || vol.read(fid.key).ok().map(|n| n.cookie))
            .await
            .ok()
            .flatten()
    }
}
