//! The accept loop: at most `max_connections` at once, stop accepting on shutdown, then let
//! open connections finish for a bounded grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How many connections a server holds and how long it waits for them at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long open connections may run on after shutdown begins.
    pub shutdown_grace: Duration,
}

/// Accepts on `listener` until `shutdown`, running `serve` for each connection (which must
/// hand its hyper connection to the `Watcher`); then waits up to `limits.shutdown_grace` for
/// open connections. `name` labels the log lines.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    if let Ok(addr) = listener.local_addr() {
        info!(server = name, %addr, "listening");
    }
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: back off briefly.
                    warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = serve(stream, peer, graceful.watcher());
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    debug!(server = name, "stopped accepting; finishing open requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            warn!(server = name, "grace period over; dropping open connections");
        }
    }
}
