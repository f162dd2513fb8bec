//! The demo: nodes on this machine pull one image none of them has, at the same moment,
//! then one more node pulls it later. Prints where every node's bytes came from, as each
//! node's own metrics count them (`spegel_served_bytes_total{source}`), and what the
//! upstream registry served (its access log).
//!
//! Each node is a network namespace with its own containerd and spegel-node; the upstream
//! is a `docker-registry` in a namespace of its own. Needs root. Run it with
//! `bash scripts/demo.sh`, which installs the Debian packages and builds first.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spegel_testbed::{Cluster, ClusterNode, ImageSpec};

const REPO: &str = "demo/app";
const UPSTREAM_MBIT: u32 = 100;
/// Nodes that pull at the same moment; one more pulls afterwards.
const AT_ONCE: usize = 3;

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "Starting an upstream registry and {} nodes (network namespaces, containerd + spegel-node each)...",
        AT_ONCE + 1
    );
    let args = [
        "--log-level",
        "info",
        "--metrics-textfile-interval",
        "200ms",
    ];
    let mut cluster = Cluster::start(AT_ONCE + 1, &args).await?;
    let spec = ImageSpec {
        layers: vec![24 << 20, 12 << 20, 4 << 20],
        multi_platform: true,
    };
    let image = cluster.push(&spec, REPO, "v1").await?;
    let name = cluster.image_name(REPO, "v1");
    let image_bytes: u64 = image
        .all_blobs()
        .iter()
        .filter(|b| !image.other_platform_blobs().contains(b))
        .map(|b| b.size)
        .sum();
    println!(
        "Pushed {name} (multi-platform index; {} for this platform)",
        mb(image_bytes)
    );
    cluster.wait_until_joined().await?;
    // A remote registry is further away than a neighbour: limit the upstream's link.
    cluster.network.host(0).shape(UPSTREAM_MBIT).await?;
    println!(
        "The upstream's link is limited to {UPSTREAM_MBIT} Mbit/s (this image: {:.1} s at best); nodes talk to each other unlimited.\n",
        image_bytes as f64 * 8.0 / (f64::from(UPSTREAM_MBIT) * 1e6)
    );

    println!("Nodes 1-{AT_ONCE} pull it at the same moment (a cold rollout):");
    let pulls = cluster.nodes[..AT_ONCE].iter().map(|node| {
        let name = name.clone();
        async move {
            let start = Instant::now();
            node.containerd.cri_pull(&name).await?;
            Ok::<_, anyhow::Error>(start.elapsed())
        }
    });
    let times = futures_util::future::try_join_all(pulls).await?;
    for (i, took) in times.iter().enumerate() {
        report(&cluster, i, *took).await?;
    }

    println!("\nNode {} pulls it later (a scale-out):", AT_ONCE + 1);
    let start = Instant::now();
    cluster.nodes[AT_ONCE].containerd.cri_pull(&name).await?;
    report(&cluster, AT_ONCE, start.elapsed()).await?;

    let upstream_total = cluster.upstream.blob_bytes(|_| true).await?;
    println!(
        "\nThe upstream registry served {} for {} pulls of a {} image ({:.2}x the image).",
        mb(upstream_total),
        AT_ONCE + 1,
        mb(image_bytes),
        upstream_total as f64 / image_bytes as f64
    );
    println!("Cleaning up (processes, namespaces, temporary directories).");
    Ok(())
}

/// Prints one node's pull: bytes by source from its metrics, and from the upstream's log.
async fn report(cluster: &Cluster, i: usize, took: Duration) -> Result<()> {
    let node = &cluster.nodes[i];
    let ip = node.host.ip.to_string();
    let from_upstream = cluster.upstream.blob_bytes(|client| client == ip).await?;
    let complete = served_bytes(node, "peer").await?;
    let in_flight = served_bytes(node, "peer_in_flight").await?;
    println!(
        "  node {} ({ip}) in {:>6.2?}: {:>9} from peers' finished copies, {:>9} from peers' downloads in progress, {:>9} from the upstream",
        i + 1,
        took,
        mb(complete),
        mb(in_flight),
        mb(from_upstream)
    );
    Ok(())
}

/// `spegel_served_bytes_total{source}` from the node's metrics textfile (rewritten every
/// 200 ms here; waits for one rewrite so the last bytes are counted).
async fn served_bytes(node: &ClusterNode, source: &str) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = node.spegel()?.textfile_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let prefix = format!("spegel_served_bytes_total{{source=\"{source}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}
