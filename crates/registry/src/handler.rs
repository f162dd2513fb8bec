//! [`Registry`]: one request, top to bottom: method → route → local store → response.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use spegel_containerd::ContentStore;
use spegel_oci::{
    ByteRange, Digest, ErrorCode, RangeError, Reference, RegistryError, Repository, Route,
    parse_range, parse_route, registry_from_query,
};
use tracing::{debug, warn};

use crate::response::{self, Body};

/// Manifests larger than this are not manifests (distribution refuses to store them).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// The registry service over a content store. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Registry<S> {
    store: S,
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
    /// A registry serving `store`.
    pub fn new(store: S) -> Registry<S> {
        Registry { store }
    }

    /// Answers one request. Never fails: every error becomes an OCI error response.
    #[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path()))]
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let head = request.method() == Method::HEAD;
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
        match self.route(&request, head).await {
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
                Ok(()) => response::text(StatusCode::OK, "ok"),
                Err(e) => {
                    warn!(error = %e, "not ready");
                    response::text(StatusCode::SERVICE_UNAVAILABLE, "containerd unreachable")
                }
            }),
            Route::Manifest {
                repository,
                reference,
            } => {
                let registry = registry_from_query(request.uri().query());
                self.manifest(registry.as_deref(), &repository, &reference, head)
                    .await
            }
            Route::Blob { digest, .. } => self.blob(&digest, request.headers(), head).await,
        }
    }

    async fn manifest(
        &self,
        registry: Option<&str>,
        repository: &Repository,
        reference: &Reference,
        head: bool,
    ) -> Result<Response<Body>, Failure> {
        let unknown = |message: String| RegistryError::new(ErrorCode::ManifestUnknown, message);
        let store_failed = |e| Failure::Store(e, ErrorCode::ManifestUnknown);
        let digest = match reference {
            Reference::Digest(digest) => digest.clone(),
            Reference::Tag(tag) => {
                let registry = registry.ok_or_else(|| {
                    unknown("a tag is only resolved with ?ns=<registry>".to_owned())
                })?;
                self.store
                    .resolve_tag(registry, repository, tag)
                    .await
                    .map_err(store_failed)?
                    .ok_or_else(|| unknown(format!("{registry}/{repository}:{tag} is not here")))?
            }
        };
        let size = self
            .store
            .size(&digest)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| unknown(format!("manifest {digest} is not here")))?;
        if size > MAX_MANIFEST_BYTES {
            return Err(unknown(format!("{digest} is too large to be a manifest")).into());
        }
        let bytes = self.read_small(&digest, size).await.map_err(store_failed)?;
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

    /// Reads a small blob (a manifest) whole.
    async fn read_small(&self, digest: &Digest, size: u64) -> spegel_containerd::Result<Bytes> {
        let mut stream = self.store.read(digest, 0, size).await?;
        let mut bytes = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| spegel_containerd::Error::Unexpected {
                call: "content read",
                detail: e.to_string(),
            })?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    }

    async fn blob(
        &self,
        digest: &Digest,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response<Body>, Failure> {
        let size = self
            .store
            .size(digest)
            .await
            .map_err(|e| Failure::Store(e, ErrorCode::BlobUnknown))?
            .ok_or_else(|| {
                RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not here"))
            })?;
        let range = requested_range(headers, size)?;
        let (status, first, len) = match range {
            Some(r) => (StatusCode::PARTIAL_CONTENT, r.first, r.len()),
            None => (StatusCode::OK, 0, size),
        };
        let body = if head || len == 0 {
            response::empty()
        } else {
            let stream = self
                .store
                .read(digest, first, len)
                .await
                .map_err(|e| Failure::Store(e, ErrorCode::BlobUnknown))?;
            response::stream(stream)
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
