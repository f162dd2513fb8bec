//! `bench-dht`: the DHT at scale. N instances of spegel's real router (`spegel-routing`,
//! the same behaviour, protocol, timeouts, record store, connection limits and transport
//! as `spegel-node`: pnet with one cluster secret, Noise, yamux) in this one process, over
//! loopback TCP or libp2p's memory transport, each announcing a synthetic inventory; then
//! timed lookups from nodes that do not hold the key. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release -p spegel-testbed --bin bench-dht
//! target/release/bench-dht --nodes 200 --digests-per-node 100 --json
//! target/release/bench-dht --plot docs/scale      # scale.svg + a table from the runs' JSON
//! ```
//!
//! 1. Three seed nodes start; the others start in batches and join through them with the
//!    router's own static bootstrap (as the bootstrapper would hand out a few peers); each
//!    batch waits until its nodes finished their first Kademlia bootstrap.
//! 2. Every node announces its keys ([`inventory`]: keys held by 1, by 3 and by half of the
//!    nodes), a bounded number in flight across the cluster; the bytes written to sockets
//!    meanwhile give the cost of one round of re-announcements.
//! 3. `--lookups` lookups one after another, each from a node that holds neither the key
//!    nor, when possible, a record for it: the time until the first provider, whether it
//!    really holds the key, and the requests the query sent until it ended.
//! 4. With `--hold`, every node keeps running that long with nobody asking anything
//!    ([`hold`]): the re-announcements, walks and bytes of the DHT's background traffic,
//!    measured rather than predicted from one round.
//!
//! Needs no containerd. As root it runs itself again in a private network namespace (with
//! `unshare` and `ip`), so the loopback byte counter it reads (`IpExt OutOctets` of
//! `/proc/net/netstat`) counts its own traffic only; without root the figure includes
//! whatever else this machine sends over loopback meanwhile, and says so
//! (`traffic_private_netns`). Several hundred nodes need many file descriptors: the limit is
//! raised as far as the process may.

#![recursion_limit = "256"]

mod figures;
mod hold;
mod inventory;
mod lookups;
mod nodes;
mod plot;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use clap::builder::TypedValueParser as _;
use spegel_routing::{DhtTuning, RouterConfig, StaticBootstrap};
use spegel_serve::parse_duration;
use tokio_util::sync::CancellationToken;

use crate::figures::Measured;
use crate::hold::Totals;
use crate::inventory::Inventory;
use crate::nodes::Nodes;

/// Runs N spegel routers in one process and measures lookups, announcements, connections.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench-dht")]
pub struct Args {
    /// Routers to run.
    #[arg(long, env = "BENCH_DHT_NODES", default_value_t = 50, value_parser = clap::value_parser!(u32).range(4..=5000).map(|n| n as usize))]
    nodes: usize,
    /// Keys each node holds (digests, and one in ten an image tag).
    #[arg(long, env = "BENCH_DHT_DIGESTS_PER_NODE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(5..=100_000).map(|n| n as usize))]
    digests_per_node: usize,
    /// Only the first M nodes announce their keys; the others route and store records but
    /// hold nothing, and lookups ask for keys the M hold. What announcing D keys costs each
    /// node at an N where every node's D would not fit this machine (all nodes by default).
    #[arg(long, env = "BENCH_DHT_ANNOUNCING_NODES", value_name = "M", value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    announcing_nodes: Option<usize>,
    /// Lookups to time, spread evenly over keys held by 1, 3 and N/2 nodes.
    #[arg(long, env = "BENCH_DHT_LOOKUPS", default_value_t = 300)]
    lookups: usize,
    /// Providers each lookup asks for (spegel-node asks for `--mirror-resolve-retries`, 3).
    #[arg(long, env = "BENCH_DHT_LIMIT", default_value_t = 3)]
    limit: usize,
    /// Nodes every other node bootstraps from.
    #[arg(long, env = "BENCH_DHT_SEEDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20).map(|n| n as usize))]
    seeds: usize,
    /// Nodes started at once before waiting for them to join.
    #[arg(long, env = "BENCH_DHT_START_BATCH", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    start_batch: usize,
    /// How long one batch may take to join.
    #[arg(long, env = "BENCH_DHT_JOIN_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    join_timeout: Duration,
    /// Announcements pending across all nodes at most. All nodes share this machine's
    /// cores: the more run at once, the longer each takes (past the 30 s query timeout they
    /// fail and are made again). With 100, announcements took seconds at 50 and 200 nodes; at
    /// 1,000 (about 4 a second here) each took ~25 s and some timed out: use a smaller window.
    #[arg(long, env = "BENCH_DHT_ANNOUNCE_WINDOW", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    announce_window: usize,
    /// Wait after the announcements before the lookups (ADD_PROVIDER messages in flight).
    #[arg(long, env = "BENCH_DHT_SETTLE", default_value = "3s", value_parser = parse_duration)]
    settle: Duration,
    /// Seed of the lookups' choice of keys and askers.
    #[arg(long, env = "BENCH_DHT_SEED", default_value_t = 1)]
    seed: u64,
    /// Kademlia replication factor (default: the router's).
    #[arg(long, env = "BENCH_DHT_REPLICATION_FACTOR")]
    replication_factor: Option<NonZeroUsize>,
    /// Kademlia query parallelism α (default: the router's).
    #[arg(long, env = "BENCH_DHT_QUERY_PARALLELISM")]
    query_parallelism: Option<NonZeroUsize>,
    /// Idle connection timeout (default: the router's).
    #[arg(long, env = "BENCH_DHT_IDLE_TIMEOUT", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// How often each node walks the DHT to refresh its routing table (default: the
    /// router's, 5 minutes). In one process every node's walks share this machine's cores:
    /// at 1,000 nodes the default alone keeps them busy (see docs/scale.md).
    #[arg(long, env = "BENCH_DHT_BOOTSTRAP_INTERVAL", value_parser = parse_duration)]
    bootstrap_interval: Option<Duration>,
    /// End lookups after the first answer naming providers: `true` or `false` (default:
    /// the router's).
    #[arg(long, env = "BENCH_DHT_STOP_AT_FIRST_ANSWER")]
    stop_at_first_answer: Option<bool>,
    /// How often each node announces its keys again (each key 3/4 to 1 interval after the
    /// last time); the traffic per hour is one round of announcements times the rounds per
    /// hour, 3600 s ÷ (7/8 of this interval) (default: the router's).
    /// Records then live twice as long, at least the router's 20 minutes.
    #[arg(
        long = "republish-interval",
        env = "BENCH_DHT_REPUBLISH_INTERVAL",
        value_parser = parse_duration
    )]
    republish_interval_flag: Option<Duration>,
    /// After the lookups, keep every node running this long with nobody asking anything,
    /// and measure the background traffic meanwhile (re-announcements, walks; bytes over
    /// TCP). Long against `--republish-interval` to see the steady rate: each key is first
    /// announced again 3/4 of an interval after its announcement. `0s`: no hold.
    #[arg(long, env = "BENCH_DHT_HOLD", default_value = "0s", value_parser = parse_duration)]
    hold: Duration,
    /// Run without a cluster secret (no pnet), as `spegel-node --insecure-open-dht`. By
    /// default every router gets the same random secret, as with `--cluster-secret-file`.
    #[arg(long, env = "BENCH_DHT_INSECURE_OPEN_DHT")]
    insecure_open_dht: bool,
    /// Connect the routers over libp2p's in-process memory transport instead of loopback
    /// TCP (no file descriptors; no byte count).
    #[arg(long, env = "BENCH_DHT_MEMORY")]
    memory: bool,
    /// Print one JSON object instead of a summary line.
    #[arg(long, env = "BENCH_DHT_JSON")]
    json: bool,
    /// Instead of running: read every `*.json` run in this directory, write `scale.svg`
    /// there and print a Markdown table of medians and ranges per N.
    #[arg(long, env = "BENCH_DHT_PLOT")]
    plot: Option<PathBuf>,
    #[arg(skip)]
    dht: DhtTuning,
    #[arg(skip)]
    republish_interval: Duration,
    #[arg(skip)]
    provider_ttl: Duration,
    #[arg(skip)]
    pre_shared_key: Option<[u8; 32]>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error")),
        )
        .init();
    if let Some(dir) = &args.plot {
        return plot::from_runs(dir);
    }
    if let Some(status) = in_private_netns()? {
        std::process::exit(status.code().unwrap_or(1));
    }
    apply_tuning(&mut args)?;
    ensure!(args.lookups > 0, "--lookups must be at least 1");
    ensure!(
        args.announcing_nodes
            .is_none_or(|m| m >= 3 && m <= args.nodes),
        "--announcing-nodes must be at least 3 and at most --nodes"
    );
    raise_fd_limit();

    let shutdown = CancellationToken::new();
    let inventory = Inventory::new(args.nodes, args.digests_per_node);
    let nodes = Nodes::start(&args, &shutdown).await?;
    eprintln!("{} nodes joined in {:.1?}", args.nodes, nodes.join);
    // The counters are read between the phases: in one process every router's walks share
    // the CPU with the phase's own work, and slow lookups are read against them.
    let joined = Totals::of(&nodes.stats().await?);
    let sent = loopback_bytes()?;
    let announce = nodes.announce(&args, &inventory).await?;
    let announce_bytes = loopback_bytes()? - sent;
    let announce_connection_bytes = Totals::of(&nodes.stats().await?).since(joined).bytes_sent;
    eprintln!("announced in {announce:.1?}");
    tokio::time::sleep(args.settle).await;
    let announced = Totals::of(&nodes.stats().await?);
    let looking_up = Instant::now();
    let lookups = lookups::run(&args, &nodes.routers, &inventory).await?;
    let lookups_took = looking_up.elapsed();
    // The figures of the phases so far are read before the hold adds to the counters.
    let (rss_bytes, peak_rss_bytes, swap_bytes) = memory()?;
    let stats = nodes.stats().await?;
    let looked_up = Totals::of(&stats);
    let held = if args.hold.is_zero() {
        None
    } else {
        let memory = args.memory;
        let bytes_sent = || (!memory).then(loopback_bytes).transpose();
        Some(hold::hold(&nodes, looked_up, args.hold, bytes_sent).await?)
    };
    let measured = Measured {
        join: nodes.join,
        not_bootstrapped: nodes.not_bootstrapped,
        announce,
        announce_bytes,
        announce_connection_bytes,
        lookups_took,
        walks_announcing: announced.since(joined).walks,
        walks_looking_up: looked_up.since(announced).walks,
        private_netns: std::env::var_os(IN_NETNS).is_some(),
        memory: args.memory,
        rss_bytes,
        peak_rss_bytes,
        swap_bytes,
        stats,
        held,
    };
    let figures = figures::figures(&args, &inventory, &lookups, &measured);
    if args.json {
        println!("{figures}");
    } else {
        println!("{}", figures::summary(&figures));
    }
    shutdown.cancel();
    nodes.stopped().await;
    Ok(())
}

/// Fills in the router's defaults for every tuning flag not given.
fn apply_tuning(args: &mut Args) -> Result<()> {
    let defaults = RouterConfig::new(
        ([127, 0, 0, 1], 0).into(),
        spegel_routing::Keypair::generate_ed25519(),
        0,
        std::sync::Arc::new(StaticBootstrap::new(&[], 0)?),
    );
    let mut dht = defaults.dht;
    if let Some(r) = args.replication_factor {
        dht.replication_factor = r;
    }
    if let Some(p) = args.query_parallelism {
        dht.query_parallelism = p;
    }
    if let Some(t) = args.idle_timeout {
        dht.idle_connection_timeout = t;
    }
    if let Some(b) = args.bootstrap_interval {
        dht.bootstrap_interval = b;
    }
    if let Some(s) = args.stop_at_first_answer {
        dht.stop_at_first_provider_answer = s;
    }
    args.dht = dht;
    args.republish_interval = args
        .republish_interval_flag
        .unwrap_or(defaults.republish_interval);
    // Records must outlive the interval, as spegel-node requires: twice it, as the
    // router's defaults (10 and 20 minutes) have it.
    args.provider_ttl = defaults.provider_ttl.max(args.republish_interval * 2);
    if !args.insecure_open_dht {
        args.pre_shared_key = Some(spegel_secret::ClusterSecret::generate()?.psk());
    }
    Ok(())
}

/// Raises the open-file limit: every in-process connection costs two descriptors.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let wanted = 1 << 20;
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return;
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("cannot raise the open-file limit: {e}");
    }
}

/// Set in the copy of this benchmark that runs in its own network namespace.
const IN_NETNS: &str = "BENCH_DHT_IN_NETNS";

/// As root and not yet inside one: runs this benchmark again in a new network namespace
/// with only `lo` up, and returns its exit status. `None`: carry on here.
fn in_private_netns() -> Result<Option<std::process::ExitStatus>> {
    let root = proc_field("/proc/self/status", "Uid:", 1).is_ok_and(|uid| uid == 0);
    if std::env::var_os(IN_NETNS).is_some() {
        // The copy dies with whoever started it: a test's timeout kills only the benchmark
        // it started, and an orphaned copy would keep hundreds of routers busy.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .context("setting the parent-death signal")?;
        anyhow::ensure!(
            nix::unistd::getppid() != nix::unistd::Pid::from_raw(1),
            "the benchmark that started this copy is gone"
        );
        return Ok(None);
    }
    if !root {
        return Ok(None);
    }
    let status = std::process::Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$0" "$@""#,
        ])
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(IN_NETNS, "1")
        .status()
        .context("running unshare --net (util-linux) and ip (iproute2)")?;
    Ok(Some(status))
}

/// IP bytes sent in this network namespace so far (`IpExt OutOctets`: loopback here, both
/// directions of every connection, headers included).
fn loopback_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/net/netstat")?;
    let mut ip_ext = text.lines().filter(|l| l.starts_with("IpExt:"));
    let (Some(names), Some(values)) = (ip_ext.next(), ip_ext.next()) else {
        anyhow::bail!("no IpExt in /proc/self/net/netstat");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutOctets")
        .and_then(|(_, v)| v.parse().ok())
        .context("no IpExt OutOctets in /proc/self/net/netstat")
}

/// This process's memory in bytes, from one reading of `/proc/self/status`: resident now
/// (`VmRSS`), at its peak (`VmHWM`) and in swap (`VmSwap`).
fn memory() -> Result<(u64, u64, u64)> {
    let path = "/proc/self/status";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let kib = |name| field(&text, name, 1024).with_context(|| format!("no {name} in {path}"));
    Ok((kib("VmRSS:")?, kib("VmHWM:")?, kib("VmSwap:")?))
}

fn proc_field(path: &str, name: &str, unit: u64) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    field(&text, name, unit).with_context(|| format!("no {name} in {path}"))
}

/// The first number after `name` at the start of a line of `text`, times `unit`.
fn field(text: &str, name: &str, unit: u64) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v * unit)
}
