//! Blobs containerd is downloading right now: its `ingest/` directory, watched.
//!
//! containerd writes a pull's blobs into `ingest/<sha256(ref)>/{ref,total,data,…}` and
//! renames `data` to `blobs/sha256/<hex>` at commit (same inode: an open `data` fd simply
//! reaches `total`). `ref` is `<namespace>/<seq>/<kind>-sha256:<hex>` (or
//! `<kind>-<name>@sha256:<hex>`): it names the digest, which gRPC does not (`expected` is
//! empty in `ListStatuses`, and `Read` refuses content that is not committed). So the data path
//! is the filesystem: [`IngestWatch`] polls `ingest/` every few milliseconds (a directory
//! listing of a handful of entries costs microseconds), keeps `digest → ingest` for its
//! namespace only (never `default` or `moby` pulls), and reports [`IngestEvent`]s.
//! [`follow`] streams an ingest's `data` while it grows.
//!
//! A directory can exist for 10-20 ms without `ref`, `total` or `data` (containerd creates
//! them one after the other), and `ref` itself is written in place (`os.WriteFile`: created
//! empty, then filled), so a poll can read it empty: such entries are retried on the next
//! poll, and only a `ref` that names a digest decides whether the download is ours (an empty
//! one once hid a layer download for good, and two nodes fetched it upstream). See
//! `shared/INFLIGHT.md` for the measured facts this relies on.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spegel_oci::{Digest, Verifier};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::BlobStream;

/// Ingests tracked at once; a node downloads a few blobs at a time, so this only bounds junk.
const MAX_TRACKED: usize = 4096;

/// How long a directory whose `ref` names no digest is looked at again before it is taken
/// for something we do not understand (containerd fills `ref` within microseconds).
const UNREADABLE_FOR: Duration = Duration::from_secs(2);

/// Events queued for the consumer (the advertiser of in-flight keys) before the poller waits.
const EVENT_QUEUE: usize = 1024;

/// Bytes read at a time from a growing `data` file (containerd writes it in 1 MiB steps).
const FOLLOW_CHUNK: usize = 256 * 1024;

/// How often a follower looks again at a `data` file that has no new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// What kind of content containerd says it is downloading (from its ingest ref).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestKind {
    Index,
    Manifest,
    Config,
    Layer,
    Unknown,
}

/// A blob containerd is downloading.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub digest: Digest,
    pub kind: IngestKind,
    /// The blob's size: containerd knows it before the first byte arrives.
    pub total: u64,
    /// `ingest/<key>/` beneath the content directory.
    pub dir: PathBuf,
}

/// What the watcher saw change.
#[derive(Debug, Clone)]
pub enum IngestEvent {
    /// containerd started downloading a blob.
    Started(Ingest),
    /// The download finished: the blob is committed.
    Committed(Ingest),
    /// The download stopped without a blob (pull cancelled or failed).
    Aborted(Ingest),
}

/// The ingests of one containerd namespace, kept current by a polling thread.
#[derive(Clone)]
pub struct IngestWatch {
    content_dir: PathBuf,
    current: Arc<RwLock<HashMap<Digest, Ingest>>>,
    /// Bumped after every poll that changed `current`; waiters watch it.
    changes: watch::Receiver<u64>,
}

impl IngestWatch {
    /// Starts watching `<content_dir>/ingest` for downloads in `namespace`, polling every
    /// `poll`, until `shutdown`. Events arrive on the returned channel (bounded: the poller
    /// waits for a slow consumer).
    pub fn start(
        content_dir: &Path,
        namespace: &str,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> (IngestWatch, mpsc::Receiver<IngestEvent>) {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (changes_tx, changes) = watch::channel(0);
        let watch = IngestWatch {
            content_dir: content_dir.to_owned(),
            current: Arc::default(),
            changes,
        };
        let poller = Poller {
            content_dir: content_dir.to_owned(),
            namespace: namespace.to_owned(),
            current: watch.current.clone(),
            pending: HashMap::new(),
            events: events_tx,
            changes: changes_tx,
        };
        let spawned = std::thread::Builder::new()
            .name("ingest-watch".into())
            .spawn(move || poller.run(poll, &shutdown));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the ingest watcher; in-flight blobs are not served");
        }
        (watch, events)
    }

    /// The download of `digest` in progress, if any.
    pub fn get(&self, digest: &Digest) -> Option<Ingest> {
        self.current.read().ok()?.get(digest).cloned()
    }

    /// Waits up to `timeout` for a download of `digest` to start (or be in progress).
    pub async fn wait_for(&self, digest: &Digest, timeout: Duration) -> Option<Ingest> {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ingest) = self.get(digest) {
                return Some(ingest);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.get(digest),
            }
        }
    }

    /// Where `digest` lands when committed.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.content_dir, digest)
    }
}

fn blob_path(content_dir: &Path, digest: &Digest) -> PathBuf {
    content_dir
        .join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

/// The polling thread's state.
struct Poller {
    content_dir: PathBuf,
    /// Refs of other namespaces are ignored.
    namespace: String,
    current: Arc<RwLock<HashMap<Digest, Ingest>>>,
    /// Directories seen but not complete yet (looked at again on every poll) or never to be
    /// reported (another namespace, or a `ref` we do not understand).
    pending: HashMap<PathBuf, Pending>,
    events: mpsc::Sender<IngestEvent>,
    changes: watch::Sender<u64>,
}

impl Poller {
    fn run(mut self, poll: Duration, shutdown: &CancellationToken) {
        let ingest_dir = self.content_dir.join("ingest");
        let mut generation = 0u64;
        while !shutdown.is_cancelled() {
            match self.poll(&ingest_dir) {
                Ok(true) => {
                    generation += 1;
                    self.changes.send_replace(generation);
                }
                Ok(false) => {}
                Err(()) => return,
            }
            std::thread::sleep(poll);
        }
    }

    /// One look at `ingest/`. `Ok(true)` when something changed, `Err` when the consumer
    /// is gone.
    fn poll(&mut self, ingest_dir: &Path) -> Result<bool, ()> {
        let listing = match std::fs::read_dir(ingest_dir) {
            Ok(listing) => listing,
            // containerd creates `ingest/` with its first download.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                debug!(dir = %ingest_dir.display(), error = %e, "cannot list ingests");
                return Ok(false);
            }
        };
        let dirs: Vec<PathBuf> = listing
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .take(MAX_TRACKED)
            .collect();
        let mut changed = false;
        let mut events = Vec::new();
        // Gone since the last poll: committed or aborted.
        let gone: Vec<Ingest> = self
            .current
            .read()
            .map(|current| {
                current
                    .values()
                    .filter(|i| !dirs.contains(&i.dir))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for ingest in gone {
            if let Ok(mut current) = self.current.write() {
                current.remove(&ingest.digest);
            }
            changed = true;
            let committed = blob_path(&self.content_dir, &ingest.digest).exists();
            events.push(if committed {
                IngestEvent::Committed(ingest)
            } else {
                IngestEvent::Aborted(ingest)
            });
        }
        self.pending.retain(|dir, _| dirs.contains(dir));
        for dir in dirs {
            if matches!(self.pending.get(&dir), Some(Pending::Ignored)) {
                continue;
            }
            let known = self
                .current
                .read()
                .map(|c| c.values().any(|i| i.dir == dir))
                .unwrap_or(false);
            if known {
                continue;
            }
            match read_ingest(&dir, &self.namespace) {
                Ok(Some(ingest)) => {
                    self.pending.remove(&dir);
                    if let Ok(mut current) = self.current.write() {
                        current.insert(ingest.digest.clone(), ingest.clone());
                    }
                    changed = true;
                    events.push(IngestEvent::Started(ingest));
                }
                // Another namespace: never look again.
                Ok(None) => {
                    self.pending.insert(dir, Pending::Ignored);
                }
                // Not complete yet: look again next time, unless its `ref` has named no
                // digest for too long (not a download we understand).
                Err(e) => {
                    let since = match self.pending.get(&dir) {
                        Some(Pending::Incomplete { since }) => *since,
                        _ => Instant::now(),
                    };
                    let unreadable = e.kind() == io::ErrorKind::InvalidData;
                    let entry = if unreadable && since.elapsed() >= UNREADABLE_FOR {
                        debug!(dir = %dir.display(), "ingest ref names no digest; ignoring it");
                        Pending::Ignored
                    } else {
                        Pending::Incomplete { since }
                    };
                    self.pending.insert(dir, entry);
                }
            }
        }
        for event in events {
            self.events.blocking_send(event).map_err(|_| ())?;
        }
        Ok(changed)
    }
}

/// A directory [`Poller::poll`] does not report (yet).
enum Pending {
    /// Not all files are there yet, since `since`.
    Incomplete { since: Instant },
    /// Another namespace, or a `ref` that names no digest: never read again.
    Ignored,
}

/// Reads one ingest directory. `Ok(None)`: another namespace's; `Err`: not all files are
/// there yet (`InvalidData`: `ref` names no digest, perhaps because it is being written).
fn read_ingest(dir: &Path, namespace: &str) -> io::Result<Option<Ingest>> {
    let reference = std::fs::read_to_string(dir.join("ref"))?;
    let Some((ref_namespace, kind, digest)) = parse_ref(&reference) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ref names no digest (yet)",
        ));
    };
    if ref_namespace != namespace {
        return Ok(None);
    }
    let total = std::fs::read_to_string(dir.join("total"))?;
    let Ok(total) = total.trim().parse::<u64>() else {
        return Err(io::Error::other("total not written yet"));
    };
    // `data` is created last; following needs it.
    if !dir.join("data").exists() {
        return Err(io::Error::other("data not created yet"));
    }
    Ok(Some(Ingest {
        digest,
        kind,
        total,
        dir: dir.to_owned(),
    }))
}

/// `<namespace>/<seq>/<kind>-sha256:<hex>` or `<namespace>/<seq>/<kind>-<name>@sha256:<hex>`
/// → namespace, kind and digest.
fn parse_ref(reference: &str) -> Option<(&str, IngestKind, Digest)> {
    let (namespace, rest) = reference.trim().split_once('/')?;
    let (_seq, name) = rest.split_once('/')?;
    let kind = match name.split(['-', '@']).next()? {
        "index" => IngestKind::Index,
        "manifest" => IngestKind::Manifest,
        "config" => IngestKind::Config,
        "layer" => IngestKind::Layer,
        _ => IngestKind::Unknown,
    };
    let at = name.rfind(['@', '-'])?;
    let digest = name[at + 1..].parse().ok()?;
    Some((namespace, kind, digest))
}

/// How a [`follow`] stream gives up.
#[derive(Debug, Clone, Copy)]
pub struct FollowLimits {
    /// No new byte for this long: the download is stuck; the stream is cut.
    pub stall_timeout: Duration,
}

/// Streams `ingest`'s bytes from `first` to its end while containerd is still writing them.
///
/// The stream waits for the file to grow, switches to the committed blob if the `data` file
/// is replaced, and ends with an error (so the connection is cut and the reader retries
/// elsewhere with `Range`) when the download is aborted or stops growing for
/// `limits.stall_timeout`. A stream from byte 0 is hashed and its last chunk is only
/// released when the digest matches.
pub async fn follow(
    watch: &IngestWatch,
    ingest: &Ingest,
    first: u64,
    limits: FollowLimits,
) -> io::Result<BlobStream> {
    let data = ingest.dir.join("data");
    let blob = watch.blob_path(&ingest.digest);
    let file = tokio::task::spawn_blocking(move || open_at(&data, &blob, first))
        .await
        .map_err(io::Error::other)??;
    let follower = Follower {
        file: Some(file),
        ingest: ingest.clone(),
        blob: watch.blob_path(&ingest.digest),
        offset: first,
        last_growth: Instant::now(),
        limits,
        verifier: (first == 0).then(|| Verifier::new(ingest.digest.clone())),
        held: None,
    };
    let stream = futures_util::stream::unfold(Some(follower), |follower| async move {
        let mut follower = follower?;
        match follower.next().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(follower))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Box::pin(stream))
}

/// Opens the ingest's `data` (or, if it was committed meanwhile, the blob) at `offset`.
fn open_at(data: &Path, blob: &Path, offset: u64) -> io::Result<std::fs::File> {
    let mut file = match std::fs::File::open(data) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::File::open(blob)?,
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

struct Follower {
    file: Option<std::fs::File>,
    ingest: Ingest,
    blob: PathBuf,
    offset: u64,
    last_growth: Instant,
    limits: FollowLimits,
    verifier: Option<Verifier>,
    /// The last chunk of a hashed stream, released once the digest matched.
    held: Option<Bytes>,
}

impl Follower {
    /// The next chunk, `None` at the end.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.offset >= self.ingest.total {
                return self.finish();
            }
            let want = usize::try_from(self.ingest.total - self.offset)
                .map_or(FOLLOW_CHUNK, |left| left.min(FOLLOW_CHUNK));
            let chunk = self.read(want).await?;
            if !chunk.is_empty() {
                self.offset += chunk.len() as u64;
                self.last_growth = Instant::now();
                if let Some(v) = self.verifier.as_mut() {
                    v.update(&chunk);
                    match self.held.replace(chunk) {
                        Some(previous) => return Ok(Some(previous)),
                        None => continue,
                    }
                }
                return Ok(Some(chunk));
            }
            self.wait_for_growth().await?;
        }
    }

    /// Reads up to `want` bytes that are already written.
    async fn read(&mut self, want: usize) -> io::Result<Bytes> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("ingest file closed"));
        };
        let (file, read) = tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(want);
            let read = file.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf.freeze()
            });
            (file, read)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        read
    }

    /// At the current end of the file: waits for more, or fails when the download is over
    /// without the bytes we need.
    async fn wait_for_growth(&mut self) -> io::Result<()> {
        if !self.ingest.dir.exists() {
            // Committed: our fd is the blob (same inode) and will show every byte; if
            // containerd wrote the blob anew, continue from the committed file.
            if self.blob.exists() {
                let (blob, offset) = (self.blob.clone(), self.offset);
                let reopened = tokio::task::spawn_blocking(move || open_at(&blob, &blob, offset))
                    .await
                    .map_err(io::Error::other)??;
                let size = reopened.metadata()?.len();
                if size > self.offset {
                    self.file = Some(reopened);
                    return Ok(());
                }
            } else {
                return Err(io::Error::other(format!(
                    "download of {} was aborted at byte {}",
                    self.ingest.digest, self.offset
                )));
            }
        }
        if self.last_growth.elapsed() > self.limits.stall_timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "download of {} made no progress for {:?} at byte {}",
                    self.ingest.digest, self.limits.stall_timeout, self.offset
                ),
            ));
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        Ok(())
    }

    /// The end: releases the held chunk if the digest matched.
    fn finish(&mut self) -> io::Result<Option<Bytes>> {
        if self.verifier.take().is_some_and(|v| !v.finish()) {
            return Err(io::Error::other(format!(
                "downloaded bytes do not match {}",
                self.ingest.digest
            )));
        }
        Ok(self.held.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const HEX: &str = "05b6b695893861775b4f0e6512ba8a7a36e014be4d029c4a6918c898faf943a3";

    #[test]
    fn refs_name_their_kind_and_digest_in_our_namespace_only() {
        let cases = [
            (
                format!("k8s.io/1/layer-sha256:{HEX}"),
                Some(IngestKind::Layer),
            ),
            (
                format!("k8s.io/1/manifest-sha256:{HEX}"),
                Some(IngestKind::Manifest),
            ),
            (
                format!("k8s.io/12/config-sha256:{HEX}\n"),
                Some(IngestKind::Config),
            ),
            (
                format!("k8s.io/1/index-docker.io/library/x:1@sha256:{HEX}"),
                Some(IngestKind::Index),
            ),
            (
                format!("k8s.io/1/weird-sha256:{HEX}"),
                Some(IngestKind::Unknown),
            ),
            (format!("default/1/layer-sha256:{HEX}"), None),
            (format!("moby/1/layer-sha256:{HEX}"), None),
            ("k8s.io/1/layer-sha256:nothex".to_owned(), None),
            ("k8s.io/layer".to_owned(), None),
            (String::new(), None),
        ];
        for (reference, kind) in cases {
            let parsed = parse_ref(&reference)
                .filter(|(namespace, ..)| *namespace == "k8s.io")
                .map(|(_, kind, digest)| (kind, digest));
            assert_eq!(parsed.as_ref().map(|p| p.0), kind, "{reference}");
            if let Some((_, digest)) = parsed {
                assert_eq!(digest.hex(), HEX);
            }
        }
    }

    /// Watches `root` for the `k8s.io` namespace, polling every 5 ms.
    fn watch_k8s(
        root: &Path,
        shutdown: &CancellationToken,
    ) -> (IngestWatch, mpsc::Receiver<IngestEvent>) {
        IngestWatch::start(root, "k8s.io", Duration::from_millis(5), shutdown.clone())
    }

    fn write_ingest(root: &Path, name: &str, reference: &str, total: usize) -> PathBuf {
        let dir = root.join("ingest").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ref"), reference).unwrap();
        std::fs::write(dir.join("total"), total.to_string()).unwrap();
        std::fs::write(dir.join("data"), b"").unwrap();
        dir
    }

    #[tokio::test]
    async fn a_growing_ingest_is_followed_to_its_commit_and_verified() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("blobs/sha256")).unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::sha256_of(&content);
        let reference = format!("k8s.io/1/layer-{digest}");
        let dir = write_ingest(root.path(), "a", &reference, content.len());
        let shutdown = CancellationToken::new();
        let (watch, mut events) = watch_k8s(root.path(), &shutdown);
        let ingest = watch
            .wait_for(&digest, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(matches!(events.recv().await, Some(IngestEvent::Started(_))));
        let limits = FollowLimits {
            stall_timeout: Duration::from_secs(2),
        };
        let mut stream = follow(&watch, &ingest, 0, limits).await.unwrap();
        // containerd writes in 1 MiB steps, then renames data into blobs/.
        let writer = {
            let (dir, content, blob) = (dir.clone(), content.clone(), watch.blob_path(&digest));
            tokio::spawn(async move {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("data"))
                    .unwrap();
                for part in content.chunks(1024 * 1024) {
                    std::io::Write::write_all(&mut file, part).unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                std::fs::rename(dir.join("data"), blob).unwrap();
                std::fs::remove_dir_all(dir).unwrap();
            })
        };
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        writer.await.unwrap();
        assert_eq!(got, content);
        match events.recv().await {
            Some(IngestEvent::Committed(i)) => assert_eq!(i.digest, digest),
            other => panic!("expected the commit, got {other:?}"),
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_aborted_ingest_cuts_the_stream_and_a_stalled_one_times_out() {
        let root = tempfile::tempdir().unwrap();
        let content = vec![7u8; 1000];
        let digest = Digest::sha256_of(&content);
        let dir = write_ingest(root.path(), "b", &format!("k8s.io/1/layer-{digest}"), 1000);
        std::fs::write(dir.join("data"), &content[..100]).unwrap();
        let shutdown = CancellationToken::new();
        let (watch, mut events) = watch_k8s(root.path(), &shutdown);
        let ingest = watch
            .wait_for(&digest, Duration::from_secs(2))
            .await
            .unwrap();
        let stalled = FollowLimits {
            stall_timeout: Duration::from_millis(100),
        };
        let mut stream = follow(&watch, &ingest, 10, stalled).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 90);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let patient = FollowLimits {
            stall_timeout: Duration::from_secs(10),
        };
        let mut stream = follow(&watch, &ingest, 100, patient).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("aborted"), "{err}");
        let _started = events.recv().await;
        assert!(matches!(events.recv().await, Some(IngestEvent::Aborted(_))));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn other_namespaces_and_half_written_directories_are_not_reported() {
        let root = tempfile::tempdir().unwrap();
        let digest = Digest::sha256_of(b"x");
        write_ingest(root.path(), "c", &format!("default/1/layer-{digest}"), 1);
        let half = root.path().join("ingest/d");
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(half.join("ref"), format!("k8s.io/1/layer-{digest}")).unwrap();
        let shutdown = CancellationToken::new();
        let (watch, _events) = watch_k8s(root.path(), &shutdown);
        assert!(
            watch
                .wait_for(&digest, Duration::from_millis(100))
                .await
                .is_none()
        );
        std::fs::write(half.join("total"), "1").unwrap();
        std::fs::write(half.join("data"), "").unwrap();
        assert!(
            watch
                .wait_for(&digest, Duration::from_secs(2))
                .await
                .is_some()
        );
        shutdown.cancel();
    }

    /// containerd creates `ref` empty and then writes it: a poll in between must not take
    /// the download for another namespace's (it once hid a layer, fetched twice upstream).
    #[tokio::test]
    async fn a_ref_read_while_it_is_being_written_is_read_again() {
        let root = tempfile::tempdir().unwrap();
        let digest = Digest::sha256_of(b"y");
        let dir = write_ingest(root.path(), "e", "", 1);
        let shutdown = CancellationToken::new();
        let (watch, _events) = watch_k8s(root.path(), &shutdown);
        // Several polls see the empty ref.
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(dir.join("ref"), format!("k8s.io/1/layer-{digest}")).unwrap();
        let found = watch.wait_for(&digest, Duration::from_secs(2)).await;
        assert!(found.is_some());
        shutdown.cancel();
    }
}
