//! Benchmark of the P2P path on a network-namespace cluster (issue: nodes find each
//! other's content): DHT resolve latency, and one node pulling an image from a peer vs
//! from the upstream, measured side by side in one run. Prints figures; not a test.
//!
//! `cargo build --release -p spegel-node -p spegel-testbed && target/release/bench-p2p`
//! (`--nodes 5 --image-mb 200 --lookups 200 --upstream-mbit 0`; 0 = unshaped). Needs root.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use spegel_testbed::{Cluster, ImageSpec};

/// Options.
#[derive(Parser)]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Image size in MB (two layers of half each).
    #[arg(long, default_value_t = 200)]
    image_mb: usize,
    /// Provider lookups to time.
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Limit the upstream's link to this many Mbit/s (0: unshaped, same as the nodes).
    #[arg(long, default_value_t = 0)]
    upstream_mbit: u32,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.nodes >= 2, "--nodes must be at least 2");
    let mut cluster = Cluster::start(args.nodes, &["--log-level", "warn"]).await?;
    let half = args.image_mb * 1_000_000 / 2;
    let image = cluster
        .push(
            &ImageSpec {
                layers: vec![half, half],
                multi_platform: false,
            },
            "bench/p2p",
            "v1",
        )
        .await?;
    let name = cluster.image_name("bench/p2p", "v1");
    let size: u64 = image.all_blobs().iter().map(|b| b.size).sum();
    cluster.wait_until_joined().await?;
    if args.upstream_mbit > 0 {
        cluster.network.host(0).shape(args.upstream_mbit).await?;
    }

    // Node 1 pulls from the upstream (nobody else has the image).
    let start = Instant::now();
    cluster.nodes[0].containerd.cri_pull(&name).await?;
    let from_upstream = start.elapsed();

    // Resolve latency from every other node, for every blob node 1 advertises.
    let digests: Vec<String> = image.all_blobs().into_iter().map(|b| b.digest).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for digest in &digests {
        loop {
            let p = cluster.nodes[1]
                .get_json(&format!("/_spegel/providers/{digest}?limit=1"))
                .await?;
            if p.as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{digest} never became resolvable"
            );
        }
    }
    let mut lookups = Vec::with_capacity(args.lookups);
    for i in 0..args.lookups {
        let node = &cluster.nodes[1 + i % (args.nodes - 1)];
        let digest = &digests[i % digests.len()];
        let start = Instant::now();
        let found = node
            .get_json(&format!("/_spegel/providers/{digest}?limit=1"))
            .await?;
        lookups.push(start.elapsed());
        ensure!(
            found.as_array().is_some_and(|a| a.len() == 1),
            "lookup {i} found {found}"
        );
    }
    lookups.sort();

    // Node 2 pulls the same image, from node 1 through the DHT.
    let start = Instant::now();
    cluster.nodes[1]
        .containerd
        .cri_pull(&name)
        .await
        .context("pull through peers")?;
    let from_peer = start.elapsed();
    let went_upstream = cluster
        .upstream
        .requests()
        .await?
        .iter()
        .filter(|r| r.client == cluster.nodes[1].host.ip.to_string() && r.is_blob_get())
        .count();

    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    println!(
        "## P2P benchmark: {} nodes, {:.0} MB image (2 layers)\n",
        args.nodes,
        size as f64 / 1e6
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| provider lookup (first provider, over HTTP to the node), {} lookups | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
        lookups.len(),
        percentile(&lookups, 0.5).as_secs_f64() * 1e3,
        percentile(&lookups, 0.99).as_secs_f64() * 1e3,
        lookups[lookups.len() - 1].as_secs_f64() * 1e3
    );
    let link = if args.upstream_mbit > 0 {
        format!("{} Mbit/s", args.upstream_mbit)
    } else {
        "unshaped".to_owned()
    };
    println!(
        "| node 1 pull from the upstream ({link}) | {:.2} s ({:.0} MB/s) |",
        from_upstream.as_secs_f64(),
        mbps(from_upstream)
    );
    println!(
        "| node 2 pull from node 1 via spegel | {:.2} s ({:.0} MB/s) |",
        from_peer.as_secs_f64(),
        mbps(from_peer)
    );
    println!(
        "| ratio upstream time / peer time | {:.2} |",
        from_upstream.as_secs_f64() / from_peer.as_secs_f64()
    );
    println!("| blob requests node 2 sent upstream | {went_upstream} |");
    Ok(())
}
