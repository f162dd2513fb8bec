//! Zero-copy blob bodies: the bytes of a local content file go from the page cache to the
//! client's socket with `sendfile(2)`, never through user space.
//!
//! hyper still does all of HTTP: it reads and checks the request (limits, timeouts,
//! keep-alive), runs the handler, writes the status line and headers and frames the body by
//! its `Content-Length`. Only the body's bytes take another way. The handler answers with a
//! body of *stand-in* chunks: `Bytes` pointing into [`STAND_IN`], a static, never-touched
//! region of zeros, one chunk per up to 4 MiB of the file, and puts the file and range into
//! the connection's [`Sendfile`] slot. hyper queues those chunks behind the headers and
//! hands them to the connection's IO ([`SendfileIo`]) in `writev` calls; `SendfileIo`
//! writes ordinary slices as they are and, for stand-in slices, sends as many bytes from
//! the file with `sendfile` instead, and reports them written. hyper thus counts, frames and
//! paces the body as ever (and the `http_*` metrics count it), the watchdog of
//! [`Guarded`] sees every byte, and nothing else of HTTP exists twice.
//!
//! Why this holds: hyper's queue write strategy (`writev(true)` on the builder) pushes each
//! body chunk into its write queue as it is, never copying it, and serves one request of a
//! connection at a time (it reads the next request head only once the response is written),
//! so one slot per connection is enough. A stand-in slice with no file in the slot, or more
//! stand-in bytes than the file range has left, is an error that closes the connection: the
//! zeros never reach a socket.
//!
//! `sendfile` reads the page cache on the calling (runtime) thread, as nginx's does without
//! thread pools: a blob not in memory costs a disk read there. Blobs a node serves were
//! written by containerd shortly before, so they usually are.

use std::fs::File;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use spegel_containerd::BlobStream;
use spegel_serve::Guarded;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest stand-in chunk (and so the most one `sendfile` call is asked to send).
const STAND_IN_LEN: usize = 4 * 1024 * 1024;

/// What stand-in chunks point into. Zeros in `.bss`: never read, so never paged in.
static STAND_IN: [u8; STAND_IN_LEN] = [0; STAND_IN_LEN];

/// The addresses of [`STAND_IN`].
fn stand_in_addresses() -> Range<usize> {
    let start = STAND_IN.as_ptr() as usize;
    start..start + STAND_IN_LEN
}

/// Whether `slice` is (part of) a stand-in chunk; empty slices are not.
fn is_stand_in(slice: &[u8]) -> bool {
    !slice.is_empty() && stand_in_addresses().contains(&(slice.as_ptr() as usize))
}

/// The part of a content file a response still has to send.
struct FileRange {
    file: File,
    offset: i64,
    left: u64,
}

/// One connection's file to send: set by the handler along with a stand-in body, drained by
/// the connection's [`SendfileIo`] as hyper writes that body. Cheap to clone; put into each
/// request's extensions by the server (requests without it are answered by streaming).
#[derive(Clone, Default)]
pub(crate) struct Sendfile(Arc<Mutex<Option<FileRange>>>);

impl Sendfile {
    /// A body of `len` stand-in bytes for `file` from byte `first`, the file kept for the
    /// connection to send. `None` (nothing kept) when `first` does not fit an `off_t`.
    pub(crate) fn body(&self, file: File, first: u64, len: u64) -> Option<BlobStream> {
        let offset = i64::try_from(first).ok()?;
        let range = FileRange {
            file,
            offset,
            left: len,
        };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(range);
        let chunks = futures_util::stream::unfold(len, |left| async move {
            if left == 0 {
                return None;
            }
            let n = usize::try_from(left).map_or(STAND_IN_LEN, |left| left.min(STAND_IN_LEN));
            let chunk = Bytes::from_static(&STAND_IN[..n]);
            Some((Ok(chunk), left - n as u64))
        });
        Some(Box::pin(chunks))
    }
}

/// A registry connection: writes pass through, except stand-in bytes, which are sent from
/// the connection's [`Sendfile`] slot.
pub(crate) struct SendfileIo {
    inner: Guarded<TcpStream>,
    sendfile: Sendfile,
}

impl SendfileIo {
    pub(crate) fn new(inner: Guarded<TcpStream>, sendfile: Sendfile) -> SendfileIo {
        SendfileIo { inner, sendfile }
    }

    /// Sends up to `want` bytes of the slot's file range in place of stand-in bytes.
    fn poll_send(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let mut slot = self
            .sendfile
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(range) = slot.as_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "stand-in body bytes with no file to send",
            )));
        };
        if want as u64 > range.left {
            return Poll::Ready(Err(io::Error::other(
                "more stand-in body bytes than the file range holds",
            )));
        }
        let sent = ready!(self.inner.poll_write_with(cx, |socket, cx| {
            send(socket, cx, &range.file, &mut range.offset, want)
        }))?;
        range.left -= sent as u64;
        if range.left == 0 {
            *slot = None;
        }
        Poll::Ready(Ok(sent))
    }
}

/// One `sendfile` of up to `count` bytes from `file` at `offset` (advanced) once `socket`
/// can take some.
fn send(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    file: &File,
    offset: &mut i64,
    count: usize,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(socket.poll_write_ready(cx))?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(socket, file, Some(&mut *offset), count)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the content file is shorter than its size",
                )));
            }
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_stand_in(buf) {
            return self.poll_send(cx, buf.len());
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// Writes the leading ordinary slices, or sends the leading stand-in ones: never both
    /// in one call (hyper writes the rest in its next call).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stand_in = bufs
            .iter()
            .find(|b| !b.is_empty())
            .is_some_and(|b| is_stand_in(b));
        let run = bufs
            .iter()
            .take_while(|b| b.is_empty() || is_stand_in(b) == stand_in)
            .count();
        if stand_in {
            let want = bufs[..run].iter().map(|b| b.len()).sum();
            return self.poll_send(cx, want);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..run])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_stand_in_body_is_its_length_in_chunks_of_the_static_region() {
        let file = File::open("/dev/null").unwrap();
        let len = 2 * STAND_IN_LEN as u64 + 5;
        let body = Sendfile::default().body(file, 0, len).unwrap();
        let chunks: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
        let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [STAND_IN_LEN, STAND_IN_LEN, 5]);
        assert!(chunks.iter().all(|c| is_stand_in(c)));
        assert!(!is_stand_in(&[0; 16]));
        assert!(!is_stand_in(&STAND_IN[..0]));
    }
}
