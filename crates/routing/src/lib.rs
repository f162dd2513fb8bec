//! spegel's content routing: which peers hold a key.
//!
//! A libp2p Kademlia DHT (TCP + optional `pnet` pre-shared key + Noise + yamux, see
//! [`transport`]; protocol `/spegel/kad/1.0.0`, server mode, tuned by [`DhtTuning`]) plus
//! identify. One task owns the `Swarm` ([`swarm`]) and is driven by commands from cheap
//! [`Router`] handles: advertise and withdraw [`Key`]s, resolve a key to [`Provider`]s (peers'
//! registry addresses, never our own), and report how many peers we know and who they are
//! ([`PeerSummary`]).
//!
//! Bootstrap peers come from a [`Bootstrap`] source (static list, DNS, or any other the caller
//! implements, such as the HTTP/mTLS bootstrapper); the router dials them, retries with capped
//! backoff while it knows no peer, and refreshes periodically.
//!
//! This crate knows nothing of containerd or HTTP registries beyond the registry port a peer
//! announces; it never calls them.

mod addrs;
mod bootstrap;
mod error;
mod identity;
mod key;
mod peers;
mod router;
mod stats;
mod store;
mod swarm;
mod transport;
mod tuning;

pub use bootstrap::{
    Bootstrap, BootstrapPeer, DnsBootstrap, PeersFuture, StaticBootstrap, parse_peer_addr,
};
pub use error::{Error, Result};
pub use identity::load_or_create_identity;
pub use key::Key;
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use peers::PeerSummary;
pub use router::{Provider, Router, RouterConfig};
pub use stats::RouterStats;
pub use transport::psk_fingerprint;
pub use tuning::DhtTuning;
