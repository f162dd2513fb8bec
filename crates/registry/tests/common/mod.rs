//! Scripted stand-ins for the mirror's tests, and the node they surround:
//! - [`Script`]: the DHT as a [`Resolver`] whose answers a test chooses per [`Key`];
//! - [`Peer`]: a tiny HTTP/1 server on 127.0.0.1 whose every answer (status, headers, delay
//!   before the headers, a body that trickles, stalls, breaks or lies) a test chooses, and
//!   which records what it was asked;
//! - [`Node`]: the real [`Registry`] with the real [`Mirror`] over an empty content store,
//!   served with [`serve`] on 127.0.0.1, asked over plain HTTP as containerd asks it ([`get`]).
//!
//! Fakes, because what is under test is how the mirror reacts to peers that misbehave at a
//! chosen moment, under paused time; no real spegel-node can be made to do that on cue. The
//! same paths against real nodes and containerd run in the workspace's end-to-end tests.

#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, HOST, RANGE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use spegel_containerd::{BlobStream, ContentStore};
use spegel_metrics::Metrics;
use spegel_oci::{Digest, Repository, Tag};
use spegel_registry::{BoxFuture, Mirror, MirrorConfig, Registry, Resolver, ServerConfig, serve};
use spegel_routing::{Key, PeerId, Provider};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Body chunks peers send: a blob arrives in several frames, as it does from a real peer.
pub const CHUNK: usize = 16 * 1024;

/// The registry containerd names in `?ns=`.
pub const REGISTRY: &str = "example.com";

/// `len` bytes that repeat nowhere (so a misplaced range cannot hash right by accident), and
/// their digest.
pub fn blob(len: usize, seed: u64) -> (Bytes, Digest) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let digest = Digest::sha256_of(&bytes);
    (Bytes::from(bytes), digest)
}

/// The path and query containerd asks a mirror for a blob.
pub fn blob_path(digest: &Digest) -> String {
    format!("/v2/library/app/blobs/{digest}?ns={REGISTRY}")
}

/// The single flight's rendezvous rank, as documented in the mirror's `flight` module:
/// sha256 of the digest string followed by the peer ID's bytes; the highest ranks first.
pub fn rank(digest: &Digest, peer: &PeerId) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(digest.to_string().as_bytes());
    hasher.update(peer.to_bytes());
    hasher.finalize().into()
}

/// `n` fresh peer IDs in rendezvous order for `digest`: the first is the owner.
pub fn ranked(digest: &Digest, n: usize) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
    peers.sort_by_cached_key(|p| std::cmp::Reverse(rank(digest, p)));
    peers
}

/// The DHT, scripted: each key resolves to the providers a test set for it (none by
/// default); a lookup ends as soon as they are delivered.
#[derive(Clone)]
pub struct Script {
    local: PeerId,
    answers: Arc<Mutex<HashMap<Key, Vec<Provider>>>>,
    /// Lookups of these keys end only after this long (a busy DHT).
    slow: Arc<Mutex<HashMap<Key, Duration>>>,
    /// Every lookup is taken only after this long (a router whose command queue is full).
    busy: Arc<Mutex<Option<Duration>>>,
}

impl Script {
    /// A DHT seen from the node `local`.
    pub fn new(local: PeerId) -> Script {
        Script {
            local,
            answers: Arc::default(),
            slow: Arc::default(),
            busy: Arc::default(),
        }
    }

    /// From now on, the router takes a lookup only `after` this long.
    pub fn take_lookups_after(&self, after: Duration) {
        *self.busy.lock().unwrap() = Some(after);
    }

    /// From now on, lookups of `key` find `providers`, in this order.
    pub fn provide(&self, key: Key, providers: Vec<Provider>) {
        self.answers.lock().unwrap().insert(key, providers);
    }

    /// From now on, lookups of `key` end (having found what [`Script::provide`] gave)
    /// only `after` this long.
    pub fn end_lookups_after(&self, key: Key, after: Duration) {
        self.slow.lock().unwrap().insert(key, after);
    }
}

impl Resolver for Script {
    fn resolve(&self, key: &Key, limit: usize) -> BoxFuture<'_, Option<mpsc::Receiver<Provider>>> {
        let providers = self
            .answers
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(providers.len().max(1));
        for provider in providers.into_iter().take(limit) {
            tx.try_send(provider).unwrap();
        }
        if let Some(after) = self.slow.lock().unwrap().get(key).copied() {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                drop(tx);
            });
        }
        let busy = *self.busy.lock().unwrap();
        Box::pin(async move {
            if let Some(after) = busy {
                tokio::time::sleep(after).await;
            }
            Some(rx)
        })
    }

    fn local_peer_id(&self) -> PeerId {
        self.local
    }

    fn peer_count(&self) -> usize {
        1
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async { serde_json::json!({ "scripted": true }) })
    }
}

/// One part of a scripted body.
pub enum Step {
    Send(Bytes),
    Wait(Duration),
    /// The body fails here: the connection is closed before the promised length.
    Break,
}

/// `bytes` as a body of [`CHUNK`]-sized frames.
pub fn chunks(bytes: &Bytes) -> Vec<Step> {
    (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| Step::Send(bytes.slice(at..(at + CHUNK).min(bytes.len()))))
        .collect()
}

/// `bytes` up to `at`, then the body breaks (after a moment, so what was sent is flushed).
pub fn broken_at(bytes: &Bytes, at: usize) -> Vec<Step> {
    let mut steps = chunks(&bytes.slice(..at));
    steps.push(Step::Wait(Duration::from_millis(10)));
    steps.push(Step::Break);
    steps
}

/// What a scripted peer answers to one request.
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    /// How long the peer takes before it sends its headers.
    pub delay: Duration,
    pub body: Vec<Step>,
}

impl Reply {
    /// A bodyless answer with `status`.
    pub fn status(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Vec::new(),
        }
    }

    /// The whole blob, 200.
    pub fn blob(bytes: &Bytes) -> Reply {
        Reply::status(StatusCode::OK)
            .header(CONTENT_LENGTH.as_str(), bytes.len().to_string())
            .body(chunks(bytes))
    }

    /// What an honest peer holding `bytes` answers to `request`: the range it asks for
    /// (206), else the whole blob.
    pub fn honest(bytes: &Bytes, request: &Seen) -> Reply {
        match request.range() {
            Some((first, last)) => {
                let last = last.unwrap_or(bytes.len() as u64 - 1);
                let part = bytes.slice(first as usize..=last as usize);
                Reply::status(StatusCode::PARTIAL_CONTENT)
                    .header(CONTENT_LENGTH.as_str(), part.len().to_string())
                    .header(
                        CONTENT_RANGE.as_str(),
                        format!("bytes {first}-{last}/{}", bytes.len()),
                    )
                    .body(chunks(&part))
            }
            None => Reply::blob(bytes),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Reply {
        self.status = status;
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: Vec<Step>) -> Reply {
        self.body = body;
        self
    }
}

/// A request a scripted peer received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    /// When it arrived (paused time in most tests).
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Range: bytes=<first>-[<last>]` asked for.
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        let (first, last) = self
            .header(RANGE.as_str())?
            .strip_prefix("bytes=")?
            .split_once('-')?;
        Some((first.parse().ok()?, last.parse().ok()))
    }
}

type PeerBody = StreamBody<Pin<Box<dyn Stream<Item = io::Result<Frame<Bytes>>> + Send>>>;

fn peer_body(steps: Vec<Step>) -> PeerBody {
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Send(bytes) => return Some((Ok(Frame::data(bytes)), steps)),
                Step::Wait(duration) => tokio::time::sleep(duration).await,
                Step::Break => return Some((Err(io::Error::other("scripted break")), steps)),
            }
        }
    });
    StreamBody::new(Box::pin(stream))
}

/// A scripted peer: its registry answers every request with what `answer` returns.
pub struct Peer {
    pub id: PeerId,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: DropGuard,
}

impl Peer {
    /// A peer with a fresh ID.
    pub async fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Peer {
        Peer::start_as(PeerId::random(), answer).await
    }

    /// A peer with the ID `id`.
    pub async fn start_as(
        id: PeerId,
        answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answer = Arc::new(answer);
        let stop = CancellationToken::new();
        let (log, stopped) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => return,
                    },
                };
                let (log, answer) = (log.clone(), answer.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = Seen {
                        method: request.method().clone(),
                        path: request.uri().to_string(),
                        headers: request.headers().clone(),
                        at: Instant::now(),
                    };
                    let reply = answer(&seen);
                    log.lock().unwrap().push(seen);
                    async move {
                        tokio::time::sleep(reply.delay).await;
                        let mut response = Response::new(peer_body(reply.body));
                        *response.status_mut() = reply.status;
                        for (name, value) in reply.headers {
                            response.headers_mut().insert(name, value.parse().unwrap());
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Peer {
            id,
            addr,
            seen,
            _stop: stop.drop_guard(),
        }
    }

    /// How the DHT names this peer.
    pub fn provider(&self) -> Provider {
        Provider {
            peer: self.id,
            registry: self.addr,
        }
    }

    /// Every request it received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The GET requests it received (the blob asked for, not probed with HEAD).
    pub fn gets(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == Method::GET)
            .collect()
    }
}

/// A content store with nothing in it: every blob is a local miss, so every request goes
/// to the mirror.
#[derive(Clone)]
struct EmptyStore;

impl ContentStore for EmptyStore {
    async fn resolve_tag(
        &self,
        _registry: &str,
        _repository: &Repository,
        _tag: &Tag,
    ) -> spegel_containerd::Result<Option<Digest>> {
        Ok(None)
    }

    async fn size(&self, _digest: &Digest) -> spegel_containerd::Result<Option<u64>> {
        Ok(None)
    }

    async fn read(
        &self,
        _digest: &Digest,
        _first: u64,
        _len: u64,
    ) -> spegel_containerd::Result<BlobStream> {
        Ok(Box::pin(futures_util::stream::empty()))
    }

    async fn check(&self) -> spegel_containerd::Result<()> {
        Ok(())
    }
}

/// The node under test: registry and mirror over an empty store, resolving through a
/// [`Script`].
pub struct Node {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    _stop: DropGuard,
}

impl Node {
    pub async fn start(script: Script, config: MirrorConfig) -> Node {
        let metrics = Arc::new(Metrics::new());
        let mirror = Mirror::new(script, config, metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = ServerConfig {
            metrics: metrics.clone(),
            ..ServerConfig::default()
        };
        tokio::spawn(serve(
            listener,
            Registry::with_mirror(EmptyStore, mirror),
            server,
            stop.clone(),
        ));
        Node {
            addr,
            metrics,
            _stop: stop.drop_guard(),
        }
    }

    /// The value of one series (`name{labels}` as the Prometheus text format writes it),
    /// `None` when it was never recorded.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics.encode_prometheus().unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.trim().parse().unwrap())
    }
}

/// Sends `GET <path>` with `headers` to `addr` on a new connection, as containerd does.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    send(addr, Method::GET, path, headers).await
}

/// A `HEAD` as containerd sends it to resolve a reference.
pub async fn head(addr: SocketAddr, path: &str) -> Response<Incoming> {
    send(addr, Method::HEAD, path, &[]).await
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "spegel");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap()
}

/// A response body as the client received it.
pub struct Received {
    pub bytes: Vec<u8>,
    /// Whether it ended cleanly (false: the connection was cut before the promised length).
    pub complete: bool,
}

pub async fn receive(response: Response<Incoming>) -> Received {
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    loop {
        match body.frame().await {
            None => {
                return Received {
                    bytes,
                    complete: true,
                };
            }
            Some(Err(_)) => {
                return Received {
                    bytes,
                    complete: false,
                };
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
        }
    }
}
