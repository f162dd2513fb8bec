//! [`DhtTuning`]: the Kademlia knobs the scale benchmark (`bench-dht`, `docs/scale.md`)
//! measured, in one place, with the values the measurements chose as defaults.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::kad;

/// How the DHT replicates records, runs queries and keeps connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtTuning {
    /// How many of the closest peers store each provider record (Kademlia's k for records;
    /// the routing table's bucket size stays libp2p's 20).
    pub replication_factor: NonZeroUsize,
    /// How many requests a lookup keeps in flight (Kademlia's α).
    pub query_parallelism: NonZeroUsize,
    /// The longest a whole query (lookup, announcement, bootstrap) may take.
    pub query_timeout: Duration,
    /// How often a node walks the DHT again to refresh its routing table (Kademlia's
    /// periodic bootstrap: a lookup of its own ID, then one per bucket farther out).
    pub bootstrap_interval: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_connection_timeout: Duration,
    /// End a provider lookup after the first answer that names providers, instead of
    /// walking on to the closest peers: every holder of the record answers with all the
    /// providers it knows, so walking on mostly finds the same providers again.
    pub stop_at_first_provider_answer: bool,
    /// Connections a node holds at most, in total and inbound (the rest of the total stays
    /// for our own lookups). Past these, new connections are refused; from 7/8 of them on,
    /// the connections quiet for `quiet_before_closing` are closed to make room.
    pub max_connections: usize,
    pub max_inbound_connections: usize,
    /// A connection used this recently is never closed to make room.
    pub quiet_before_closing: Duration,
}

impl Default for DhtTuning {
    fn default() -> DhtTuning {
        DhtTuning {
            replication_factor: kad::K_VALUE,
            query_parallelism: NonZeroUsize::MIN.saturating_add(1),
            query_timeout: Duration::from_secs(30),
            // libp2p's default.
            bootstrap_interval: Duration::from_secs(5 * 60),
            // 300 s, not 30: at N = 200 announcing took two thirds of the time and the remote
            // lookup p99 a fifth, because walks reuse connections instead of handshaking
            // again (docs/scale.md). What it costs is bounded by `max_connections`: a full
            // table kept spegel-node at 47 MB peak RSS (tests/dht_floods.rs).
            idle_connection_timeout: Duration::from_secs(300),
            stop_at_first_provider_answer: true,
            max_connections: 512,
            max_inbound_connections: 384,
            quiet_before_closing: Duration::from_secs(10),
        }
    }
}

impl DhtTuning {
    /// Applies the query settings to a Kademlia config.
    pub(crate) fn apply(&self, config: &mut kad::Config) {
        config
            .set_replication_factor(self.replication_factor)
            .set_parallelism(self.query_parallelism)
            .set_query_timeout(self.query_timeout)
            .set_periodic_bootstrap_interval(Some(self.bootstrap_interval));
    }
}
