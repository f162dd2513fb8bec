//! The registry over real HTTP on a loopback socket, with raw requests so that malformed
//! input reaches the server exactly as an attacker would send it.
//!
//! The content store here is an in-memory map standing in for containerd, so that every
//! status and header can be checked in isolation; the same requests against a real
//! containerd run in `tests/registry.rs` at the workspace root.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use spegel_containerd::{BlobStream, ContentStore};
use spegel_oci::{Digest, Repository, Tag};
use spegel_registry::{Faults, Registry, ServerConfig, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Content held in memory: digests → bytes, `registry/repo:tag` → digest.
#[derive(Clone, Default)]
struct MemoryStore {
    blobs: Arc<HashMap<Digest, Bytes>>,
    tags: Arc<HashMap<String, Digest>>,
}

impl ContentStore for MemoryStore {
    async fn resolve_tag(
        &self,
        registry: &str,
        repository: &Repository,
        tag: &Tag,
    ) -> spegel_containerd::Result<Option<Digest>> {
        Ok(self
            .tags
            .get(&format!("{registry}/{repository}:{tag}"))
            .cloned())
    }

    async fn size(&self, digest: &Digest) -> spegel_containerd::Result<Option<u64>> {
        Ok(self.blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn read(
        &self,
        digest: &Digest,
        first: u64,
        len: u64,
    ) -> spegel_containerd::Result<BlobStream> {
        let bytes = self.blobs[digest].slice(first as usize..(first + len) as usize);
        // Two chunks, to exercise streaming.
        let mid = bytes.len() / 2;
        let chunks: Vec<io::Result<Bytes>> = vec![Ok(bytes.slice(..mid)), Ok(bytes.slice(mid..))];
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn check(&self) -> spegel_containerd::Result<()> {
        Ok(())
    }
}

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;

struct Server {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    blob: Digest,
    manifest: Digest,
    faults: Faults,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Server {
    let blob_bytes = Bytes::from((0..1000u32).map(|i| (i % 256) as u8).collect::<Vec<_>>());
    let blob = Digest::sha256_of(&blob_bytes);
    let manifest = Digest::sha256_of(MANIFEST.as_bytes());
    let store = MemoryStore {
        blobs: Arc::new(HashMap::from([
            (blob.clone(), blob_bytes),
            (manifest.clone(), Bytes::from_static(MANIFEST.as_bytes())),
        ])),
        tags: Arc::new(HashMap::from([(
            "example.com:5000/test/img:v1".to_owned(),
            manifest.clone(),
        )])),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let faults = Faults::default();
    tokio::spawn(serve(
        listener,
        Registry::new(store).with_faults(faults.clone()),
        ServerConfig::default(),
        shutdown.clone(),
    ));
    Server {
        addr,
        shutdown,
        blob,
        manifest,
        faults,
    }
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Sends `head` (request line and headers, without the final blank line) and reads the reply
/// until the server closes the connection.
async fn raw(server: &Server, head: &str) -> Reply {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!("{head}\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

fn error_code(reply: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("an OCI error body");
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_blob_is_served_whole_with_its_headers() {
    let s = start().await;
    let r = raw(&s, &format!("GET /v2/any/repo/blobs/{} HTTP/1.1", s.blob)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);
    assert_eq!(r.headers["content-length"], "1000");
    assert_eq!(r.headers["accept-ranges"], "bytes");
    assert_eq!(r.headers["docker-content-digest"], s.blob.to_string());
    assert_eq!(Digest::sha256_of(&r.body), s.blob);
}

#[tokio::test]
async fn head_of_a_blob_has_headers_and_no_body() {
    let s = start().await;
    let r = raw(&s, &format!("HEAD /v2/x/blobs/{} HTTP/1.1", s.blob)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-length"], "1000");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_single_range_is_206_with_content_range() {
    let s = start().await;
    let r = raw(
        &s,
        &format!("GET /v2/x/blobs/{} HTTP/1.1\r\nRange: bytes=10-19", s.blob),
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-range"], "bytes 10-19/1000");
    assert_eq!(r.body, (10..20u8).collect::<Vec<_>>());
    let r = raw(
        &s,
        &format!("GET /v2/x/blobs/{} HTTP/1.1\r\nRange: bytes=-5", s.blob),
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-range"], "bytes 995-999/1000");
}

#[tokio::test]
async fn bad_ranges_are_400_and_ranges_past_the_end_416() {
    let s = start().await;
    let cases = [
        ("bytes=1000-", 416),
        ("bytes=5000-6000", 416),
        ("bytes=0-1,4-5", 400),
        ("bytes=9-1", 400),
        ("bytes=abc", 400),
        ("pages=1-2", 400),
    ];
    for (range, status) in cases {
        let r = raw(
            &s,
            &format!("GET /v2/x/blobs/{} HTTP/1.1\r\nRange: {range}", s.blob),
        )
        .await;
        assert_eq!(r.status, status, "{range}");
        assert_eq!(error_code(&r), "RANGE_INVALID", "{range}");
        if status == 416 {
            assert_eq!(r.headers["content-range"], "bytes */1000");
        }
    }
    let two = format!(
        "GET /v2/x/blobs/{} HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3",
        s.blob
    );
    assert_eq!(raw(&s, &two).await.status, 400);
}

#[tokio::test]
async fn manifests_carry_their_media_type_and_digest() {
    let s = start().await;
    for path in [
        format!("/v2/test/img/manifests/{}", s.manifest),
        "/v2/test/img/manifests/v1?ns=example.com%3A5000".to_owned(),
    ] {
        let r = raw(&s, &format!("GET {path} HTTP/1.1")).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.headers["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(r.headers["docker-content-digest"], s.manifest.to_string());
        assert_eq!(r.body, MANIFEST.as_bytes());
        let h = raw(&s, &format!("HEAD {path} HTTP/1.1")).await;
        assert_eq!(h.status, 200);
        assert_eq!(h.headers["content-length"], MANIFEST.len().to_string());
        assert!(h.body.is_empty());
    }
}

#[tokio::test]
async fn unknown_content_and_bad_input_get_oci_errors() {
    let s = start().await;
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (format!("GET /v2/x/blobs/{zero}"), 404, "BLOB_UNKNOWN"),
        (
            format!("GET /v2/x/manifests/{zero}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        // A tag needs ?ns= to know which registry it is from.
        (
            "GET /v2/test/img/manifests/v1".to_owned(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET /v2/test/img/manifests/v2?ns=example.com%3A5000".to_owned(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        // A blob is not a manifest.
        (
            format!("GET /v2/x/manifests/{}", s.blob),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("GET /v2/../../etc/blobs/{zero}"),
            400,
            "NAME_INVALID",
        ),
        (
            format!("GET /v2/a%2F..%2Fb/blobs/{zero}"),
            400,
            "NAME_INVALID",
        ),
        (
            "GET /v2/x/blobs/sha256:..%2F..%2Fetc%2Fpasswd".to_owned(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET /v2/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
            400,
            "DIGEST_INVALID",
        ),
        ("GET /v2/x/manifests/-bad-".to_owned(), 400, "TAG_INVALID"),
        ("GET /v2/x/tags/list".to_owned(), 404, "UNSUPPORTED"),
        ("GET /etc/passwd".to_owned(), 404, "UNSUPPORTED"),
        (format!("PUT /v2/x/blobs/{zero}"), 405, "UNSUPPORTED"),
        (format!("DELETE /v2/x/manifests/{zero}"), 405, "UNSUPPORTED"),
        ("POST /v2/x/blobs/uploads/".to_owned(), 405, "UNSUPPORTED"),
    ];
    for (line, status, code) in cases {
        let r = raw(&s, &format!("{line} HTTP/1.1")).await;
        assert_eq!(r.status, status, "{line}");
        assert_eq!(error_code(&r), code, "{line}");
        assert_eq!(r.headers["content-type"], "application/json", "{line}");
    }
}

#[tokio::test]
async fn version_and_health_endpoints_answer() {
    let s = start().await;
    let r = raw(&s, "GET /v2/ HTTP/1.1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(raw(&s, "HEAD /v2/ HTTP/1.1").await.status, 200);
    assert_eq!(raw(&s, "GET /livez HTTP/1.1").await.status, 200);
    assert_eq!(raw(&s, "GET /readyz HTTP/1.1").await.status, 200);
}

#[tokio::test]
async fn readyz_is_503_once_a_node_task_died() {
    let s = start().await;
    s.faults.report("the advertiser stopped");
    let r = raw(&s, "GET /readyz HTTP/1.1").await;
    assert_eq!(r.status, 503);
    assert_eq!(raw(&s, "GET /livez HTTP/1.1").await.status, 200);
}

#[tokio::test]
async fn huge_headers_are_refused_without_harm() {
    let s = start().await;
    let big = "a".repeat(200 * 1024);
    let r = raw(&s, &format!("GET /v2/ HTTP/1.1\r\nX-Big: {big}")).await;
    assert_eq!(r.status, 431);
    // The server is still serving.
    assert_eq!(raw(&s, "GET /livez HTTP/1.1").await.status, 200);
}

/// Blobs held only as files in a directory, the way containerd's content directory holds
/// them: `read` fails, so every body must come from `open_file` (sent with `sendfile`).
#[derive(Clone)]
struct FileStore {
    dir: Arc<tempfile::TempDir>,
    sizes: Arc<HashMap<Digest, u64>>,
}

impl ContentStore for FileStore {
    async fn resolve_tag(
        &self,
        _: &str,
        _: &Repository,
        _: &Tag,
    ) -> spegel_containerd::Result<Option<Digest>> {
        Ok(None)
    }

    async fn size(&self, digest: &Digest) -> spegel_containerd::Result<Option<u64>> {
        Ok(self.sizes.get(digest).copied())
    }

    async fn read(&self, digest: &Digest, _: u64, _: u64) -> spegel_containerd::Result<BlobStream> {
        Err(spegel_containerd::Error::InFlight {
            digest: digest.to_string(),
            source: io::Error::other("this store only sends files"),
        })
    }

    async fn open_file(&self, digest: &Digest) -> Option<std::fs::File> {
        std::fs::File::open(self.dir.path().join(digest.hex())).ok()
    }

    async fn check(&self) -> spegel_containerd::Result<()> {
        Ok(())
    }
}

/// Reads one response (head, then `Content-Length` body bytes unless `head_only`) from a
/// kept-alive connection.
async fn read_response(stream: &mut TcpStream, head_only: bool) -> Reply {
    let mut bytes = Vec::new();
    let split = loop {
        if let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        let mut buf = [0; 1];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1, "a response head");
        bytes.push(buf[0]);
    };
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let len = if head_only {
        0
    } else {
        headers["content-length"].parse().unwrap()
    };
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn blobs_held_as_files_are_sent_from_them_whole_ranged_and_kept_alive() {
    // Larger than one stand-in chunk (4 MiB) and not a multiple of anything.
    let data: Vec<u8> = (0..9_437_201u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(digest.hex()), &data).unwrap();
    let store = FileStore {
        dir: Arc::new(dir),
        sizes: Arc::new(HashMap::from([(digest.clone(), data.len() as u64)])),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        Registry::new(store),
        ServerConfig::default(),
        shutdown.clone(),
    ));

    // One connection, several requests: each response ends where its length says.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let path = format!("/v2/x/blobs/{digest}");
    let request = |extra: &str, method: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n")
    };
    stream
        .write_all(request("", "GET").as_bytes())
        .await
        .unwrap();
    let whole = read_response(&mut stream, false).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.headers["docker-content-digest"], digest.to_string());
    assert_eq!(Digest::sha256_of(&whole.body), digest);

    let ranges = [
        (0, 0),
        (4_194_300, 4_194_310),
        (5, 9_437_200),
        (9_437_200, 9_437_200),
    ];
    for (first, last) in ranges {
        let range = format!("Range: bytes={first}-{last}\r\n");
        stream
            .write_all(request(&range, "GET").as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut stream, false).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.headers["content-range"],
            format!("bytes {first}-{last}/{}", data.len())
        );
        assert!(r.body == data[first..=last], "{range}");
    }

    stream
        .write_all(request("", "HEAD").as_bytes())
        .await
        .unwrap();
    let head = read_response(&mut stream, true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], data.len().to_string());

    // The connection still serves ordinary bodies after sent files.
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let version = read_response(&mut stream, false).await;
    assert_eq!(version.status, 200);
    assert_eq!(version.body, b"{}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_client_that_stops_reading_a_sent_file_is_dropped_after_the_write_stall() {
    let data = vec![5u8; 64 << 20];
    let digest = Digest::sha256_of(&data);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(digest.hex()), &data).unwrap();
    let store = FileStore {
        dir: Arc::new(dir),
        sizes: Arc::new(HashMap::from([(digest.clone(), data.len() as u64)])),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        timeouts: spegel_serve::Timeouts {
            write_stall: std::time::Duration::from_millis(300),
            ..spegel_serve::Timeouts::default()
        },
        ..ServerConfig::default()
    };
    tokio::spawn(serve(
        listener,
        Registry::new(store),
        config,
        shutdown.clone(),
    ));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /v2/x/blobs/{digest} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read nothing while the socket buffers fill and the server's sendfile stalls.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let drained = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut sink = vec![0; 1 << 20];
        let mut total = 0usize;
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the server closed the stalled connection");
    assert!(drained < data.len(), "got the whole blob: {drained} bytes");
    shutdown.cancel();
}
