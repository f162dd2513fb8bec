//! Cold pulls: many nodes pull an image none of them has, at the same moment, on a real
//! multi-node cluster (network namespaces, one containerd and spegel-node per node, an
//! upstream `docker-registry` whose link is shaped with `tc tbf`). The single flight must
//! make the upstream serve each blob about once, and followers must never hang when the
//! node they follow fails.
//!
//! Network namespaces need root; these tests are `#[ignore]`d for quick runs and run in CI
//! (`scripts/test.sh` passes `--include-ignored`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spegel_testbed::{Cluster, ImageSpec, TestImage};

/// The resolve timeout is raised from its 20 ms default (as in tests/p2p.rs): on a loaded
/// 2-core machine running debug builds a lookup can miss 20 ms.
const ARGS: &[&str] = &["--mirror-resolve-timeout", "300ms"];

/// Bytes of blob bodies the upstream sent, by digest.
async fn upstream_blob_bytes(cluster: &Cluster) -> Result<HashMap<String, u64>> {
    let mut bytes = HashMap::new();
    for request in cluster.upstream.requests().await? {
        if request.is_blob_get()
            && let Some((_, digest)) = request.path.split_once("/blobs/")
        {
            let digest = digest.split('?').next().unwrap_or(digest).to_owned();
            *bytes.entry(digest).or_default() += request.bytes;
        }
    }
    Ok(bytes)
}

/// Pulls `name` on `nodes` at the same moment; returns each node's pull time.
async fn pull_at_once(cluster: &Cluster, nodes: &[usize], name: &str) -> Result<Vec<Duration>> {
    let pulls = nodes.iter().map(|&i| {
        let containerd = &cluster.nodes[i].containerd;
        async move {
            let started = Instant::now();
            containerd
                .cri_pull_within(name, Duration::from_secs(240))
                .await
                .with_context(|| format!("node {i} pull"))?;
            Ok::<_, anyhow::Error>(started.elapsed())
        }
    });
    futures_util::future::try_join_all(pulls).await
}

fn logs(cluster: &Cluster) -> String {
    cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let log = n.spegel().and_then(|s| s.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            format!(
                "--- node {i}:\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect()
}

/// Upstream bytes of `image`'s blobs over the image's size, and a per-blob report.
fn report(image: &TestImage, fetched: &HashMap<String, u64>) -> (f64, String) {
    let blobs = image.all_blobs();
    let size: u64 = blobs.iter().map(|b| b.size).sum();
    let mut text = String::new();
    let mut total = 0;
    for blob in &blobs {
        let got = fetched.get(&blob.digest).copied().unwrap_or(0);
        total += got;
        text += &format!("{} size {} upstream {}\n", blob.digest, blob.size, got);
    }
    (total as f64 / size as f64, text)
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn five_nodes_pulling_at_once_fetch_each_blob_from_the_upstream_once() -> Result<()> {
    let mut cluster = Cluster::start(5, ARGS).await?;
    let spec = ImageSpec {
        layers: vec![12 << 20, 8 << 20, 6 << 20, 4 << 20],
        multi_platform: false,
    };
    let image = cluster.push(&spec, "cold/four", "v1").await?;
    let name = cluster.image_name("cold/four", "v1");
    cluster.wait_until_joined().await?;
    cluster.network.host(0).shape(100).await?;

    let times = pull_at_once(&cluster, &[0, 1, 2, 3, 4], &name)
        .await
        .with_context(|| logs(&cluster))?;
    let fetched = upstream_blob_bytes(&cluster).await?;
    let (ratio, text) = report(&image, &fetched);
    println!("pull times {times:?}\nupstream/image {ratio:.2}\n{text}");
    assert!(
        ratio <= 1.3,
        "the upstream served {ratio:.2}x the image:\n{text}\n{}",
        logs(&cluster)
    );
    for node in &cluster.nodes {
        let held = node.containerd.content_digests().await?;
        for blob in image.all_blobs() {
            assert!(held.contains(&blob.digest), "{} missing", blob.digest);
        }
    }
    Ok(())
}
