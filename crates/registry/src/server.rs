//! Accepting connections and running HTTP/1 on them until shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use spegel_containerd::ContentStore;
use spegel_metrics::Metrics;
use spegel_serve::{Busy, Limits, Timeouts, accept_loop};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Registry;
use crate::access::ClientAddr;
use crate::sendfile::{Sendfile, SendfileIo};

/// What a client past the connection caps gets (then the connection is closed).
const BUSY: Busy = Busy::Http {
    content_type: "application/json",
    body: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections: retry later"}]}"#,
};

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections from remote clients served at once; further ones get 503 at once.
    pub max_connections: usize,
    /// Connections one client IP may hold; further ones get 503 at once.
    pub max_connections_per_ip: usize,
    /// When slow or silent clients are dropped (idle, write stall, minimum read rate).
    pub timeouts: Timeouts,
    /// Read buffer per connection; request heads larger than this get `431`.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long open requests may run on after shutdown begins.
    pub shutdown_grace: Duration,
    /// Where the `http_*` metrics of every request are recorded.
    pub metrics: Arc<Metrics>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_connections: 1024,
            max_connections_per_ip: 64,
            timeouts: Timeouts::default(),
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// Serves `registry` on `listener` until `shutdown` is cancelled, then lets open requests
/// finish for at most `config.shutdown_grace`.
pub async fn serve<S: ContentStore>(
    listener: TcpListener,
    registry: Registry<S>,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        // Body chunks go to the IO as they are (stand-in chunks must: see `sendfile`).
        .writev(true);
    let limits = Limits {
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        timeouts: config.timeouts,
        busy: BUSY,
        shutdown_grace: config.shutdown_grace,
    };
    let metrics = config.metrics;
    accept_loop(
        "registry",
        listener,
        limits,
        shutdown,
        move |stream, peer, watcher| {
            let registry = registry.clone();
            let metrics = metrics.clone();
            let sendfile = Sendfile::default();
            let io = TokioIo::new(SendfileIo::new(stream, sendfile.clone()));
            let service = service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                request.extensions_mut().insert(sendfile.clone());
                let registry = registry.clone();
                let measured = crate::metered::start(&metrics, &request);
                async move {
                    let response = registry.handle(request).await;
                    Ok::<_, Infallible>(crate::metered::finish(measured, response))
                }
            });
            let connection = watcher.watch(http.serve_connection(io, service));
            async move {
                if let Err(e) = connection.await {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await;
}
