//! Streaming a byte range of a file in the content directory.
//!
//! Each chunk is read with `std::fs` on the blocking pool straight into the buffer that
//! becomes the body chunk (`tokio::fs` would read into a buffer of its own and copy), and
//! that buffer is read into again once hyper has written and dropped the chunk, so a stream
//! keeps about two buffers however long the blob.
//!
//! The chunk size adapts to the number of file streams open in the process. A lone stream
//! reads up to 1 MiB at a time: fewer reads, writes and wake-ups per byte, about a third less
//! CPU per GiB than 256 KiB chunks. Many streams share [`CHUNK_BUDGET`]: 64 streams read
//! 256 KiB at a time, so read buffers stay near 32 MiB up to 256 streams (64 KiB each beyond).
//! Measured with `bench-registry`, see docs/benchmarks.md.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};

use crate::BlobStream;

/// The largest chunk, read when few streams are open.
const MAX_CHUNK: usize = 1024 * 1024;

/// The smallest chunk, however many streams are open.
const MIN_CHUNK: usize = 64 * 1024;

/// A stream's first chunk; each next one may be twice as large. Streams that open together
/// thus read small chunks until they all count in [`OPEN_STREAMS`], and small blobs and
/// ranges are read in small chunks.
const FIRST_CHUNK: usize = 128 * 1024;

/// Bytes of chunks read at a time across all open streams; each stream holds about two
/// chunks (one being written by hyper, one being read), so buffers take about twice this.
const CHUNK_BUDGET: usize = 16 * 1024 * 1024;

/// Chunk sizes are multiples of this.
const CHUNK_ALIGN: usize = 64 * 1024;

/// Chunks a stream remembers in order to read into their buffers again.
const RECYCLED: usize = 2;

/// File streams open in this process (the budget is the process's memory).
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Opens `path` and streams `len` bytes from `first`. A file shorter than promised ends the
/// stream with an `UnexpectedEof` error rather than a silently short body.
pub(crate) async fn stream_range(path: &Path, first: u64, len: u64) -> io::Result<BlobStream> {
    let path = path.to_owned();
    let file = tokio::task::spawn_blocking(move || {
        let mut file = File::open(path)?;
        if first > 0 {
            file.seek(SeekFrom::Start(first))?;
        }
        Ok::<_, io::Error>(file)
    })
    .await
    .map_err(io::Error::other)??;
    let reader = Reader {
        file,
        sent: 0,
        len,
        ramp: FIRST_CHUNK,
        recycled: VecDeque::with_capacity(RECYCLED + 1),
        _open: OpenStream::new(),
    };
    let chunks = futures_util::stream::unfold(Some(reader), |reader| async move {
        let reader = reader?;
        if reader.sent == reader.len {
            return None;
        }
        match reader.next_chunk().await {
            Ok((reader, chunk)) => Some((Ok(chunk), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Box::pin(chunks))
}

/// One stream's file, position and buffers.
struct Reader {
    file: File,
    /// Bytes of the range read so far.
    sent: u64,
    /// Bytes in the range.
    len: u64,
    /// The largest chunk this stream may read next (doubles up to [`MAX_CHUNK`]).
    ramp: usize,
    /// The last chunks handed out; a buffer is reused once hyper has dropped its chunk.
    recycled: VecDeque<Bytes>,
    _open: OpenStream,
}

impl Reader {
    /// Reads the next chunk on the blocking pool. An error ends the stream.
    async fn next_chunk(mut self) -> io::Result<(Reader, Bytes)> {
        let left = self.len - self.sent;
        let want = chunk_size(OPEN_STREAMS.load(Ordering::Relaxed)).min(self.ramp);
        self.ramp = (self.ramp * 2).min(MAX_CHUNK);
        let n = usize::try_from(left).map_or(want, |left| left.min(want));
        let mut buf = self.buffer(n);
        let (mut reader, read) = tokio::task::spawn_blocking(move || {
            if buf.len() >= n {
                buf.truncate(n);
            } else {
                buf.resize(n, 0);
            }
            let read = (&self.file).read_exact(&mut buf);
            (self, read.map(|()| buf.freeze()))
        })
        .await
        .map_err(io::Error::other)?;
        let chunk = read.map_err(|e| {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                return e;
            }
            let end = reader.sent + n as u64;
            let message = format!("content file ended before byte {end} of {}", reader.len);
            io::Error::new(io::ErrorKind::UnexpectedEof, message)
        })?;
        reader.sent += n as u64;
        reader.recycled.push_back(chunk.clone());
        if reader.recycled.len() > RECYCLED {
            reader.recycled.pop_front();
        }
        Ok((reader, chunk))
    }

    /// A buffer for `n` bytes: one whose chunk nobody holds any more if its size fits
    /// (it keeps its contents, so it need not be zeroed), else a new one.
    fn buffer(&mut self, n: usize) -> BytesMut {
        for _ in 0..self.recycled.len() {
            let Some(chunk) = self.recycled.pop_front() else {
                break;
            };
            match chunk.try_into_mut() {
                Ok(buf) if buf.capacity() >= n && buf.capacity() <= 2 * n => return buf,
                // Too small (the chunk size grew) or far too large (it shrank): let it go.
                Ok(_) => {}
                Err(chunk) => self.recycled.push_back(chunk),
            }
        }
        BytesMut::with_capacity(n)
    }
}

/// The chunk size when `open_streams` file streams are open.
fn chunk_size(open_streams: usize) -> usize {
    let share = CHUNK_BUDGET / open_streams.max(1);
    (share / CHUNK_ALIGN * CHUNK_ALIGN).clamp(MIN_CHUNK, MAX_CHUNK)
}

/// Counts an open stream in [`OPEN_STREAMS`] while it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> OpenStream {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(stream: BlobStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_range_of_a_file_is_streamed_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data = pattern(1_000_000);
        std::fs::write(&path, &data).unwrap();
        let got = collect(stream_range(&path, 1000, 600_000).await.unwrap())
            .await
            .unwrap();
        assert_eq!(got, &data[1000..601_000]);
    }

    #[tokio::test]
    async fn a_file_larger_than_many_chunks_is_streamed_exactly_while_buffers_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data = pattern(5 * MAX_CHUNK + 12345);
        std::fs::write(&path, &data).unwrap();
        let mut stream = stream_range(&path, 7, data.len() as u64 - 7).await.unwrap();
        let mut got = Vec::new();
        let mut buffers = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= MAX_CHUNK, "{}", chunk.len());
            got.extend_from_slice(&chunk);
            buffers.push(chunk.as_ptr() as usize);
            // Dropped here, as hyper drops a chunk once written: its buffer is read into next.
        }
        assert_eq!(got, &data[7..]);
        // 128 KiB, 256 KiB, 512 KiB, then 1 MiB chunks, each in the previous one's buffer.
        assert_eq!(buffers.len(), 8, "{buffers:?}");
        assert!(
            buffers[4..7].iter().all(|&b| b == buffers[3]),
            "{buffers:?}"
        );
    }

    #[tokio::test]
    async fn an_empty_range_is_an_empty_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"abc").unwrap();
        let got = collect(stream_range(&path, 3, 0).await.unwrap())
            .await
            .unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"short").unwrap();
        let err = collect(stream_range(&path, 0, 10).await.unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_missing_file_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let result = stream_range(&dir.path().join("absent"), 0, 10).await;
        assert_eq!(
            result.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn the_chunk_size_shrinks_as_streams_share_the_budget() {
        for (open, chunk) in [
            (0, MAX_CHUNK),
            (1, MAX_CHUNK),
            (16, MAX_CHUNK),
            (17, 960 * 1024),
            (64, 256 * 1024),
            (96, 128 * 1024),
            (256, MIN_CHUNK),
            (10_000, MIN_CHUNK),
        ] {
            assert_eq!(chunk_size(open), chunk, "{open} open streams");
        }
    }
}
