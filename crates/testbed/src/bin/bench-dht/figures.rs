//! The figures of one run, as one JSON object (`--json`) or a short text summary.

use std::time::Duration;

use serde_json::{Value, json};
use spegel_routing::RouterStats;

use crate::Args;
use crate::hold::Held;
use crate::inventory::{Class, Inventory};
use crate::lookups::Lookup;

/// What a run measured besides the lookups.
pub struct Measured {
    pub join: Duration,
    pub not_bootstrapped: usize,
    pub announce: Duration,
    /// IP bytes every node together sent while announcing (noise, yamux and Kademlia,
    /// requests and answers, TCP/IP headers and ACKs).
    pub announce_bytes: u64,
    /// The byte count is this process's own (a private network namespace).
    pub private_netns: bool,
    /// Bytes every node together wrote to its connections while announcing (above TCP:
    /// pnet, Noise, yamux and the protocols; counted by the routers, on either transport).
    pub announce_connection_bytes: u64,
    /// Over the memory transport: no IP bytes, only connection bytes.
    pub memory: bool,
    /// How long the lookups took together.
    pub lookups_took: Duration,
    /// Routing-table walks the routers' timers started while announcing and while looking
    /// up: in one process they take CPU from the phase's own work.
    pub walks_announcing: u64,
    pub walks_looking_up: u64,
    /// The process's RSS and every node's counters after the lookups, before any hold.
    pub rss_bytes: u64,
    /// The process's peak RSS (`VmHWM`) and its pages in swap (`VmSwap`) at that moment.
    pub peak_rss_bytes: u64,
    pub swap_bytes: u64,
    pub stats: Vec<RouterStats>,
    /// What the nodes did during `--hold`, if there was one.
    pub held: Option<Held>,
}

/// The JSON object of one run.
pub fn figures(args: &Args, inventory: &Inventory, lookups: &[Lookup], m: &Measured) -> Value {
    let n = args.nodes;
    let sum = |f: &dyn Fn(&RouterStats) -> u64| m.stats.iter().map(f).sum::<u64>();
    let announcements = sum(&|s| s.announcements);
    let sends_per_announcement = args.dht.replication_factor.get().min(n - 1) as u64;
    let delivery = ratio(
        sum(&|s| s.add_providers_stored),
        announcements * sends_per_announcement,
    );
    let remote: Vec<&Lookup> = lookups.iter().filter(|l| !l.local).collect();
    let local: Vec<&Lookup> = lookups.iter().filter(|l| l.local).collect();
    let announce_requests = sum(&|s| s.announcement_requests);
    // The router re-announces each key 3/4 to 1 interval after the last time: 7/8 of it on
    // average (runs before `reannounce.rs` used the whole interval).
    let per_hour = 3600.0 / (args.republish_interval.as_secs_f64() * 0.875);
    let bytes = |v: Option<f64>| if m.memory { None } else { v };
    // Per node that announced (all of them unless `--announcing-nodes`).
    let announcing = args.announcing_nodes.unwrap_or(n);
    // IP bytes over TCP (as every published TCP figure); connection bytes over the memory
    // transport, which has no IP.
    let reprovide_bytes = if m.memory {
        m.announce_connection_bytes
    } else {
        m.announce_bytes
    };
    let reprovide = reprovide_bytes as f64 / announcing as f64 * per_hour;
    let classes: Vec<Value> = Class::ALL
        .iter()
        .map(|&class| {
            let of: Vec<&Lookup> = lookups.iter().filter(|l| l.class == class).collect();
            let remote: Vec<&Lookup> = of.iter().copied().filter(|l| !l.local).collect();
            json!({
                "holders": class.name(),
                "lookups": of.len(),
                "success_rate": success(&of),
                "remote_lookups": remote.len(),
                "remote_p50_ms": percentile_ms(&remote, 0.5),
                "requests_per_lookup": mean_requests(&of),
            })
        })
        .collect();
    json!({
        "nodes": n,
        "digests_per_node": args.digests_per_node,
        "announcing_nodes": announcing,
        "distinct_keys": inventory.distinct_keys(),
        "lookups": lookups.len(),
        "lookup_success_rate": success(&lookups.iter().collect::<Vec<_>>()),
        "remote_lookups": remote.len(),
        "remote_success_rate": success(&remote),
        "remote_p50_ms": percentile_ms(&remote, 0.5),
        "remote_p99_ms": percentile_ms(&remote, 0.99),
        "remote_max_ms": percentile_ms(&remote, 1.0),
        "remote_requests_per_lookup": mean_requests(&remote),
        "local_lookups": local.len(),
        "local_p50_ms": percentile_ms(&local, 0.5),
        "local_p99_ms": percentile_ms(&local, 0.99),
        "requests_per_lookup": mean_requests(&lookups.iter().collect::<Vec<_>>()),
        "by_holders": classes,
        "announcements": announcements,
        "announcements_timed_out": sum(&|s| s.announcements_timed_out),
        "announcements_refused": sum(&|s| s.announcements_refused),
        "records_refused": sum(&|s| s.records_refused),
        "requests_per_announcement": ratio(announce_requests, announcements),
        "sweeps": sum(&|s| s.sweeps),
        "sweep_walks": sum(&|s| s.sweep_walks),
        "batches_sent": sum(&|s| s.batches_sent),
        "batches_failed": sum(&|s| s.batches_failed),
        "batches_retried": sum(&|s| s.batches_retried),
        "batch_records_sent": sum(&|s| s.batch_records_sent),
        "batch_records_acknowledged": sum(&|s| s.batch_records_acknowledged),
        "provide_delivery_rate": delivery,
        "connections_per_node_max": m.stats.iter().map(|s| s.connections_peak).max(),
        "connections_per_node_peak_median": median(m.stats.iter().map(|s| s.connections_peak)),
        "connections_per_node_mean_end": ratio(sum(&|s| s.connections as u64), n as u64),
        "connections_denied": sum(&|s| s.connections_denied),
        "connections_closed_for_room": sum(&|s| s.connections_closed_for_room),
        "rss_mb_per_node": m.rss_bytes as f64 / 1e6 / n as f64,
        "peak_rss_mb_per_node": m.peak_rss_bytes as f64 / 1e6 / n as f64,
        "swap_mb_per_node": m.swap_bytes as f64 / 1e6 / n as f64,
        "transport": if m.memory { "memory" } else { "tcp" },
        "announce_bytes_per_key": bytes(ratio(m.announce_bytes, announcements)),
        "announce_bytes_per_request": bytes(ratio(m.announce_bytes, announce_requests)),
        "announce_connection_bytes_per_key": ratio(m.announce_connection_bytes, announcements),
        "reprovide_bytes_per_node_per_hour": reprovide,
        "reprovide_bytes_counted": if m.memory { "connection" } else { "ip" },
        "traffic_private_netns": m.private_netns,
        "connected_peers_per_node_mean_end": ratio(sum(&|s| s.connected_peers as u64), n as u64),
        "join_seconds": m.join.as_secs_f64(),
        "nodes_without_completed_bootstrap": m.not_bootstrapped,
        "announce_seconds": m.announce.as_secs_f64(),
        "lookups_seconds": m.lookups_took.as_secs_f64(),
        "walks_while_announcing": m.walks_announcing,
        "walks_while_looking_up": m.walks_looking_up,
        "hold": m.held.as_ref().map(|h| held(args, inventory, h)),
        "tuning": {
            "replication_factor": args.dht.replication_factor.get(),
            "query_parallelism": args.dht.query_parallelism.get(),
            "idle_connection_timeout_s": args.dht.idle_connection_timeout.as_secs_f64(),
            "stop_at_first_provider_answer": args.dht.stop_at_first_provider_answer,
            "republish_interval_s": args.republish_interval.as_secs_f64(),
            "provider_ttl_s": args.provider_ttl.as_secs_f64(),
            "bootstrap_interval_s": args.dht.bootstrap_interval.as_secs_f64(),
            "resolve_limit": args.limit,
            "seeds": args.seeds,
            "pnet": args.pre_shared_key.is_some(),
        },
    })
}

/// The figures of the hold: the background traffic as measured, beside the prediction
/// from one round of announcements (`reprovide_bytes_per_node_per_hour`).
fn held(args: &Args, inventory: &Inventory, h: &Held) -> Value {
    let n = args.nodes;
    let hours = h.duration.as_secs_f64() / 3600.0;
    let per_node_hour = |v: u64| v as f64 / n as f64 / hours;
    let g = &h.grew;
    let sends_per_announcement = args.dht.replication_factor.get().min(n - 1) as u64;
    let announcing = args.announcing_nodes.unwrap_or(n);
    let advertised = (0..announcing)
        .map(|i| inventory.keys_of(i).len())
        .sum::<usize>() as f64;
    // Once every key is on the schedule: one announcement per 7/8 of the interval.
    let steady = 3600.0 / (args.republish_interval.as_secs_f64() * 0.875);
    let sent = g.announcements * sends_per_announcement;
    json!({
        "seconds": h.duration.as_secs_f64(),
        "announcements": g.announcements,
        "announcements_timed_out": g.announcements_timed_out,
        "announcements_per_key_per_hour": g.announcements as f64 / advertised / hours,
        "announcements_per_key_per_hour_steady": steady,
        "requests_per_announcement": ratio(g.announcement_requests, g.announcements),
        "provide_delivery_rate": ratio(g.add_providers_stored, sent),
        "walks_per_node_per_hour": per_node_hour(g.walks),
        "sweeps": g.sweeps,
        "batches_failed": g.batches_failed,
        "requests_served_per_node_per_hour": per_node_hour(g.requests_served),
        "connections_closed_for_room": g.connections_closed_for_room,
        "connections_denied": g.connections_denied,
        "bytes_per_node_per_hour": h.bytes.map(per_node_hour),
        "connection_bytes_per_node_per_hour": per_node_hour(g.bytes_sent),
    })
}

/// A one-screen summary of the figures that matter most.
pub fn summary(f: &Value) -> String {
    let mut line = format!(
        "{} nodes × {} keys: lookups {} (remote {}), success {:.4}; remote p50 {:.2} ms, p99 {:.2} ms; \
         requests/lookup {:.2} (remote {:.2}); requests/announcement {:.1} ({} sweeps, {} walks, \
         {} batches, {} failed); delivery {:.4}; connections/node max {}; \
         RSS/node {:.2} MB; re-provide {:.0} KB/node/hour; join {:.1} s, announce {:.1} s, \
         lookups {:.1} s ({} walks meanwhile)",
        f["nodes"],
        f["digests_per_node"],
        f["lookups"],
        f["remote_lookups"],
        f["lookup_success_rate"].as_f64().unwrap_or(0.0),
        f["remote_p50_ms"].as_f64().unwrap_or(f64::NAN),
        f["remote_p99_ms"].as_f64().unwrap_or(f64::NAN),
        f["requests_per_lookup"].as_f64().unwrap_or(f64::NAN),
        f["remote_requests_per_lookup"].as_f64().unwrap_or(f64::NAN),
        f["requests_per_announcement"].as_f64().unwrap_or(f64::NAN),
        f["sweeps"],
        f["sweep_walks"],
        f["batches_sent"],
        f["batches_failed"],
        f["provide_delivery_rate"].as_f64().unwrap_or(f64::NAN),
        f["connections_per_node_max"],
        f["rss_mb_per_node"].as_f64().unwrap_or(f64::NAN),
        f["reprovide_bytes_per_node_per_hour"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e3,
        f["join_seconds"].as_f64().unwrap_or(0.0),
        f["announce_seconds"].as_f64().unwrap_or(0.0),
        f["lookups_seconds"].as_f64().unwrap_or(0.0),
        f["walks_while_looking_up"],
    );
    let hold = |name: &str| f["hold"][name].as_f64().unwrap_or(f64::NAN);
    if !f["hold"].is_null() {
        line += &format!(
            "; hold {:.0} s: {:.2} announcements/key/hour (steady {:.2}), delivery {:.4}, \
             {:.0} KB/node/hour",
            hold("seconds"),
            hold("announcements_per_key_per_hour"),
            hold("announcements_per_key_per_hour_steady"),
            hold("provide_delivery_rate"),
            f["hold"]["bytes_per_node_per_hour"]
                .as_f64()
                .unwrap_or(hold("connection_bytes_per_node_per_hour"))
                / 1e3,
        );
    }
    line
}

fn median(values: impl Iterator<Item = usize>) -> Option<usize> {
    let mut values: Vec<usize> = values.collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn success(lookups: &[&Lookup]) -> Option<f64> {
    ratio(
        lookups.iter().filter(|l| l.found).count() as u64,
        lookups.len() as u64,
    )
}

fn mean_requests(lookups: &[&Lookup]) -> Option<f64> {
    ratio(
        lookups.iter().map(|l| l.requests).sum(),
        lookups.len() as u64,
    )
}

/// The `p` quantile of the lookups' latencies in ms (nearest rank); `None` when empty.
fn percentile_ms(lookups: &[&Lookup], p: f64) -> Option<f64> {
    let mut ms: Vec<f64> = lookups
        .iter()
        .map(|l| l.latency.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let rank = ((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len().max(1));
    ms.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(ms: u64) -> Lookup {
        Lookup {
            class: Class::Unique,
            local: false,
            found: true,
            latency: Duration::from_millis(ms),
            requests: 3,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let all: Vec<Lookup> = (1..=100).map(lookup).collect();
        let refs: Vec<&Lookup> = all.iter().collect();
        assert_eq!(percentile_ms(&refs, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&refs, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&refs, 1.0), Some(100.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }
}
