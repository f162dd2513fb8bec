//! The demo: three nodes on this machine pull one image; the first from the upstream
//! registry, the other two peer to peer. Prints where every node's bytes came from.
//!
//! Each node is a network namespace with its own containerd and spegel-node; the upstream
//! is a `docker-registry` in a namespace of its own. Needs root. Run it with
//! `bash scripts/demo.sh`, which installs the Debian packages and builds first.

use std::time::{Duration, Instant};

use anyhow::Result;
use spegel_testbed::{Cluster, ImageSpec};

const REPO: &str = "demo/app";
const UPSTREAM_MBIT: u32 = 100;

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() -> Result<()> {
    println!(
        "Starting an upstream registry and 3 nodes (network namespaces, containerd + spegel-node each)..."
    );
    let mut cluster = Cluster::start(3, &["--log-level", "info"]).await?;
    let spec = ImageSpec {
        layers: vec![24 << 20, 12 << 20, 4 << 20],
        multi_platform: true,
    };
    let image = cluster.push(&spec, REPO, "v1").await?;
    let name = cluster.image_name(REPO, "v1");
    let image_bytes: u64 = image.all_blobs().iter().map(|b| b.size).sum();
    println!(
        "Pushed {name}: {} in {} blobs (multi-platform index)",
        mb(image_bytes),
        image.all_blobs().len()
    );
    cluster.wait_until_joined().await?;
    // A remote registry is further away than a neighbour: limit the upstream's link.
    cluster.network.host(0).shape(UPSTREAM_MBIT).await?;
    println!(
        "The upstream's link is limited to {UPSTREAM_MBIT} Mbit/s; nodes talk to each other unlimited.\n"
    );

    let mut rows = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i > 0 {
            // Let the previous node's advertisement reach the DHT (the advertiser reacts to
            // containerd's image event within a second).
            wait_for_providers(&cluster, i, &image.layer_digests[0]).await?;
        }
        let start = Instant::now();
        node.containerd.cri_pull(&name).await?;
        let took = start.elapsed();
        let ip = node.host.ip.to_string();
        let from_upstream: u64 = cluster
            .upstream
            .requests()
            .await?
            .iter()
            .filter(|r| r.client == ip && r.is_blob_get())
            .map(|r| r.bytes)
            .sum();
        let from_peers = image_bytes.saturating_sub(from_upstream);
        println!(
            "node {} ({ip}) pulled in {:>6.2?}: {:>9} from peers, {:>9} from upstream",
            i + 1,
            took,
            mb(from_peers),
            mb(from_upstream)
        );
        rows.push((from_peers, from_upstream));
    }
    let upstream_total: u64 = rows.iter().map(|r| r.1).sum();
    println!(
        "\nThe upstream registry served {} for 3 pulls of a {} image ({:.2}x the image).",
        mb(upstream_total),
        mb(image_bytes),
        upstream_total as f64 / image_bytes as f64
    );
    println!("Cleaning up (processes, namespaces, temporary directories).");
    Ok(())
}

async fn wait_for_providers(cluster: &Cluster, node: usize, digest: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let providers = cluster.nodes[node]
            .get_json(&format!("/_spegel/providers/{digest}"))
            .await?;
        if providers.as_array().is_some_and(|p| !p.is_empty()) || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
