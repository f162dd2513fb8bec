//! Streaming a byte range of a file in the content directory.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

use crate::BlobStream;

fn chunk() -> usize {
    std::env::var("X_CHUNK_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256usize)
        * 1024
}

fn mode() -> String {
    std::env::var("X_MODE").unwrap_or_else(|_| "tokio".into())
}

pub(crate) async fn stream_range(path: &Path, first: u64, len: u64) -> io::Result<BlobStream> {
    match mode().as_str() {
        "tokio" => stream_tokio(path, first, len).await,
        "std" => stream_std(path, first, len, false).await,
        _ => stream_std(path, first, len, true).await,
    }
}

type Read1 = JoinHandle<io::Result<(std::fs::File, Bytes)>>;

fn read_chunk(file: std::fs::File, n: usize) -> Read1 {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(n);
        (&file).take(n as u64).read_to_end(&mut buf)?;
        Ok((file, Bytes::from(buf)))
    })
}

enum Next {
    Pending(Read1),
    Idle(std::fs::File, usize),
    Done,
}

async fn stream_std(path: &Path, first: u64, len: u64, ahead: bool) -> io::Result<BlobStream> {
    let path = path.to_owned();
    let file = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        if first > 0 {
            file.seek(SeekFrom::Start(first))?;
        }
        io::Result::Ok(file)
    })
    .await??;
    let chunk = chunk() as u64;
    let start = if len > 0 {
        Next::Idle(file, len.min(chunk) as usize)
    } else {
        Next::Done
    };
    let s = futures_util::stream::unfold((start, len), move |(next, left)| async move {
        let pending = match next {
            Next::Done => return None,
            Next::Idle(file, n) => read_chunk(file, n),
            Next::Pending(p) => p,
        };
        let (file, bytes) = match pending.await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Some((Err(e), (Next::Done, 0))),
            Err(e) => return Some((Err(io::Error::other(e)), (Next::Done, 0))),
        };
        let want = left.min(chunk);
        if (bytes.len() as u64) < want {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "short");
            return Some((Err(e), (Next::Done, 0)));
        }
        let left = left - bytes.len() as u64;
        if left == 0 {
            return Some((Ok(bytes), (Next::Done, 0)));
        }
        let n = left.min(chunk) as usize;
        let next = if ahead {
            Next::Pending(read_chunk(file, n))
        } else {
            Next::Idle(file, n)
        };
        Some((Ok(bytes), (next, left)))
    });
    Ok(Box::pin(s))
}

async fn stream_tokio(path: &Path, first: u64, len: u64) -> io::Result<BlobStream> {
    let mut file = tokio::fs::File::open(path).await?;
    if first > 0 {
        file.seek(SeekFrom::Start(first)).await?;
    }
    let chunks = ReaderStream::with_capacity(file.take(len), chunk());
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
