//! [`Mirror`]: serving content this node lacks from the peers that hold it.
//!
//! Resolve providers through the DHT (give up after `resolve_timeout` without one, so a miss
//! costs containerd milliseconds before it falls back upstream), try the least-used peer
//! first, hedge to the next if it is slow to answer, and stream its response. A blob stream
//! that breaks is resumed from the next peer with `Range: bytes=<sent>-` into the same
//! response. Every byte of a digest-addressed response is hashed on the way through; on a
//! mismatch the response is aborted before its last chunk (never completed with wrong bytes)
//! and the peers that sent it are not asked for that digest again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spegel_metrics::Metrics;
use spegel_oci::{Digest, ImageFilter, Verifier};
use spegel_routing::{Key, PeerId, Provider, Router};
use spegel_secret::ClusterSecret;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::response::{self, Body};

mod peers;
mod transfer;

use peers::Peers;
use transfer::Transfer;

/// The header that marks a request between peers: it is served from local content only.
pub const MIRRORED_HEADER: &str = "x-spegel-mirrored";

/// Manifests read from a peer are buffered whole (to verify them); larger ones are refused.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// How the mirror behaves.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// How long to wait for the first provider before answering 404.
    pub resolve_timeout: Duration,
    /// How many peers to try for one request.
    pub max_peers: usize,
    /// How long a peer may take to answer before the next one is asked as well.
    pub hedge_after: Duration,
    /// Deadline for a manifest (or HEAD) request through peers.
    pub manifest_deadline: Duration,
    /// A blob stream that delivers nothing for this long is resumed from another peer.
    pub stall_timeout: Duration,
    /// Which registries and images are mirrored.
    pub filter: ImageFilter,
    /// The cluster secret requests to peers are signed with (`None`: unsigned, open DHT).
    pub secret: Option<Arc<ClusterSecret>>,
}

impl Default for MirrorConfig {
    fn default() -> MirrorConfig {
        MirrorConfig {
            resolve_timeout: Duration::from_millis(20),
            max_peers: 3,
            hedge_after: Duration::from_millis(500),
            manifest_deadline: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(10),
            filter: ImageFilter::default(),
            secret: None,
        }
    }
}

/// What to fetch from peers.
pub(crate) struct Fetch {
    /// The key to resolve.
    pub key: Key,
    /// The upstream registry the request is for (`ns`), for metrics.
    pub registry: String,
    /// `/v2/<repo>/<manifests|blobs>/<reference>?ns=<registry>`
    pub path_and_query: String,
    pub head: bool,
    /// The digest the bytes must hash to, when the request names one.
    pub digest: Option<Digest>,
}

type PeerClient = Client<HttpConnector, Empty<Bytes>>;

/// Fetches from peers. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    router: Router,
    client: PeerClient,
    config: Arc<MirrorConfig>,
    metrics: Arc<Metrics>,
    /// Requests in flight per peer, for least-used-first.
    in_use: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// Peers that sent wrong bytes for a digest.
    untrusted: Arc<Mutex<HashMap<Digest, HashSet<PeerId>>>>,
}

impl Mirror {
    /// A mirror resolving through `router`, counting into `metrics`.
    pub fn new(router: Router, config: MirrorConfig, metrics: Arc<Metrics>) -> Mirror {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Mirror {
            router,
            client,
            config: Arc::new(config),
            metrics,
            in_use: Arc::default(),
            untrusted: Arc::default(),
        }
    }

    /// This node's view of the DHT, for `/_spegel/status`.
    pub(crate) async fn status(&self) -> serde_json::Value {
        let advertised = self.router.advertised().await.unwrap_or_default();
        let tags = advertised
            .iter()
            .filter(|k| matches!(k, Key::Tag(_)))
            .count();
        serde_json::json!({
            "peer_id": self.router.local_peer_id().to_string(),
            "router_addr": self.router.listen_addr().to_string(),
            "routing_table_peers": self.router.peer_count(),
            "advertised_digests": advertised.len() - tags,
            "advertised_tags": tags,
        })
    }

    /// Who the DHT says holds `digest` (up to `limit` peers, waiting at most 2 s), for
    /// `/_spegel/providers/<digest>[?limit=N]`.
    pub(crate) async fn providers(&self, digest: &Digest, limit: usize) -> serde_json::Value {
        let mut found = Vec::new();
        if let Ok(mut providers) = self
            .router
            .resolve(&Key::Digest(digest.clone()), limit)
            .await
        {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while let Ok(Some(p)) = tokio::time::timeout_at(deadline, providers.recv()).await {
                found.push(serde_json::json!({ "peer_id": p.peer.to_string(), "registry": p.registry.to_string() }));
            }
        }
        serde_json::Value::Array(found)
    }

    /// Whether the router knows at least one peer.
    pub fn has_peers(&self) -> bool {
        self.router.peer_count() > 0
    }

    /// Whether requests for `registry` are mirrored at all.
    pub fn mirrors(&self, registry: &str) -> bool {
        self.config.filter.allows_registry(registry)
    }

    /// A manifest (or a HEAD of anything): the first peer's full answer, verified.
    /// `None` when no peer could answer.
    pub(crate) async fn small(&self, fetch: Fetch) -> Option<Response<Body>> {
        let deadline = self.config.manifest_deadline;
        let registry = fetch.registry.clone();
        let response = tokio::time::timeout(deadline, self.small_within(fetch))
            .await
            .ok()
            .flatten();
        self.metrics.mirror_request(&registry, response.is_some());
        response
    }

    async fn small_within(&self, fetch: Fetch) -> Option<Response<Body>> {
        let mut peers = Peers::resolve(self, &fetch).await?;
        while let Some((peer, response)) = peers.first_answer(self, &fetch, None).await {
            let (parts, body) = response.into_parts();
            if fetch.head {
                return Some(Response::from_parts(parts, response::empty()));
            }
            let bytes = match read_limited(body, MAX_MANIFEST_BYTES).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    debug!(peer = %peer.peer, error = %e, "peer's manifest unreadable");
                    continue;
                }
            };
            let claimed = parts
                .headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            let Some(expected) = fetch.digest.clone().or(claimed) else {
                debug!(peer = %peer.peer, "peer's manifest has no digest to verify");
                continue;
            };
            let mut verifier = Verifier::new(expected.clone());
            verifier.update(&bytes);
            if !verifier.finish() {
                self.distrust(&expected, &[peer.peer]);
                continue;
            }
            let mut response = Response::from_parts(parts, response::full(bytes.clone()));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            return Some(response);
        }
        None
    }

    /// A blob (or the one range of it the client asked for, passed on as sent), streamed
    /// from peers with resume and verification. `None` when no peer could answer.
    pub(crate) async fn blob(&self, fetch: Fetch, range: Option<&str>) -> Option<Response<Body>> {
        let registry = fetch.registry.clone();
        let response = self.blob_from_peers(fetch, range).await;
        self.metrics.mirror_request(&registry, response.is_some());
        response
    }

    async fn blob_from_peers(&self, fetch: Fetch, range: Option<&str>) -> Option<Response<Body>> {
        let mut peers = Peers::resolve(self, &fetch).await?;
        let (peer, response) = peers.first_answer(self, &fetch, range).await?;
        let length = content_length(response.headers())?;
        let first = match range {
            None => 0,
            Some(_) => content_range_start(response.headers())?,
        };
        let (parts, body) = response.into_parts();
        let (tx, rx) = mpsc::channel(4);
        let transfer = Transfer {
            mirror: self.clone(),
            fetch,
            peers,
            first,
            length,
            // Only a whole blob can be checked against its digest.
            verify: range.is_none(),
        };
        tokio::spawn(transfer.run(peer, body, tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Some(Response::from_parts(
            parts,
            response::stream(Box::pin(stream)),
        ))
    }

    fn distrust(&self, digest: &Digest, peers: &[PeerId]) {
        warn!(%digest, ?peers, "peer sent content that does not match its digest; not using it again");
        if let Ok(mut untrusted) = self.untrusted.lock() {
            if untrusted.len() > 10_000 {
                untrusted.clear();
            }
            untrusted.entry(digest.clone()).or_default().extend(peers);
        }
    }

    fn is_untrusted(&self, digest: Option<&Digest>, peer: &PeerId) -> bool {
        let Some(digest) = digest else { return false };
        self.untrusted
            .lock()
            .map(|u| u.get(digest).is_some_and(|peers| peers.contains(peer)))
            .unwrap_or(false)
    }

    fn usage(&self, peer: &PeerId) -> usize {
        self.in_use
            .lock()
            .map(|u| u.get(peer).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Counts a request to `peer` as in flight until the guard drops.
    fn use_peer(&self, peer: PeerId) -> InUse {
        if let Ok(mut u) = self.in_use.lock() {
            *u.entry(peer).or_default() += 1;
        }
        InUse {
            in_use: self.in_use.clone(),
            peer,
        }
    }

    async fn request(
        &self,
        peer: &Provider,
        fetch: &Fetch,
        range: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        let uri = format!("http://{}{}", peer.registry, fetch.path_and_query);
        let method = if fetch.head {
            Method::HEAD
        } else {
            Method::GET
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(MIRRORED_HEADER, "true");
        if let Some(range) = range {
            builder = builder.header(RANGE, range);
        }
        builder = crate::access::prove(builder, self.config.secret.as_deref());
        let request = builder.body(Empty::new()).map_err(|e| e.to_string())?;
        let _in_use = self.use_peer(peer.peer);
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let expected = if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if response.status() != expected {
            return Err(format!("answered {}", response.status()));
        }
        Ok(response)
    }
}

struct InUse {
    in_use: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Ok(mut u) = self.in_use.lock()
            && let Some(n) = u.get_mut(&self.peer)
        {
            *n = n.saturating_sub(1);
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads a body of at most `max` bytes.
async fn read_limited(mut body: Incoming, max: usize) -> Result<Bytes, String> {
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max {
                return Err("larger than a manifest may be".into());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// The first byte offset of a `Content-Range: bytes <first>-<last>/<size>` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let span = value.strip_prefix("bytes ")?;
    span.split_once('-')?.0.parse().ok()
}
