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
    /// periodic bootstrap: a lookup of its own ID, then one per bucket farther out), on
    /// average: each wait is drawn from 3/4 to 5/4 of it (see [`next_walk_in`]).
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
    /// Applies the query settings to a Kademlia config. Its periodic bootstrap is turned
    /// off: the router walks on its own timer ([`next_walk_in`]).
    pub(crate) fn apply(&self, config: &mut kad::Config) {
        config
            .set_replication_factor(self.replication_factor)
            .set_parallelism(self.query_parallelism)
            .set_query_timeout(self.query_timeout)
            .set_periodic_bootstrap_interval(None);
    }
}

/// How long to wait before the next routing-table walk: `bootstrap_interval` times a random
/// factor from 3/4 to 5/4. libp2p's own timer waits exactly the interval, so nodes started
/// together (a new cluster, a fleet-wide restart, a benchmark's batch) walk together
/// forever, and every node takes their requests and handshakes at the same moment. With the
/// spread their walks drift apart within a few rounds; the mean, and so the traffic per
/// hour, stays the interval's.
pub(crate) fn next_walk_in(bootstrap_interval: Duration) -> Duration {
    spread(bootstrap_interval, random_fraction())
}

/// `interval` times a factor from 3/4 (`fraction` 0) to 5/4 (`fraction` 1).
fn spread(interval: Duration, fraction: f64) -> Duration {
    interval.mul_f64(0.75 + 0.5 * fraction.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs from call to call and from process to process: std's
/// per-process random hash keys (advanced on each `RandomState::new`) are enough to spread
/// timers, and spare a dependency.
pub(crate) fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits, as an f64 mantissa.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_are_spread_from_three_quarters_to_five_quarters_of_the_interval() {
        let interval = Duration::from_secs(400);
        assert_eq!(spread(interval, 0.0), Duration::from_secs(300));
        assert_eq!(spread(interval, 0.5), interval);
        assert_eq!(spread(interval, 1.0), Duration::from_secs(500));
        assert_eq!(spread(interval, 7.0), Duration::from_secs(500));

        let waits: Vec<Duration> = (0..200).map(|_| next_walk_in(interval)).collect();
        assert!(
            waits
                .iter()
                .all(|w| (Duration::from_secs(300)..Duration::from_secs(500)).contains(w))
        );
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 150,
            "the waits vary: {} distinct",
            distinct.len()
        );
        let mean = waits.iter().sum::<Duration>() / 200;
        assert!(
            (Duration::from_secs(370)..Duration::from_secs(430)).contains(&mean),
            "the mean stays near the interval: {mean:?}"
        );
    }
}
