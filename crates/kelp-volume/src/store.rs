//! The store: every volume this server holds, keyed by id, spread over the
//! configured directories. Owns slot accounting, volume lifecycle (load,
//! allocate, delete, close) and the async wrappers that move blocking disk
//! I/O onto tokio's blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kelp_core::{NeedleId, ReplicaPlacement, Ttl, VolumeId};
use kelp_needle::{
    DataStream, Needle, OffsetWidth, OpenOptions, SyncMode, Volume, VolumeError, VolumeOptions,
    VolumeStats,
};
use kelp_proto::master_pb::VolumeShortInformationMessage;
use parking_lot::RwLock;
use tokio::sync::mpsc;

/// Volumes opened concurrently at startup (each open is mostly disk reads).
const LOAD_PARALLELISM: usize = 4;

/// What a store operation fails with. `error.rs` maps each variant to one
/// HTTP status and one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("volume {0} not found")]
    VolumeNotFound(VolumeId),
    #[error("volume {0} already exists")]
    VolumeExists(VolumeId),
    #[error("no free volume slot")]
    NoFreeSlot,
    #[error("volume {0} is read only")]
    ReadOnly(VolumeId),
    /// The needle is absent, deleted, expired or has another cookie.
    #[error("not found")]
    NeedleNotFound,
    /// A delete named a needle with another cookie (SeaweedFS answers 400;
    /// a write with another cookie is a [`VolumeError::CookieMismatch`]).
    #[error("File Random Cookie does not match.")]
    DeleteCookieMismatch,
    #[error("volume {0} is not empty")]
    NotEmpty(VolumeId),
    /// Allocation parameters that do not parse.
    #[error("{0}")]
    InvalidRequest(String),
    /// The volume's operation failed; says which volume and why.
    #[error("volume {vid}: {source}")]
    Volume { vid: VolumeId, source: VolumeError },
    #[error("data dir {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("removing volume files {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl StoreError {
    fn volume(vid: VolumeId) -> impl FnOnce(VolumeError) -> StoreError {
        move |source| StoreError::Volume { vid, source }
    }

    /// The needle's bytes fail their checksum or do not parse: another
    /// replica may still hold a good copy.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StoreError::Volume {
                source: VolumeError::Corrupt { .. } | VolumeError::Format(_),
                ..
            }
        )
    }
}

/// A volume appeared or disappeared, or one changed state; the heartbeat
/// turns these into deltas (and a state change into a full beat at once).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    Added(VolumeShortInformationMessage),
    Deleted(VolumeShortInformationMessage),
    /// A volume became read-only (or writable again): the master must hear
    /// it now, not at the next pulse, so it stops assigning the volume.
    StateChanged(VolumeId),
}

struct Slot {
    volume: Arc<Volume>,
    dir: usize,
}

/// Parameters of a new volume.
#[derive(Debug, Clone, Default)]
pub struct AllocateRequest {
    pub id: VolumeId,
    pub collection: String,
    pub replication: String,
    pub ttl: String,
    /// Needle version; 0 means current (3).
    pub version: u32,
}

pub struct Store {
    dirs: Vec<PathBuf>,
    max_volumes: u32,
    durable: bool,
    offset_width: OffsetWidth,
    volumes: RwLock<HashMap<VolumeId, Slot>>,
    /// Serializes allocate/delete so slot checks and file creation agree.
    lifecycle: tokio::sync::Mutex<()>,
    events: mpsc::UnboundedSender<StoreEvent>,
    /// From the master's HeartbeatResponse; 0 = unknown.
    volume_size_limit: AtomicU64,
    /// Volumes whose replicas may differ after a failed replicated change
    /// (see `replicate.rs`): no client writes, reported read-only, not
    /// compacted, until anti-entropy finds every replica equal.
    diverged: parking_lot::Mutex<std::collections::HashSet<VolumeId>>,
    /// Volumes created but not served yet (being filled from replicas).
    pending: parking_lot::Mutex<std::collections::HashSet<VolumeId>>,
}

/// Outcome of a write as the HTTP layer needs it.
#[derive(Debug, Clone, Copy)]
pub struct WriteResult {
    pub checksum: u32,
    pub unchanged: bool,
}

impl Store {
    /// Creates missing directories and loads every volume found in them.
    pub async fn open(
        dirs: Vec<PathBuf>,
        max_volumes: u32,
        durable: bool,
        offset_width: OffsetWidth,
    ) -> Result<(Arc<Store>, mpsc::UnboundedReceiver<StoreEvent>), StoreError> {
        let started = Instant::now();
        let mut found = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let dir_error = |source| StoreError::Dir {
                dir: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(dir_error)?;
            let list = kelp_needle::scan_dir(dir).map_err(dir_error)?;
            found.extend(list.into_iter().map(|(c, v)| (i, dir.clone(), c, v)));
        }
        let sync_mode = sync_mode(durable);
        let opened: Vec<_> = futures::stream::iter(found)
            .map(|(i, dir, collection, vid)| async move {
                let opts = OpenOptions {
                    offset_width,
                    sync_mode,
                    ..OpenOptions::default()
                };
                let res = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    let collection = collection.clone();
                    move || Volume::open(&dir, &collection, vid, &opts)
                })
                .await;
                (i, dir, collection, vid, res)
            })
            .buffer_unordered(LOAD_PARALLELISM)
            .collect()
            .await;
        let mut volumes = HashMap::new();
        for (i, dir, collection, vid, res) in opened {
            match res {
                Ok(Ok(v)) => {
                    if volumes.contains_key(&vid) {
                        tracing::error!(volume = vid, dir = %dir.display(), "duplicate volume id; ignoring this copy");
                        continue;
                    }
                    volumes.insert(
                        vid,
                        Slot {
                            volume: Arc::new(v),
                            dir: i,
                        },
                    );
                }
                Ok(Err(e)) => {
                    tracing::error!(volume = vid, collection, dir = %dir.display(), error = %e, "cannot open volume; skipping it")
                }
                Err(e) => {
                    tracing::error!(volume = vid, dir = %dir.display(), error = %e, "volume open task failed")
                }
            }
        }
        tracing::info!(
            volumes = volumes.len(),
            dirs = dirs.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volumes loaded"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Store {
            dirs,
            max_volumes,
            durable,
            offset_width,
            volumes: RwLock::new(volumes),
            lifecycle: tokio::sync::Mutex::new(()),
            events: tx,
            volume_size_limit: AtomicU64::new(0),
            diverged: Default::default(),
            pending: Default::default(),
        };
        Ok((Arc::new(store), rx))
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn max_volumes(&self) -> u32 {
        self.max_volumes
    }

    pub fn volume(&self, vid: VolumeId) -> Result<Arc<Volume>, StoreError> {
        self.volumes
            .read()
            .get(&vid)
            .map(|s| s.volume.clone())
            .ok_or(StoreError::VolumeNotFound(vid))
    }

    pub fn all_volumes(&self) -> Vec<Arc<Volume>> {
        let mut v: Vec<_> = self
            .volumes
            .read()
            .values()
            .map(|s| s.volume.clone())
            .collect();
        v.sort_by_key(|v| v.id());
        v
    }

    pub fn set_volume_size_limit(&self, limit: u64) {
        self.volume_size_limit.store(limit, Ordering::Relaxed);
    }

    pub fn volume_size_limit(&self) -> u64 {
        self.volume_size_limit.load(Ordering::Relaxed)
    }

    /// Stats of every volume, by id.
    /// `read_only` is as reported to the master and in `/status`: set also
    /// for a diverged volume, an expired TTL volume and a full one.
    pub fn stats(&self) -> Vec<VolumeStats> {
        let diverged = self.diverged.lock().clone();
        let limit = self.volume_size_limit();
        self.all_volumes()
            .iter()
            .map(|v| {
                let mut s = v.info();
                s.read_only |= diverged.contains(&v.id());
                // An expired TTL volume takes no more writes.
                s.read_only |=
                    ttl_seconds(v).is_some_and(|ttl| now_secs() >= s.modified_at_second + ttl);
                // A full volume too, so the master stops assigning it.
                s.read_only |= limit > 0 && s.size >= limit;
                s
            })
            .collect()
    }

    /// TTL volumes (SeaweedFS semantics): once a volume's TTL has passed
    /// since its last write it is expired — reported read-only, so the
    /// master stops assigning it — and once a tenth of the TTL more (at most
    /// ten minutes) has passed, its files are removed. Returns the removed.
    pub async fn expire_ttl_volumes(&self, now: u64) -> Vec<VolumeId> {
        let mut removed = Vec::new();
        for vol in self.all_volumes() {
            let Some(ttl) = ttl_seconds(&vol) else {
                continue;
            };
            let last = vol.info().modified_at_second;
            if now < last + ttl + ttl_removal_delay(ttl) {
                continue;
            }
            let vid = vol.id();
            drop(vol);
            match self.delete_volume(vid, false).await {
                Ok(()) => {
                    tracing::info!(
                        volume = vid,
                        ttl_seconds = ttl,
                        "TTL volume expired; removed"
                    );
                    removed.push(vid);
                }
                Err(e) => {
                    tracing::warn!(volume = vid, error = %e, "removing an expired TTL volume failed")
                }
            }
        }
        removed
    }

    /// Marks `vid` diverged: its replicas may differ.
    pub fn mark_diverged(&self, vid: VolumeId) -> bool {
        let new = self.diverged.lock().insert(vid);
        if new {
            self.state_changed(vid);
        }
        new
    }

    /// Clears the mark once every replica was found equal.
    pub fn clear_diverged(&self, vid: VolumeId) -> bool {
        let cleared = self.diverged.lock().remove(&vid);
        if cleared {
            self.state_changed(vid);
        }
        cleared
    }

    /// Tells the heartbeat that `vid`'s writability changed.
    fn state_changed(&self, vid: VolumeId) {
        let _ = self.events.send(StoreEvent::StateChanged(vid));
    }

    /// Maps a failed write or delete. When an IO error (a failed
    /// fdatasync or write, a full disk) has made the volume refuse writes,
    /// the master hears it at once.
    fn write_failed(&self, vol: &Volume, e: VolumeError) -> StoreError {
        let vid = vol.id();
        if let Some(why) = vol.io_failure() {
            tracing::warn!(
                volume = vid,
                reason = why,
                "volume refuses writes after an IO error; telling the master"
            );
            self.state_changed(vid);
        }
        StoreError::Volume { vid, source: e }
    }

    pub fn is_diverged(&self, vid: VolumeId) -> bool {
        self.diverged.lock().contains(&vid)
    }

    fn writable(&self, vid: VolumeId) -> Result<Arc<Volume>, StoreError> {
        if self.is_diverged(vid) {
            return Err(StoreError::ReadOnly(vid));
        }
        self.volume(vid)
    }

    /// Reads a live needle; a wrong cookie or an expired TTL is "not found".
    pub async fn read(
        &self,
        vid: VolumeId,
        key: NeedleId,
        cookie: u32,
    ) -> Result<Needle, StoreError> {
        let (vol, size) = self.live(vid, key)?;
        let n = read_whole(vol, key, size)
            .await?
            .map_err(|e| read_error(vid, e))?;
        check_live(&n, cookie)?;
        Ok(n)
    }

    /// `read` for an answer to a client: a needle larger than
    /// `STREAM_READ_BYTES` comes back opened for sending in pieces
    /// (`DataStream`) instead of whole, so a server sending many large
    /// blobs holds a few pieces per reader.
    pub async fn read_or_stream(
        &self,
        vid: VolumeId,
        key: NeedleId,
        cookie: u32,
    ) -> Result<NeedleRead, StoreError> {
        let (vol, size) = self.live(vid, key)?;
        let read = if size > STREAM_READ_BYTES {
            // Two small reads (the header, the fields after the data),
            // almost always from the page cache: on this worker.
            vol.open_data(key)
                .map(|(n, data)| NeedleRead::Streamed(n, data))
        } else {
            read_whole(vol, key, size).await?.map(NeedleRead::Whole)
        }
        .map_err(|e| read_error(vid, e))?;
        let (NeedleRead::Whole(n) | NeedleRead::Streamed(n, _)) = &read;
        check_live(n, cookie)?;
        Ok(read)
    }

    /// The volume holding `key` and the Size of its live needle.
    fn live(&self, vid: VolumeId, key: NeedleId) -> Result<(Arc<Volume>, u64), StoreError> {
        let vol = self.volume(vid)?;
        let size = vol
            .lookup(key)
            .map(|v| u64::from(v.size))
            .ok_or(StoreError::NeedleNotFound)?;
        Ok((vol, size))
    }

    /// Appends a needle and returns once it is durable (durable server or
    /// `force_sync`). A small needle is appended on the async worker (a
    /// page-cache write of microseconds); the fdatasync is the volume's
    /// syncer thread's, shared with every write that arrived meanwhile.
    pub async fn write(
        &self,
        vid: VolumeId,
        mut needle: Needle,
        force_sync: bool,
    ) -> Result<WriteResult, StoreError> {
        let vol = self.writable(vid)?;
        let (out, needle) = if needle.data.len() as u64 <= INLINE_IO_BYTES {
            (vol.write(&mut needle), needle)
        } else {
            let v = vol.clone();
            blocking(move || (v.write(&mut needle), needle)).await?
        };
        let out = out.map_err(|e| self.write_failed(&vol, e))?;
        durable_after(&vol, out.seq, force_sync)
            .await
            .map_err(|e| self.write_failed(&vol, e))?;
        Ok(WriteResult {
            checksum: needle.checksum,
            unchanged: out.unchanged,
        })
    }

    /// Deletes a needle (durably on a durable server). Returns the deleted
    /// needle's Size field.
    pub async fn delete(
        &self,
        vid: VolumeId,
        key: NeedleId,
        cookie: u32,
        force_sync: bool,
    ) -> Result<u32, StoreError> {
        let vol = self.writable(vid)?;
        let out = async {
            let out = vol.delete(key, cookie)?;
            durable_after(&vol, out.seq, force_sync).await?;
            Ok(out.size)
        };
        out.await.map_err(|e| match e {
            VolumeError::CookieMismatch { .. } => StoreError::DeleteCookieMismatch,
            VolumeError::NotFound { .. } => StoreError::NeedleNotFound,
            e => self.write_failed(&vol, e),
        })
    }

    /// Creates a volume in the directory with the most free slots.
    pub async fn allocate(&self, req: AllocateRequest) -> Result<(), StoreError> {
        let (vol, dir) = self.create_volume(&req).await?;
        self.attach(vol, dir);
        Ok(())
    }

    /// Creates a volume's files without serving it yet: it is invisible to
    /// requests and heartbeats (and to a second create) until `attach`, or
    /// until `discard` removes it. Used to fill a new replica first.
    pub async fn create_volume(
        &self,
        req: &AllocateRequest,
    ) -> Result<(Volume, usize), StoreError> {
        let invalid = |e: &dyn std::fmt::Display| StoreError::InvalidRequest(e.to_string());
        let replica_placement: ReplicaPlacement =
            req.replication.parse().map_err(|e| invalid(&e))?;
        let ttl: Ttl = req.ttl.parse().map_err(|e| invalid(&e))?;
        let version = match req.version {
            0 => kelp_needle::needle::CURRENT_VERSION,
            v => u8::try_from(v).map_err(|_| invalid(&format!("needle version {v}")))?,
        };
        if req.collection.contains(['/', '\\']) || req.collection.starts_with('.') {
            return Err(StoreError::InvalidRequest(format!(
                "invalid collection name {:?}",
                req.collection
            )));
        }
        let _guard = self.lifecycle.lock().await;
        let dir = {
            let vols = self.volumes.read();
            let pending = self.pending.lock();
            if vols.contains_key(&req.id) || pending.contains(&req.id) {
                return Err(StoreError::VolumeExists(req.id));
            }
            if (vols.len() + pending.len()) as u64 >= self.max_volumes as u64 {
                return Err(StoreError::NoFreeSlot);
            }
            self.pick_dir(&vols).ok_or(StoreError::NoFreeSlot)?
        };
        let opts = VolumeOptions {
            replica_placement,
            ttl,
            offset_width: self.offset_width,
            sync_mode: sync_mode(self.durable),
            version,
        };
        let path = self.dirs[dir].clone();
        let (vid, collection) = (req.id, req.collection.clone());
        let vol = blocking(move || Volume::create(&path, &collection, vid, opts))
            .await?
            .map_err(|e| match e {
                VolumeError::Exists(_) => StoreError::VolumeExists(vid),
                e => StoreError::Volume { vid, source: e },
            })?;
        self.pending.lock().insert(vid);
        Ok((vol, dir))
    }

    /// Starts serving a volume made by `create_volume`.
    pub fn attach(&self, vol: Volume, dir: usize) {
        let vid = vol.id();
        let short = short_info(&vol.info());
        let collection = vol.collection().to_string();
        self.volumes.write().insert(
            vid,
            Slot {
                volume: Arc::new(vol),
                dir,
            },
        );
        self.pending.lock().remove(&vid);
        tracing::info!(volume = vid, collection, dir = %self.dirs[dir].display(), "volume allocated");
        let _ = self.events.send(StoreEvent::Added(short));
    }

    /// Removes a volume made by `create_volume` that will not be served.
    pub async fn discard(&self, vol: Volume) {
        let vid = vol.id();
        if let Ok(Err(e)) = blocking(move || vol.destroy()).await {
            tracing::warn!(volume = vid, error = %e, "removing an unfinished volume failed");
        }
        self.pending.lock().remove(&vid);
    }

    /// Removes a volume and its files. `only_empty` refuses volumes that
    /// still hold live needles.
    pub async fn delete_volume(&self, vid: VolumeId, only_empty: bool) -> Result<(), StoreError> {
        let _guard = self.lifecycle.lock().await;
        let slot = {
            let mut vols = self.volumes.write();
            let Some(slot) = vols.get(&vid) else {
                return Err(StoreError::VolumeNotFound(vid));
            };
            if only_empty && slot.volume.info().live_count > 0 {
                return Err(StoreError::NotEmpty(vid));
            }
            vols.remove(&vid).ok_or(StoreError::VolumeNotFound(vid))?
        };
        let short = short_info(&slot.volume.info());
        let _ = self.events.send(StoreEvent::Deleted(short));
        let vol = wait_exclusive(slot.volume).await;
        match vol {
            Ok(vol) => blocking(move || vol.destroy())
                .await?
                .map_err(StoreError::volume(vid))?,
            Err(shared) => {
                // Still referenced by a request that will not finish soon;
                // remove the files anyway (open descriptors stay valid).
                let base = shared.base_path().to_path_buf();
                blocking(move || remove_volume_files(&base)).await??;
            }
        }
        tracing::info!(volume = vid, "volume deleted");
        Ok(())
    }

    /// Deletes every volume of `collection`.
    pub async fn delete_collection(&self, collection: &str) -> Result<(), StoreError> {
        let ids: Vec<VolumeId> = self
            .volumes
            .read()
            .iter()
            .filter(|(_, s)| s.volume.collection() == collection)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            match self.delete_volume(id, false).await {
                Ok(()) | Err(StoreError::VolumeNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn set_read_only(
        &self,
        vid: VolumeId,
        read_only: bool,
        persist: bool,
    ) -> Result<(), StoreError> {
        let vol = self.volume(vid)?;
        blocking(move || vol.set_read_only(read_only, persist))
            .await?
            .map_err(StoreError::volume(vid))?;
        self.state_changed(vid);
        Ok(())
    }

    /// Writes checkpoints for volumes whose `.idx` grew enough.
    pub async fn checkpoint_some(&self) {
        for vol in self.all_volumes() {
            let id = vol.id();
            match blocking(move || vol.maybe_checkpoint()).await {
                Ok(Ok(true)) => tracing::debug!(volume = id, "checkpoint written"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(volume = id, error = %e, "checkpoint failed"),
                Err(e) => tracing::warn!(volume = id, error = %e, "checkpoint task failed"),
            }
        }
    }

    /// Closes every volume cleanly (sync + checkpoint). Called once all
    /// request handlers have finished.
    pub async fn close(&self) {
        let slots: Vec<Slot> = self.volumes.write().drain().map(|(_, s)| s).collect();
        for slot in slots {
            let id = slot.volume.id();
            let res = match wait_exclusive(slot.volume).await {
                Ok(vol) => blocking(move || vol.close()).await,
                Err(shared) => {
                    blocking(move || {
                        shared
                            .release_zeroed_space()
                            .and_then(|_| shared.checkpoint())
                    })
                    .await
                }
            };
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(volume = id, error = %e, "closing volume failed"),
                Err(e) => tracing::warn!(volume = id, error = %e, "closing volume failed"),
            }
        }
        tracing::info!("volumes closed");
    }

    fn pick_dir(&self, vols: &HashMap<VolumeId, Slot>) -> Option<usize> {
        let n = self.dirs.len();
        if n == 0 {
            return None;
        }
        let mut used = vec![0u64; n];
        for s in vols.values() {
            used[s.dir] += 1;
        }
        // The server-wide slot count is shared evenly between directories.
        let base = self.max_volumes as u64 / n as u64;
        let extra = self.max_volumes as u64 % n as u64;
        (0..n)
            .map(|i| {
                let cap = base + u64::from((i as u64) < extra);
                (i, cap.saturating_sub(used[i]))
            })
            .filter(|(_, free)| *free > 0)
            .max_by_key(|(i, free)| (*free, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }
}

/// The volume's TTL in seconds, if it has one.
fn ttl_seconds(vol: &Volume) -> Option<u64> {
    let ttl = vol.superblock().ttl;
    (!ttl.is_empty() && ttl.seconds() > 0).then(|| ttl.seconds())
}

/// How long an expired TTL volume is kept before its files go: a tenth of
/// the TTL, at most ten minutes (as SeaweedFS).
fn ttl_removal_delay(ttl: u64) -> u64 {
    (ttl / 10).min(600)
}

fn sync_mode(durable: bool) -> SyncMode {
    if durable {
        SyncMode::Durable
    } else {
        SyncMode::None
    }
}

/// Waits until write `seq` is durable: on a durable server always, on
/// another only when the client asked (`force`).
async fn durable_after(vol: &Arc<Volume>, seq: u64, force: bool) -> Result<(), VolumeError> {
    if vol.sync_mode() == SyncMode::None && !force {
        return Ok(());
    }
    let started = Instant::now();
    vol.synced(seq).await?;
    metrics::histogram!(crate::metrics::SYNC_WAIT_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits (briefly) until no request holds the volume any more.
async fn wait_exclusive(mut vol: Arc<Volume>) -> Result<Volume, Arc<Volume>> {
    for _ in 0..100 {
        match Arc::try_unwrap(vol) {
            Ok(v) => return Ok(v),
            Err(shared) => vol = shared,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(vol)
}

fn remove_volume_files(base: &Path) -> Result<(), StoreError> {
    for ext in ["dat", "idx", "vif", "knm", "kwm", "cpd", "cpx", "cpc"] {
        let path = kelp_needle::dir::with_ext(base, ext);
        kelp_needle::fsutil::remove_if_exists(&path)
            .map_err(|source| StoreError::Remove { path, source })?;
    }
    Ok(())
}

/// Needles up to this size are read and written on the async worker (see
/// `read` and `write`): a page-cache copy costs less than a hand-off to
/// the blocking pool.
const INLINE_IO_BYTES: u64 = 64 * 1024;

/// Reads a needle of Size `size` whole. A small needle is one pread,
/// almost always from the page cache: read on this worker. A hand-off to
/// the blocking pool costs two context switches, which profiling showed
/// to be 45% of the server's CPU on a read-heavy load. Larger needles
/// still go to the pool.
async fn read_whole(
    vol: Arc<Volume>,
    key: NeedleId,
    size: u64,
) -> Result<Result<Needle, VolumeError>, StoreError> {
    if size <= INLINE_IO_BYTES {
        Ok(vol.read(key))
    } else {
        blocking(move || vol.read(key)).await
    }
}

fn read_error(vid: VolumeId, e: VolumeError) -> StoreError {
    match e {
        VolumeError::NotFound { .. } => StoreError::NeedleNotFound,
        e => StoreError::Volume { vid, source: e },
    }
}

/// A wrong cookie or an expired TTL is "not found".
fn check_live(n: &Needle, cookie: u32) -> Result<(), StoreError> {
    if n.cookie != cookie || n.is_expired(now_secs()) {
        return Err(StoreError::NeedleNotFound);
    }
    Ok(())
}

/// What `Store::read_or_stream` found: a needle read whole, or one opened
/// for reading its data in pieces (its `Needle` has empty data).
pub enum NeedleRead {
    Whole(Needle),
    Streamed(Needle, DataStream),
}

/// Needles larger than this are sent in pieces of `STREAM_PIECE_BYTES`
/// (`read_or_stream`): a server sending many large blobs at once holds a
/// few pieces per reader, not whole blobs.
pub const STREAM_READ_BYTES: u64 = 256 * 1024;
pub const STREAM_PIECE_BYTES: usize = 256 * 1024;

/// Runs blocking disk work on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn short_info(s: &VolumeStats) -> VolumeShortInformationMessage {
    VolumeShortInformationMessage {
        id: s.id,
        collection: s.collection.clone(),
        replica_placement: s.replica_placement.to_byte() as u32,
        version: s.version as u32,
        ttl: s.ttl.to_u32(),
        disk_type: String::new(),
        disk_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ttl_volumes_expire_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) =
            Store::open(vec![dir.path().to_path_buf()], 8, true, OffsetWidth::Four)
                .await
                .unwrap();
        for (id, ttl) in [(1, "5m"), (2, "")] {
            store
                .allocate(AllocateRequest {
                    id,
                    collection: String::new(),
                    replication: "000".into(),
                    ttl: ttl.into(),
                    version: 0,
                })
                .await
                .unwrap();
        }
        let now = now_secs();
        assert!(store.expire_ttl_volumes(now).await.is_empty());
        let read_only = |id| {
            store
                .stats()
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.read_only)
        };
        assert_eq!(read_only(1), Some(false));
        // Past the TTL: expired (read-only) but kept a while.
        assert!(store.expire_ttl_volumes(now + 301).await.is_empty());
        // Past TTL + a tenth of it: removed, files and all.
        assert_eq!(store.expire_ttl_volumes(now + 300 + 31).await, vec![1]);
        assert!(store.volume(1).is_err());
        assert!(!dir.path().join("1.dat").exists());
        assert!(store.volume(2).is_ok(), "a volume without TTL stays");
    }
}
