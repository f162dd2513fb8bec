//! [`TransferMetrics`]: where the bytes containerd receives come from, and how the
//! cluster-wide single flight for cold pulls ends. Names are new (Spegel has no such
//! metrics) and documented in docs/operator-guide.md.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Where the bytes of a response to this node's containerd came from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Source {
    /// This node's content store.
    local,
    /// A peer that held the blob complete.
    peer,
    /// A peer whose containerd was still downloading it.
    peer_in_flight,
}

/// How one cold miss for a blob ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FlightOutcome {
    /// This node was elected to fetch the blob: its containerd got a 404 and went upstream.
    owner,
    /// The elected nodes ahead of this one did not start; this node took over.
    takeover,
    /// The request was held and then streamed from a peer's download.
    followed,
    /// Nobody could serve it within the hold: answered 404 (containerd goes upstream).
    gave_up,
    /// A stream from peers broke with nobody to resume from; containerd's `Range` retry was
    /// answered 404 so it continued from the upstream.
    cut,
}

/// Where a peer that sent bytes is, seen from this node's zone.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ZoneRelation {
    /// The peer is in this node's zone.
    same,
    /// The peer is in another zone: these bytes crossed a zone boundary.
    other,
    /// This node or the peer has no known zone.
    unknown,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: ZoneRelation,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: FlightOutcome,
}

/// Bytes by source and single-flight outcomes.
#[derive(Debug, Default)]
pub struct TransferMetrics {
    bytes: Family<SourceLabels, Counter>,
    flights: Family<OutcomeLabels, Counter>,
    zones: Family<ZoneLabels, Counter>,
}

impl TransferMetrics {
    pub(crate) fn register(registry: &mut Registry) -> TransferMetrics {
        let metrics = TransferMetrics::default();
        registry.register(
            "spegel_served_bytes",
            "Blob bytes sent to this node's containerd, by where they came from (local, peer, peer_in_flight)",
            metrics.bytes.clone(),
        );
        registry.register(
            "spegel_single_flight",
            "Cold misses for blobs nobody held complete, by how they ended (owner, takeover, followed, gave_up, cut)",
            metrics.flights.clone(),
        );
        registry.register(
            "spegel_peer_bytes",
            "Blob bytes received from peers, by where the peer is (zone: same, other, unknown)",
            metrics.zones.clone(),
        );
        metrics
    }

    /// Counts `n` bytes received from a peer in `zone` relative to this node.
    pub fn from_peer(&self, zone: ZoneRelation, n: u64) {
        self.zones.get_or_create(&ZoneLabels { zone }).inc_by(n);
    }

    /// Counts `n` bytes sent to containerd from `source`.
    pub fn served(&self, source: Source, n: u64) {
        self.bytes.get_or_create(&SourceLabels { source }).inc_by(n);
    }

    /// Counts one single-flight outcome.
    pub fn flight(&self, outcome: FlightOutcome) {
        self.flights.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
