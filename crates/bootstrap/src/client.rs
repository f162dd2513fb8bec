//! The node's side: one HTTPS request with mutual TLS, answered by either JSON shape.

use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::wire::{BootstrapPeer, ZONE_HEADER, parse_peers};
use crate::{Error, Result, tls};

/// How long one request may take, connect to last byte, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers are a few hundred bytes; anything near this is not a bootstrapper.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Where and how the node asks the bootstrapper (`--http-bootstrap-url`,
/// `--http-bootstrap-cert-dir`, the router port peers listen on).
#[derive(Debug, Clone)]
pub struct HttpBootstrapConfig {
    /// The full URL asked, e.g. `https://bootstrapper.example.com/bootstrap-nodes`.
    url: Uri,
    /// Holds `ca.crt`, `tls.crt`, `tls.key`; re-read on every request.
    pub cert_dir: PathBuf,
    /// The port peers' routers listen on: IP-only answers become `/ip4/<ip>/tcp/<port>`.
    pub router_port: u16,
    /// Deadline of one request, connect to last byte.
    pub timeout: Duration,
}

impl HttpBootstrapConfig {
    /// Checks that `url` is an `https://` URL with a host; the timeout is [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str, cert_dir: impl Into<PathBuf>, router_port: u16) -> Result<Self> {
        let invalid = |reason| Error::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| invalid("is not a URL (e.g. https://host/bootstrap-nodes)"))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid(
                "must start with https:// (the bootstrapper requires mTLS)",
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("has no host"));
        }
        Ok(HttpBootstrapConfig {
            url: uri,
            cert_dir: cert_dir.into(),
            router_port,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same configuration with another request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL asked.
    pub fn url(&self) -> &Uri {
        &self.url
    }
}

/// Asks the bootstrapper once for peers to join through, within `config.timeout`.
///
/// Accepts either answer shape (see [`crate::wire`]). An empty list is a success: the node is
/// alone so far. Retrying is the caller's business (see [`crate::Backoff`]).
pub async fn fetch_peers(config: &HttpBootstrapConfig) -> Result<Vec<BootstrapPeer>> {
    Ok(fetch_answer(config).await?.peers)
}

/// What the bootstrapper answered: the peers, and the asking node's zone when the
/// bootstrapper knows it (the `topology.kubernetes.io/zone` label of its Node, in
/// [`ZONE_HEADER`]; unchecked text, the caller validates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapAnswer {
    pub peers: Vec<BootstrapPeer>,
    pub zone: Option<String>,
}

/// [`fetch_peers`], with the zone the bootstrapper told.
pub async fn fetch_answer(config: &HttpBootstrapConfig) -> Result<BootstrapAnswer> {
    tokio::time::timeout(config.timeout, fetch(config))
        .await
        .map_err(|_| Error::Timeout(config.timeout))?
}

async fn fetch(config: &HttpBootstrapConfig) -> Result<BootstrapAnswer> {
    let url = &config.url;
    let host = url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let authority = url
        .authority()
        .map_or_else(|| host.to_owned(), ToString::to_string);
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| Error::Url {
        url: url.to_string(),
        reason: "has a host that is neither a DNS name nor an IP address",
    })?;

    let connector = TlsConnector::from(Arc::new(tls::client_config(&config.cert_dir)?));
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| Error::Connect {
            authority: authority.clone(),
            source,
        })?;
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(|source| Error::Handshake {
            authority: authority.clone(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;

    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(HOST, &authority)
        .header(ACCEPT, "application/json")
        .header(
            USER_AGENT,
            concat!("spegel-node/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|_| Error::Url {
            url: url.to_string(),
            reason: "cannot be requested",
        })?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Status(status));
        }
        let zone = response
            .headers()
            .get(ZONE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => Error::Http(*e),
                Err(_) => Error::TooLarge(MAX_ANSWER_BYTES),
            })?
            .to_bytes();
        let peers = parse_peers(&body, config.router_port)?;
        Ok(BootstrapAnswer { peers, zone })
    };

    // Drive the connection and the exchange together; dropping both closes the socket.
    let mut exchange = pin!(exchange);
    let mut connection = pin!(connection);
    tokio::select! {
        result = &mut exchange => result,
        ended = &mut connection => {
            if let Err(e) = &ended {
                debug!(error = %e, "bootstrap connection ended early");
            }
            exchange.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        for url in [
            "https://bootstrapper.example.com/bootstrap-nodes",
            "https://127.0.0.1:8443/v1/bootstrap-peers",
            "https://[::1]:8443/bootstrap-nodes",
        ] {
            assert!(
                HttpBootstrapConfig::new(url, "/certs", 5001).is_ok(),
                "{url}"
            );
        }
        for url in [
            "http://bootstrapper/bootstrap-nodes",
            "bootstrapper/bootstrap-nodes",
            "https:///bootstrap-nodes",
            "",
        ] {
            assert!(
                HttpBootstrapConfig::new(url, "/certs", 5001).is_err(),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_cert_dir_is_an_error_naming_the_file() {
        let config =
            HttpBootstrapConfig::new("https://127.0.0.1:1/bootstrap-nodes", "/nonexistent", 5001)
                .unwrap();
        let error = fetch_peers(&config).await.unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.crt"), "{error}");
    }
}
