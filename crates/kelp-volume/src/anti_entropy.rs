//! Anti-entropy: replicas of a volume converge without an operator.
//!
//! Every `interval`, for each replicated volume it holds, a server fetches
//! each other replica's digest (`GET /admin/replica/digest`, every key with
//! its state, size and CRC; format in kelp-needle `digest.rs`) and compares
//! it with its own. It only ever changes its own copy — *pull*:
//!
//! | theirs \ mine | missing        | live, same | live, other | deleted      |
//! |---------------|----------------|------------|-------------|--------------|
//! | live          | copy it here   | equal      | conflict    | they pull    |
//! | deleted       | equal          | delete it  | delete it   | equal        |
//!
//! A tombstone wins over a live needle: file ids are never reused, so a key
//! that is deleted anywhere was deleted by a client. A conflict (two live
//! versions of one key, from an overwrite that reached only some replicas)
//! is logged and counted and left alone. Copies are raw needles
//! (`GET /admin/replica/needle`), CRC-checked before they are appended.
//!
//! A volume marked diverged by a failed replicated write (`replicate.rs`)
//! takes writes again once a pass finds nothing to do on either side with
//! every replica its placement asks for.

use std::sync::Arc;
use std::time::Duration;

use kelp_core::VolumeId;
use kelp_needle::Volume;
use kelp_needle::digest::{self, DigestEntry, KeyState};
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;
use crate::store::{Store, blocking};

/// Response header naming the needle version of a raw needle.
pub const NEEDLE_VERSION_HEADER: &str = "x-kelp-needle-version";

pub const PULLED: &str = "kelp_volume_anti_entropy_pulled_total";
pub const DELETED: &str = "kelp_volume_anti_entropy_deleted_total";
pub const CONFLICTS: &str = "kelp_volume_anti_entropy_conflicts_total";

/// What one comparison with one replica asks of this server.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub pull: Vec<u64>,
    pub delete: Vec<u64>,
    pub conflicts: Vec<u64>,
    /// Keys the other replica has to pull or delete (its own pass does).
    pub they_lack: usize,
}

impl Plan {
    pub fn in_agreement(&self) -> bool {
        self.pull.is_empty()
            && self.delete.is_empty()
            && self.conflicts.is_empty()
            && self.they_lack == 0
    }
}

/// Compares two digests, both sorted by key (see the table above).
pub fn compare(mine: &[DigestEntry], theirs: &[DigestEntry]) -> Plan {
    let mut plan = Plan::default();
    let (mut i, mut j) = (0, 0);
    while i < mine.len() || j < theirs.len() {
        let m = mine.get(i);
        let t = theirs.get(j);
        match (m, t) {
            (Some(m), Some(t)) if m.key == t.key => {
                match (m.state, t.state) {
                    (KeyState::Live { .. }, KeyState::Deleted) => plan.delete.push(m.key),
                    (KeyState::Deleted, KeyState::Live { .. }) => plan.they_lack += 1,
                    (a @ KeyState::Live { .. }, b @ KeyState::Live { .. }) if a != b => {
                        plan.conflicts.push(m.key)
                    }
                    _ => {}
                }
                i += 1;
                j += 1;
            }
            (Some(m), t) if t.is_none_or(|t| m.key < t.key) => {
                if matches!(m.state, KeyState::Live { .. }) {
                    plan.they_lack += 1;
                }
                i += 1;
            }
            (_, Some(t)) => {
                if matches!(t.state, KeyState::Live { .. }) {
                    plan.pull.push(t.key);
                }
                j += 1;
            }
            (Some(_), None) | (None, None) => unreachable!("handled above"),
        }
    }
    plan
}

pub async fn run(store: Arc<Store>, peers: Arc<Peers>, every: Duration, stop: CancellationToken) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for vol in store.all_volumes() {
            let vid = vol.id();
            if vol.superblock().replica_placement.copy_count() <= 1 || vol.is_read_only() {
                continue;
            }
            match pass(&peers, vol).await {
                Ok(true) => {
                    if store.clear_diverged(vid) {
                        tracing::info!(
                            volume = vid,
                            "replicas agree again; the volume takes writes"
                        );
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(volume = vid, error = %e, "anti-entropy pass failed"),
            }
        }
    }
}

/// One pass over `vol` against every other replica; `Ok(true)` when every
/// replica the placement asks for was found in agreement.
async fn pass(peers: &Peers, vol: Arc<Volume>) -> Result<bool, String> {
    let vid = vol.id();
    let copies = vol.superblock().replica_placement.copy_count();
    peers.forget(vid);
    let others = peers.locate(vid).await.map_err(|e| e.to_string())?;
    let mut agree = others.len() == copies - 1;
    for loc in others {
        agree &= sync_with(peers, &vol, &loc.url, 0).await?.agree;
    }
    Ok(agree)
}

/// What one `sync_with` did.
struct Synced {
    /// Nothing was left to do on either side.
    agree: bool,
    pulled: u64,
}

/// Compares `vol` with its copy on `peer` and pulls what this copy lacks
/// (at most `bytes_per_second`; 0 is unlimited).
async fn sync_with(
    peers: &Peers,
    vol: &Arc<Volume>,
    peer: &str,
    bytes_per_second: u64,
) -> Result<Synced, String> {
    let vid = vol.id();
    let theirs = fetch_digest(peers, peer, vid).await?;
    let v = vol.clone();
    let mine = blocking(move || v.digest())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let plan = compare(&mine, &theirs);
    if !plan.conflicts.is_empty() {
        metrics::counter!(CONFLICTS).increment(plan.conflicts.len() as u64);
        tracing::warn!(volume = vid, peer, keys = ?plan.conflicts,
            "replicas hold different live versions of these needles; left alone");
    }
    let mut synced = Synced {
        agree: plan.in_agreement(),
        pulled: 0,
    };
    if plan.pull.is_empty() && plan.delete.is_empty() {
        return Ok(synced);
    }
    let (pulled, deleted) = apply(peers, vol, peer, &plan, bytes_per_second).await?;
    tracing::info!(
        volume = vid,
        peer,
        pulled,
        deleted,
        "anti-entropy brought this replica up to date"
    );
    synced.pulled = pulled;
    Ok(synced)
}

async fn apply(
    peers: &Peers,
    vol: &Arc<Volume>,
    peer: &str,
    plan: &Plan,
    bytes_per_second: u64,
) -> Result<(u64, u64), String> {
    let vid = vol.id();
    let mut pulled = 0;
    let started = std::time::Instant::now();
    let mut copied = 0u64;
    for &key in &plan.pull {
        let raw = fetch_needle(peers, peer, vid, vol.version(), key).await?;
        copied += raw.len() as u64;
        if bytes_per_second > 0 {
            let due = Duration::from_secs_f64(copied as f64 / bytes_per_second as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(ahead).await;
            }
        }
        let v = vol.clone();
        blocking(move || v.import_needle(key, raw))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("importing needle {key:x} from {peer}: {e}"))?;
        pulled += 1;
    }
    let mut deleted = 0;
    for &key in &plan.delete {
        let v = vol.clone();
        let done = blocking(move || match v.read(key) {
            Ok(n) => v.delete(key, n.cookie).map(|_| true),
            Err(kelp_needle::VolumeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("deleting needle {key:x}: {e}"))?;
        deleted += u64::from(done);
    }
    let v = vol.clone();
    blocking(move || v.sync())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    metrics::counter!(PULLED).increment(pulled);
    metrics::counter!(DELETED).increment(deleted);
    Ok((pulled, deleted))
}

/// Makes this server a new replica of a volume: creates it unserved, copies
/// every live needle from the existing replicas (at most
/// `bytes_per_second`; 0 is unlimited), then serves it — the heartbeat
/// tells the master, which counts it as a location from then on. On
/// failure the unfinished files are removed.
pub async fn fill_new_replica(
    store: Arc<Store>,
    peers: Arc<Peers>,
    req: crate::store::AllocateRequest,
    bytes_per_second: u64,
) -> Result<u64, String> {
    let vid = req.id;
    let started = std::time::Instant::now();
    let (vol, dir) = store.create_volume(&req).await.map_err(|e| e.to_string())?;
    let vol = Arc::new(vol);
    let copied = async {
        peers.forget(vid);
        let others = peers.locate(vid).await.map_err(|e| e.to_string())?;
        let mut pulled = 0;
        for loc in &others {
            pulled += sync_with(&peers, &vol, &loc.url, bytes_per_second)
                .await?
                .pulled;
        }
        Ok::<u64, String>(pulled)
    }
    .await;
    let vol = match Arc::try_unwrap(vol) {
        Ok(v) => v,
        Err(_) => return Err("volume still in use after filling".to_string()),
    };
    match copied {
        Ok(pulled) => {
            tracing::info!(
                volume = vid,
                needles = pulled,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "new replica filled from the others"
            );
            store.attach(vol, dir);
            Ok(pulled)
        }
        Err(e) => {
            store.discard(vol).await;
            Err(e)
        }
    }
}

/// `GET url` from a peer; an error unless it answers 2xx.
async fn get_ok(peers: &Peers, url: &str) -> Result<reqwest::Response, String> {
    let resp = peers
        .admin_get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    Ok(resp)
}

async fn fetch_digest(
    peers: &Peers,
    peer: &str,
    vid: VolumeId,
) -> Result<Vec<DigestEntry>, String> {
    let url = peers.url(peer, &format!("/admin/replica/digest?volume={vid}"));
    let resp = get_ok(peers, &url).await?;
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    digest::decode(&body).map_err(|e| format!("{url}: {e}"))
}

pub(crate) async fn fetch_needle(
    peers: &Peers,
    peer: &str,
    vid: VolumeId,
    version: u8,
    key: u64,
) -> Result<Vec<u8>, String> {
    let url = peers.url(
        peer,
        &format!("/admin/replica/needle?volume={vid}&key={key}"),
    );
    let resp = get_ok(peers, &url).await?;
    let theirs = resp
        .headers()
        .get(NEEDLE_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok());
    if theirs != Some(version) {
        return Err(format!(
            "{url}: needle version {theirs:?}, this replica has {version}"
        ));
    }
    Ok(resp
        .bytes()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(key: u64, crc: u32) -> DigestEntry {
        DigestEntry {
            key,
            state: KeyState::Live { size: 10, crc },
        }
    }
    fn gone(key: u64) -> DigestEntry {
        DigestEntry {
            key,
            state: KeyState::Deleted,
        }
    }

    #[test]
    fn compare_follows_the_table() {
        let mine = vec![
            live(1, 1),
            live(2, 2),
            gone(3),
            live(4, 4),
            live(6, 6),
            gone(8),
        ];
        let theirs = vec![
            live(1, 1),
            gone(2),
            live(3, 3),
            live(4, 9),
            live(5, 5),
            gone(7),
        ];
        let plan = compare(&mine, &theirs);
        assert_eq!(plan.pull, vec![5]);
        assert_eq!(plan.delete, vec![2]);
        assert_eq!(plan.conflicts, vec![4]);
        // 3: they have it live, mine is deleted; 6: only mine.
        assert_eq!(plan.they_lack, 2);
        assert!(!plan.in_agreement());
        assert!(compare(&mine, &mine).in_agreement());
        assert!(compare(&[gone(1)], &[]).in_agreement());
        assert!(compare(&[], &[gone(1)]).in_agreement());
    }
}
