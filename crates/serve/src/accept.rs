//! The accept loop: accepts every connection at once (nothing waits unanswered in the
//! kernel's backlog), admits it if the total and per-client caps allow, else answers it
//! at once with a short refusal (an HTTP 503, or a plain close for TLS listeners) and closes
//! it. Admitted connections run [`Guarded`] against slow or silent clients. On shutdown it
//! stops accepting, then lets open connections finish for a bounded grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Refusal};
use crate::guard::{Guarded, Timeouts};

/// Refusals being written at once; past this, refused connections are closed without a word.
const MAX_REFUSING: usize = 128;
/// How long writing a refusal, and then draining what the client had sent, may take.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);

/// What a client past the caps gets.
#[derive(Debug, Clone, Copy)]
pub enum Busy {
    /// `503 Service Unavailable` with `Retry-After: 1`, this body and content type, then close.
    Http {
        content_type: &'static str,
        body: &'static str,
    },
    /// Close at once (listeners that speak TLS first).
    Close,
}

/// How many connections a server holds, how slow they may be, and how long it waits for
/// them at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections from remote clients served at once; further ones are refused at once.
    /// Loopback clients count only against `max_connections_per_ip`.
    pub max_connections: usize,
    /// Connections one client IP may hold at once; further ones are refused at once.
    pub max_connections_per_ip: usize,
    /// When a slow or silent connection is closed.
    pub timeouts: Timeouts,
    /// What a refused client gets.
    pub busy: Busy,
    /// How long open connections may run on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// 1024 connections, 64 per client IP, [`Timeouts::default`], a plain-text 503, 10 s grace.
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 64,
            timeouts: Timeouts::default(),
            busy: Busy::Http {
                content_type: "text/plain",
                body: "too many connections\n",
            },
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Accepts on `listener` until `shutdown`, running `serve` for each admitted connection
/// (which must hand its hyper connection to the `Watcher`); then waits up to
/// `limits.shutdown_grace` for open connections. `name` labels the log lines.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(Guarded<TcpStream>, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_ip);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let busy: Option<Arc<[u8]>> = match limits.busy {
        Busy::Http { content_type, body } => Some(busy_response(content_type, body).into()),
        Busy::Close => None,
    };
    if let Ok(addr) = listener.local_addr() {
        info!(server = name, %addr, "listening");
    }
    loop {
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
        let admitted = match admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                refuse(name, stream, peer, refusal, busy.clone(), &refusing);
                continue;
            }
        };
        let stream = Guarded::new(stream);
        let watchdog = stream.watchdog(limits.timeouts);
        let connection = serve(stream, peer, graceful.watcher());
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                reason = watchdog => debug!(server = name, %peer, reason, "closed a connection"),
            }
            drop(admitted);
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

/// Answers a connection past the caps and closes it, in a task of its own when one of the
/// [`MAX_REFUSING`] places is free (so the refusal is read before the close), else at once.
fn refuse(
    name: &'static str,
    stream: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
    busy: Option<Arc<[u8]>>,
    refusing: &Arc<Semaphore>,
) {
    debug!(server = name, %peer, limit = refusal.as_str(), "refused a connection");
    let Some(busy) = busy else {
        return;
    };
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        // The answer fits an empty socket buffer: a non-blocking write is enough.
        let _ = stream.try_write(&busy);
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let answer = async {
            stream.write_all(&busy).await?;
            stream.shutdown().await?;
            // Read what the client sent so the close is a FIN, not a reset that could
            // discard the answer before the client reads it.
            let mut sink = [0; 4096];
            let mut drained = 0;
            while drained < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, answer).await;
        drop(permit);
    });
}

fn busy_response(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::net::TcpSocket;

    /// A server answering every request line with "ok" and never closing on its own.
    async fn start(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(
            "test",
            listener,
            limits,
            shutdown.clone(),
            |mut stream, _, _| async move {
                let mut buf = [0; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(b"ok").await.is_err() {
                        break;
                    }
                }
            },
        ));
        (addr, shutdown)
    }

    async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    async fn first_bytes(stream: &mut TcpStream) -> Vec<u8> {
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = vec![0; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn connections_past_the_per_client_cap_get_503_at_once() {
        let limits = Limits {
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let (addr, _shutdown) = start(limits).await;
        let flooder = Ipv4Addr::new(127, 0, 0, 2);
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = connect_from(flooder, addr).await;
            assert_eq!(first_bytes(&mut stream).await, b"ok");
            held.push(stream);
        }
        let mut refused = connect_from(flooder, addr).await;
        let answer = String::from_utf8(first_bytes(&mut refused).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");

        let mut other = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        assert_eq!(first_bytes(&mut other).await, b"ok");
    }

    #[tokio::test]
    async fn tls_listeners_close_refused_connections() {
        let limits = Limits {
            max_connections_per_ip: 1,
            busy: Busy::Close,
            ..Limits::default()
        };
        let (addr, _shutdown) = start(limits).await;
        let _held = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut refused = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        let mut buf = [0; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
