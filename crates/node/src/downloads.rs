//! Telling the DHT about this node's downloads, for the cold-pull single flight.
//!
//! From containerd's ingest watcher (`spegel_containerd::IngestWatch`):
//! - a download starts → `inflight:<digest>` (the node's claim: it wants the blob now);
//! - it is committed → the claim stays for [`COMMITTED_FOR`] (the node serves the committed
//!   blob to whoever finds it there) until the advertiser, which owns the digest keys and
//!   withdraws them when containerd deletes the blob, has the completed image;
//! - it is aborted → the claim is withdrawn;
//! - a manifest is committed → `coming:<digest>` for its config and layers this node does
//!   not hold yet: containerd fetches them next. A node that misses one of them and finds no
//!   claim and nothing coming elsewhere knows it pulls alone and fetches it at once, without
//!   waiting for claims. `coming` keys are withdrawn when that download starts or after
//!   [`COMING_FOR`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spegel_containerd::{Ingest, IngestEvent, IngestKind};
use spegel_oci::Digest;
use spegel_routing::{Key, Router};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long a claim stands after its download was committed.
const COMMITTED_FOR: Duration = Duration::from_secs(2 * 60);

/// How long a `coming` announcement stands without the download starting.
const COMING_FOR: Duration = Duration::from_secs(10 * 60);

/// Manifests larger than this are not read for their children.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Children announced as coming at once; bounds what one odd manifest can make us announce.
const MAX_COMING: usize = 4096;

/// Runs until `shutdown` or until the watcher stops. `content_dir` is containerd's content
/// directory (committed manifests are read from `blobs/`).
pub async fn advertise(
    mut events: mpsc::Receiver<IngestEvent>,
    router: Router,
    content_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let mut coming: HashMap<Digest, Instant> = HashMap::new();
    let mut committed: HashMap<Digest, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let mut expired: Vec<Key> = coming
                    .iter()
                    .filter(|(_, at)| at.elapsed() > COMING_FOR)
                    .map(|(d, _)| Key::Coming(d.clone()))
                    .collect();
                coming.retain(|_, at| at.elapsed() <= COMING_FOR);
                expired.extend(
                    committed
                        .iter()
                        .filter(|(_, at)| at.elapsed() > COMMITTED_FOR)
                        .map(|(d, _)| Key::InFlight(d.clone())),
                );
                committed.retain(|_, at| at.elapsed() <= COMMITTED_FOR);
                if !expired.is_empty() && router.withdraw(expired).await.is_err() {
                    return;
                }
                continue;
            }
            event = events.recv() => event,
        };
        let Some(event) = event else { return };
        if let IngestEvent::Committed(i) = &event
            && committed.len() < MAX_COMING
        {
            committed.insert(i.digest.clone(), Instant::now());
        }
        let (add, remove) = keys_for(&event, &content_dir, &mut coming);
        let sent = router
            .withdraw(remove)
            .await
            .and(router.advertise(add).await);
        if sent.is_err() {
            return;
        }
    }
}

/// What to advertise and withdraw for one event.
fn keys_for(
    event: &IngestEvent,
    content_dir: &std::path::Path,
    coming: &mut HashMap<Digest, Instant>,
) -> (Vec<Key>, Vec<Key>) {
    let mut remove = Vec::new();
    let ingest = match event {
        IngestEvent::Started(i) | IngestEvent::Committed(i) | IngestEvent::Aborted(i) => i,
    };
    if coming.remove(&ingest.digest).is_some() {
        remove.push(Key::Coming(ingest.digest.clone()));
    }
    match event {
        IngestEvent::Started(i) => {
            debug!(digest = %i.digest, kind = ?i.kind, total = i.total, "download started");
            (vec![Key::InFlight(i.digest.clone())], remove)
        }
        IngestEvent::Committed(i) => {
            debug!(digest = %i.digest, "download committed");
            let mut add = Vec::new();
            if i.kind == IngestKind::Manifest {
                for child in missing_children(i, content_dir) {
                    if coming.len() < MAX_COMING {
                        coming.insert(child.clone(), Instant::now());
                        add.push(Key::Coming(child));
                    }
                }
            }
            (add, remove)
        }
        IngestEvent::Aborted(i) => {
            debug!(digest = %i.digest, "download aborted");
            remove.push(Key::InFlight(i.digest.clone()));
            (Vec::new(), remove)
        }
    }
}

/// The config and layers of the committed manifest `ingest` that are not in the content
/// directory yet.
fn missing_children(ingest: &Ingest, content_dir: &std::path::Path) -> Vec<Digest> {
    let blob = |d: &Digest| {
        content_dir
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    };
    let path = blob(&ingest.digest);
    let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_MANIFEST_BYTES);
    let Some(bytes) = small.then(|| std::fs::read(&path).ok()).flatten() else {
        return Vec::new();
    };
    match spegel_oci::referenced_digests(&bytes) {
        Some((media_type, children)) if !media_type.is_index() => children
            .into_iter()
            .filter(|child| !blob(child).exists())
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_manifest_announces_the_children_not_held_and_their_start_withdraws_them() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let (config, held, missing) = (
            Digest::sha256_of(b"config"),
            Digest::sha256_of(b"held"),
            Digest::sha256_of(b"missing"),
        );
        std::fs::write(blobs.join(held.hex()), b"held").unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"digest":"{config}"}},"layers":[{{"digest":"{held}"}},{{"digest":"{missing}"}}]}}"#
        );
        let digest = Digest::sha256_of(manifest.as_bytes());
        std::fs::write(blobs.join(digest.hex()), &manifest).unwrap();
        let ingest = |digest: &Digest, kind| Ingest {
            digest: digest.clone(),
            kind,
            total: 1,
            dir: dir.path().join("ingest/x"),
        };
        let mut coming = HashMap::new();
        let committed = IngestEvent::Committed(ingest(&digest, IngestKind::Manifest));
        let (add, remove) = keys_for(&committed, dir.path(), &mut coming);
        assert_eq!(
            add,
            vec![Key::Coming(config.clone()), Key::Coming(missing.clone())]
        );
        // The claim stays a while after the commit (withdrawn on the timer, not here).
        assert!(remove.is_empty());
        let started = IngestEvent::Started(ingest(&missing, IngestKind::Layer));
        let (add, remove) = keys_for(&started, dir.path(), &mut coming);
        assert_eq!(add, vec![Key::InFlight(missing.clone())]);
        assert_eq!(remove, vec![Key::Coming(missing)]);
        assert_eq!(coming.len(), 1);
    }
}
