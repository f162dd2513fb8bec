//! [`Registry`]: one request, top to bottom: method → route → local store → response.

use http::header::{ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use spegel_containerd::ContentStore;
use spegel_oci::{
    ByteRange, Digest, ErrorCode, RangeError, Reference, RegistryError, Repository, Route,
    parse_range, parse_route, registry_from_query,
};
use spegel_routing::Key;
use tracing::{debug, warn};

use crate::Faults;
use crate::access::{Access, Caller};
use crate::mirror::{
    Decision, FLIGHT_HEADER, Fetch, HOLD_HEADER, IDLE, IN_FLIGHT, Mirror, PEER_HEADER,
    SOURCE_HEADER, ZONE_HEADER,
};
use crate::response::{self, Body};
use crate::sendfile::Sendfile;

/// Manifests larger than this are not manifests (distribution refuses to store them).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// The registry service over a content store. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Registry<S> {
    store: S,
    mirror: Option<Mirror>,
    access: Access,
    faults: Faults,
}

/// What went wrong while answering: the client's fault (sent as is) or ours (sent as a 404
/// so containerd falls back to the next host instead of failing the pull).
enum Failure {
    Client(RegistryError),
    Store(spegel_containerd::Error, ErrorCode),
    /// A range past the end of a blob of this size (416 with `Content-Range: bytes */size`).
    Unsatisfiable(u64),
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        Failure::Client(e)
    }
}

impl<S: ContentStore> Registry<S> {
    /// A registry serving `store` only.
    pub fn new(store: S) -> Registry<S> {
        Registry {
            store,
            mirror: None,
            access: Access::default(),
            faults: Faults::default(),
        }
    }

    /// A registry serving `store`, and on a local miss whatever peers hold.
    pub fn with_mirror(store: S, mirror: Mirror) -> Registry<S> {
        Registry {
            store,
            mirror: Some(mirror),
            access: Access::default(),
            faults: Faults::default(),
        }
    }

    /// Who may read (the default: loopback only, no peers).
    pub fn with_access(mut self, access: Access) -> Registry<S> {
        self.access = access;
        self
    }

    /// `/readyz` answers 503 once anything is reported to `faults`.
    pub fn with_faults(mut self, faults: Faults) -> Registry<S> {
        self.faults = faults;
        self
    }

    /// The mirror to ask on a local miss: only for requests from containerd (they name the
    /// upstream in `ns`), never for requests from peers (no loops), and only for mirrored
    /// registries and images `--registry-filters` does not exclude (`image`:
    /// `<repository>[:<tag>|@<digest>]`, matched as `<registry>/<image>`).
    fn mirror_for<B>(
        &self,
        request: &Request<B>,
        registry: Option<&str>,
        image: &str,
    ) -> Option<&Mirror> {
        let mirror = self.mirror.as_ref()?;
        let from_peer = caller(request) != Caller::Client;
        (!from_peer && mirror.mirrors(registry?, image)).then_some(mirror)
    }

    /// Answers one request. Never fails: every error becomes an OCI error response.
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle<B>(&self, mut request: Request<B>) -> Response<Body> {
        let head = request.method() == Method::HEAD;
        match self.access.check(&request, spegel_secret::unix_now()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err(reason) => {
                debug!(%reason, "denied");
                let e = RegistryError::new(
                    ErrorCode::Denied,
                    "this registry serves its own node and cluster members only",
                );
                return response::error(&e, head);
            }
        }
        if request.method() != Method::GET && !head {
            let e = RegistryError::new(
                ErrorCode::MethodNotAllowed,
                "spegel is a read-only registry",
            );
            let mut response = response::error(&e, false);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = self.answer(&request, head).await;
        // Peers rank providers by zone (`mirror::zones`): every answer names this node's,
        // never the zone of a peer whose answer it passes on.
        response.headers_mut().remove(ZONE_HEADER);
        if let Some(zone) = self.mirror.as_ref().and_then(|m| m.zones().local().get()) {
            insert_str(response.headers_mut(), ZONE_HEADER, zone.as_str());
        }
        response
    }

    /// The response for a request that passed access control.
    async fn answer<B>(&self, request: &Request<B>, head: bool) -> Response<Body> {
        match self.route(request, head).await {
            Ok(response) => response,
            Err(Failure::Client(e)) => {
                debug!(code = e.code.as_str(), message = %e.message, "rejected");
                response::error(&e, head)
            }
            Err(Failure::Unsatisfiable(size)) => {
                let e = RegistryError::new(
                    ErrorCode::RangeNotSatisfiable,
                    format!("{}: the blob has {size} bytes", RangeError::Unsatisfiable),
                );
                let mut response = response::error(&e, head);
                insert_str(
                    response.headers_mut(),
                    CONTENT_RANGE.as_str(),
                    &format!("bytes */{size}"),
                );
                response
            }
            Err(Failure::Store(e, code)) => {
                warn!(error = %e, "content store failed; answering 404 so the client falls back");
                let e = RegistryError::new(code, "content store unavailable");
                response::error(&e, head)
            }
        }
    }

    async fn route<B>(&self, request: &Request<B>, head: bool) -> Result<Response<Body>, Failure> {
        match parse_route(request.uri().path())? {
            Route::ApiVersion => {
                let mut response = response::text(StatusCode::OK, "{}");
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
                Ok(response)
            }
            Route::Livez => Ok(response::text(StatusCode::OK, "ok")),
            Route::Readyz => Ok(match self.store.check().await {
                _ if self.faults.first().is_some() => {
                    response::text(StatusCode::SERVICE_UNAVAILABLE, "a node task stopped")
                }
                Err(e) => {
                    warn!(error = %e, "not ready");
                    response::text(StatusCode::SERVICE_UNAVAILABLE, "containerd unreachable")
                }
                Ok(()) if self.mirror.as_ref().is_some_and(|m| !m.has_peers()) => {
                    response::text(StatusCode::SERVICE_UNAVAILABLE, "no peers yet")
                }
                Ok(()) => response::text(StatusCode::OK, "ok"),
            }),
            Route::Manifest {
                repository,
                reference,
            } => self.manifest(request, &repository, &reference, head).await,
            Route::Blob { repository, digest } => {
                self.blob(request, &repository, &digest, head).await
            }
            Route::Status => Ok(match &self.mirror {
                Some(mirror) => response::json(mirror.status().await),
                None => response::json(serde_json::json!({ "p2p": false })),
            }),
            Route::Providers { digest } => Ok(match &self.mirror {
                Some(mirror) => {
                    let limit = query_param(request.uri().query(), "limit")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(20usize)
                        .clamp(1, 100);
                    response::json(mirror.providers(&digest, limit).await)
                }
                None => response::json(serde_json::json!([])),
            }),
        }
    }

    async fn manifest<B>(
        &self,
        request: &Request<B>,
        repository: &Repository,
        reference: &Reference,
        head: bool,
    ) -> Result<Response<Body>, Failure> {
        let registry = registry_from_query(request.uri().query());
        let registry = registry.as_deref();
        let unknown = |message: String| RegistryError::new(ErrorCode::ManifestUnknown, message);
        let store_failed = |e| Failure::Store(e, ErrorCode::ManifestUnknown);
        let (digest, key) = match reference {
            Reference::Digest(digest) => (Some(digest.clone()), Key::Digest(digest.clone())),
            Reference::Tag(tag) => {
                let registry = registry.ok_or_else(|| {
                    unknown("a tag is only resolved with ?ns=<registry>".to_owned())
                })?;
                let local = self
                    .store
                    .resolve_tag(registry, repository, tag)
                    .await
                    .map_err(store_failed)?;
                let key = Key::tag(registry, repository.as_str(), tag.as_str());
                (local, key)
            }
        };
        let size = match &digest {
            Some(digest) => self.store.size(digest).await.map_err(store_failed)?,
            None => None,
        };
        let (Some(digest), Some(size)) = (digest.clone(), size) else {
            let image = match reference {
                Reference::Digest(d) => format!("{repository}@{d}"),
                Reference::Tag(t) => format!("{repository}:{t}"),
            };
            let mirror = self.mirror_for(request, registry, &image);
            if let (Some(mirror), Some(registry)) = (mirror, registry) {
                let fetch = fetch(request, registry, key, head, digest);
                if let Some(response) = mirror.small(fetch).await {
                    return Ok(response);
                }
            }
            return Err(unknown(format!(
                "{repository}:{reference} is not here nor at any peer"
            ))
            .into());
        };
        if size > MAX_MANIFEST_BYTES
            || !self
                .store
                .is_manifest(&digest)
                .await
                .map_err(store_failed)?
        {
            return Err(unknown(format!("{digest} is not a manifest held here")).into());
        }
        let bytes = spegel_containerd::read_small(&self.store, &digest, MAX_MANIFEST_BYTES)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| unknown(format!("manifest {digest} is not here")))?;
        let media_type = spegel_oci::detect_manifest_media_type(&bytes)
            .ok_or_else(|| unknown(format!("{digest} is not a manifest")))?;
        let mut response = Response::new(if head {
            response::empty()
        } else {
            response::full(bytes)
        });
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type.as_str()));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        insert_digest(headers, &digest);
        Ok(response)
    }

    async fn blob<B>(
        &self,
        request: &Request<B>,
        repository: &Repository,
        digest: &Digest,
        head: bool,
    ) -> Result<Response<Body>, Failure> {
        let headers = request.headers();
        let local = self
            .store
            .size(digest)
            .await
            .map_err(|e| Failure::Store(e, ErrorCode::BlobUnknown))?;
        let Some(size) = local else {
            if caller(request) == Caller::Peer {
                return self.in_flight_blob(request, digest, head).await;
            }
            return self.mirror_blob(request, repository, digest, head).await;
        };
        let range = requested_range(headers, size)?;
        let (status, first, len) = match range {
            Some(r) => (StatusCode::PARTIAL_CONTENT, r.first, r.len()),
            None => (StatusCode::OK, 0, size),
        };
        debug!(%digest, first, len, from_peer = caller(request) == Caller::Peer, "serving blob");
        let body = if head || len == 0 {
            response::empty()
        } else {
            let stream = match self.zero_copy(request, digest, first, len).await {
                Some(stream) => stream,
                None => self
                    .store
                    .read(digest, first, len)
                    .await
                    .map_err(|e| Failure::Store(e, ErrorCode::BlobUnknown))?,
            };
            match &self.mirror {
                Some(mirror) if caller(request) == Caller::Client => {
                    response::stream(mirror.count_local(stream))
                }
                _ => response::stream(stream),
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        insert_digest(headers, digest);
        if let Some(range) = range {
            insert_str(headers, CONTENT_RANGE.as_str(), &range.content_range(size));
        }
        Ok(response)
    }
}

impl<S: ContentStore> Registry<S> {
    /// A body for `len` bytes of `digest` from `first` that the connection sends from the
    /// content file with `sendfile`, when the request came through the server (which put a
    /// [`Sendfile`] slot into it) and the store has the file; else `None` (stream it).
    async fn zero_copy<B>(
        &self,
        request: &Request<B>,
        digest: &Digest,
        first: u64,
        len: u64,
    ) -> Option<spegel_containerd::BlobStream> {
        let sendfile = request.extensions().get::<Sendfile>()?;
        let file = self.store.open_file(digest).await?;
        sendfile.body(file, first, len)
    }

    /// A peer asks for a blob this node has not committed: served from containerd's download
    /// in progress, following it as it grows. Never for this node's own containerd (it would
    /// wait for itself: the peer marker is required). While this node is still deciding
    /// who fetches the blob (single flight), the request is held up to the hold the peer
    /// asked for, bounded by ours.
    async fn in_flight_blob<B>(
        &self,
        request: &Request<B>,
        digest: &Digest,
        head: bool,
    ) -> Result<Response<Body>, Failure> {
        let not_here =
            || RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not here"));
        let unknown = || Failure::Client(not_here());
        let Some(mirror) = &self.mirror else {
            return Err(unknown());
        };
        let Some(total) = self.store.in_flight(digest) else {
            return Err(unknown());
        };
        let hold = request
            .headers()
            .get(HOLD_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
            .unwrap_or_default()
            .min(mirror.config().inflight_hold);
        // Serve a download only once this node knows where its bytes come from: a node
        // that has not decided yet may end up following the asker.
        let decision = mirror.flights().decided(digest, hold).await;
        if decision.is_none() {
            // Our containerd opened the download but has not asked for it (containerd 2.x
            // opens all layers at once and asks for three at a time): say so, so the asker
            // does not wait for this node.
            debug!(%digest, "our containerd has not asked for it yet; not serving it");
            let mut response = response::error(&not_here(), head);
            response
                .headers_mut()
                .insert(FLIGHT_HEADER, HeaderValue::from_static(IDLE));
            return Ok(response);
        }
        if decision == Some(Decision::Deciding) {
            debug!(%digest, "not decided who fetches it; not serving it yet");
            return Err(unknown());
        }
        let asker = request
            .headers()
            .get(PEER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<spegel_routing::PeerId>().ok());
        if asker.is_some_and(|asker| mirror.flights().follows(digest, &asker)) {
            debug!(%digest, "the asker is where this node gets the blob from; not serving it back");
            return Err(unknown());
        }
        let range = requested_range(request.headers(), total)?;
        let (status, first, len) = match range {
            Some(r) => (StatusCode::PARTIAL_CONTENT, r.first, r.len()),
            None => (StatusCode::OK, 0, total),
        };
        debug!(%digest, first, len, "serving a download in progress");
        let body = if head || len == 0 {
            response::empty()
        } else {
            let stall = mirror.config().inflight_stall_timeout;
            let stream = self
                .store
                .follow(digest, first, stall)
                .await
                .map_err(|e| Failure::Store(e, ErrorCode::BlobUnknown))?;
            response::stream(response::take(stream, len))
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(SOURCE_HEADER, HeaderValue::from_static(IN_FLIGHT));
        let flight = match decision {
            Some(Decision::Following) => "following",
            _ => "owner",
        };
        headers.insert(FLIGHT_HEADER, HeaderValue::from_static(flight));
        insert_digest(headers, digest);
        if let Some(range) = range {
            insert_str(headers, CONTENT_RANGE.as_str(), &range.content_range(total));
        }
        Ok(response)
    }

    /// A blob this node lacks: from peers, or 404 so containerd falls back upstream.
    async fn mirror_blob<B>(
        &self,
        request: &Request<B>,
        repository: &Repository,
        digest: &Digest,
        head: bool,
    ) -> Result<Response<Body>, Failure> {
        let unknown = || {
            RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not here nor at any peer"),
            )
        };
        let registry = registry_from_query(request.uri().query());
        let (Some(mirror), Some(registry)) = (
            self.mirror_for(request, registry.as_deref(), repository.as_str()),
            registry.as_deref(),
        ) else {
            return Err(unknown().into());
        };
        // The range is checked here and passed on as sent: its bounds are the peer's to judge.
        let range = match requested_range(request.headers(), u64::MAX) {
            Ok(Some(_)) => request
                .headers()
                .get(RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Ok(None) => None,
            Err(e) => return Err(e),
        };
        let fetch = fetch(
            request,
            registry,
            Key::Digest(digest.clone()),
            head,
            Some(digest.clone()),
        );
        let response = if head {
            mirror.small(fetch).await
        } else {
            mirror.blob(fetch, range.as_deref()).await
        };
        response.ok_or_else(|| unknown().into())
    }
}

/// Who sent `request`, as [`Access`] decided; a request it never saw counts as a peer's
/// (served locally only).
fn caller<B>(request: &Request<B>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .unwrap_or(Caller::Peer)
}

/// The value of `name` in a query string, as sent.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// What to ask peers for: the same path and query containerd sent us.
fn fetch<B>(
    request: &Request<B>,
    registry: &str,
    key: Key,
    head: bool,
    digest: Option<Digest>,
) -> Fetch {
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    Fetch {
        key,
        registry: registry.to_owned(),
        path_and_query,
        head,
        digest,
    }
}

/// The one range a blob request asks for, `None` for the whole blob.
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<ByteRange>, Failure> {
    let mut values = headers.get_all(RANGE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed =
        || RegistryError::new(ErrorCode::RangeInvalid, RangeError::Malformed.to_string());
    if values.next().is_some() {
        return Err(malformed().into());
    }
    let value = value.to_str().map_err(|_| malformed())?;
    match parse_range(value, size) {
        Ok(range) => Ok(Some(range)),
        Err(RangeError::Malformed) => Err(malformed().into()),
        Err(RangeError::Unsatisfiable) => Err(Failure::Unsatisfiable(size)),
    }
}

fn insert_digest(headers: &mut HeaderMap, digest: &Digest) {
    insert_str(headers, DOCKER_CONTENT_DIGEST, &digest.to_string());
}

/// Inserts a header whose value we built from validated parts (always visible ASCII).
fn insert_str(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
