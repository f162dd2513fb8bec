//! Errors of the routing layer.

use std::path::PathBuf;

/// Result of a routing operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the router could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity file exists but cannot be read or decoded.
    #[error("identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    /// The libp2p transport could not be built or could not listen.
    #[error("cannot listen on router address {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// A bootstrap peer address is not understood.
    #[error(
        "bootstrap peer {0:?} is not an address: use IP:PORT, HOST:PORT or a multiaddr such as /ip4/10.0.0.1/tcp/5001[/p2p/<peer id>]"
    )]
    BadPeerAddress(String),
    /// A bootstrap source failed to produce peers.
    #[error("bootstrap source failed: {0}")]
    Bootstrap(String),
    /// The router task has stopped (shutdown).
    #[error("the router has stopped")]
    Stopped,
}
