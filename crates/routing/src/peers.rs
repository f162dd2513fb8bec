//! [`PeerSummary`]: what this node knows of each peer, for an operator's view (the debug
//! page), and [`LastSeen`], the bounded record of when each peer was last heard from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use libp2p::PeerId;

/// Peers whose last contact is remembered at most; past it the longest-silent is forgotten.
const MAX_REMEMBERED: usize = 4096;

/// One peer as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    pub id: PeerId,
    /// Where its registry answers (the IP it connected from and the port it announced),
    /// once identify told us the port.
    pub registry: Option<SocketAddr>,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// When a connection to it opened or closed, or it identified itself, last.
    pub last_seen: Option<SystemTime>,
}

/// When each peer was last heard from, for at most [`MAX_REMEMBERED`] peers.
#[derive(Default)]
pub(crate) struct LastSeen {
    seen: HashMap<PeerId, SystemTime>,
}

impl LastSeen {
    /// Records that `peer` was heard from now.
    pub(crate) fn saw(&mut self, peer: PeerId) {
        if self.seen.len() >= MAX_REMEMBERED && !self.seen.contains_key(&peer) {
            let oldest = self.seen.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(peer, SystemTime::now());
    }

    /// When `peer` was last heard from.
    pub(crate) fn get(&self, peer: &PeerId) -> Option<SystemTime> {
        self.seen.get(peer).copied()
    }

    /// Every peer heard from.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.seen.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_silent_peer_is_forgotten_past_the_bound() {
        let mut seen = LastSeen::default();
        let first = PeerId::random();
        seen.saw(first);
        for _ in 1..MAX_REMEMBERED {
            seen.saw(PeerId::random());
        }
        assert!(seen.get(&first).is_some());
        let last = PeerId::random();
        seen.saw(last);
        assert_eq!(seen.peers().count(), MAX_REMEMBERED);
        assert!(seen.get(&last).is_some());
        assert!(seen.get(&first).is_none());
    }
}
