//! The `http_*` metrics around every registry request: which route it took, how long it ran
//! until its last body byte, how many body bytes went out. The handler knows nothing of this.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, SizeHint};
use spegel_metrics::{HttpRequest, Metrics};

use crate::response::Body;

/// Starts measuring `request`; pass the result to [`finish`] with the response.
pub(crate) fn start<B>(metrics: &Metrics, request: &Request<B>) -> HttpRequest {
    metrics.http_request(handler_label(request.uri().path()), request.method())
}

/// Records `response`'s status and wraps its body so that bytes are counted as they go out
/// and the request is recorded when the body ends or is dropped (client gone).
pub(crate) fn finish(mut measured: HttpRequest, response: Response<Body>) -> Response<Body> {
    measured.set_status(response.status().as_u16());
    response.map(|inner| {
        MeteredBody {
            inner,
            measured: Some(measured),
        }
        .boxed_unsync()
    })
}

/// The `handler` label of a request path: the route, without parsing it fully (a blob
/// request with a malformed digest is still a blob request).
fn handler_label(path: &str) -> &'static str {
    match path {
        "/v2" | "/v2/" => return "v2",
        "/livez" => return "livez",
        "/readyz" => return "readyz",
        _ => {}
    }
    if !path.starts_with("/v2/") {
        return "other";
    }
    match path.rsplit('/').nth(1) {
        Some("manifests") => "manifest",
        Some("blobs") => "blob",
        _ => "other",
    }
}

/// A response body that reports its bytes to an [`HttpRequest`].
struct MeteredBody {
    inner: Body,
    measured: Option<HttpRequest>,
}

impl hyper::body::Body for MeteredBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(measured)) = (frame.data_ref(), this.measured.as_mut()) {
                    measured.add_bytes(data.len() as u64);
                }
            }
            Poll::Ready(_) => drop(this.measured.take()),
            Poll::Pending => {}
        }
        if this.inner.is_end_stream() {
            drop(this.measured.take());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_labels_follow_the_route() {
        let cases = [
            ("/v2/", "v2"),
            ("/v2", "v2"),
            ("/livez", "livez"),
            ("/readyz", "readyz"),
            ("/v2/library/nginx/manifests/latest", "manifest"),
            ("/v2/a/b/c/blobs/sha256:abc", "blob"),
            ("/v2/x/blobs/sha256:1234", "blob"),
            ("/v2/x/tags/list", "other"),
            ("/metrics", "other"),
            ("/", "other"),
        ];
        for (path, label) in cases {
            assert_eq!(handler_label(path), label, "{path}");
        }
    }

    #[tokio::test]
    async fn a_streamed_body_is_counted_and_recorded_at_its_end() {
        let metrics = Metrics::new();
        let request = Request::get("/v2/x/blobs/sha256:00").body(()).unwrap();
        let response = Response::new(crate::response::full(vec![7u8; 1000]));

        let response = finish(start(&metrics, &request), response);
        let inflight = r#"http_requests_inflight{handler="blob"} 1"#;
        assert!(metrics.encode_prometheus().unwrap().contains(inflight));
        let body = response.into_body().collect().await.unwrap().to_bytes();

        assert_eq!(body.len(), 1000);
        let text = metrics.encode_prometheus().unwrap();
        assert!(
            text.contains(
                r#"http_response_size_bytes_sum{handler="blob",method="GET",code="200"} 1000"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_inflight{handler="blob"} 0"#),
            "{text}"
        );
    }
}
