//! A small HTTP/1 client for tests: one request, the whole body buffered, a timeout.
//!
//! Built on hyper-util's legacy client so tests speak to servers the way a plain HTTP
//! client would, without pulling in a full client library.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::netns::Host;

pub use ::http::{HeaderMap, Method};

/// How long a request, including reading the body, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A buffered HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
}

impl Response {
    /// The value of header `name` if it is present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `GET url` with the given extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(Method::GET, url, headers).await
}

/// Sends `HEAD url` with the given extra headers.
pub async fn head(url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(Method::HEAD, url, headers).await
}

/// Sends a request without a body and buffers the response.
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request_in(None, method, url, headers).await
}

/// Like [`request`], from inside `host`'s network namespace when one is given.
pub async fn request_in(
    host: Option<&Host>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Response> {
    let uri: ::http::Uri = url.parse().with_context(|| format!("parsing {url}"))?;
    let authority = uri
        .authority()
        .with_context(|| format!("{url} has no host"))?
        .to_string();
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut builder = ::http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(::http::header::HOST, &authority);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("building {method} {url}"))?;

    let exchange = async {
        let addr = tokio::net::lookup_host(&authority)
            .await?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        let stream = match host {
            Some(host) => host.connect(addr).await?,
            None => tokio::net::TcpStream::connect(addr).await?,
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(response) => response.with_context(|| format!("{method} {url}")),
        Err(_elapsed) => bail!("{method} {url} took longer than {REQUEST_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers one connection with a canned response and returns the request it read.
    async fn serve_once(listener: TcpListener, response: &'static str) -> String {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "client closed before sending a request");
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(request).unwrap()
    }

    #[tokio::test]
    async fn get_returns_status_headers_and_body_and_sends_extra_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2/", listener.local_addr().unwrap());
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello",
        ));

        let response = get(&url, &[("Accept", "text/plain")]).await.unwrap();

        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-test"), Some("yes"));
        assert_eq!(response.text(), "hello");
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /v2/ http/1.1"), "{request}");
        assert!(request.contains("accept: text/plain"), "{request}");
    }

    #[tokio::test]
    async fn head_returns_headers_without_a_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\n",
        ));

        let response = head(&url, &[]).await.unwrap();

        assert_eq!(response.status, 404);
        assert_eq!(response.header("content-length"), Some("12"));
        assert!(response.body.is_empty());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn get_to_a_closed_port_is_an_error_naming_the_url() {
        let addr = crate::port::free_loopback_addr().unwrap();
        let url = format!("http://{addr}/livez");

        let error = get(&url, &[]).await.unwrap_err();

        assert!(format!("{error:#}").contains(&url), "{error:#}");
    }
}
