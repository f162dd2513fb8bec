//! [`Mirror`]: serving content this node lacks from the peers that hold it or are
//! downloading it.
//!
//! A blob request from this node's containerd, top to bottom:
//! 1. Providers that hold the blob complete ([`Key::Digest`]), found within
//!    `resolve_timeout`: the least-used is asked first, the next one too if it is slow
//!    (hedging), and its response is streamed ([`transfer`]), hashed on the way, resumed from
//!    another peer when it breaks.
//! 2. Nobody holds it complete: the cluster-wide single flight ([`flight`], [`Mirror::claim`]):
//!    nodes that miss it at the same moment elect one owner whose containerd fetches it
//!    upstream (it gets a 404), and the others stream the owner's download as it grows.
//! 3. Otherwise a 404, so containerd falls back to the upstream.
//!
//! Every byte of a digest-addressed response is hashed on the way through; on a mismatch the
//! response is aborted before its last chunk (never completed with wrong bytes) and the peers
//! that sent it are not asked for that digest again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spegel_metrics::{FlightOutcome, Metrics};
use spegel_oci::{Digest, ImageFilter, Verifier};
use spegel_routing::{Key, PeerId, Provider};
use spegel_secret::ClusterSecret;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::response::{self, Body};

pub mod flight;
mod log;
mod measure;
mod peers;
mod resolver;
mod transfer;
pub mod zones;

pub use flight::{Decision, Flights};
pub use log::{MIRROR_LOG_ENTRIES, MirrorLog, MirroredRequest, Outcome};
pub use measure::{BlobKind, MeasureLimits, MeasureTarget, Measured, Measurement};
use peers::Peers;
pub use resolver::{BoxFuture, Resolver};
use transfer::Transfer;
use zones::Relation;
pub use zones::{LocalZone, PeerZones, ZONE_HEADER, Zone};

/// The header that marks a request between peers: it is served from local content only
/// (complete, or a download in progress), never forwarded.
pub const MIRRORED_HEADER: &str = "x-spegel-mirrored";

/// How long (milliseconds) the asked peer may hold a request while it decides whether it
/// fetches the blob (single flight). Absent: no hold.
pub const HOLD_HEADER: &str = "x-spegel-hold-ms";

/// The peer ID of the node asking, so a node never serves its download to the node it
/// streams that download from (they would wait for each other).
pub const PEER_HEADER: &str = "x-spegel-peer";

/// In a peer's answer for a download in progress: `following` when the peer streams it
/// from another peer, `owner` when its containerd fetches it from the upstream.
pub const FLIGHT_HEADER: &str = "x-spegel-flight";

/// In a peer's answer: `complete`, or `in-flight` when it streams a download in progress.
pub const SOURCE_HEADER: &str = "x-spegel-source";
/// [`SOURCE_HEADER`]'s value for a download in progress.
pub const IN_FLIGHT: &str = "in-flight";

/// Manifests read from a peer are buffered whole (to verify them); larger ones are refused.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// KiB of manifests buffered from peers at once, across all requests: eight of the largest.
/// A request that finds the budget spent waits (within the manifest deadline) or gets a 404.
const MANIFEST_BUDGET_KIB: usize = 8 * MAX_MANIFEST_BYTES / 1024;

/// Claimants of one blob considered at most (the first ranks decide; more only cost time).
const MAX_CLAIMANTS: usize = 20;

/// How long a miss looks for anyone else wanting the blob before it skips the claim window.
const ALONE_CHECK: Duration = Duration::from_millis(50);

/// How long a resume collects the downloads it could continue from.
const RESUME_COLLECT: Duration = Duration::from_millis(100);

/// How long a probe ("have you decided?") of the claimants may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a node first in line for a blob listens once more for claims made at the same
/// moment before it takes the place (a quarter of the default claim window).
const FIRST_IN_LINE_RECHECK: Duration = Duration::from_millis(50);

/// Providers whose zone is asked at once, and how long their answers are awaited: one
/// round trip inside the cluster, once per peer.
const MAX_ZONE_ASKS: usize = 8;
const ZONE_ASK_TIMEOUT: Duration = Duration::from_millis(250);

/// [`FLIGHT_HEADER`]'s value on a 404 from a node that claims a blob (its containerd opened
/// the download) but has not been asked for it by its containerd yet.
pub const IDLE: &str = "idle";

/// What the claimants answered a probe.
struct Probe {
    /// Decided claimants to follow: the owners, else their followers.
    ready: Vec<Provider>,
    /// Claimants not asked for the blob by their own containerd yet.
    idle: HashSet<PeerId>,
}

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
    /// How long a peer may take to send response headers (plus any hold it was granted).
    pub header_timeout: Duration,
    /// A blob stream that delivers nothing for this long is resumed from another peer.
    pub stall_timeout: Duration,
    /// Which registries and images are mirrored.
    pub filter: ImageFilter,
    /// Elect one node per blob to fetch it upstream when several miss it at once.
    pub single_flight: bool,
    /// How long claims of other nodes that missed the same blob are awaited.
    pub claim_window: Duration,
    /// How long a request may be held in total waiting for another node's download.
    pub inflight_hold: Duration,
    /// A download in progress that we serve to a peer and that gains no byte for this long
    /// is given up: the response is cut so the peer moves on.
    pub inflight_stall_timeout: Duration,
    /// The cluster secret requests to peers are signed with (`None`: unsigned, open DHT).
    pub secret: Option<Arc<ClusterSecret>>,
    /// This node's zone (`--zone`, or told by the bootstrapper later; none by default).
    pub zone: LocalZone,
}

impl Default for MirrorConfig {
    fn default() -> MirrorConfig {
        MirrorConfig {
            resolve_timeout: Duration::from_millis(20),
            max_peers: 3,
            hedge_after: Duration::from_millis(500),
            manifest_deadline: Duration::from_secs(3),
            header_timeout: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(8),
            filter: ImageFilter::default(),
            single_flight: true,
            claim_window: Duration::from_millis(200),
            inflight_hold: Duration::from_secs(5),
            inflight_stall_timeout: Duration::from_secs(5),
            secret: None,
            zone: LocalZone::default(),
        }
    }
}

/// What to fetch from peers.
#[derive(Clone)]
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

/// How to ask peers for one fetch.
pub(crate) struct Ask<'a> {
    fetch: &'a Fetch,
    /// `Range` to send, as the peer must answer it (206).
    range: Option<String>,
    /// How long the peer may hold the request while it decides (single flight).
    hold: Duration,
    /// Peers not to ask (they failed this transfer already).
    excluded: HashSet<PeerId>,
}

impl<'a> Ask<'a> {
    fn new(fetch: &'a Fetch, range: Option<&str>) -> Ask<'a> {
        Ask {
            fetch,
            range: range.map(str::to_owned),
            hold: Duration::ZERO,
            excluded: HashSet::new(),
        }
    }
}

type PeerClient = Client<HttpConnector, Empty<Bytes>>;

/// Fetches from peers. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    resolver: Arc<dyn Resolver>,
    client: PeerClient,
    config: Arc<MirrorConfig>,
    metrics: Arc<Metrics>,
    /// Requests and body streams in flight per peer, for least-used-first.
    in_use: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// Peers that sent wrong bytes for a digest.
    untrusted: Arc<Mutex<HashMap<Digest, HashSet<PeerId>>>>,
    /// This node's single-flight decisions.
    flights: Arc<Flights>,
    /// The last requests mirrored, for the debug page.
    log: Arc<MirrorLog>,
    /// Bytes of manifests being read from peers at once (in KiB): one budget for all.
    manifest_budget: Arc<tokio::sync::Semaphore>,
    /// This node's zone and the zones peers named.
    zones: PeerZones,
}

impl Mirror {
    /// Hands a lookup of `key` to the router, waiting at most until `deadline` (its command
    /// queue may be full); `None` when it was not taken in time or the router has stopped.
    async fn start_lookup(
        &self,
        key: &Key,
        limit: usize,
        deadline: tokio::time::Instant,
    ) -> Option<mpsc::Receiver<Provider>> {
        match tokio::time::timeout_at(deadline, self.resolver.resolve(key, limit)).await {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                debug!(%key, "the router has stopped; no lookup");
                None
            }
            Err(_) => {
                debug!(%key, "router busy: lookup not started in time");
                None
            }
        }
    }

    /// A mirror resolving through `resolver` (the libp2p `Router` in production), counting
    /// into `metrics`.
    pub fn new(resolver: impl Resolver, config: MirrorConfig, metrics: Arc<Metrics>) -> Mirror {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Mirror {
            resolver: Arc::new(resolver),
            client,
            zones: PeerZones::new(config.zone.clone()),
            config: Arc::new(config),
            metrics,
            in_use: Arc::default(),
            untrusted: Arc::default(),
            flights: Arc::default(),
            manifest_budget: Arc::new(tokio::sync::Semaphore::new(MANIFEST_BUDGET_KIB)),
            log: Arc::default(),
        }
    }

    /// This node's zone and what it knows of peers' zones.
    pub fn zones(&self) -> &PeerZones {
        &self.zones
    }

    /// This node's single-flight decisions (the handler holds peers' requests on them).
    pub fn flights(&self) -> &Flights {
        &self.flights
    }

    /// Counts the bytes of a local blob as they are sent to this node's containerd.
    pub(crate) fn count_local(
        &self,
        stream: spegel_containerd::BlobStream,
    ) -> spegel_containerd::BlobStream {
        let metrics = self.metrics.clone();
        Box::pin(stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                metrics
                    .transfer
                    .served(spegel_metrics::Source::local, chunk.len() as u64);
            }
        }))
    }

    /// The last requests mirrored (newest first in [`MirrorLog::recent`]).
    pub fn log(&self) -> &MirrorLog {
        &self.log
    }

    /// Records a mirrored request that ended now, `started` ago.
    fn record(
        &self,
        fetch: &Fetch,
        started: std::time::Instant,
        peer: Option<Provider>,
        bytes: u64,
        outcome: Outcome,
    ) {
        self.log.record(MirroredRequest {
            at: std::time::SystemTime::now(),
            registry: fetch.registry.clone(),
            path: log::path_of(&fetch.path_and_query),
            peer,
            bytes,
            duration: started.elapsed(),
            outcome,
        });
    }

    /// How the mirror is configured.
    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }

    /// This node's view of the DHT, for `/_spegel/status`.
    pub(crate) async fn status(&self) -> serde_json::Value {
        self.resolver.status().await
    }

    /// Who the DHT says holds `digest` complete and who is downloading it (up to `limit`
    /// peers each, waiting at most 2 s), for `/_spegel/providers/<digest>[?limit=N]`.
    pub(crate) async fn providers(&self, digest: &Digest, limit: usize) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut found = Vec::new();
        for (key, state) in [
            (Key::Digest(digest.clone()), "complete"),
            (Key::InFlight(digest.clone()), IN_FLIGHT),
        ] {
            let Some(mut providers) = self.start_lookup(&key, limit, deadline).await else {
                continue;
            };
            while let Ok(Some(p)) = tokio::time::timeout_at(deadline, providers.recv()).await {
                found.push(serde_json::json!({ "peer_id": p.peer.to_string(), "registry": p.registry.to_string(), "state": state }));
            }
        }
        serde_json::Value::Array(found)
    }

    /// Whether the router knows at least one peer.
    pub fn has_peers(&self) -> bool {
        self.resolver.peer_count() > 0
    }

    /// Whether requests for `image` (`<repository>[:<tag>|@<digest>]`) of `registry` are
    /// mirrored: the registry is mirrored and `--registry-filters` does not exclude
    /// `<registry>/<image>`.
    pub fn mirrors(&self, registry: &str, image: &str) -> bool {
        self.config
            .filter
            .allows(registry, &format!("{registry}/{image}"))
    }

    /// A manifest (or a HEAD of anything): the first peer's full answer, verified.
    /// `None` when no peer could answer.
    pub(crate) async fn small(&self, fetch: Fetch) -> Option<Response<Body>> {
        let deadline = self.config.manifest_deadline;
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(deadline, self.small_within(fetch.clone()))
            .await
            .ok()
            .flatten();
        self.metrics
            .mirror_request(&fetch.registry, answered.is_some());
        match answered {
            Some((peer, response)) => {
                let bytes = content_length(response.headers()).unwrap_or(0);
                self.record(&fetch, started, Some(peer), bytes, Outcome::Served);
                Some(response)
            }
            None => {
                self.record(&fetch, started, None, 0, Outcome::NoPeer);
                None
            }
        }
    }

    async fn small_within(&self, fetch: Fetch) -> Option<(Provider, Response<Body>)> {
        // A manifest's HEAD is answered only from a body fetched and verified here: a peer's
        // headers alone could name any digest (a HEAD by tag is how containerd resolves).
        let manifest = fetch.path_and_query.contains("/manifests/");
        let get = Fetch {
            head: fetch.head && !manifest,
            ..fetch.clone()
        };
        let ask = Ask::new(&get, None);
        let mut peers = Peers::resolve(self, &fetch.key, &ask).await?;
        while let Some((peer, response)) = peers.first_answer(self, &ask).await {
            let (parts, body) = response.into_parts();
            if get.head {
                return Some((peer, Response::from_parts(parts, response::empty())));
            }
            let budget = (MAX_MANIFEST_BYTES / 1024) as u32;
            let Ok(_reserved) = self.manifest_budget.acquire_many(budget).await else {
                return None;
            };
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
            let length = bytes.len();
            let body = if fetch.head {
                response::empty()
            } else {
                response::full(bytes)
            };
            let mut response = Response::from_parts(parts, body);
            let headers = response.headers_mut();
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            if let Ok(value) = HeaderValue::from_str(&expected.to_string()) {
                headers.insert("docker-content-digest", value);
            }
            return Some((peer, response));
        }
        None
    }

    /// A blob (or the one range of it the client asked for, passed on as sent), streamed
    /// from peers with resume and verification. `None` when no peer could answer: the
    /// caller answers 404 and containerd goes upstream.
    pub(crate) async fn blob(&self, fetch: Fetch, range: Option<&str>) -> Option<Response<Body>> {
        let digest = fetch.digest.clone()?;
        let started = std::time::Instant::now();
        // containerd retrying a stream we had to cut (with `Range`, or without when nothing
        // had arrived): it continues from the upstream.
        if self.flights.decision(&digest) == Some(Decision::Cut) {
            debug!(%digest, "range retry of a cut stream; sending containerd upstream");
            self.metrics.mirror_request(&fetch.registry, false);
            return None;
        }
        let ask = Ask::new(&fetch, range);
        // From the moment containerd asks, this node takes part in the blob's single flight:
        // a peer probing it now hears "deciding", not "idle".
        let claiming = range.is_none() && self.config.single_flight;
        if claiming {
            self.flights.decide(&digest, Decision::Deciding);
        }
        let response = match Peers::resolve(self, &fetch.key, &ask).await {
            Some(mut peers) => match peers.first_answer(self, &ask).await {
                Some((peer, response)) => {
                    if claiming {
                        self.flights.follow(&digest, peer.peer);
                    }
                    self.stream(&fetch, range, peer, response)
                }
                None => {
                    if claiming {
                        // containerd goes upstream for it.
                        self.flights.decide(&digest, Decision::Owner);
                    }
                    None
                }
            },
            None if claiming => self.claim(&fetch).await,
            None => None,
        };
        match response {
            Some(response) => Some(response),
            None => {
                self.metrics.mirror_request(&fetch.registry, false);
                self.record(&fetch, started, None, 0, Outcome::NoPeer);
                None
            }
        }
    }

    /// The single flight for a blob nobody holds complete (see [`flight`]): waits out the
    /// claim window, follows a node that already decided, else asks the claimants ranked
    /// above this node in turn; `None` (a 404, so containerd fetches upstream) when this node
    /// is the owner or nobody answered within the hold. `blob` has already marked this node
    /// `Deciding`.
    async fn claim(&self, fetch: &Fetch) -> Option<Response<Body>> {
        let digest = fetch.digest.clone()?;
        let deadline = tokio::time::Instant::now() + self.config.inflight_hold;
        // Alone: nobody else claims the blob or has a manifest naming it (`coming`), so
        // nobody will want it in the next moment: fetch it at once, without the window.
        // Only lookups that ended count: one cut short by ALONE_CHECK on a busy node proves
        // nothing, and taking it for "alone" would fetch the blob twice.
        let (claim_key, coming_key) = (Key::InFlight(digest.clone()), Key::Coming(digest.clone()));
        let (claims, coming) = tokio::join!(
            self.lookup_settled(&claim_key, ALONE_CHECK),
            self.lookup_settled(&coming_key, ALONE_CHECK),
        );
        if let (Some(claims), Some(coming)) = (&claims, &coming) {
            if claims.is_empty() && coming.is_empty() {
                debug!(%digest, "nobody else wants the blob; fetching it at once");
                self.flights.decide(&digest, Decision::Owner);
                self.metrics.transfer.flight(FlightOutcome::owner);
                return None;
            }
            // First in line: of every node known to want the blob (claims and `coming`),
            // none ranks above this one, so the window would elect it anyway. A node that
            // decided earlier is still followed (it fetches already); else fetch at once.
            // A node ranked higher that wants it too but is not known yet finds this one
            // decided when it probes, and follows.
            let local = self.resolver.local_peer_id();
            let first = |claims: &[Provider]| {
                let interested = claims.iter().chain(coming).map(|p| p.peer);
                flight::ranked(&digest, interested, local).first() == Some(&local)
            };
            // Nodes that missed it at the same moment may not have been visible yet: look
            // once more, briefly, before taking the place (two nodes each first among what
            // they saw would both fetch it: measured 2x on 5 nodes without this look).
            let mut claims = claims.clone();
            let mut settled = first(&claims);
            if settled {
                tokio::time::sleep(FIRST_IN_LINE_RECHECK).await;
                match self.lookup_settled(&claim_key, ALONE_CHECK).await {
                    Some(later) => {
                        for claimant in later {
                            if !claims.iter().any(|c| c.peer == claimant.peer) {
                                claims.push(claimant);
                            }
                        }
                    }
                    // A busy node: no proof, so the window decides.
                    None => settled = false,
                }
            }
            if settled && first(&claims) {
                let probe = self.probe(fetch, &claims).await;
                if !probe.ready.is_empty() {
                    let ask = Ask::new(fetch, None);
                    let mut peers = Peers::fixed(self, probe.ready, &ask);
                    if let Some((peer, response)) = peers.first_answer(self, &ask).await {
                        return self.follow(fetch, peer, response);
                    }
                }
                info!(%digest, "first in line: this node fetches the blob for the cluster without the claim window");
                self.flights.decide(&digest, Decision::Owner);
                self.metrics.transfer.flight(FlightOutcome::owner);
                return None;
            }
        }
        // The claims of nodes that missed the blob before us are in the DHT already; those
        // of nodes that miss it during the window arrive while we wait: look twice, and keep
        // listening the whole window (a loaded node answers lookups slowly).
        let in_flight = Key::InFlight(digest.clone());
        let half = self.config.claim_window / 2;
        let (mut claimants, coming) = tokio::join!(
            self.collect_for(&in_flight, MAX_CLAIMANTS, half),
            self.collect_for(&coming_key, MAX_CLAIMANTS, half),
        );
        let complete = Key::Digest(digest.clone());
        let (later, mut ready) = tokio::join!(
            self.collect_for(&in_flight, MAX_CLAIMANTS, half),
            // Finished meanwhile: follow a complete copy without electing anyone.
            self.collect_for(&complete, self.config.max_peers, half),
        );
        // Nodes that announced the blob as coming take part as well: they announced it when
        // their manifest arrived, a second or more before anyone's download starts, so every
        // node knows them by now, while a claim takes as long as an announcement (0.6-0.8 s
        // measured on a loaded test machine): electing among claims alone, two nodes that had
        // not seen each other's claim both fetched the blob. One that is not downloading it
        // yet answers a held request at once, and the probe below drops those whose
        // containerd has not asked for it.
        for peer in later.into_iter().chain(coming) {
            if !claimants.iter().any(|c| c.peer == peer.peer) {
                claimants.push(peer);
            }
        }
        let ask = Ask::new(fetch, None);
        // Already decided (a node that missed it earlier): follow without electing anyone.
        if ready.is_empty() {
            let probe = self.probe(fetch, &claimants).await;
            ready = probe.ready;
            // A claimant whose containerd has not asked for the blob yet does not take part:
            // containerd 2.x opens every layer's download at once but asks for three at a
            // time, so electing it would hold this request until its turn comes.
            claimants.retain(|c| !probe.idle.contains(&c.peer));
        }
        if !ready.is_empty() {
            let mut peers = Peers::fixed(self, ready, &ask);
            if let Some((peer, response)) = peers.first_answer(self, &ask).await {
                return self.follow(fetch, peer, response);
            }
        }
        let local = self.resolver.local_peer_id();
        let ranked = flight::ranked(&digest, claimants.iter().map(|p| p.peer), local);
        let order = self.zone_first(ranked, local);
        for (rank, peer) in order.iter().enumerate() {
            if *peer == local {
                info!(%digest, rank, claimants = order.len(), "this node fetches the blob for the cluster");
                self.flights.decide(&digest, Decision::Owner);
                let outcome = if rank == 0 {
                    FlightOutcome::owner
                } else {
                    FlightOutcome::takeover
                };
                self.metrics.transfer.flight(outcome);
                return None;
            }
            let Some(provider) = claimants.iter().find(|p| p.peer == *peer) else {
                continue;
            };
            let hold = deadline.saturating_duration_since(tokio::time::Instant::now());
            if hold.is_zero() {
                break;
            }
            let held = Ask {
                hold,
                ..Ask::new(fetch, None)
            };
            match self.request(provider, &held).await {
                Ok(response) => return self.follow(fetch, provider.clone(), response),
                Err(e) => {
                    debug!(%digest, peer = %peer, error = %e, "claimant cannot serve; asking the next")
                }
            }
        }
        warn!(%digest, "no claimant served the blob within the hold; fetching it upstream");
        self.flights.decide(&digest, Decision::Owner);
        self.metrics.transfer.flight(FlightOutcome::gave_up);
        None
    }

    /// The election's order (rendezvous, first = owner) as this node asks it: when it has a
    /// zone and a claimant of its zone is ranked above it, it asks that one first, so it
    /// follows a download inside its zone and a zone takes one copy across its boundary
    /// instead of one per node. Every node still waits only on nodes ranked above it (the
    /// first of a zone is above the rest of the zone), so waits never form a cycle.
    fn zone_first(&self, mut order: Vec<PeerId>, local: PeerId) -> Vec<PeerId> {
        let Some(me) = order.iter().position(|p| *p == local) else {
            return order;
        };
        let near = |p: &PeerId| self.zones.relation(p) == Relation::Same;
        if let Some(first) = order
            .get(..me)
            .and_then(|above| above.iter().position(near))
        {
            let peer = order.remove(first);
            order.insert(0, peer);
        }
        order
    }

    /// Streams a peer's answer as this node's decision to follow it.
    fn follow(
        &self,
        fetch: &Fetch,
        peer: Provider,
        response: Response<Incoming>,
    ) -> Option<Response<Body>> {
        let digest = fetch.digest.as_ref()?;
        info!(%digest, peer = %peer.peer, "following a peer's copy of the blob");
        self.flights.follow(digest, peer.peer);
        self.metrics.transfer.flight(FlightOutcome::followed);
        self.stream(fetch, None, peer, response)
    }

    /// Every provider of `key` a lookup found, if it ended within `timeout`; `None` when it
    /// was still running, or found [`MAX_CLAIMANTS`] (then there may be more).
    async fn lookup_settled(&self, key: &Key, timeout: Duration) -> Option<Vec<Provider>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut providers = self.start_lookup(key, MAX_CLAIMANTS, deadline).await?;
        let mut found = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, providers.recv()).await {
                Ok(Some(_)) if found.len() + 1 >= MAX_CLAIMANTS => return None,
                Ok(Some(provider)) => found.push(provider),
                Ok(None) => return Some(found),
                Err(_) => return None,
            }
        }
    }

    /// Up to `limit` providers of `key`, collected for `duration` (the whole of it, even
    /// when the lookup ends earlier).
    async fn collect_for(&self, key: &Key, limit: usize, duration: Duration) -> Vec<Provider> {
        let deadline = tokio::time::Instant::now() + duration;
        let mut found = Vec::new();
        if let Some(mut providers) = self.start_lookup(key, limit, deadline).await {
            while let Ok(Some(p)) = tokio::time::timeout_at(deadline, providers.recv()).await {
                found.push(p);
            }
        }
        tokio::time::sleep_until(deadline).await;
        found
    }

    /// Asks every claimant, without holding, where it stands: decided (it serves the HEAD),
    /// idle (it claims the blob, but its containerd has not asked for it yet), or neither
    /// (deciding, or no answer).
    async fn probe(&self, fetch: &Fetch, claimants: &[Provider]) -> Probe {
        let probe = Fetch {
            head: true,
            ..fetch.clone()
        };
        let ask = Ask::new(&probe, None);
        let mut asking: FuturesUnordered<_> = claimants
            .iter()
            .map(|p| {
                let ask = &ask;
                async move { (p, self.send(p, ask).await) }
            })
            .collect();
        let (mut owners, mut followers, mut idle) = (Vec::new(), Vec::new(), HashSet::new());
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
        while let Ok(Some((provider, answer))) =
            tokio::time::timeout_at(deadline, asking.next()).await
        {
            let Ok(answer) = answer else { continue };
            let flight = answer.headers().get(FLIGHT_HEADER);
            match answer.status() {
                StatusCode::OK if flight.is_some_and(|v| v == "following") => {
                    followers.push(provider.clone());
                }
                StatusCode::OK => owners.push(provider.clone()),
                _ if flight.is_some_and(|v| v == IDLE) => {
                    idle.insert(provider.peer);
                }
                _ => {}
            }
        }
        let ready = self.worth_following(owners, followers);
        Probe { ready, idle }
    }

    /// Which of the nodes that decided to follow. The node that fetches the blob rather than
    /// one of its followers (a chain breaks in more places, and its links fail one after the
    /// other), unless only followers are in this node's zone: following one of those, a
    /// zone takes one copy across its boundary instead of one per node.
    fn worth_following(&self, owners: Vec<Provider>, followers: Vec<Provider>) -> Vec<Provider> {
        let near = |p: &Provider| self.zones.relation(&p.peer) == Relation::Same;
        if owners.is_empty() || owners.iter().any(near) || !followers.iter().any(near) {
            return if owners.is_empty() { followers } else { owners };
        }
        // Ranked same zone first by `Peers::fixed`.
        followers.into_iter().filter(near).chain(owners).collect()
    }

    /// Learns the zones of `providers` this node has not heard from: asks up to
    /// [`MAX_ZONE_ASKS`] of them at once with `HEAD /v2/` (answered by the peer's registry
    /// itself), waiting at most [`ZONE_ASK_TIMEOUT`]. A peer that does not answer stays of
    /// unknown zone: ranked after this zone's peers and before other zones'.
    async fn ask_zones(&self, providers: &[Provider]) {
        let unknown: Vec<&Provider> = providers
            .iter()
            .filter(|p| self.zones.worth_asking(&p.peer))
            .take(MAX_ZONE_ASKS)
            .collect();
        if unknown.is_empty() {
            return;
        }
        let fetch = Fetch {
            key: Key::Tag(String::new()),
            registry: String::new(),
            path_and_query: "/v2/".to_owned(),
            head: true,
            digest: None,
        };
        let ask = Ask::new(&fetch, None);
        let asking = unknown.iter().map(|p| self.send(p, &ask));
        // `send` remembers each answer's zone.
        let _ =
            tokio::time::timeout(ZONE_ASK_TIMEOUT, futures_util::future::join_all(asking)).await;
    }

    /// The response for a peer's answer to a blob request: streamed through a [`Transfer`]
    /// that verifies and resumes.
    fn stream(
        &self,
        fetch: &Fetch,
        range: Option<&str>,
        peer: Provider,
        response: Response<Incoming>,
    ) -> Option<Response<Body>> {
        let length = content_length(response.headers())?;
        let first = match range {
            None => 0,
            Some(_) => content_range_start(response.headers())?,
        };
        let (mut parts, body) = response.into_parts();
        let (tx, rx) = mpsc::channel(4);
        let transfer = Transfer {
            mirror: self.clone(),
            fetch: fetch.clone(),
            first,
            length,
            // Only a whole blob can be checked against its digest.
            verify: range.is_none(),
            started: std::time::Instant::now(),
        };
        let headers = parts.headers.clone();
        tokio::spawn(transfer.run(peer, headers, body, tx));
        // Our own marker headers are not for containerd.
        parts.headers.remove(SOURCE_HEADER);
        parts.headers.remove(FLIGHT_HEADER);
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

    /// Sends one request to `peer` and waits (bounded) for response headers with the status
    /// (and `Content-Range`) the ask expects.
    async fn request(&self, peer: &Provider, ask: &Ask<'_>) -> Result<Response<Incoming>, String> {
        let response = self.send(peer, ask).await?;
        let expected = if ask.range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if response.status() != expected {
            return Err(format!("answered {}", response.status()));
        }
        if let Some(range) = &ask.range {
            let asked = range_start(range);
            let got = content_range_start(response.headers());
            if asked.is_none() || asked != got {
                return Err(format!(
                    "answered range {got:?} for {range} (wrong Content-Range)"
                ));
            }
        }
        Ok(response)
    }

    /// Sends one request to `peer` and waits (bounded) for its response headers, whatever
    /// their status.
    async fn send(&self, peer: &Provider, ask: &Ask<'_>) -> Result<Response<Incoming>, String> {
        let fetch = ask.fetch;
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
        if let Some(range) = &ask.range {
            builder = builder.header(RANGE, range);
        }
        if !ask.hold.is_zero() {
            builder = builder.header(HOLD_HEADER, ask.hold.as_millis().to_string());
        }
        builder = builder.header(PEER_HEADER, self.resolver.local_peer_id().to_string());
        builder = crate::access::prove(builder, self.config.secret.as_deref());
        let request = builder.body(Empty::new()).map_err(|e| e.to_string())?;
        let _in_use = self.use_peer(peer.peer);
        let response = tokio::time::timeout(
            self.config.header_timeout + ask.hold,
            self.client.request(request),
        )
        .await
        .map_err(|_| "no response headers in time".to_owned())?
        .map_err(|e| e.to_string())?;
        self.zones.learn(peer.peer, response.headers());
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

/// The first byte offset of a `Range: bytes=<first>-[<last>]` header we send.
fn range_start(range: &str) -> Option<u64> {
    range
        .strip_prefix("bytes=")?
        .split_once('-')?
        .0
        .parse()
        .ok()
}
