//! Streaming a byte range of a file in the content directory.

use std::io::{self, SeekFrom};
use std::path::Path;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::BlobStream;

/// Bytes read per chunk. Large enough for loopback throughput, small enough that 64
/// concurrent streams stay well inside the node's memory budget.
const CHUNK: usize = 256 * 1024;

/// Opens `path` and streams `len` bytes from `first`. A file shorter than promised ends the
/// stream with an `UnexpectedEof` error rather than a silently short body.
pub(crate) async fn stream_range(path: &Path, first: u64, len: u64) -> io::Result<BlobStream> {
    let mut file = tokio::fs::File::open(path).await?;
    if first > 0 {
        file.seek(SeekFrom::Start(first)).await?;
    }
    let chunks = ReaderStream::with_capacity(file.take(len), CHUNK);
    let checked = futures_util::stream::unfold(
        (chunks, 0u64, false),
        move |(mut chunks, sent, done)| async move {
            if done {
                return None;
            }
            match chunks.next().await {
                Some(Ok(bytes)) => {
                    let sent = sent + bytes.len() as u64;
                    Some((Ok(bytes), (chunks, sent, false)))
                }
                Some(Err(e)) => Some((Err(e), (chunks, sent, true))),
                None if sent < len => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("content file ended after {sent} of {len} bytes"),
                    );
                    Some((Err(e), (chunks, sent, true)))
                }
                None => None,
            }
        },
    );
    Ok(Box::pin(checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(stream: BlobStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_range_of_a_file_is_streamed_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let got = collect(stream_range(&path, 1000, 600_000).await.unwrap())
            .await
            .unwrap();
        assert_eq!(got, &data[1000..601_000]);
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
}
