//! The HTTP bootstrap protocol between `spegel-node` and `spegel-bootstrapper`.
//!
//! Owns, for both sides:
//! - the wire format ([`wire`]): `GET /bootstrap-nodes` answers a JSON array of IP strings
//!   (the Gardener PoC shape); `GET /v1/bootstrap-peers` answers a JSON array of
//!   `{"ID": "<optional peer id>", "Addrs": ["/ip4/…/tcp/5001"]}` (upstream Spegel's shape);
//! - loading PEM certificates and keys into rustls configurations ([`tls`]): the
//!   bootstrapper's server config (client certificates required) and the node's client config
//!   from a cert dir holding `ca.crt`, `tls.crt`, `tls.key`;
//! - the node's client ([`fetch_peers`]), which accepts either shape;
//! - the capped exponential [`Backoff`] the node retries with.
//!
//! Peers are plain strings here: this crate must never depend on libp2p (the node parses
//! multiaddrs and peer IDs), and must never call the Kubernetes API.

mod backoff;
mod client;
mod error;
pub mod tls;
pub mod wire;

pub use backoff::Backoff;
pub use client::{
    BootstrapAnswer, DEFAULT_TIMEOUT, HttpBootstrapConfig, fetch_answer, fetch_peers,
};
pub use error::{Error, Result};
pub use wire::{
    BOOTSTRAP_NODES_PATH, BOOTSTRAP_PEERS_PATH, BootstrapPeer, ZONE_HEADER, multiaddr, parse_peers,
};
