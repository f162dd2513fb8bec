//! [`Guarded`]: a connection that records its progress, and the watchdog that closes it when
//! the client stops keeping up: nothing read or written for `idle`, a write that cannot move
//! for `write_stall`, or less than `min_write_rate` bytes a second over a `rate_window` in
//! which the client (not the server) was the bottleneck. A client that pipelines requests
//! and never reads, or reads one byte every few seconds, is dropped within seconds, with its
//! buffers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection is too slow or too quiet to keep.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Nothing read and nothing written for this long: closed.
    pub idle: Duration,
    /// A write that cannot move a byte for this long: closed.
    pub write_stall: Duration,
    /// Bytes a second a client must at least read, measured over `rate_window`, in a window
    /// where a write had to wait for it.
    pub min_write_rate: u64,
    /// The window `min_write_rate` is measured over.
    pub rate_window: Duration,
}

impl Default for Timeouts {
    /// 60 s idle, 10 s write stall, 16 KiB/s over 10 s windows.
    fn default() -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(60),
            write_stall: Duration::from_secs(10),
            min_write_rate: 16 * 1024,
            rate_window: Duration::from_secs(10),
        }
    }
}

/// See [`Guarded::watchdog`].
pub(crate) type Watchdog = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// Marks "not blocked" in [`Progress::write_blocked_since`].
const NOT_BLOCKED: u64 = u64::MAX;

/// What the watchdog reads: milliseconds since `origin`, bytes written.
struct Progress {
    origin: Instant,
    last_progress: AtomicU64,
    written: AtomicU64,
    write_blocked_since: AtomicU64,
    blocked_in_window: AtomicBool,
}

impl Progress {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn moved(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }
}

/// A stream whose reads and writes are watched (see the module doc). Everything else passes
/// through to the inner stream.
pub struct Guarded<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S) -> Guarded<S> {
        let progress = Progress {
            origin: Instant::now(),
            last_progress: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(NOT_BLOCKED),
            blocked_in_window: AtomicBool::new(false),
        };
        Guarded {
            inner,
            progress: Arc::new(progress),
        }
    }

    /// The wrapped stream (e.g. for its local address).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Writes to the inner stream by other means than [`AsyncWrite`] (such as `sendfile(2)`
    /// on its socket), watched like any write: `write` returns what `poll_write` would.
    pub fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&S, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let poll = write(&self.inner, cx);
        self.wrote(&poll);
        poll
    }

    /// A future that completes (with the reason) once this connection should be closed.
    pub(crate) fn watchdog(&self, timeouts: Timeouts) -> Watchdog {
        Box::pin(watchdog(self.progress.clone(), timeouts))
    }

    fn wrote(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Ready(Ok(n)) => {
                let p = &self.progress;
                p.written.fetch_add(*n as u64, Ordering::Relaxed);
                p.write_blocked_since.store(NOT_BLOCKED, Ordering::Relaxed);
                if *n > 0 {
                    p.moved();
                }
            }
            Poll::Pending => {
                let p = &self.progress;
                p.blocked_in_window.store(true, Ordering::Relaxed);
                if p.write_blocked_since.load(Ordering::Relaxed) == NOT_BLOCKED {
                    p.write_blocked_since.store(p.now(), Ordering::Relaxed);
                }
            }
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.progress.moved();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Returns (with the reason) once the connection should be closed; never returns for a
/// client that keeps up.
async fn watchdog(progress: Arc<Progress>, timeouts: Timeouts) -> &'static str {
    let as_ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (idle, stall, window) = (
        as_ms(timeouts.idle),
        as_ms(timeouts.write_stall),
        as_ms(timeouts.rate_window).max(1),
    );
    let check = (timeouts.write_stall.min(timeouts.idle) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let min_bytes = timeouts
        .min_write_rate
        .saturating_mul(window)
        .saturating_div(1000);
    let mut ticks = tokio::time::interval(check);
    let mut window_start = progress.now();
    let mut written_at_start = 0;
    loop {
        ticks.tick().await;
        let now = progress.now();
        let blocked_since = progress.write_blocked_since.load(Ordering::Relaxed);
        if blocked_since != NOT_BLOCKED && now.saturating_sub(blocked_since) >= stall {
            return "write stalled: the client stopped reading";
        }
        if now.saturating_sub(progress.last_progress.load(Ordering::Relaxed)) >= idle {
            return "idle";
        }
        if now.saturating_sub(window_start) >= window {
            let written = progress.written.load(Ordering::Relaxed);
            let still_blocked = blocked_since != NOT_BLOCKED;
            let waited = progress
                .blocked_in_window
                .swap(still_blocked, Ordering::Relaxed);
            if waited && written.saturating_sub(written_at_start) < min_bytes {
                return "too slow: the client reads below the minimum rate";
            }
            window_start = now;
            written_at_start = written;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn timeouts() -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(60),
            write_stall: Duration::from_secs(10),
            min_write_rate: 16 * 1024,
            rate_window: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_dropped_after_the_write_stall() {
        let (server, _client) = tokio::io::duplex(1024);
        let mut guarded = Guarded::new(server);
        let watchdog = guarded.watchdog(timeouts());
        let started = Instant::now();
        let writing = async {
            let _ = guarded.write_all(&[0; 64 * 1024]).await;
            "finished"
        };
        let reason = tokio::select! { r = watchdog => r, r = writing => r };
        assert!(reason.starts_with("write stalled"), "{reason}");
        assert!(started.elapsed() <= Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_a_trickle_is_dropped_for_its_rate() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut guarded = Guarded::new(server);
        let watchdog = guarded.watchdog(timeouts());
        let writing = async {
            let _ = guarded.write_all(&vec![0; 1 << 20]).await;
            "finished"
        };
        // 256 bytes every 2 s keeps each write moving but far below 16 KiB/s.
        let trickle = async {
            let mut buf = [0; 256];
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = client.read_exact(&mut buf).await;
            }
        };
        let reason = tokio::select! { r = watchdog => r, r = writing => r, () = trickle => "" };
        assert!(reason.starts_with("too slow"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_up_is_never_dropped() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut guarded = Guarded::new(server);
        let watchdog = guarded.watchdog(timeouts());
        let writing = async {
            for _ in 0..100 {
                guarded.write_all(&[0; 32 * 1024]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            "finished"
        };
        let reading = async {
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let reason = tokio::select! { r = watchdog => r, r = writing => r, () = reading => "" };
        assert_eq!(reason, "finished");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_dropped_when_idle() {
        let (server, _client) = tokio::io::duplex(1024);
        let guarded = Guarded::new(server);
        let started = Instant::now();
        assert_eq!(guarded.watchdog(timeouts()).await, "idle");
        assert!(started.elapsed() >= Duration::from_secs(60));
    }
}
