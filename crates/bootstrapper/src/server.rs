//! The two listeners: HTTPS with required client certificates, and plain HTTP for probes and
//! metrics. Both take a bound listener and a shutdown token, so tests bind `127.0.0.1:0`.

use std::convert::Infallible;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use spegel_serve::{Busy, Limits, Timeouts, accept_loop};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::asker::Asker;
use crate::handler::App;
use crate::tls_reload::ReloadingTls;

/// Limits shared by both servers.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections from remote clients served at once; further ones are refused at once.
    pub max_connections: usize,
    /// Connections one client IP may hold; further ones are refused at once.
    pub max_connections_per_ip: usize,
    /// How long a client may take for the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take for a request head.
    pub client_timeout: Duration,
    /// How long open requests may run on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl ServerLimits {
    /// The part the shared accept loop needs; `busy` is what refused clients get.
    fn accept(&self, busy: Busy) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            timeouts: Timeouts {
                idle: self.client_timeout.max(Duration::from_secs(1)) * 3,
                ..Timeouts::default()
            },
            busy,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_connections: 1024,
            max_connections_per_ip: 32,
            handshake_timeout: Duration::from_secs(5),
            client_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves the bootstrap endpoints over mutual TLS until `shutdown`. Every connection is
/// handshaken with the acceptor current at accept time, so rotated certificates apply to
/// new connections.
pub async fn serve_https(
    listener: TcpListener,
    tls: ReloadingTls,
    app: App,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let timeout = limits.client_timeout;
    let handshake_timeout = limits.handshake_timeout;
    accept_loop(
        "bootstrap (https)",
        listener,
        limits.accept(Busy::Close),
        shutdown,
        move |stream, peer, watcher| {
            let acceptor = tls.acceptor();
            let app = app.clone();
            async move {
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            app.metrics().handshake_failures.inc();
                            debug!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            app.metrics().handshake_failures.inc();
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let asker = Asker {
                    addr: peer.ip(),
                    cert: stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| cert.clone().into_owned()),
                };
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let response = app.bootstrap(request.method(), request.uri().path(), &asker);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection =
                    http1_builder(timeout).serve_connection(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(connection).await {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// Serves `/metrics`, `/healthz` and `/readyz` in plain HTTP until `shutdown`.
pub async fn serve_ops(
    listener: TcpListener,
    app: App,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let timeout = limits.client_timeout;
    accept_loop(
        "operations (http)",
        listener,
        limits.accept(Limits::default().busy),
        shutdown,
        move |stream, peer, watcher| {
            let app = app.clone();
            async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let response = app.ops(request.method(), request.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection =
                    http1_builder(timeout).serve_connection(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(connection).await {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await;
}

fn http1_builder(header_read_timeout: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    http
}
