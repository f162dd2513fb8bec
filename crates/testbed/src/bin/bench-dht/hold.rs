//! The hold (`--hold`): after the lookups, every node keeps running and nobody asks
//! anything, for as long as given. What the nodes send meanwhile is the DHT's own
//! background traffic: re-announcements on the router's schedule, routing-table walks, and
//! the connections those open and close. It measures what `reprovide_bytes_per_node_per_hour`
//! otherwise only predicts from one round of announcements.

use std::time::{Duration, Instant};

use anyhow::Result;
use spegel_routing::RouterStats;

use crate::nodes::Nodes;

/// How often the hold says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The counters of every node together that the hold compares before and after.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub announcements: u64,
    pub announcements_timed_out: u64,
    pub announcement_requests: u64,
    pub add_providers_stored: u64,
    pub requests_served: u64,
    pub walks: u64,
    pub sweeps: u64,
    pub batches_failed: u64,
    pub connections_closed_for_room: u64,
    pub connections_denied: u64,
    /// Bytes written to connections (above TCP; over the memory transport too).
    pub bytes_sent: u64,
}

impl Totals {
    /// Every node's counters added up.
    pub fn of(stats: &[RouterStats]) -> Totals {
        let sum = |f: fn(&RouterStats) -> u64| stats.iter().map(f).sum();
        Totals {
            announcements: sum(|s| s.announcements),
            announcements_timed_out: sum(|s| s.announcements_timed_out),
            announcement_requests: sum(|s| s.announcement_requests),
            add_providers_stored: sum(|s| s.add_providers_stored),
            requests_served: sum(|s| s.requests_served),
            walks: sum(|s| s.walks),
            sweeps: sum(|s| s.sweeps),
            batches_failed: sum(|s| s.batches_failed),
            connections_closed_for_room: sum(|s| s.connections_closed_for_room),
            connections_denied: sum(|s| s.connections_denied),
            bytes_sent: sum(|s| s.bytes_sent),
        }
    }

    /// What grew from `before` to `self` (the counters only grow; a smaller one reads 0).
    pub fn since(self, before: Totals) -> Totals {
        let grew = |now: u64, then: u64| now.saturating_sub(then);
        Totals {
            announcements: grew(self.announcements, before.announcements),
            announcements_timed_out: grew(
                self.announcements_timed_out,
                before.announcements_timed_out,
            ),
            announcement_requests: grew(self.announcement_requests, before.announcement_requests),
            add_providers_stored: grew(self.add_providers_stored, before.add_providers_stored),
            requests_served: grew(self.requests_served, before.requests_served),
            walks: grew(self.walks, before.walks),
            sweeps: grew(self.sweeps, before.sweeps),
            batches_failed: grew(self.batches_failed, before.batches_failed),
            connections_closed_for_room: grew(
                self.connections_closed_for_room,
                before.connections_closed_for_room,
            ),
            connections_denied: grew(self.connections_denied, before.connections_denied),
            bytes_sent: grew(self.bytes_sent, before.bytes_sent),
        }
    }
}

/// What the nodes did during the hold.
pub struct Held {
    pub duration: Duration,
    /// Counters of every node together that grew during the hold.
    pub grew: Totals,
    /// IP bytes sent meanwhile (`None` over the memory transport).
    pub bytes: Option<u64>,
}

/// Keeps every node running for `duration` without asking anything, and counts from
/// `before` (the counters when the lookups ended). `bytes_sent` reads the network
/// namespace's byte counter (`None`: not counted).
pub async fn hold(
    nodes: &Nodes,
    before: Totals,
    duration: Duration,
    bytes_sent: impl Fn() -> Result<Option<u64>>,
) -> Result<Held> {
    let started = Instant::now();
    let bytes_before = bytes_sent()?;
    let end = started + duration;
    while Instant::now() < end {
        let wait = PROGRESS_EVERY.min(end.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        let grew = Totals::of(&nodes.stats().await?).since(before);
        eprintln!(
            "holding: {} announcements ({} timed out), {} walks after {:.0?}",
            grew.announcements,
            grew.announcements_timed_out,
            grew.walks,
            started.elapsed()
        );
    }
    let grew = Totals::of(&nodes.stats().await?).since(before);
    let bytes = match (bytes_before, bytes_sent()?) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(Held {
        duration: started.elapsed(),
        grew,
        bytes,
    })
}
