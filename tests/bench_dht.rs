//! Smoke run of the DHT scale benchmark (`bench-dht`, see `docs/scale.md`): 50 real
//! routers in one process, and checks on the figures that must hold at that size — every
//! lookup finds a holder, remote lookups happen and stay cheap, ADD_PROVIDER messages
//! arrive, no key is refused, connections stay below the node count.
//!
//! It runs the `bench-dht` binary built next to `spegel-node` (`cargo build --workspace
//! --bins`); `#[ignore]`d for quick runs like the other multi-node tests. As root the
//! benchmark runs in its own network namespace.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

/// 50 nodes took 2.5–4 minutes in a debug build on 2 cores at load 5–10; give a slow CI room.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// `bench-dht` in the same target directory as `spegel-node`.
fn bench_binary() -> Result<PathBuf> {
    let node = spegel_testbed::spegel_node_binary()?;
    let bench = node.with_file_name("bench-dht");
    ensure!(
        bench.is_file(),
        "{} not found; build it first: cargo build -p spegel-testbed --bin bench-dht",
        bench.display()
    );
    Ok(bench)
}

#[tokio::test]
#[ignore = "50 routers in one process for a few minutes; run with --include-ignored"]
async fn fifty_routers_find_every_key_with_few_requests_and_deliver_every_announcement()
-> Result<()> {
    let f = bench(&[
        "--nodes",
        "50",
        "--digests-per-node",
        "20",
        "--lookups",
        "60",
        // 50 nodes share two cores here: with every node's 20 announcements in flight at
        // once (the window was 2,000), each waited its turn long enough that some hit the
        // 30 s query timeout in a debug build (CI: 7 of 1,007, delivery 0.948). At most
        // 100 pending (now the default) took as long in all and timed out none.
        "--announce-window",
        "100",
    ])
    .await?;
    let number = |name: &str| f[name].as_f64().unwrap_or(f64::NAN);

    assert_eq!(f["nodes"], 50);
    assert_eq!(f["lookups"], 60);
    assert_eq!(number("lookup_success_rate"), 1.0, "{f:#}");
    // Keys held by one or three of 50 nodes are mostly not in the asker's store.
    assert!(number("remote_lookups") >= 15.0, "{f:#}");
    assert!(number("remote_requests_per_lookup") <= 8.0, "{f:#}");
    // Release runs deliver every ADD_PROVIDER (docs/scale.md); debug builds with the window
    // above delivered 0.9994-0.9999, also beside two CPU hogs.
    assert!(number("provide_delivery_rate") >= 0.99, "{f:#}");
    assert_eq!(number("announcements_refused"), 0.0, "{f:#}");
    assert_eq!(number("records_refused"), 0.0, "{f:#}");
    assert_eq!(f["tuning"]["pnet"], true, "{f:#}");
    assert_eq!(number("announcements_timed_out"), 0.0, "{f:#}");
    assert!(number("connections_per_node_max") <= 2.0 * 50.0, "{f:#}");
    // 50 nodes never come near the connection limits: nothing closed to make room.
    assert_eq!(number("connections_closed_for_room"), 0.0, "{f:#}");
    assert!(number("reprovide_bytes_per_node_per_hour") > 0.0, "{f:#}");
    Ok(())
}

/// The hold (`--hold`): with a 20 s re-announce interval, 20 nodes keep re-announcing their
/// 5 keys each on the router's schedule while nobody asks anything, and the bench counts it.
/// Each key is announced again 15 to 20 s after its last announcement started; the hold
/// starts at least 3 s (`--settle`) after every first announcement and lasts 40 s, so it
/// sees every key announced again at least once and at most three times.
#[tokio::test]
#[ignore = "20 routers in one process for about a minute; run with --include-ignored"]
async fn the_hold_measures_re_announcements_on_the_routers_schedule() -> Result<()> {
    let f = bench(&[
        "--nodes",
        "20",
        "--digests-per-node",
        "5",
        "--lookups",
        "10",
        "--republish-interval",
        "20s",
        "--hold",
        "40s",
    ])
    .await?;
    let hold = &f["hold"];
    let number = |name: &str| hold[name].as_f64().unwrap_or(f64::NAN);
    let keys = 20.0 * 5.0;
    let again = number("announcements");
    assert!((keys..=3.0 * keys).contains(&again), "{f:#}");
    let steady = number("announcements_per_key_per_hour_steady");
    assert!((steady - 3600.0 / 17.5).abs() < 0.01, "{f:#}");
    assert!(number("provide_delivery_rate") >= 0.99, "{f:#}");
    assert_eq!(number("announcements_timed_out"), 0.0, "{f:#}");
    // Over loopback TCP the hold counts the bytes sent meanwhile.
    assert!(number("bytes_per_node_per_hour") > 0.0, "{f:#}");
    Ok(())
}

/// A node with many keys announces them in a sweep (`crates/routing/src/swarm/sweep.rs`):
/// a few walks per region of the key space and one batch per peer instead of a walk and 20
/// ADD_PROVIDERs per key. Of 30 routers, 20 announce 300 keys each (above the sweep's 64;
/// `--announcing-nodes`: the other 10 only route and store) in sweeps, every lookup of their
/// keys finds a holder, every record arrives, and with a 20 s interval the hold sees every
/// announcing node re-announce in sweeps again.
#[tokio::test]
#[ignore = "30 routers in one process for about a minute; run with --include-ignored"]
async fn many_keys_are_announced_in_sweeps_and_found() -> Result<()> {
    let f = bench(&[
        "--nodes",
        "30",
        "--digests-per-node",
        "300",
        "--announcing-nodes",
        "20",
        "--lookups",
        "60",
        "--republish-interval",
        "20s",
        "--hold",
        "40s",
        "--announce-window",
        "3000",
    ])
    .await?;
    let number = |name: &str| f[name].as_f64().unwrap_or(f64::NAN);

    assert_eq!(f["announcing_nodes"], 20, "{f:#}");
    assert_eq!(number("lookup_success_rate"), 1.0, "{f:#}");
    assert!(number("announcements") >= 20.0 * 300.0, "{f:#}");
    assert!(number("sweeps") >= 20.0, "{f:#}");
    assert_eq!(number("batches_failed"), 0.0, "{f:#}");
    assert!(number("provide_delivery_rate") >= 0.999, "{f:#}");
    assert_eq!(number("records_refused"), 0.0, "{f:#}");
    assert_eq!(number("announcements_timed_out"), 0.0, "{f:#}");
    // A key announced alone costs ~40 requests at 30 nodes; in a sweep well under one.
    assert!(number("requests_per_announcement") < 2.0, "{f:#}");
    let hold = &f["hold"];
    assert!(hold["sweeps"].as_u64().unwrap() >= 20, "{f:#}");
    assert!(hold["announcements"].as_u64().unwrap() >= 20 * 300, "{f:#}");
    assert_eq!(hold["batches_failed"], 0, "{f:#}");
    // Keys count when placed, records when their batch arrives: the sweeps still running
    // as the hold ends show as records short (CI, loaded: 0.977 with 45 sweeps of 300 keys
    // in the hold, none failed). Every record arrived in the announce phase, checked above.
    assert!(
        hold["provide_delivery_rate"].as_f64().unwrap() >= 0.9,
        "{f:#}"
    );
    Ok(())
}

/// The routers' own routing-table walks are counted per phase: in one process they take CPU
/// from the announcements and lookups (docs/scale.md, "N = 1,000, three runs"). With a 2 s
/// walk interval every router walks every 1.5-2.5 s, so the announce phase and the 3 s settle
/// after it (counted with it) hold at least one walk of each of the 10 routers.
#[tokio::test]
#[ignore = "10 routers in one process for under a minute; run with --include-ignored"]
async fn the_routers_walks_are_counted_per_phase() -> Result<()> {
    let f = bench(&[
        "--nodes",
        "10",
        "--digests-per-node",
        "5",
        "--lookups",
        "10",
        "--bootstrap-interval",
        "2s",
    ])
    .await?;

    assert_eq!(f["tuning"]["bootstrap_interval_s"], 2.0, "{f:#}");
    assert!(f["walks_while_announcing"].as_u64().unwrap() >= 10, "{f:#}");
    assert!(f["walks_while_looking_up"].is_u64(), "{f:#}");
    assert!(f["lookups_seconds"].as_f64().unwrap() > 0.0, "{f:#}");
    Ok(())
}

/// Runs `bench-dht --json` with `args` and returns its figures.
async fn bench(args: &[&str]) -> Result<serde_json::Value> {
    let mut command = Command::new(bench_binary()?);
    command
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .context("bench-dht took too long")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "bench-dht failed with {}:\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim()).with_context(|| format!("not one JSON object:\n{stdout}"))
}
