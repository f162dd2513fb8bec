//! Zones: which peers share this node's zone, so the mirror fetches inside the zone and
//! crosses a zone boundary only when no peer in it answers.
//!
//! - A node's own zone ([`LocalZone`]) comes from `--zone`, else from the bootstrapper (the
//!   `topology.kubernetes.io/zone` label of the node's Node, known once kubelet registered
//!   it), so it can arrive after start; until then the node has none and ranks no peer by
//!   zone.
//! - Peers say their zone in [`ZONE_HEADER`] on every answer to a peer. The mirror remembers
//!   it per peer ([`PeerZones`], bounded) from every response it gets, and before it picks a
//!   provider whose zone it does not know yet it asks that provider (`HEAD /v2/`, answered
//!   from the peer's own registry, no content read): one round trip inside the cluster, once
//!   per peer.
//! - The DHT is not involved: a provider record names a peer, not its zone, and a peer's zone
//!   can change only with the Node's label.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use spegel_routing::PeerId;
use tokio::sync::watch;

/// The header a node names its zone in, on every answer to a peer.
pub const ZONE_HEADER: &str = "x-spegel-zone";

/// Peers whose zone is remembered; past this, one remembered peer is forgotten per new one.
const MAX_PEERS: usize = 4096;

/// A zone name: a Kubernetes label value (1-63 characters, letters, digits, `-`, `_`, `.`,
/// beginning and ending with a letter or digit), e.g. `eu-west-1a`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Zone(String);

impl Zone {
    /// Checks `name` as a label value; the error says what is wrong with it.
    pub fn parse(name: &str) -> Result<Zone, String> {
        let alnum = |c: char| c.is_ascii_alphanumeric();
        let allowed = |c: char| alnum(c) || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.len() > 63 {
            return Err(format!(
                "zone {name:?} must have 1 to 63 characters (a Kubernetes label value)"
            ));
        }
        let edges_ok = name.starts_with(alnum) && name.ends_with(alnum);
        if !edges_ok || !name.chars().all(allowed) {
            return Err(format!(
                "zone {name:?} must be letters, digits, '-', '_' and '.', beginning and ending with a letter or digit (a Kubernetes label value)"
            ));
        }
        Ok(Zone(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The zone a peer names in `headers`, if it names a valid one.
    fn from_headers(headers: &HeaderMap) -> Option<Zone> {
        let value = headers.get(ZONE_HEADER)?.to_str().ok()?;
        Zone::parse(value).ok()
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// This node's zone, settable while the node runs (the bootstrapper may tell it late).
/// Cheap to clone; every clone sees the same zone.
#[derive(Clone)]
pub struct LocalZone(Arc<watch::Sender<Option<Zone>>>);

impl Default for LocalZone {
    fn default() -> LocalZone {
        LocalZone(Arc::new(watch::Sender::new(None)))
    }
}

impl std::fmt::Debug for LocalZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalZone({:?})", self.get())
    }
}

impl LocalZone {
    /// A node in `zone` from the start.
    pub fn fixed(zone: Zone) -> LocalZone {
        LocalZone(Arc::new(watch::Sender::new(Some(zone))))
    }

    /// The zone now (`None`: not known).
    pub fn get(&self) -> Option<Zone> {
        self.0.borrow().clone()
    }

    /// Sets the zone; true when it changed.
    pub fn set(&self, zone: Zone) -> bool {
        self.0.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&zone);
            *current = Some(zone);
            changed
        })
    }
}

/// Where a peer is, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    /// Both zones are known and equal.
    Same,
    /// This node or the peer has no known zone.
    Unknown,
    /// Both zones are known and differ.
    Other,
}

impl Relation {
    /// The metrics label value.
    pub fn label(self) -> spegel_metrics::ZoneRelation {
        match self {
            Relation::Same => spegel_metrics::ZoneRelation::same,
            Relation::Unknown => spegel_metrics::ZoneRelation::unknown,
            Relation::Other => spegel_metrics::ZoneRelation::other,
        }
    }
}

/// The zones peers named in their answers, bounded.
#[derive(Clone, Default)]
pub struct PeerZones {
    local: LocalZone,
    /// What each peer said last: its zone, or `None` when it named none.
    peers: Arc<Mutex<HashMap<PeerId, Option<Zone>>>>,
}

impl PeerZones {
    pub fn new(local: LocalZone) -> PeerZones {
        PeerZones {
            local,
            peers: Arc::default(),
        }
    }

    /// This node's zone.
    pub fn local(&self) -> &LocalZone {
        &self.local
    }

    /// Remembers the zone `peer` named in `headers`, or that it named none.
    pub fn learn(&self, peer: PeerId, headers: &HeaderMap) {
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        if peers.len() >= MAX_PEERS
            && !peers.contains_key(&peer)
            && let Some(evicted) = peers.keys().next().copied()
        {
            peers.remove(&evicted);
        }
        peers.insert(peer, Zone::from_headers(headers));
    }

    /// The zone `peer` last named, if any.
    pub fn zone_of(&self, peer: &PeerId) -> Option<Zone> {
        self.peers.lock().ok()?.get(peer).cloned().flatten()
    }

    /// Whether asking `peer` for its zone would tell this node anything: it has a zone, and
    /// has not heard from `peer` yet.
    pub fn worth_asking(&self, peer: &PeerId) -> bool {
        self.local.get().is_some()
            && self
                .peers
                .lock()
                .is_ok_and(|peers| !peers.contains_key(peer))
    }

    /// Where `peer` is relative to this node.
    pub fn relation(&self, peer: &PeerId) -> Relation {
        match (self.local.get(), self.zone_of(peer)) {
            (Some(local), Some(theirs)) if local == theirs => Relation::Same,
            (Some(_), Some(_)) => Relation::Other,
            _ => Relation::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(zone: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(zone) = zone {
            headers.insert(ZONE_HEADER, HeaderValue::from_str(zone).unwrap());
        }
        headers
    }

    #[test]
    fn zones_are_kubernetes_label_values() {
        for good in ["a", "eu-west-1a", "zone_1.b", "Z9", &"x".repeat(63)] {
            assert_eq!(Zone::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "-a", "a-", ".a", "a b", "zöne", "a/b", &"x".repeat(64)] {
            let e = Zone::parse(bad).unwrap_err();
            assert!(e.contains("label value"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_local_zone_can_arrive_late_and_says_when_it_changed() {
        let local = LocalZone::default();
        assert_eq!(local.get(), None);
        let a = Zone::parse("a").unwrap();
        assert!(local.set(a.clone()));
        assert!(!local.set(a.clone()));
        assert_eq!(local.clone().get(), Some(a));
    }

    #[test]
    fn peers_are_same_other_or_unknown_by_what_they_said_last() {
        let local = LocalZone::default();
        let zones = PeerZones::new(local.clone());
        let (near, far, silent) = (PeerId::random(), PeerId::random(), PeerId::random());
        zones.learn(near, &headers(Some("a")));
        zones.learn(far, &headers(Some("b")));
        zones.learn(silent, &headers(Some("not a zone!")));
        // This node has no zone yet: nobody is near or far.
        assert_eq!(zones.relation(&near), Relation::Unknown);
        assert!(!zones.worth_asking(&PeerId::random()));

        local.set(Zone::parse("a").unwrap());
        assert_eq!(zones.relation(&near), Relation::Same);
        assert_eq!(zones.relation(&far), Relation::Other);
        assert_eq!(zones.relation(&silent), Relation::Unknown);
        assert!(!zones.worth_asking(&silent), "it answered, without a zone");
        assert!(!zones.worth_asking(&near));
        assert!(zones.worth_asking(&PeerId::random()));

        // A peer that moved (its Node was relabelled), and one that stopped saying.
        zones.learn(far, &headers(Some("a")));
        zones.learn(near, &headers(None));
        assert_eq!(zones.relation(&far), Relation::Same);
        assert_eq!(zones.relation(&near), Relation::Unknown);
    }

    #[test]
    fn remembered_peers_are_bounded() {
        let zones = PeerZones::new(LocalZone::fixed(Zone::parse("a").unwrap()));
        for _ in 0..MAX_PEERS + 10 {
            zones.learn(PeerId::random(), &headers(Some("b")));
        }
        assert_eq!(zones.peers.lock().unwrap().len(), MAX_PEERS);
    }
}
