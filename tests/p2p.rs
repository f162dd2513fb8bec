//! The P2P mirror on a real multi-node cluster: network namespaces on one machine, each
//! node with its own containerd and spegel-node, an upstream `docker-registry` in a
//! namespace of its own, pulls through CRI as kubelet does (see `spegel_testbed::Cluster`).
//!
//! These tests create network namespaces, so they run as root; they are `#[ignore]`d for
//! quick runs and run in CI (`scripts/test.sh` passes `--include-ignored`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spegel_testbed::{Cluster, ImageSpec, TestImage};

/// Fast timings so that advertisements and withdrawals show within seconds. The resolve
/// timeout is raised from its 20 ms default: these tests check where bytes come from, and on
/// a loaded 2-core CI machine running debug builds a lookup can miss 20 ms and fall back to
/// the upstream (the miss cost itself is measured in
/// `when_nobody_has_it_the_pull_falls_back_to_the_upstream_fast`).
const FAST: &[&str] = &[
    "--mirror-resolve-timeout",
    "500ms",
    "--reconcile-interval",
    "1s",
    "--provider-ttl",
    "8s",
    "--provider-republish-interval",
    "3s",
];

/// [`FAST`] with the default 20 ms resolve timeout, for measuring what a miss costs.
const FAST_DEFAULT_RESOLVE: &[&str] = &[
    "--reconcile-interval",
    "1s",
    "--provider-ttl",
    "8s",
    "--provider-republish-interval",
    "3s",
];

/// Waits until `node` resolves `digest` to at least one provider.
async fn until_resolvable(cluster: &Cluster, node: usize, digest: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let providers = cluster.nodes[node]
            .get_json(&format!("/_spegel/providers/{digest}"))
            .await?;
        if providers.as_array().is_some_and(|p| !p.is_empty()) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{digest} never became resolvable from node {node}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Blob GETs the upstream served to `node`'s address.
async fn upstream_blob_gets_from(cluster: &Cluster, node: usize) -> Result<usize> {
    let ip = cluster.nodes[node].host.ip.to_string();
    let requests = cluster.upstream.requests().await?;
    Ok(requests
        .iter()
        .filter(|r| r.is_blob_get() && r.client == ip)
        .count())
}

/// A cluster of `nodes` where node 0 has pulled a one-layer image of `layer_bytes` from the
/// upstream, and node 1 can already resolve its layer through the DHT.
async fn seeded(
    nodes: usize,
    layer_bytes: usize,
    repo: &str,
) -> Result<(Cluster, TestImage, String)> {
    let mut cluster = Cluster::start(nodes, FAST).await?;
    let spec = ImageSpec {
        layers: vec![layer_bytes],
        multi_platform: false,
    };
    let image = cluster.push(&spec, repo, "v1").await?;
    let name = cluster.image_name(repo, "v1");
    cluster.wait_until_joined().await?;
    cluster.nodes[0].containerd.cri_pull(&name).await?;
    cluster.nodes[1].until_image_resolvable(&image).await?;
    Ok((cluster, image, name))
}

fn assert_holds(held: &[String], image: &TestImage) {
    for blob in image.all_blobs() {
        assert!(held.contains(&blob.digest), "{} missing", blob.digest);
    }
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn nodes_pull_from_their_peers_and_not_from_the_upstream() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST).await?;
    // A multi-platform index, pulled by tag: tag, index, manifest, config, layers all
    // resolve through peers.
    let spec = ImageSpec {
        layers: vec![4 << 20, 1 << 20],
        multi_platform: true,
    };
    let image = cluster.push(&spec, "team/app", "v1").await?;
    let name = cluster.image_name("team/app", "v1");
    cluster.wait_until_joined().await?;

    cluster.nodes[0].containerd.cri_pull(&name).await?;
    assert!(upstream_blob_gets_from(&cluster, 0).await? > 0);
    cluster.nodes[1].until_image_resolvable(&image).await?;
    // The tag's record can arrive after the layers': wait until both nodes resolve the tag
    // through a peer (asked from each node's own address, as its containerd would).
    let tag = format!("/v2/team/app/manifests/v1?ns={}", cluster.upstream.host());
    for node in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.nodes[node].get(&tag).await.map(|r| r.status).ok() != Some(200) {
            ensure!(
                Instant::now() < deadline,
                "node {node} never resolved the tag"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    for node in [1, 2] {
        cluster.nodes[node]
            .containerd
            .cri_pull(&name)
            .await
            .with_context(|| {
                format!(
                    "node {node} log:\n{}",
                    cluster.nodes[node]
                        .spegel()
                        .unwrap()
                        .log()
                        .unwrap_or_default()
                )
            })?;
        assert_holds(
            &cluster.nodes[node].containerd.content_digests().await?,
            &image,
        );
        assert_eq!(
            upstream_blob_gets_from(&cluster, node).await?,
            0,
            "node {node} went upstream"
        );
    }
    // Not even the manifests or the tag: every request of nodes 2 and 3 was answered by peers.
    let ips: Vec<String> = cluster.nodes[1..]
        .iter()
        .map(|n| n.host.ip.to_string())
        .collect();
    let upstream_seen: Vec<_> = cluster
        .upstream
        .requests()
        .await?
        .into_iter()
        .filter(|r| ips.contains(&r.client))
        .collect();
    assert!(upstream_seen.is_empty(), "{upstream_seen:?}");

    // And with the upstream gone entirely, a third pull by tag still works.
    cluster.nodes[2].containerd.cri_remove(&name).await?;
    cluster.upstream.stop().await?;
    cluster.nodes[2].containerd.cri_pull(&name).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn when_nobody_has_it_the_pull_falls_back_to_the_upstream_fast() -> Result<()> {
    let mut cluster = Cluster::start(2, FAST_DEFAULT_RESOLVE).await?;
    let image = cluster
        .push(
            &ImageSpec {
                layers: vec![1 << 20],
                multi_platform: false,
            },
            "cold/img",
            "v1",
        )
        .await?;
    cluster.wait_until_joined().await?;

    // The cost of a miss, measured at the node: a blob nobody holds, asked as containerd asks.
    let ns = cluster.upstream.host().replace(':', "%3A");
    let path = format!("/v2/cold/img/blobs/{}?ns={ns}", image.layer_digests[0]);
    let mut took = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let response = cluster.nodes[1].get(&path).await?;
        took.push(start.elapsed());
        assert_eq!(response.status, 404);
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "a miss costs {median:?} at the median, {:?} at worst (20 requests, resolve timeout 20ms)",
        took[took.len() - 1]
    );
    ensure!(
        median < Duration::from_millis(500),
        "a miss took {median:?}"
    );

    cluster.nodes[1]
        .containerd
        .cri_pull(&cluster.image_name("cold/img", "v1"))
        .await?;
    assert_holds(
        &cluster.nodes[1].containerd.content_digests().await?,
        &image,
    );
    assert!(upstream_blob_gets_from(&cluster, 1).await? > 0);
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn a_peer_serving_corrupted_bytes_is_never_believed() -> Result<()> {
    let (cluster, image, name) = seeded(2, 2 << 20, "bad/img").await?;
    let layer = image.layer_digests[0].clone();

    // Node 0's copy of the layer is altered on disk: same size, different bytes.
    let path = cluster.nodes[0].containerd.blob_path(&layer);
    let mut bytes = std::fs::read(&path)?;
    for b in bytes.iter_mut().skip(1000).step_by(4096) {
        *b ^= 0xff;
    }
    std::fs::write(&path, &bytes)?;

    // Through node 1's registry, as containerd would ask: the stream is cut before its end.
    let ns = cluster.upstream.host().replace(':', "%3A");
    let through_peer = cluster.nodes[1]
        .get(&format!("/v2/bad/img/blobs/{layer}?ns={ns}"))
        .await;
    // Either the connection is aborted (an error here) or the body is short: never whole.
    if let Ok(r) = &through_peer {
        ensure!(
            r.body.len() < bytes.len(),
            "the whole corrupted blob was delivered (status {})",
            r.status
        );
    }
    // The pull succeeds with the right bytes (from the upstream); containerd checked them too.
    cluster.nodes[1].containerd.cri_pull(&name).await?;
    let pulled = std::fs::read(cluster.nodes[1].containerd.blob_path(&layer))?;
    assert_eq!(spegel_oci::Digest::sha256_of(&pulled).to_string(), layer);
    let log = cluster.nodes[1].spegel()?.log()?;
    assert!(
        log.contains("does not match its digest"),
        "node 1 never noticed:\n{log}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn removed_and_collected_content_is_withdrawn() -> Result<()> {
    let (cluster, image, _name) = seeded(2, 1 << 20, "gone/img").await?;
    let layer = image.layer_digests[0].clone();

    // Remove every record of the image; containerd's GC then deletes the blobs, without events.
    for record in cluster.nodes[0].containerd.cri_list().await? {
        if record.contains("gone/img") {
            let _ = cluster.nodes[0].containerd.cri_remove(&record).await;
        }
    }
    let _ = cluster.nodes[0]
        .containerd
        .cri_remove(&image.config_digest)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes[0]
        .containerd
        .content_digests()
        .await?
        .contains(&layer)
    {
        ensure!(
            Instant::now() < deadline,
            "containerd never collected {layer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Within the provider TTL (8 s here) no lookup returns node 0 any more.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let providers = cluster.nodes[1]
            .get_json(&format!("/_spegel/providers/{layer}"))
            .await?;
        // Complete copies only: a node's download claim (`in-flight`) outlives its commit by
        // two minutes, and a node asked for it then answers 404.
        let complete = providers
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["state"] == "complete"));
        if !complete {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "node 0 is still returned: {providers}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn a_restarted_node_keeps_its_peer_id() -> Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let args = ["--data-dir", data_dir.as_str()];
    let mut cluster = Cluster::start(1, &args).await?;
    let before = cluster.nodes[0].get_json("/_spegel/status").await?["peer_id"].clone();
    cluster.start_spegel(0, &args).await?;
    let after = cluster.nodes[0].get_json("/_spegel/status").await?["peer_id"].clone();
    assert_eq!(before, after);
    assert!(
        before.as_str().is_some_and(|id| id.starts_with("12D3")),
        "{before}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn a_containerd_restart_under_a_running_node_is_survived() -> Result<()> {
    let mut cluster = Cluster::start(2, FAST).await?;
    let first = cluster
        .push(
            &ImageSpec {
                layers: vec![1 << 20],
                multi_platform: false,
            },
            "restart/a",
            "v1",
        )
        .await?;
    let second = cluster
        .push(
            &ImageSpec {
                layers: vec![1 << 20],
                multi_platform: false,
            },
            "restart/b",
            "v1",
        )
        .await?;
    cluster.wait_until_joined().await?;
    cluster.nodes[0]
        .containerd
        .cri_pull(&cluster.image_name("restart/a", "v1"))
        .await?;
    cluster.nodes[1].until_image_resolvable(&first).await?;

    cluster.nodes[0].containerd.restart().await?;
    // After the restart node 0 pulls another image: its spegel-node must notice and advertise it.
    cluster.nodes[0]
        .containerd
        .cri_pull(&cluster.image_name("restart/b", "v1"))
        .await?;
    cluster.nodes[1].until_image_resolvable(&second).await?;
    cluster.nodes[1]
        .containerd
        .cri_pull(&cluster.image_name("restart/b", "v1"))
        .await?;
    assert_eq!(upstream_blob_gets_from(&cluster, 1).await?, 0);
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn a_serving_node_killed_mid_blob_is_replaced_by_another() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST).await?;
    let spec = ImageSpec {
        layers: vec![96 << 20],
        multi_platform: false,
    };
    let image = cluster.push(&spec, "big/img", "v1").await?;
    let name = cluster.image_name("big/img", "v1");
    let layer = image.layer_digests[0].clone();
    cluster.wait_until_joined().await?;
    // Nodes 0 and 2 hold the image; node 1 will pull it from one of them.
    cluster.nodes[0].containerd.cri_pull(&name).await?;
    until_resolvable(&cluster, 2, &layer).await?;
    cluster.nodes[2].containerd.cri_pull(&name).await?;
    // Slow links (80 Mbit/s, ~10 s for the layer) so the transfer can be cut in the middle.
    for node in [0, 2] {
        cluster.nodes[node].host.shape(80).await?;
    }
    let (left, right) = cluster.nodes.split_at_mut(1);
    let (puller, others) = right.split_at_mut(1);
    let servers = [&mut left[0], &mut others[0]];
    // Only what the servers log from now on counts (node 0 served node 2 before).
    let mut seen = Vec::new();
    for server in servers.iter() {
        seen.push(server.spegel()?.log()?.len());
    }
    let pull = puller[0].containerd.cri_pull(&name);
    let layer_digest = layer.clone();
    let cut = async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        let serving = 'found: loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (i, server) in servers.iter().enumerate() {
                let log = server.spegel()?.log()?;
                let log = log.get(seen[i]..).unwrap_or_default();
                let serves = |l: &str| {
                    l.contains("serving blob")
                        && l.contains(&layer_digest)
                        && l.contains("from_peer=true")
                };
                if log.lines().any(serves) {
                    break 'found i;
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no node started serving the layer"
            );
        };
        // Let some bytes flow, then kill the serving node outright.
        tokio::time::sleep(Duration::from_secs(2)).await;
        servers[serving].spegel = None;
        anyhow::Ok(servers[serving].host.ip)
    };
    let (pulled, killed) = tokio::join!(pull, cut);
    let killed = killed?;
    pulled.with_context(|| {
        format!(
            "pull failed after killing {killed}; node 1 log:\n{}",
            puller[0].spegel().unwrap().log().unwrap_or_default()
        )
    })?;
    let got = std::fs::read(puller[0].containerd.blob_path(&layer))?;
    assert_eq!(spegel_oci::Digest::sha256_of(&got).to_string(), layer);
    let log = puller[0].spegel()?.log()?;
    assert!(
        log.contains("resuming from another peer"),
        "node 1 did not resume:\n{log}"
    );
    assert_eq!(
        upstream_blob_gets_from(&cluster, 1).await?,
        0,
        "node 1 fell back to the upstream"
    );
    Ok(())
}
