//! The swarm task's answer to [`Command::Peers`](super::Command::Peers): every peer it knows,
//! with where its registry answers and when it was last heard from.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use libp2p::PeerId;
use libp2p::identify;
use libp2p::swarm::SwarmEvent;

use super::{BehaviourEvent, Task};
use crate::PeerSummary;

impl Task {
    /// Every peer connected now or heard from before, sorted by ID.
    pub(super) fn peer_summaries(&self) -> Vec<PeerSummary> {
        let known: BTreeSet<PeerId> = self
            .swarm
            .connected_peers()
            .chain(self.last_seen.peers())
            .copied()
            .collect();
        known
            .into_iter()
            .map(|id| {
                let info = self.peers.get(&id);
                let registry = info.and_then(|i| Some(SocketAddr::new(i.ip?, i.registry_port?)));
                PeerSummary {
                    id,
                    registry,
                    connected: self.swarm.is_connected(&id),
                    last_seen: self.last_seen.get(&id),
                }
            })
            .collect()
    }
}

/// The peer an event shows is alive (or just went away), for [`crate::peers::LastSeen`].
pub(super) fn heard_from(event: &SwarmEvent<BehaviourEvent>) -> Option<PeerId> {
    match event {
        SwarmEvent::ConnectionEstablished { peer_id, .. }
        | SwarmEvent::ConnectionClosed { peer_id, .. }
        | SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            ..
        })) => Some(*peer_id),
        _ => None,
    }
}
