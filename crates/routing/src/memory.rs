//! libp2p's in-process memory transport with the same noise and yamux upgrades as TCP, for
//! routers started with [`crate::RouterConfig::in_memory`]; a transport that never connects
//! for every other router, so a production swarm cannot reach `/memory` addresses.

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport, Transport, dummy::DummyTransport, upgrade};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, noise, yamux};

/// The memory transport when `enabled`, else one that refuses every dial and listen.
pub(crate) fn transport(
    key: &Keypair,
    enabled: bool,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    if !enabled {
        return Ok(DummyTransport::new().boxed());
    }
    Ok(MemoryTransport::default()
        .upgrade(upgrade::Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// A fresh memory address (port 0: the transport picks one).
pub(crate) fn listen_addr() -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(0))
}

/// Whether `addr` is a memory-transport address.
pub(crate) fn is_memory(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::Memory(_)))
}
