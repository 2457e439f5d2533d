//! `volume_server_pb.VolumeServer`: the RPCs a master calls on a volume
//! server. Vacuum arrives with compaction.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kelp_core::FileId;
use kelp_proto::volume_server_pb::volume_server_server::VolumeServer;
use kelp_proto::volume_server_pb::*;
use tonic::{Request, Response, Status};

use crate::store::{AllocateRequest, Store};

pub struct VolumeGrpc {
    store: Arc<Store>,
}

impl VolumeGrpc {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

fn vacuum_unimplemented() -> Status {
    Status::unimplemented("vacuum arrives with compaction")
}

type CompactStream =
    Pin<Box<dyn Stream<Item = Result<VacuumVolumeCompactResponse, Status>> + Send + 'static>>;

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
                Err(e) => (e.status().as_u16() as i32, e.to_string(), 0),
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
        _: Request<VacuumVolumeCheckRequest>,
    ) -> Result<Response<VacuumVolumeCheckResponse>, Status> {
        Err(vacuum_unimplemented())
    }

    type VacuumVolumeCompactStream = CompactStream;

    async fn vacuum_volume_compact(
        &self,
        _: Request<VacuumVolumeCompactRequest>,
    ) -> Result<Response<Self::VacuumVolumeCompactStream>, Status> {
        Err(vacuum_unimplemented())
    }

    async fn vacuum_volume_commit(
        &self,
        _: Request<VacuumVolumeCommitRequest>,
    ) -> Result<Response<VacuumVolumeCommitResponse>, Status> {
        Err(vacuum_unimplemented())
    }

    async fn vacuum_volume_cleanup(
        &self,
        _: Request<VacuumVolumeCleanupRequest>,
    ) -> Result<Response<VacuumVolumeCleanupResponse>, Status> {
        Err(vacuum_unimplemented())
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
