//! Attacks on a running `spegel-node`, each with its measured outcome (see
//! docs/security.md, "Robustness: attacks tried and measured outcomes"). Every test records
//! the node's peak RSS (`VmHWM`) and asserts it stays under the unit's `MemoryMax=100M`.
//!
//! The attackers are the tests themselves (raw TCP, HTTP, a libp2p peer in `dht_floods.rs`),
//! aimed only at loopback or test-namespace addresses. Everything attacked is real:
//! spegel-node, containerd, docker-registry.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spegel_testbed::attack::ConnectionFlood;
use spegel_testbed::{Cluster, Containerd, ImageSpec, SpegelNode, TestImage, Upstream, http};

/// The unit's `MemoryMax`.
const MEMORY_MAX: u64 = 100_000_000;

fn assert_peak_rss(node: &SpegelNode, attack: &str) -> Result<u64> {
    let peak = node.peak_rss()?;
    eprintln!("{attack}: spegel-node peak RSS {:.1} MB", peak as f64 / 1e6);
    ensure!(
        peak < MEMORY_MAX,
        "{attack}: peak RSS {peak} bytes is over MemoryMax"
    );
    Ok(peak)
}

/// 1,500 connections from another host, each pipelining 20 blob GETs of a 6 MB layer and
/// never reading (and reconnecting as they are dropped), for the length of a pull: a
/// fresh client is answered within 1 s and the node's own containerd pulls an image it
/// lacks no slower than twice as fast as without the flood.
#[tokio::test]
async fn a_connection_flood_leaves_fresh_clients_and_the_nodes_own_pulls_served() -> Result<()> {
    let mut cluster = Cluster::start(1, &[]).await?;
    let spec = ImageSpec {
        layers: vec![6 << 20],
        multi_platform: false,
    };
    let held = cluster.push(&spec, "attack/held", "v1").await?;
    cluster.push(&spec, "attack/baseline", "v1").await?;
    cluster.push(&spec, "attack/during", "v1").await?;
    let node = &cluster.nodes[0];
    node.containerd
        .cri_pull(&cluster.image_name("attack/held", "v1"))
        .await?;
    let started = Instant::now();
    node.containerd
        .cri_pull(&cluster.image_name("attack/baseline", "v1"))
        .await?;
    let baseline = started.elapsed();

    let target = std::net::SocketAddr::from((node.host.ip, 5000));
    let layer = &held.layer_digests[0];
    let request = format!("GET /v2/attack/held/blobs/{layer} HTTP/1.1\r\nHost: x\r\n\r\n");
    let flood = ConnectionFlood::start(
        Some(cluster.network.host(0)),
        target,
        1500,
        request.repeat(20).into_bytes(),
    );
    // Let the flood build up: every connection opened and the held ones stalled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while flood.report().opened < 1500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let built_in = deadline - Duration::from_secs(30);
    eprintln!(
        "connection flood: 1500 connections open after {:?}",
        built_in.elapsed()
    );

    let started = Instant::now();
    let fresh = tokio::time::timeout(Duration::from_secs(1), node.get("/v2/")).await;
    let fresh_in = started.elapsed();
    let started = Instant::now();
    node.containerd
        .cri_pull(&cluster.image_name("attack/during", "v1"))
        .await?;
    let during = started.elapsed();
    let report = flood.stop();
    eprintln!(
        "connection flood: {} connections opened ({} failed); fresh client answered in {fresh_in:?}; pull {baseline:?} without, {during:?} during the flood",
        report.opened, report.failed
    );
    let spegel = node.spegel()?;
    assert_peak_rss(spegel, "connection flood")?;
    ensure!(
        matches!(&fresh, Ok(Ok(r)) if r.status == 200),
        "a fresh client was not answered within 1 s: {fresh:?}"
    );
    ensure!(report.opened >= 1500, "the flood opened only {report:?}");
    ensure!(
        during <= baseline.max(Duration::from_millis(500)) * 2,
        "the pull took {during:?} during the flood, {baseline:?} without"
    );
    Ok(())
}

/// An upstream holding one image, a containerd that pulled it, and a node serving it, all
/// on loopback.
struct Served {
    _upstream: Upstream,
    _source: Containerd,
    node: SpegelNode,
    image: TestImage,
    metrics: std::net::SocketAddr,
    _layout: tempfile::TempDir,
}

impl Served {
    async fn start(spec: ImageSpec, args: &[&str]) -> Result<Served> {
        spegel_testbed::require_root_tools()?;
        let upstream = Upstream::start().await?;
        let layout = tempfile::tempdir()?;
        let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
        spegel_testbed::push(&image, &upstream.host(), "test/img").await?;
        let source = Containerd::start().await?;
        source.mirror_to(&upstream.host())?;
        source
            .cri_pull(&format!("{}/test/img:v1", upstream.host()))
            .await?;
        let metrics = spegel_testbed::port::free_loopback_addr()?;
        let metrics_arg = format!("--metrics-addr={metrics}");
        let mut all = vec![metrics_arg.as_str()];
        all.extend(args);
        let node = SpegelNode::start(&source, &all).await?;
        Ok(Served {
            _upstream: upstream,
            _source: source,
            node,
            image,
            metrics,
            _layout: layout,
        })
    }
}

/// 2,000 requests for content nobody has, each with another `?ns=` registry, mirrored (no
/// --mirrored-registries: every registry is): the `registry` label of
/// `spegel_mirror_requests_total` takes at most 16 values plus `other`.
#[tokio::test]
async fn an_ns_label_flood_leaves_the_series_count_bounded() -> Result<()> {
    let served = Served::start(
        ImageSpec {
            layers: vec![1024],
            multi_platform: false,
        },
        &[],
    )
    .await?;
    let base = served.node.url();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..2000u32 {
        let digest = format!("sha256:{:064x}", i + 1);
        let url = format!("{base}/v2/a/b/manifests/{digest}?ns=r{i}.example");
        requests.spawn(async move { http::get(&url, &[]).await.map(|r| r.status) });
        while requests.len() >= 32 {
            requests.join_next().await.context("joined")???;
        }
    }
    while let Some(status) = requests.join_next().await {
        status??;
    }
    let text = http::get(&format!("http://{}/metrics", served.metrics), &[])
        .await?
        .text();
    let registries: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("spegel_mirror_requests_total{"))
        .filter_map(|l| l.split("registry=\"").nth(1)?.split('"').next())
        .collect();
    eprintln!(
        "ns label flood: 2000 registries asked, {} registry label values exported",
        registries.len()
    );
    assert_peak_rss(&served.node, "ns label flood")?;
    let some: Vec<&&str> = registries.iter().take(20).collect();
    ensure!(
        !registries.is_empty() && registries.len() <= 17,
        "{} registry label values, e.g. {some:?}",
        registries.len()
    );
    ensure!(registries.contains("other"), "no `other` among {some:?}");
    Ok(())
}

/// 512 concurrent manifest GETs naming the digests of the node's 3.5 MB layers (under the
/// 4 MiB manifest cap): none is read whole as a manifest, each is a 404 at once.
#[tokio::test]
async fn parallel_manifest_gets_of_layer_digests_leave_memory_bounded() -> Result<()> {
    let served = Served::start(
        ImageSpec {
            layers: vec![3_500_000, 3_500_000],
            multi_platform: false,
        },
        // All 512 at once from loopback: this attack is on memory, not connections.
        &["--max-connections-per-ip=1024"],
    )
    .await?;
    let base = served.node.url();
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..512usize {
        let layer = served.image.layer_digests[i % 2].clone();
        let url = format!("{base}/v2/test/img/manifests/{layer}");
        requests.spawn(async move { http::get(&url, &[]).await.map(|r| r.status) });
    }
    let mut statuses = Vec::new();
    while let Some(status) = requests.join_next().await {
        statuses.push(status??);
    }
    eprintln!(
        "manifest GETs of layers: 512 answered in {:?}",
        started.elapsed()
    );
    assert_peak_rss(&served.node, "manifest GETs of layer digests")?;
    ensure!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    // The real manifest is still served.
    let manifest = served.image.manifest_digest.clone();
    let response = http::get(&format!("{base}/v2/test/img/manifests/{manifest}"), &[]).await?;
    ensure!(response.status == 200, "{}", response.text());
    Ok(())
}

/// `spegel-node configuration` over a hosts directory where another registry's
/// `hosts.toml` is not TOML: it succeeds, says which file it skipped, and configures the rest.
#[tokio::test]
async fn a_malformed_hosts_toml_of_another_registry_is_reported_and_skipped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("broken.example/hosts.toml");
    std::fs::create_dir_all(broken.parent().unwrap())?;
    std::fs::write(&broken, "[host.\"https://broken.example\"\n")?;
    let output = tokio::process::Command::new(spegel_testbed::spegel_node_binary()?)
        .arg("configuration")
        .arg("--containerd-registry-config-path")
        .arg(dir.path())
        .args(["--mirror-targets", "http://127.0.0.1:5000"])
        .output()
        .await?;
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let peak = u64::try_from(usage.max_rss()).unwrap_or(0) * 1024;
    eprintln!(
        "malformed hosts.toml: exit {:?}, peak RSS of the largest child so far {:.1} MB",
        output.status.code(),
        peak as f64 / 1e6
    );
    ensure!(output.status.success(), "{log}");
    ensure!(
        log.contains("broken.example") && log.contains("not valid TOML"),
        "{log}"
    );
    ensure!(dir.path().join("_default/hosts.toml").is_file(), "{log}");
    ensure!(peak < MEMORY_MAX, "peak RSS {peak}");
    Ok(())
}
