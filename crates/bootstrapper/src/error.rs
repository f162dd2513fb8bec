//! The bootstrapper's errors; [`Error::is_bad_config`] decides the exit code.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of the bootstrapper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag whose value cannot work; the operator must fix it.
    #[error("{flag}: {problem}")]
    Config { flag: &'static str, problem: String },
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot find Kubernetes credentials: not running in a cluster ({in_cluster}) and no usable kubeconfig ({kubeconfig}); pass --kubeconfig"
    )]
    NoCredentials {
        in_cluster: kube::config::InClusterError,
        kubeconfig: kube::config::KubeconfigError,
    },
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] spegel_bootstrap::Error),
    #[error("cannot build the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the logger: {0}")]
    Logging(String),
}

impl Error {
    /// Whether the operator must change the configuration (exit code 64) rather than the
    /// environment being at fault.
    pub fn is_bad_config(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::Kubeconfig { .. }
                | Error::NoCredentials { .. }
                | Error::Tls(_)
                | Error::Logging(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
