//! The nodes: N routers in this process, joined through static bootstrap peers, and the
//! announcement of their inventory.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spegel_routing::{
    Bootstrap, BootstrapPeer, Key, Keypair, PeersFuture, Router, RouterConfig, RouterStats,
    StaticBootstrap,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::inventory::Inventory;

/// The registry port every node announces (never dialled here).
const REGISTRY_PORT: u16 = 5000;
/// How often the nodes' counters are polled while waiting, at least.
const POLL: Duration = Duration::from_millis(100);
/// Every poll asks every router, so the interval grows by this per node.
const POLL_PER_NODE: Duration = Duration::from_micros(500);
/// How often the announce phase says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The polling interval for `nodes` routers (0.5 s at 1,000).
fn poll_interval(nodes: usize) -> Duration {
    POLL.max(POLL_PER_NODE.saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX)))
}

/// Seeds start before anyone knows their addresses: they ask this source, which answers
/// the seed list once it is set (and nothing before). Memory-transport nodes use it too
/// (the static source parses TCP addresses only).
struct SeedList(Arc<OnceLock<Vec<BootstrapPeer>>>);

impl Bootstrap for SeedList {
    fn peers(&self) -> PeersFuture<'_> {
        Box::pin(async move { Ok(self.0.get().cloned().unwrap_or_default()) })
    }
}

/// Every router, started and joined.
pub struct Nodes {
    pub routers: Vec<Router>,
    /// Each router's task: ends once the shutdown token is cancelled.
    tasks: Vec<JoinHandle<()>>,
    pub join: Duration,
    /// Nodes whose first bootstrap had not completed when the join phase ended.
    pub not_bootstrapped: usize,
}

impl Nodes {
    /// Starts `--seeds` nodes, then the others in batches of `--start-batch`, each batch
    /// waiting until its nodes have joined (their first bootstrap completed).
    pub async fn start(args: &Args, shutdown: &CancellationToken) -> Result<Nodes> {
        let started = Instant::now();
        let seed_list = Arc::new(OnceLock::new());
        let mut routers = Vec::with_capacity(args.nodes);
        let mut tasks = Vec::with_capacity(args.nodes);
        for _ in 0..args.seeds {
            let source = Arc::new(SeedList(seed_list.clone()));
            let (router, task) = start_one(args, source, shutdown).await?;
            routers.push(router);
            tasks.push(task);
        }
        let seeds: Vec<String> = routers
            .iter()
            .map(|r| r.listen_addr().to_string())
            .collect();
        let peers: Arc<dyn Bootstrap> = if args.memory {
            Arc::new(SeedList(seed_list.clone()))
        } else {
            Arc::new(StaticBootstrap::new(&seeds, 0)?)
        };
        let seed_peers = routers
            .iter()
            .map(|r| BootstrapPeer {
                id: None,
                addrs: vec![r.listen_addr().clone()],
            })
            .collect();
        let _ = seed_list.set(seed_peers);
        while routers.len() < args.nodes {
            let batch = args.start_batch.min(args.nodes - routers.len());
            for _ in 0..batch {
                let (router, task) = start_one(args, peers.clone(), shutdown).await?;
                routers.push(router);
                tasks.push(task);
            }
            let joined = wait_until(&routers, args.join_timeout, "joining", |s| {
                s.iter().all(|s| s.joined)
            })
            .await;
            // On a starved CPU a first bootstrap can time out (Kademlia then retries every
            // few minutes); a node that is connected has joined for every practical purpose.
            if let Err(e) = joined {
                let stats = stats_of(&routers).await?;
                let alone = stats.iter().filter(|s| s.connected_peers == 0).count();
                if alone > 0 {
                    let denied: u64 = stats.iter().map(|s| s.connections_denied).sum();
                    return Err(e.context(format!(
                        "{alone} of {} nodes have no peer; {denied} connections were refused by a limit",
                        routers.len()
                    )));
                }
                let waiting = stats.iter().filter(|s| !s.joined).count();
                eprintln!(
                    "{waiting} nodes have no completed bootstrap yet, all have peers: going on"
                );
            }
            let stats = stats_of(&routers).await?;
            eprintln!(
                "{} nodes up after {:.0?}: connections per node max {}, mean {:.0}; \
                 {} refused by a limit, {} closed to make room",
                routers.len(),
                started.elapsed(),
                stats.iter().map(|s| s.connections).max().unwrap_or(0),
                stats.iter().map(|s| s.connections).sum::<usize>() as f64 / stats.len() as f64,
                stats.iter().map(|s| s.connections_denied).sum::<u64>(),
                stats
                    .iter()
                    .map(|s| s.connections_closed_for_room)
                    .sum::<u64>(),
            );
        }
        let not_bootstrapped = stats_of(&routers)
            .await?
            .iter()
            .filter(|s| !s.joined)
            .count();
        Ok(Nodes {
            routers,
            tasks,
            join: started.elapsed(),
            not_bootstrapped,
        })
    }

    /// Waits until every router stopped (after the shutdown token was cancelled).
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// The counters of every node, in order.
    pub async fn stats(&self) -> Result<Vec<RouterStats>> {
        stats_of(&self.routers).await
    }

    /// Announces every node's keys, keeping at most `--announce-window` announcements
    /// pending (queued, running or to be made again, as the routers count them) across the
    /// cluster, and waits until none is. Returns how long it took. A node gets its keys in
    /// one piece, as spegel-node's advertiser hands over a node's inventory at start (so a
    /// node with many keys announces them in a sweep), when the window has room.
    ///
    /// The window stands in for each node's own CPU: every router here shares this
    /// machine's cores, so the more announcements run at once, the longer each takes, and
    /// past the 30 s query timeout they fail and are made again, which loads it further.
    pub async fn announce(&self, args: &Args, inventory: &Inventory) -> Result<Duration> {
        let started = Instant::now();
        // Keys not handed to their router yet, router by router, in order.
        let announcing = args.announcing_nodes.unwrap_or(self.routers.len());
        let mut left: Vec<(usize, Vec<Key>)> = (0..announcing)
            .map(|i| (i, inventory.keys_of(i)))
            .rev()
            .collect();
        let total: usize = left.iter().map(|(_, keys)| keys.len()).sum();
        let mut issued = 0_usize;
        let ended_before: u64 = self.stats().await?.iter().map(|s| s.announcements).sum();
        let mut last_change = (ended_before, Instant::now());
        let mut next_progress = started + PROGRESS_EVERY;
        let mut warned = false;
        loop {
            let stats = self.stats().await?;
            let pending: u64 = stats.iter().map(|s| s.announcements_pending).sum();
            let ended: u64 = stats.iter().map(|s| s.announcements).sum();
            if left.is_empty() && pending == 0 {
                break;
            }
            // From 3/4 of the interval on, the first keys are announced again (sweeps on
            // the routers' own schedule) and count as pending too. A short overlap still
            // ends (N = 500 with 50 announcing at 10 minutes did); a long phase may never
            // see `pending` at 0 (all 1,000 nodes with 2,000 keys each and a 2-hour
            // interval: 77 % of the keys out after 79 minutes, sweeps of the first nodes
            // due again from 90 on, each node sweeping again every 1.5-2 hours).
            if !warned && started.elapsed() > args.republish_interval.mul_f64(0.75) {
                warned = true;
                eprintln!(
                    "warning: announcing has taken {:.0?}, past 3/4 of --republish-interval \
                     ({:.0?}): re-announcements have begun and may keep the phase from \
                     ending; a longer --republish-interval (e.g. 86400s) avoids that",
                    started.elapsed(),
                    args.republish_interval
                );
            }
            if ended != last_change.0 {
                last_change = (ended, Instant::now());
            } else if last_change.1.elapsed() > 2 * args.dht.query_timeout {
                bail!(
                    "announcing stalled: no announcement ended for {:.0?}, {pending} pending",
                    last_change.1.elapsed()
                );
            }
            if Instant::now() >= next_progress {
                next_progress += PROGRESS_EVERY;
                eprintln!(
                    "announcing: {issued} of {total} keys handed out, {pending} pending, \
                     {} announcements ended (retries included) after {:.0?}",
                    ended - ended_before,
                    started.elapsed()
                );
            }
            let mut room = args.announce_window.saturating_sub(pending as usize);
            while room > 0
                && let Some((i, keys)) = left.pop()
            {
                room = room.saturating_sub(keys.len());
                issued += keys.len();
                self.routers[i].advertise(keys).await?;
            }
            tokio::time::sleep(poll_interval(self.routers.len())).await;
        }
        Ok(started.elapsed())
    }
}

async fn start_one(
    args: &Args,
    bootstrap: Arc<dyn Bootstrap>,
    shutdown: &CancellationToken,
) -> Result<(Router, JoinHandle<()>)> {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut config = RouterConfig::new(
        listen,
        Keypair::generate_ed25519(),
        REGISTRY_PORT,
        bootstrap,
    );
    config.dht = args.dht.clone();
    config.in_memory = args.memory;
    config.pre_shared_key = args.pre_shared_key;
    config.republish_interval = args.republish_interval;
    config.provider_ttl = args.provider_ttl;
    Router::start(config, shutdown.child_token())
        .await
        .context("starting a router")
}

/// Asks every router at once: one round trip, not N (at 1,000 routers on a busy runtime,
/// asking one after another made every poll take seconds).
async fn stats_of(routers: &[Router]) -> Result<Vec<RouterStats>> {
    futures_util::future::try_join_all(routers.iter().map(Router::stats))
        .await
        .map_err(Into::into)
}

/// Polls every node's counters until `done` holds, at most `timeout`.
async fn wait_until(
    routers: &[Router],
    timeout: Duration,
    what: &str,
    done: impl Fn(&[RouterStats]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&stats_of(routers).await?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not finish within {timeout:?}");
        }
        tokio::time::sleep(poll_interval(routers.len())).await;
    }
}
