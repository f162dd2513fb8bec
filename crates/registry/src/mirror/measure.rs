//! [`Mirror::measure`]: how fast this node gets an image from its peers, for an operator
//! (the debug page's measure tool). The reference is resolved through the DHT as the mirror
//! resolves it (a tag by its `<registry>/<repository>:<tag>` key), then the manifest and every
//! blob it names are fetched from peers, hash-verified and thrown away: nothing is stored,
//! nothing reaches containerd. Bounded by a deadline, a byte budget and a blob count.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use spegel_oci::{Digest, Reference, Repository, Verifier, referenced_digests};
use spegel_routing::{Key, Provider};

use super::{Ask, Fetch, MAX_MANIFEST_BYTES, Mirror};

/// What to measure: an image as containerd would ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasureTarget {
    /// The upstream registry host (`ns`), e.g. `docker.io` or `10.0.0.1:5000`.
    pub registry: String,
    pub repository: Repository,
    pub reference: Reference,
}

/// How far one measure may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureLimits {
    /// The whole measure ends after this long (what was measured so far is shown).
    pub deadline: Duration,
    /// Bytes fetched in total at most.
    pub max_bytes: u64,
    /// Manifests and blobs fetched at most.
    pub max_blobs: usize,
    /// How long one lookup may wait for the first provider.
    pub lookup_timeout: Duration,
}

impl Default for MeasureLimits {
    fn default() -> MeasureLimits {
        MeasureLimits {
            deadline: Duration::from_secs(25),
            max_bytes: 2 << 30,
            max_blobs: 256,
            lookup_timeout: Duration::from_secs(2),
        }
    }
}

/// What a measured piece of content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Index,
    Manifest,
    Config,
    Layer,
}

impl std::fmt::Display for BlobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobKind::Index => "index",
            BlobKind::Manifest => "manifest",
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        })
    }
}

/// One manifest or blob fetched from a peer (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub kind: BlobKind,
    /// `None` for a manifest asked by tag that no peer answered.
    pub digest: Option<Digest>,
    /// From asking the DHT to the first provider (or giving up).
    pub lookup: Duration,
    /// From asking the peer to the last byte.
    pub transfer: Duration,
    pub bytes: u64,
    /// The peer that sent it.
    pub peer: Option<Provider>,
    /// Why it was not fetched, or not fetched whole and verified.
    pub error: Option<String>,
}

/// A finished measure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurement {
    /// In the order fetched.
    pub steps: Vec<Measured>,
    /// Why the measure ended before every blob was fetched.
    pub stopped: Option<String>,
    /// From start to end.
    pub total: Duration,
}

impl Measurement {
    /// Bytes fetched in all.
    pub fn bytes(&self) -> u64 {
        self.steps.iter().map(|s| s.bytes).sum()
    }
}

/// One manifest or blob to fetch.
struct Piece {
    kind: BlobKind,
    key: Key,
    /// The last part of its path: a tag or a digest.
    reference: String,
    /// The digest its bytes must hash to (for a tag: named by the peer's answer).
    expected: Option<Digest>,
}

impl Piece {
    /// Content addressed by `digest`.
    fn digest(kind: BlobKind, digest: Digest) -> Piece {
        Piece {
            kind,
            key: Key::Digest(digest.clone()),
            reference: digest.to_string(),
            expected: Some(digest),
        }
    }
}

/// Why a piece of content was not fetched: the DHT named no provider.
const NOT_HELD: &str = "no peer holds it";

/// Index children fetched at most (each a platform's manifest; only held ones are found).
const MAX_INDEX_CHILDREN: usize = 16;

impl Mirror {
    /// Fetches `target`'s manifest and blobs from peers without storing them, timing each.
    pub async fn measure(&self, target: &MeasureTarget, limits: MeasureLimits) -> Measurement {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.deadline;
        let mut measurement = Measurement::default();
        let walk = self.walk(target, limits, &mut measurement);
        if tokio::time::timeout_at(deadline, walk).await.is_err() {
            measurement.stopped = Some(format!(
                "time limit ({} s) reached",
                limits.deadline.as_secs()
            ));
        }
        measurement.total = started.elapsed();
        measurement
    }

    async fn walk(&self, target: &MeasureTarget, limits: MeasureLimits, m: &mut Measurement) {
        let top = match &target.reference {
            Reference::Tag(tag) => Piece {
                kind: BlobKind::Manifest,
                key: Key::tag(&target.registry, target.repository.as_str(), tag.as_str()),
                reference: tag.to_string(),
                expected: None,
            },
            Reference::Digest(d) => Piece::digest(BlobKind::Manifest, d.clone()),
        };
        let (step, bytes) = self.measure_one(target, top, limits, 0).await;
        let failed = step.error.is_some();
        m.steps.push(step);
        let Some(bytes) = bytes.filter(|_| !failed) else {
            m.stopped = Some("the manifest could not be fetched from any peer".to_owned());
            return;
        };
        let Some((media_type, mut children)) = referenced_digests(&bytes) else {
            m.stopped = Some("the peer's answer is not a manifest".to_owned());
            return;
        };
        let mut manifests = Vec::new();
        if media_type.is_index() {
            if let Some(top) = m.steps.first_mut() {
                top.kind = BlobKind::Index;
            }
            children.truncate(MAX_INDEX_CHILDREN);
            // Only the platforms some node pulled are held by peers: walk those.
            for child in children {
                if !self.room(m, limits) {
                    return;
                }
                let piece = Piece::digest(BlobKind::Manifest, child);
                let (mut step, bytes) = self.measure_one(target, piece, limits, m.bytes()).await;
                let held = step.error.is_none();
                if step.peer.is_none() && step.error.is_some() {
                    step.error = Some(format!("{NOT_HELD} (a platform no node pulled?)"));
                }
                m.steps.push(step);
                if let Some(bytes) = bytes.filter(|_| held) {
                    manifests.push(bytes);
                }
            }
        } else {
            manifests.push(bytes);
        }
        for manifest in manifests {
            let Some((_, blobs)) = referenced_digests(&manifest) else {
                continue;
            };
            // A manifest names its config first, then its layers.
            for (i, blob) in blobs.into_iter().enumerate() {
                if !self.room(m, limits) {
                    return;
                }
                let kind = if i == 0 {
                    BlobKind::Config
                } else {
                    BlobKind::Layer
                };
                let piece = Piece::digest(kind, blob);
                let (step, _) = self.measure_one(target, piece, limits, m.bytes()).await;
                m.steps.push(step);
            }
        }
    }

    /// Whether the limits leave room for one more fetch; else says why the measure stopped.
    fn room(&self, m: &mut Measurement, limits: MeasureLimits) -> bool {
        if m.steps.len() >= limits.max_blobs {
            m.stopped = Some(format!("blob limit ({}) reached", limits.max_blobs));
            return false;
        }
        if m.bytes() >= limits.max_bytes {
            m.stopped = Some(format!("size limit ({} bytes) reached", limits.max_bytes));
            return false;
        }
        true
    }

    /// Looks `piece` up and fetches it from the first provider that answers, hashing every
    /// byte (`spent` bytes of the budget are gone already). A manifest's bytes are returned
    /// (to walk it).
    async fn measure_one(
        &self,
        target: &MeasureTarget,
        piece: Piece,
        limits: MeasureLimits,
        spent: u64,
    ) -> (Measured, Option<bytes::Bytes>) {
        let keep = matches!(piece.kind, BlobKind::Index | BlobKind::Manifest);
        let what = if keep { "manifests" } else { "blobs" };
        let Piece {
            kind,
            key,
            reference,
            expected,
        } = piece;
        let mut step = Measured {
            kind,
            digest: expected.clone(),
            lookup: Duration::ZERO,
            transfer: Duration::ZERO,
            bytes: 0,
            peer: None,
            error: None,
        };
        let lookup = Instant::now();
        let providers = self.first_providers(&key, limits.lookup_timeout).await;
        step.lookup = lookup.elapsed();
        if providers.is_empty() {
            step.error = Some(NOT_HELD.to_owned());
            return (step, None);
        }
        let fetch = Fetch {
            key,
            registry: target.registry.clone(),
            path_and_query: format!(
                "/v2/{}/{what}/{reference}?ns={}",
                target.repository,
                encode_query_value(&target.registry)
            ),
            head: false,
            digest: expected.clone(),
        };
        let budget = limits.max_bytes.saturating_sub(spent);
        let mut errors = Vec::new();
        for peer in providers {
            let started = Instant::now();
            let ask = Ask::new(&fetch, None);
            let response = match self.request(&peer, &ask).await {
                Ok(response) => response,
                Err(e) => {
                    errors.push(format!("{}: {e}", peer.registry));
                    continue;
                }
            };
            let claimed = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            let Some(digest) = expected.clone().or(claimed) else {
                errors.push(format!("{}: no digest to verify", peer.registry));
                continue;
            };
            step.digest = Some(digest.clone());
            let read = self
                .read_verified(response.into_body(), digest, keep, budget)
                .await;
            step.transfer = started.elapsed();
            step.peer = Some(peer);
            match read {
                Ok((bytes, kept)) => {
                    step.bytes = bytes;
                    return (step, kept);
                }
                Err((bytes, e)) => {
                    step.bytes = bytes;
                    step.error = Some(e);
                    return (step, None);
                }
            }
        }
        step.error = Some(format!("no peer answered ({})", errors.join("; ")));
        (step, None)
    }

    /// Up to `max_peers` providers of `key`: the first within `timeout`, and those found
    /// with it.
    async fn first_providers(&self, key: &Key, timeout: Duration) -> Vec<Provider> {
        let max = self.config.max_peers.max(1);
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(mut found) = self.start_lookup(key, max, deadline).await else {
            return Vec::new();
        };
        let Ok(Some(first)) = tokio::time::timeout_at(deadline, found.recv()).await else {
            return Vec::new();
        };
        let mut providers = vec![first];
        while let Ok(more) = found.try_recv() {
            providers.push(more);
        }
        providers
    }

    /// Reads a body to its end, hashing it: its length, and its bytes when `keep` (at most
    /// a manifest's size). Nothing else is kept. On failure: the bytes read and why.
    async fn read_verified(
        &self,
        mut body: hyper::body::Incoming,
        digest: Digest,
        keep: bool,
        budget: u64,
    ) -> Result<(u64, Option<bytes::Bytes>), (u64, String)> {
        let mut verifier = Verifier::new(digest);
        let mut read = 0u64;
        let mut kept = bytes::BytesMut::new();
        loop {
            let frame = match tokio::time::timeout(self.config.stall_timeout, body.frame()).await {
                Err(_) => return Err((read, "the peer stalled".to_owned())),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err((read, format!("the peer's stream broke: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            read += data.len() as u64;
            if read > budget {
                return Err((read, "size limit reached".to_owned()));
            }
            verifier.update(&data);
            if keep {
                if kept.len() + data.len() > MAX_MANIFEST_BYTES {
                    return Err((read, "larger than a manifest may be".to_owned()));
                }
                kept.extend_from_slice(&data);
            }
        }
        if !verifier.finish() {
            return Err((read, "the bytes do not match the digest".to_owned()));
        }
        Ok((read, keep.then(|| kept.freeze())))
    }
}

/// `value` percent-encoded for a query string (as containerd encodes `ns`).
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_is_percent_encoded_as_containerd_does() {
        assert_eq!(encode_query_value("10.0.0.1:5000"), "10.0.0.1%3A5000");
        assert_eq!(encode_query_value("a&b=c"), "a%26b%3Dc");
    }
}
