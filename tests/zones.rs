//! Zones on a real cluster: 2 zones × 2 nodes (network namespaces, one containerd and
//! spegel-node each, `--zone` per node), the traffic between zones shaped and counted by
//! `tc` on every node's link. A node fetches an image from its own zone when its zone has
//! it, and across the zone when only another zone has it.
//!
//! Network namespaces need root; the test is `#[ignore]`d for quick runs and runs in CI
//! (`scripts/test.sh` passes `--include-ignored`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::time::Duration;

use anyhow::{Result, ensure};
use spegel_testbed::{Cluster, ClusterOptions, ImageSpec, MirrorMode, TestImage};

/// As in tests/p2p.rs: a resolve timeout that a loaded 2-core machine meets, fast
/// announcements, and a textfile written often enough to read right after a pull.
const ARGS: &[&str] = &[
    "--mirror-resolve-timeout",
    "500ms",
    "--reconcile-interval",
    "1s",
    "--metrics-textfile-interval",
    "200ms",
];

/// Nodes 0 and 1 in zone a, 2 and 3 in zone b.
async fn two_zones() -> Result<Cluster> {
    let mut options = ClusterOptions::new(4, MirrorMode::Spegel);
    options.node_args = ARGS.iter().map(|&a| a.to_owned()).collect();
    options.zones = ["a", "a", "b", "b"].map(str::to_owned).to_vec();
    options.cross_zone_mbit = Some(400);
    Cluster::start_with(&options).await
}

/// Waits until `node` resolves every blob of `image` to at least `providers` peers.
async fn until_held_by(
    cluster: &Cluster,
    node: usize,
    image: &TestImage,
    providers: usize,
) -> Result<()> {
    let digests: Vec<String> = image.all_blobs().into_iter().map(|b| b.digest).collect();
    let held = cluster.nodes[node]
        .until_providers(&digests, providers, Duration::from_secs(30))
        .await?;
    ensure!(
        held,
        "node {node} never saw {providers} providers of every blob"
    );
    Ok(())
}

/// Blob bytes node `node` received from peers in its zone and in the other.
async fn peer_bytes(cluster: &Cluster, node: usize) -> Result<(f64, f64)> {
    // The textfile is rewritten every 200 ms: let it catch up with the last pull.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spegel = cluster.nodes[node].spegel()?;
    Ok((
        spegel.textfile_metric("spegel_peer_bytes_total{zone=\"same\"}")?,
        spegel.textfile_metric("spegel_peer_bytes_total{zone=\"other\"}")?,
    ))
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn a_node_fetches_from_its_own_zone_and_crosses_only_when_its_zone_has_nothing() -> Result<()>
{
    let mut cluster = two_zones().await?;
    let spec = ImageSpec {
        layers: vec![6 << 20, 2 << 20],
        multi_platform: false,
    };
    let image = cluster.push(&spec, "zones/app", "v1").await?;
    let name = cluster.image_name("zones/app", "v1");
    let blob_bytes: u64 = image
        .all_blobs()
        .iter()
        .filter(|b| b.digest != image.manifest_digest)
        .map(|b| b.size)
        .sum();
    cluster.wait_until_joined().await?;

    // Zone a has it (from the upstream); zone b has nothing: node 2 crosses the zone.
    cluster.nodes[0].containerd.cri_pull(&name).await?;
    until_held_by(&cluster, 2, &image, 1).await?;
    let crossed_before = cluster.cross_zone_bytes().await?;
    cluster.nodes[2].containerd.cri_pull(&name).await?;
    let (same, other) = peer_bytes(&cluster, 2).await?;
    assert_eq!(
        (same, other),
        (0.0, blob_bytes as f64),
        "node 2 fetched from zone a"
    );
    let crossed = cluster.cross_zone_bytes().await? - crossed_before;
    assert!(
        crossed >= blob_bytes,
        "tc counted {crossed} bytes across zones"
    );

    // Now both zones hold it: node 3, in zone b, takes nothing from zone a.
    until_held_by(&cluster, 3, &image, 2).await?;
    let crossed_before = cluster.cross_zone_bytes().await?;
    cluster.nodes[3].containerd.cri_pull(&name).await?;
    let (same, other) = peer_bytes(&cluster, 3).await?;
    assert_eq!(
        (same, other),
        (blob_bytes as f64, 0.0),
        "node 3 fetched inside zone b"
    );
    let crossed = cluster.cross_zone_bytes().await? - crossed_before;
    assert!(
        crossed < blob_bytes / 10,
        "{crossed} bytes crossed zones for a pull zone b could serve (requests and DHT traffic only expected)"
    );
    // Nothing came from the upstream after node 0's pull.
    let owner = cluster.nodes[0].host.ip.to_string();
    let upstream = cluster
        .upstream
        .blob_bytes(|client| client != owner)
        .await?;
    assert_eq!(upstream, 0);
    Ok(())
}
