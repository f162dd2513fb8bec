//! Membership on a real cluster (network namespaces, a containerd and a spegel-node per node,
//! a `docker-registry` upstream): rogue spegel-nodes, one without any secret and one with
//! another cluster's, try what an attacker on the node network would, each with an image of
//! its own under the tag a member is about to pull. The outcomes are the table in
//! `docs/security.md`.
//!
//! These tests create network namespaces, so they run as root; they are `#[ignore]`d for
//! quick runs and run in CI (`scripts/test.sh` passes `--include-ignored`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spegel_testbed::http::{self, Method};
use spegel_testbed::{Cluster, Host, ImageSpec, TestImage};

/// Fast advertising, so that what a rogue would announce shows within seconds.
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

const REPO: &str = "poison/app";

fn spec(layers: Vec<usize>) -> ImageSpec {
    ImageSpec {
        layers,
        multi_platform: false,
    }
}

/// What a rogue tries: a name, the method, the path and the headers.
type Attempt<'a> = (&'a str, Method, &'a str, Vec<(&'a str, &'a str)>);

/// Pushes the rogue's image (what an attacker wants a member's containerd to run) as `REPO:v1`, lets the nodes `rogues` pull it, then pushes the
/// real image over the same tag (as a release does). Returns (evil, real).
async fn tag_taken_over_by(
    cluster: &mut Cluster,
    rogues: &[usize],
) -> Result<(TestImage, TestImage)> {
    let evil = cluster.push(&spec(vec![300 << 10]), REPO, "v1").await?;
    let name = cluster.image_name(REPO, "v1");
    for &rogue in rogues {
        let id = cluster.nodes[rogue].containerd.cri_pull(&name).await?;
        ensure!(id == evil.config_digest, "rogue {rogue} pulled {id}");
    }
    let real = cluster
        .push(&spec(vec![200 << 10, 100 << 10]), REPO, "v1")
        .await?;
    ensure!(real.config_digest != evil.config_digest);
    Ok((evil, real))
}

/// Waits until each of `nodes` has a peer in its routing table.
async fn until_joined(cluster: &Cluster, nodes: &[usize]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &node in nodes {
        while peers(cluster, node).await? == 0 {
            ensure!(Instant::now() < deadline, "node {node} never joined");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn peers(cluster: &Cluster, node: usize) -> Result<u64> {
    let status = cluster.nodes[node].get_json("/_spegel/status").await?;
    status["routing_table_peers"]
        .as_u64()
        .with_context(|| format!("no peer count in {status}"))
}

/// Who `node` finds for `digest` in the DHT.
async fn providers(cluster: &Cluster, node: usize, digest: &str) -> Result<usize> {
    let found = cluster.nodes[node]
        .get_json(&format!("/_spegel/providers/{digest}"))
        .await?;
    Ok(found.as_array().map_or(0, Vec::len))
}

/// Waits until `node` finds a provider of `digest`.
async fn until_resolvable(cluster: &Cluster, node: usize, digest: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while providers(cluster, node, digest).await? == 0 {
        ensure!(
            Instant::now() < deadline,
            "node {node} never found {digest}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The paths of the blob GETs the upstream served to `node`.
async fn upstream_blob_gets_from(cluster: &Cluster, node: usize) -> Result<Vec<String>> {
    let ip = cluster.nodes[node].host.ip.to_string();
    let requests = cluster.upstream.requests().await?;
    Ok(requests
        .into_iter()
        .filter(|r| r.is_blob_get() && r.client == ip)
        .map(|r| r.path)
        .collect())
}

/// A request from inside `from` to `node`'s registry.
async fn request_from(
    from: &Host,
    cluster: &Cluster,
    node: usize,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response> {
    let url = format!("{}{path}", cluster.nodes[node].registry_url());
    http::request_in(Some(from), method, &url, headers).await
}

/// `skopeo inspect --raw` of `reference` from inside `from`.
async fn skopeo_inspect(from: &Host, reference: &str) -> Result<std::process::Output> {
    let out = from
        .command("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .await?;
    Ok(out)
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn rogues_without_the_secret_cannot_join_read_or_poison_a_tag() -> Result<()> {
    // Members may also be read by skopeo on the upstream's host (10.231.0.2).
    let mut args = FAST.to_vec();
    args.extend(["--registry-allowed-clients", "10.231.0.2/32"]);
    let mut cluster = Cluster::start(4, &args).await?;
    anyhow::ensure!(cluster.network.host(0).ip.to_string() == "10.231.0.2");
    // Nodes 2 and 3 become rogues before they hold anything: one with no secret at all, one
    // with another cluster's secret. Both bootstrap from node 0 like everyone else.
    let other = tempfile::tempdir()?;
    let other_secret = other.path().join("secret");
    let mut generate = std::process::Command::new(spegel_testbed::spegel_node_binary()?);
    generate
        .arg("generate-secret")
        .arg("--cluster-secret-file")
        .arg(&other_secret);
    ensure!(generate.status()?.success());
    let mut open = FAST.to_vec();
    open.push("--insecure-open-dht");
    cluster.start_spegel(2, &open).await?;
    let mut foreign = FAST.to_vec();
    foreign.extend(["--cluster-secret-file", other_secret.to_str().unwrap()]);
    cluster.start_spegel(3, &foreign).await?;

    let (evil, real) = tag_taken_over_by(&mut cluster, &[2, 3]).await?;
    let name = cluster.image_name(REPO, "v1");
    until_joined(&cluster, &[0, 1]).await?;

    // Cannot join: the rogues keep an empty routing table (their connections fail in the
    // pnet handshake), and no member can find what they would advertise.
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        for rogue in [2, 3] {
            ensure!(peers(&cluster, rogue).await? == 0, "rogue {rogue} joined");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in [0, 1] {
        ensure!(providers(&cluster, node, &evil.manifest_digest).await? == 0);
    }

    // Cannot poison the tag: a member pulling it gets the real image (from the upstream, as
    // no member has it yet).
    let id = cluster.nodes[0].containerd.cri_pull(&name).await?;
    assert_eq!(id, real.config_digest, "member 0 pulled the rogue's image");

    // A member with the secret pulls peer to peer as before: every blob from node 0.
    cluster.nodes[1].until_image_resolvable(&real).await?;
    let id = cluster.nodes[1].containerd.cri_pull(&name).await?;
    assert_eq!(id, real.config_digest);
    let paths = upstream_blob_gets_from(&cluster, 1).await?;
    if !paths.is_empty() {
        // Rare in CI, never reproduced alone: say which blob, and what the node did.
        let log = cluster.nodes[1].spegel()?.log()?;
        panic!("member 1 went upstream for {paths:?}; its spegel-node log:\n{log}");
    }

    // Cannot read: every way a rogue asks node 0 for a blob it holds is 403 DENIED, no content.
    let ns = cluster.upstream.host().replace(':', "%3A");
    let layer = format!("/v2/{REPO}/blobs/{}?ns={ns}", real.layer_digests[0]);
    let manifest = format!("/v2/{REPO}/manifests/{}", real.manifest_digest);
    let forged = spegel_secret::ClusterSecret::load(&other_secret)?.sign(
        "GET",
        &layer,
        spegel_secret::unix_now(),
    );
    let attempts: Vec<Attempt> = vec![
        ("plain GET", Method::GET, &layer, vec![]),
        ("HEAD", Method::HEAD, &layer, vec![]),
        ("manifest", Method::GET, &manifest, vec![]),
        (
            "X-Spegel-Mirrored",
            Method::GET,
            &layer,
            vec![("x-spegel-mirrored", "true")],
        ),
        (
            "another cluster's proof",
            Method::GET,
            &layer,
            vec![("x-spegel-mirrored", "true"), ("x-spegel-proof", &forged)],
        ),
        ("status", Method::GET, "/_spegel/status", vec![]),
    ];
    for rogue in [2, 3] {
        let from = &cluster.nodes[rogue].host;
        for (what, method, path, headers) in &attempts {
            let response = request_from(from, &cluster, 0, method.clone(), path, headers).await?;
            assert_eq!(
                response.status,
                403,
                "rogue {rogue}, {what}: {}",
                response.text()
            );
            if *method == Method::GET {
                assert!(
                    response.text().contains("\"DENIED\""),
                    "{what}: {}",
                    response.text()
                );
            }
            assert!(response.body.len() < 200, "{what}: content leaked");
        }
    }
    // The same request with the cluster's proof is served from anywhere: the proof, not the
    // address, makes a member.
    let proof = spegel_secret::ClusterSecret::load(&cluster.secret_path())?.sign(
        "GET",
        &layer,
        spegel_secret::unix_now(),
    );
    let from = &cluster.nodes[2].host;
    let response = request_from(
        from,
        &cluster,
        0,
        Method::GET,
        &layer,
        &[("x-spegel-proof", &proof)],
    )
    .await?;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body.as_ref(),
        real.read_blob(&real.layer_digests[0])?
    );

    // skopeo on an allowed network reads (by digest); from a rogue's host it is refused.
    let reference = format!(
        "docker://{}:5000/{REPO}@{}",
        cluster.nodes[0].host.ip, real.manifest_digest
    );
    let allowed = skopeo_inspect(cluster.network.host(0), &reference).await?;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(allowed.stdout, real.read_blob(&real.manifest_digest)?);
    let refused = skopeo_inspect(&cluster.nodes[2].host, &reference).await?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("denied") || stderr.contains("403"),
        "{stderr}"
    );
    Ok(())
}

/// The same attack against nodes that all run `--insecure-open-dht` succeeds: the rogue's
/// image is pulled under the tag. This is what the secret prevents, and shows the attack
/// above is a real one.
#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn without_a_secret_a_rogue_poisons_a_tag() -> Result<()> {
    let mut args = FAST.to_vec();
    args.push("--insecure-open-dht");
    let mut cluster = Cluster::start(3, &args).await?;
    let (evil, _real) = tag_taken_over_by(&mut cluster, &[2]).await?;
    until_joined(&cluster, &[0, 1, 2]).await?;
    until_resolvable(&cluster, 0, &evil.manifest_digest).await?;

    // The tag's own record may reach node 0 a moment after the manifest's: a pull that got
    // the real image is removed and tried again (at most three times).
    let name = cluster.image_name(REPO, "v1");
    let mut id = String::new();
    for _ in 0..3 {
        id = cluster.nodes[0].containerd.cri_pull(&name).await?;
        if id == evil.config_digest {
            break;
        }
        cluster.nodes[0].containerd.cri_remove(&name).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    assert_eq!(id, evil.config_digest, "the open cluster was not poisoned");
    // And anyone reads any blob: node 1 (a stranger) reads node 2's layer.
    let path = format!("/v2/{REPO}/blobs/{}", evil.layer_digests[0]);
    let response =
        request_from(&cluster.nodes[1].host, &cluster, 2, Method::GET, &path, &[]).await?;
    assert_eq!(response.status, 200);
    Ok(())
}
