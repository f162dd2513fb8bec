//! Everything that can go wrong loading TLS material or asking the bootstrapper.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of the bootstrap protocol, on either side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the client CA bundle cannot verify clients: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("bootstrap URL {url:?} {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to the bootstrapper at {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with the bootstrapper at {authority} failed: {source}")]
    Handshake {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with the bootstrapper failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the bootstrapper answered {0}")]
    Status(http::StatusCode),
    #[error("the bootstrapper's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the bootstrapper's answer is neither a list of IPs nor of peers: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the bootstrapper did not answer within {0:?}")]
    Timeout(Duration),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
