//! Helpers shared by the bootstrapper's integration tests: certificates in a temp dir, the
//! bootstrapper running in-process against the fake API server, a raw HTTPS GET, polling.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use spegel_bootstrap::tls::ServerTlsFiles;
use spegel_bootstrapper::config::{Config, LogFormat, PeerPolicy};
use spegel_bootstrapper::testing::FakeApiServer;
use spegel_bootstrapper::{Listeners, run};
use spegel_certs::{Authority, Issued, Validity, write_cert_dir, write_private, write_public};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// A CA that signs the server certificate (for `localhost` and `127.0.0.1`) and the client
/// certificates, with the server's files in a temp dir.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Authority,
    pub files: ServerTlsFiles,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let files = ServerTlsFiles {
            cert: dir.path().join("server/tls.crt"),
            key: dir.path().join("server/tls.key"),
            client_ca: dir.path().join("client-ca.crt"),
        };
        std::fs::create_dir_all(dir.path().join("server")).unwrap();
        write_public(&files.client_ca, &ca.cert_pem()).unwrap();
        let pki = Pki { dir, ca, files };
        pki.install_server_cert(&pki.ca);
        pki
    }

    /// Writes a server certificate for loopback signed by `issuer` over the served files.
    pub fn install_server_cert(&self, issuer: &Authority) {
        let server = issuer
            .server(
                &["localhost".to_owned(), "127.0.0.1".to_owned()],
                Validity::days(1),
            )
            .unwrap();
        write_private(&self.files.key, &server.key_pem).unwrap();
        write_public(&self.files.cert, &server.cert_pem).unwrap();
    }

    /// A node cert dir trusting `server_ca`, holding `client`.
    pub fn cert_dir(&self, label: &str, server_ca: &Authority, client: &Issued) -> PathBuf {
        let dir = self.dir.path().join("nodes").join(label);
        write_cert_dir(&dir, &server_ca.cert_pem(), client).unwrap();
        dir
    }

    /// A valid node cert dir for `node_name`.
    pub fn node_dir(&self, node_name: &str) -> PathBuf {
        let client = self.ca.client(node_name, Validity::days(1)).unwrap();
        self.cert_dir(node_name, &self.ca, &client)
    }
}

/// A bootstrapper running in-process on loopback ports.
pub struct Bootstrapper {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<spegel_bootstrapper::Result<()>>,
}

impl Bootstrapper {
    /// Starts on free loopback ports.
    pub async fn start(api: &FakeApiServer, pki: &Pki, max_peers: usize) -> Bootstrapper {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Bootstrapper::start_on(listener, api, pki, max_peers).await
    }

    /// Starts with the HTTPS side on `listener`.
    pub async fn start_on(
        listener: TcpListener,
        api: &FakeApiServer,
        pki: &Pki,
        max_peers: usize,
    ) -> Bootstrapper {
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ops_addr = ops.local_addr().unwrap();
        let config = Config {
            listen_addr: addr,
            metrics_addr: ops_addr,
            tls: pki.files.clone(),
            tls_reload_interval: Duration::from_millis(100),
            kubeconfig: None,
            peers: PeerPolicy {
                max_peers,
                router_port: 5001,
            },
            max_connections_per_ip: 32,
            tls_handshake_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(2),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
        };
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            bootstrap: listener,
            ops,
        };
        let task = tokio::spawn(run(
            config,
            api.client().unwrap(),
            listeners,
            shutdown.clone(),
        ));
        Bootstrapper {
            addr,
            ops_addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Cancels and waits for a clean stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// One HTTPS GET with `config`; `Err` carries the TLS or HTTP failure.
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    config: ClientConfig,
) -> Result<(http::StatusCode, Bytes), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One plain HTTP GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (http::StatusCode, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` until it returns `Some`, for at most 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `tracing` output to the test writer, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
