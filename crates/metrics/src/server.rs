//! `GET /metrics` over HTTP/1 for `--metrics-addr`, and the pages under `/debug/` when a
//! [`Pages`] is given.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use spegel_serve::{Limits, Timeouts, accept_loop};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Metrics;
use crate::exposition::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::pages::{PAGES_PREFIX, Pages};

/// Scrapers served at once, and from one IP; more get 503 at once.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_IP: usize = 8;

/// A scrape is small: a scraper that idles 30 s or stalls a write 5 s is dropped.
const TIMEOUTS: Timeouts = Timeouts {
    idle: Duration::from_secs(30),
    write_stall: Duration::from_secs(5),
    min_write_rate: 4 * 1024,
    rate_window: Duration::from_secs(5),
};

/// How long a scraper may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open scrapes may finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `metrics` at `GET /metrics` on `listener` until `shutdown` is cancelled.
///
/// Scrapers that accept OpenMetrics (Prometheus does) get it; others get the Prometheus
/// text format 0.0.4.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    serve_metrics_and_pages(listener, metrics, None, shutdown).await;
}

/// [`serve_metrics`], and `GET /debug/…` answered by `pages` (without it: 404).
pub async fn serve_metrics_and_pages(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    pages: Option<Arc<dyn Pages>>,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let limits = Limits {
        max_connections: MAX_CONNECTIONS,
        max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
        timeouts: TIMEOUTS,
        shutdown_grace: SHUTDOWN_GRACE,
        ..Limits::default()
    };
    accept_loop(
        "metrics",
        listener,
        limits,
        shutdown,
        move |stream, peer, watcher| {
            let metrics = metrics.clone();
            let pages = pages.clone();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let pages = pages.clone();
                async move {
                    let response = match is_page(request.uri().path()) {
                        true => page(pages.as_deref(), &request).await,
                        false => respond(&metrics, &request),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            async move {
                if let Err(e) = connection.await {
                    debug!(%peer, error = %e, "metrics connection ended with an error");
                }
            }
        },
    )
    .await;
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let openmetrics = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let (encoded, content_type) = if openmetrics {
        (metrics.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE)
    } else {
        (metrics.encode_prometheus(), PROMETHEUS_CONTENT_TYPE)
    };
    match encoded {
        Ok(body) => {
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(body)
            };
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(e) => {
            warn!(error = %e, "cannot encode metrics");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
        }
    }
}

/// Whether `path` is one of the pages ([`PAGES_PREFIX`], or it without its slash).
fn is_page(path: &str) -> bool {
    path.starts_with(PAGES_PREFIX) || path == PAGES_PREFIX.trim_end_matches('/')
}

/// A page from `pages`; GET only (a page may do work, such as a measure: a HEAD must not).
async fn page<B>(pages: Option<&dyn Pages>, request: &Request<B>) -> Response<Full<Bytes>> {
    let Some(pages) = pages else {
        return text(StatusCode::NOT_FOUND, "not found: the debug page is off\n");
    };
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let page = pages.get(request.uri().path(), request.uri().query()).await;
    let mut response = Response::new(Full::new(Bytes::from(page.body)));
    *response.status_mut() = page.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn get(path: &str, accept: Option<&str>) -> Request<()> {
        let mut request = Request::get(path);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn prometheus_gets_openmetrics_when_it_asks() {
        let metrics = Metrics::new();
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

        let response = respond(&metrics, &get("/metrics", Some(accept)));

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
    }

    #[test]
    fn curl_gets_the_prometheus_text_format() {
        let response = respond(&Metrics::new(), &get("/metrics", None));
        assert_eq!(response.headers()[CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
    }

    /// 100 silent connections from one address (more than the old 16 slots) do not keep a
    /// scraper from another address waiting.
    #[tokio::test]
    async fn silent_connections_from_one_address_do_not_block_a_scrape() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_metrics(
            listener,
            Arc::new(Metrics::new()),
            shutdown.clone(),
        ));
        let mut silent = Vec::new();
        for _ in 0..100 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
            silent.push(socket.connect(addr).await.unwrap());
        }
        let scrape = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await.unwrap();
            reply
        };
        let reply = tokio::time::timeout(Duration::from_secs(1), scrape)
            .await
            .unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 200 "));
        shutdown.cancel();
    }

    struct Echo;

    impl Pages for Echo {
        fn get<'a>(&'a self, path: &'a str, query: Option<&'a str>) -> crate::PageFuture<'a> {
            let body = format!("{path} {query:?}");
            Box::pin(async move { crate::Page::html(StatusCode::OK, body) })
        }
    }

    #[tokio::test]
    async fn debug_paths_go_to_the_pages_and_nowhere_else() {
        let echo: Arc<dyn Pages> = Arc::new(Echo);
        let response = page(Some(echo.as_ref()), &get("/debug/measure?image=x", None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"/debug/measure Some(\"image=x\")");
        assert!(is_page("/debug") && is_page("/debug/") && is_page("/debug/measure"));
        assert!(!is_page("/debugger") && !is_page("/metrics"));
    }

    #[tokio::test]
    async fn pages_answer_get_only() {
        let echo: Arc<dyn Pages> = Arc::new(Echo);
        let head = Request::head("/debug/measure?image=x").body(()).unwrap();
        let response = page(Some(echo.as_ref()), &head).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn without_pages_the_debug_page_is_404() {
        let response = page(None, &get("/debug/", None)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn other_paths_are_404() {
        let response = respond(&Metrics::new(), &get("/", None));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
