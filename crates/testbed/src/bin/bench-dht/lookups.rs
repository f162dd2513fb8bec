//! The lookups: one at a time, each from a node that does not hold the key, timed until
//! the first provider arrives, and counted until its Kademlia query has ended.

use std::time::{Duration, Instant};

use anyhow::Result;
use spegel_routing::{Router, RouterStats};

use crate::Args;
use crate::inventory::{Class, Inventory, Rng};

/// How long a lookup may take before it counts as failed (spegel-node gives up after its
/// resolve timeout; this is far longer, to see slow lookups instead of cutting them off).
const LOOKUP_DEADLINE: Duration = Duration::from_secs(10);

/// One lookup's outcome.
pub struct Lookup {
    pub class: Class,
    /// The asker's store held a provider record for the key when the lookup started.
    pub local: bool,
    /// A node that holds the key was returned first.
    pub found: bool,
    /// Until the first provider (or the deadline when none came).
    pub latency: Duration,
    /// Requests the asker's query sent before it ended.
    pub requests: u64,
}

/// Runs `--lookups` lookups, cycling through the classes.
pub async fn run(args: &Args, routers: &[Router], inventory: &Inventory) -> Result<Vec<Lookup>> {
    let mut rng = Rng::new(args.seed);
    let mut lookups: Vec<Lookup> = Vec::with_capacity(args.lookups);
    let phase = Instant::now();
    for n in 0..args.lookups {
        if n > 0 && n % 50 == 0 {
            let failed = lookups.iter().filter(|l| !l.found).count();
            eprintln!(
                "lookups: {n} of {} done, {failed} failed, after {:.0?}",
                args.lookups,
                phase.elapsed()
            );
        }
        let class = Class::ALL[n % Class::ALL.len()];
        // A key some announcing node holds, and those of its holders that announced it.
        let announcing = args.announcing_nodes.unwrap_or(routers.len());
        let (key, holders) = loop {
            let (key, mut holders) = inventory.key_of_class(class, rng.below(usize::MAX));
            holders.retain(|&h| h < announcing);
            if !holders.is_empty() {
                break (key, holders);
            }
        };
        let asker = loop {
            let candidate = rng.below(routers.len());
            if !holders.contains(&candidate) {
                break &routers[candidate];
            }
        };
        let local = asker.stored_providers(&key).await? > 0;
        let before = asker.stats().await?;
        let started = Instant::now();
        let mut providers = asker.resolve(&key, args.limit).await?;
        let first = tokio::time::timeout(LOOKUP_DEADLINE, providers.recv()).await;
        let latency = started.elapsed();
        let found = match &first {
            Ok(Some(provider)) => holders
                .iter()
                .any(|&h| routers[h].local_peer_id() == provider.peer),
            _ => false,
        };
        if !found {
            let outcome = match first {
                Ok(Some(p)) => format!("a non-holder {}", p.peer),
                Ok(None) => "no provider (lookup ended)".to_owned(),
                Err(_) => "no provider in time".to_owned(),
            };
            eprintln!(
                "lookup {n} of {key} (held by {}, asker's store {}), started {:.1?} into the lookups, failed after {latency:.1?}: {outcome}",
                class.name(),
                if local { "had a record" } else { "had none" },
                started - phase,
            );
        }
        drop(providers);
        let after = query_ended(args, asker, &before).await?;
        lookups.push(Lookup {
            class,
            local,
            found,
            latency,
            requests: requests(&after) - requests(&before),
        });
    }
    Ok(lookups)
}

fn requests(stats: &RouterStats) -> u64 {
    stats.local_lookup_requests + stats.remote_lookup_requests
}

/// Waits until the asker has counted one more ended lookup (its Kademlia query may run on
/// after the first provider arrived), so each lookup's requests are its own.
async fn query_ended(args: &Args, asker: &Router, before: &RouterStats) -> Result<RouterStats> {
    let ended = |s: &RouterStats| s.local_lookups + s.remote_lookups;
    let deadline = Instant::now() + args.dht.query_timeout + Duration::from_secs(1);
    loop {
        let now = asker.stats().await?;
        if ended(&now) > ended(before) || Instant::now() > deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
