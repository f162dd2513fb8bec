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
    /// Records that `peer` was heard from now. Returns the peer forgotten to make room, so
    /// whatever else is kept per peer can be forgotten with it.
    pub(crate) fn saw(&mut self, peer: PeerId) -> Option<PeerId> {
        let mut forgotten = None;
        if self.seen.len() >= MAX_REMEMBERED && !self.seen.contains_key(&peer) {
            forgotten = self.seen.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p);
            if let Some(oldest) = forgotten {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(peer, SystemTime::now());
        forgotten
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
        assert_eq!(seen.saw(first), None);
        for _ in 1..MAX_REMEMBERED {
            assert_eq!(seen.saw(PeerId::random()), None);
        }
        assert!(seen.get(&first).is_some());
        assert_eq!(seen.saw(first), None, "a known peer takes no room");
        let last = PeerId::random();
        let forgotten = seen.saw(last);
        assert_eq!(seen.peers().count(), MAX_REMEMBERED);
        assert!(seen.get(&last).is_some());
        assert_ne!(
            forgotten,
            Some(first),
            "the peer just heard from again is kept"
        );
        assert!(forgotten.is_some_and(|p| seen.get(&p).is_none()));
        assert!(seen.get(&first).is_some());
    }
}
