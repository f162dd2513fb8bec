//! [`RouterStats`]: counters of what the DHT did on this node, for the scale benchmark and
//! for operators who want to know what a lookup or an announcement costs.

use std::collections::HashMap;

use libp2p::kad::{self, QueryId, QueryResult};

/// What this node's DHT did since it started. Counters only grow, except `connections`,
/// `connected_peers` and `announcements_pending`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// True once the first bootstrap completed (announcements from then on reach peers).
    pub joined: bool,
    /// Connections open now, and the most open at once (two peers may hold more than one
    /// connection between them, e.g. when both dialled at the same time).
    pub connections: usize,
    pub connections_peak: usize,
    /// Distinct peers connected now.
    pub connected_peers: usize,
    /// Connections (inbound and outbound) refused because a connection limit was reached.
    pub connections_denied: u64,
    /// Quiet connections this node closed to stay under its connection limits.
    pub connections_closed_for_room: u64,
    /// Provider lookups that ended, split by whether this node's own store held a provider
    /// record for the key when the lookup started (`local`) or not (`remote`), and the
    /// requests they sent to peers.
    pub local_lookups: u64,
    pub local_lookup_requests: u64,
    pub remote_lookups: u64,
    pub remote_lookup_requests: u64,
    /// Announcements of one key (first ones and the router's re-announcements) that
    /// ended, those that timed out, and the requests they sent (closest-peer requests plus
    /// one ADD_PROVIDER per peer that should store the record).
    pub announcements: u64,
    pub announcements_timed_out: u64,
    pub announcement_requests: u64,
    /// Re-announcement sweeps started (many keys announced with a few walks, see
    /// `swarm/sweep.rs`), the walks they made, the provider batches they sent, those
    /// that failed (their keys are then announced one by one) and those sent again (their
    /// connection closed or they timed out), the records those batches
    /// carried and those peers said they kept. A key a sweep places counts as one announcement
    /// when its batches are sent; walks and batches count as its `announcement_requests`. The
    /// keys of a batch that failed count again when they are announced one by one, so
    /// `announcements` counts attempts, not distinct keys.
    pub sweeps: u64,
    pub sweep_walks: u64,
    pub batches_sent: u64,
    pub batches_failed: u64,
    pub batches_retried: u64,
    pub batch_records_sent: u64,
    pub batch_records_acknowledged: u64,
    /// Announcements not ended yet: waiting for a slot, running, or to be made again after
    /// one failed.
    pub announcements_pending: u64,
    /// Keys this node could not announce because its own store refused them.
    pub announcements_refused: u64,
    /// ADD_PROVIDER messages from peers that this node's store accepted (a record for a key
    /// that already has the most providers a key keeps is accepted and not kept).
    pub add_providers_stored: u64,
    /// Provider records of peers this node's store refused: not a key spegel announces, or
    /// over a quota (per peer, in total).
    pub records_refused: u64,
    /// Requests from peers this node answered (find-node, get-providers, add-provider, ...).
    pub requests_served: u64,
    /// Routing-table walks the periodic timer started (not the first, on joining, nor
    /// those libp2p starts while the table holds fewer than 20 peers).
    pub walks: u64,
    /// Bytes this node wrote to its DHT connections: everything above TCP (pnet, Noise,
    /// yamux and every protocol's messages, handshakes included), not TCP/IP headers.
    pub bytes_sent: u64,
}

impl RouterStats {
    /// Counts what a Kademlia event says; `started_local` holds, for every provider query
    /// still running, whether our store held a record for its key when it started.
    pub(crate) fn observe(
        &mut self,
        event: &kad::Event,
        started_local: &mut HashMap<QueryId, bool>,
    ) {
        match event {
            kad::Event::InboundRequest { request } => {
                self.requests_served += 1;
                if matches!(request, kad::InboundRequest::AddProvider { .. }) {
                    self.add_providers_stored += 1;
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            } => match result {
                QueryResult::GetProviders(_) if step.last => {
                    let local = started_local.remove(id).unwrap_or(false);
                    self.lookup_ended(local, stats.num_requests());
                }
                QueryResult::StartProviding(done) | QueryResult::RepublishProvider(done) => {
                    self.announcement_ended(done.is_err(), stats.num_requests());
                }
                QueryResult::Bootstrap(Ok(done)) if done.num_remaining == 0 => {
                    self.joined = true;
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Counts a provider lookup that ended after sending `requests`.
    pub(crate) fn lookup_ended(&mut self, local: bool, requests: u32) {
        if local {
            self.local_lookups += 1;
            self.local_lookup_requests += u64::from(requests);
        } else {
            self.remote_lookups += 1;
            self.remote_lookup_requests += u64::from(requests);
        }
    }

    /// Counts an announcement that ended after sending `requests`.
    pub(crate) fn announcement_ended(&mut self, timed_out: bool, requests: u32) {
        self.announcements += 1;
        self.announcements_timed_out += u64::from(timed_out);
        self.announcement_requests += u64::from(requests);
    }

    /// Records how many connections are open now.
    pub(crate) fn connections_now(&mut self, open: usize, peers: usize) {
        self.connections = open;
        self.connected_peers = peers;
        self.connections_peak = self.connections_peak.max(open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_split_by_where_the_answer_could_come_from() {
        let mut stats = RouterStats::default();
        stats.lookup_ended(true, 0);
        stats.lookup_ended(false, 4);
        stats.lookup_ended(false, 6);
        assert_eq!((stats.local_lookups, stats.local_lookup_requests), (1, 0));
        assert_eq!(
            (stats.remote_lookups, stats.remote_lookup_requests),
            (2, 10)
        );
    }

    #[test]
    fn the_connection_peak_survives_connections_closing() {
        let mut stats = RouterStats::default();
        stats.connections_now(5, 5);
        stats.connections_now(2, 2);
        assert_eq!((stats.connections, stats.connections_peak), (2, 5));
    }
}
