//! Building responses: bodies, OCI errors on the wire, and the registry's headers.

use std::io;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use spegel_containerd::BlobStream;
use spegel_oci::RegistryError;

/// The body of every response the registry sends.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// An empty body (HEAD responses, redirects).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of bytes already in memory (manifests, small JSON).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from the content store.
/// The first `len` bytes of `blob` (a download in progress is followed to its end; a range
/// of it ends earlier).
pub fn take(blob: BlobStream, len: u64) -> BlobStream {
    let limited = futures_util::stream::unfold((blob, len), |(mut blob, left)| async move {
        if left == 0 {
            return None;
        }
        let chunk = match futures_util::StreamExt::next(&mut blob).await? {
            Ok(mut chunk) => {
                if chunk.len() as u64 > left {
                    chunk.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                }
                Ok(chunk)
            }
            Err(e) => Err(e),
        };
        let sent = chunk.as_ref().map_or(left, |c| c.len() as u64);
        Some((chunk, (blob, left - sent.min(left))))
    });
    Box::pin(limited)
}

pub fn stream(blob: BlobStream) -> Body {
    StreamBody::new(blob.map_ok(Frame::data)).boxed_unsync()
}

/// The OCI error response for `error`; `head` leaves the body out (but keeps its length).
pub fn error(error: &RegistryError, head: bool) -> Response<Body> {
    let json = error.body();
    let mut response = Response::new(if head { empty() } else { full(json.clone()) });
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(json.len()));
    response
}

/// A plain-text response such as `/livez`'s.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A JSON document (the `/_spegel/*` endpoints).
pub fn json(value: serde_json::Value) -> Response<Body> {
    let text = value.to_string();
    let mut response = Response::new(full(text));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
