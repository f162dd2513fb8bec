//! The operator's debug page in a real browser: a real multi-node cluster (network
//! namespaces, a containerd and a spegel-node per node, see `spegel_testbed::Cluster`), one
//! node pulls an image, another pulls it through its peers, and headless Chromium (Debian's
//! `chromium`, run inside a node's namespace) loads `/debug/` and `/debug/measure` from the
//! nodes' metrics addresses. What is checked is the DOM Chromium built.
//!
//! `SPEGEL_DEBUG_PAGE_SCREENSHOTS=<dir>` also saves screenshots of the measure page and of
//! the overview there, as `debug-page.png` and `debug-overview.png` (how the pictures in
//! `docs/` were made).
//!
//! Root only (namespaces); `#[ignore]`d for quick runs, CI runs it (`--include-ignored`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spegel_testbed::{Cluster, ClusterNode, ClusterOptions, ImageSpec, MirrorMode};

/// Fast re-advertising (as tests/p2p.rs), and the metrics (with the debug page) on :9090 of
/// each node's own address.
const ARGS: &[&str] = &[
    "--mirror-resolve-timeout",
    "500ms",
    "--reconcile-interval",
    "1s",
    "--provider-ttl",
    "8s",
    "--provider-republish-interval",
    "3s",
    "--metrics-addr",
    ":9090",
];

/// How long one page load may take (a measure is bounded at 25 s by the node).
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// `http://<node ip>:9090<path>`.
fn url(node: &ClusterNode, path: &str) -> String {
    format!("http://{}:9090{path}", node.host.ip)
}

/// Runs headless Chromium inside `from`'s namespace with `args` and the page at `url`;
/// returns its stdout.
async fn chromium(from: &ClusterNode, args: &[&str], url: &str) -> Result<String> {
    let profile = tempfile::tempdir()?;
    let mut command = from.host.command("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(LOAD_TIMEOUT, command.output())
        .await
        .context("chromium did not finish loading the page in time")?
        .context("cannot run chromium (bash scripts/install-deps.sh installs it)")?;
    ensure!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The DOM Chromium built for `url`.
async fn dom(from: &ClusterNode, url: &str) -> Result<String> {
    chromium(from, &["--dump-dom"], url).await
}

/// The `<tr>` of `html` (serialized by Chromium) that contains `needle`.
fn row_with<'a>(html: &'a str, needle: &str) -> Option<&'a str> {
    html.split("<tr").find(|row| row.contains(needle))
}

/// Waits until `node` answers the image's tag through a peer, as its containerd would ask.
async fn until_tag_resolves(cluster: &Cluster, node: usize, repo: &str) -> Result<()> {
    let tag = format!("/v2/{repo}/manifests/v1?ns={}", cluster.upstream.host());
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes[node].get(&tag).await.map(|r| r.status).ok() != Some(200) {
        ensure!(
            Instant::now() < deadline,
            "node {node} never resolved the tag"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds, chromium; run with --include-ignored"]
async fn a_browser_sees_the_peers_the_mirrored_requests_and_a_measure_from_a_peer() -> Result<()> {
    // Nodes 0 and 1 in zone-a, node 2 in zone-b: the page shows this node's zone and the
    // zones its mirror learned from peers.
    let mut options = ClusterOptions::new(3, MirrorMode::Spegel);
    options.node_args = ARGS.iter().map(|&a| a.to_owned()).collect();
    options.zones = ["zone-a", "zone-a", "zone-b"].map(str::to_owned).to_vec();
    let mut cluster = Cluster::start_with(&options).await?;
    let spec = ImageSpec {
        layers: vec![4 << 20, 1 << 20],
        multi_platform: true,
    };
    let image = cluster.push(&spec, "team/app", "v1").await?;
    let name = cluster.image_name("team/app", "v1");
    cluster.wait_until_joined().await?;
    cluster.nodes[0].containerd.cri_pull(&name).await?;
    until_tag_resolves(&cluster, 1, "team/app").await?;
    // Node 1 pulls through its peers: its page lists what it mirrored.
    cluster.nodes[1].containerd.cri_pull(&name).await?;
    until_tag_resolves(&cluster, 2, "team/app").await?;
    let ips: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.host.ip.to_string())
        .collect();

    // The overview of node 1, loaded from node 2 as an operator's browser would.
    let overview = dom(&cluster.nodes[2], &url(&cluster.nodes[1], "/debug/")).await?;
    let peers = overview
        .split("id=\"peers\"")
        .nth(1)
        .context(format!("no peers table:\n{overview}"))?;
    for ip in [&ips[0], &ips[2]] {
        let row = row_with(peers, &format!("{ip}:5000")).context(format!(
            "peer {ip} not listed with its registry address:\n{overview}"
        ))?;
        assert!(row.contains("<td>yes</td>"), "{row}");
    }
    let zone_mate = row_with(peers, &format!("{}:5000", ips[0])).context("node 0's row")?;
    assert!(
        zone_mate.contains("zone-a"),
        "node 0's zone, learned from its answers: {zone_mate}"
    );
    assert!(overview.contains("zone-a"), "this node's zone: {overview}");
    assert!(overview.contains("/team/app:v1</code>"), "{overview}");
    let layer = &image.layer_digests[0];
    let mirrored = row_with(&overview, &format!("/v2/team/app/blobs/{layer}")).context(format!(
        "the layer is not among the mirrored requests:\n{overview}"
    ))?;
    assert!(mirrored.contains(">served<"), "{mirrored}");
    assert!(mirrored.contains(&format!("{}:5000", ips[0])), "{mirrored}");

    // A measure on node 2, which holds nothing: every blob comes from a peer, verified.
    let measure_path = format!(
        "/debug/measure?image={}",
        name.replace(':', "%3A").replace('/', "%2F")
    );
    let started = Instant::now();
    let measured = dom(&cluster.nodes[2], &url(&cluster.nodes[2], &measure_path)).await?;
    println!("measure page loaded in {:?}", started.elapsed());
    assert!(measured.contains("id=\"measure\""), "{measured}");
    let host_blobs = image.all_blobs();
    for blob in &host_blobs {
        let row = row_with(&measured, &blob.digest)
            .context(format!("{} not measured:\n{measured}", blob.digest))?;
        assert!(
            row.contains(&format!("data-bytes=\"{}\"", blob.size)),
            "{row}"
        );
        assert!(row.contains(">ok<"), "{row}");
        assert!(
            row.contains(&format!("{}:5000", ips[0])) || row.contains(&format!("{}:5000", ips[1])),
            "not from a peer: {row}"
        );
        assert!(row.contains("B/s<"), "no throughput: {row}");
    }
    let total: u64 = host_blobs.iter().map(|b| b.size).sum();
    let totals = row_with(&measured, "class=\"total\"").context("no totals row")?;
    assert!(
        totals.contains(&format!("data-bytes=\"{total}\"")),
        "{totals}"
    );
    // The other platform's manifest: no node pulled it, and the page says so.
    assert!(measured.contains("no peer holds it"), "{measured}");

    // A reference that is not one: a page that says why.
    let bad = dom(
        &cluster.nodes[2],
        &url(
            &cluster.nodes[2],
            "/debug/measure?image=%3Cb%3Enot+an+image",
        ),
    )
    .await?;
    assert!(bad.contains("not an image reference"), "{bad}");
    assert!(!bad.contains("<b>not"), "input was not escaped: {bad}");

    // Screenshots of a measure and of the overview (chromium writes them; the test checks
    // they are PNGs).
    let shots = tempfile::tempdir()?;
    let pages = [
        ("debug-page.png", url(&cluster.nodes[2], &measure_path)),
        ("debug-overview.png", url(&cluster.nodes[1], "/debug/")),
    ];
    for (file, page) in pages {
        let png = shots.path().join(file);
        let shot = format!("--screenshot={}", png.display());
        let args = [
            shot.as_str(),
            "--window-size=1200,1600",
            "--hide-scrollbars",
        ];
        chromium(&cluster.nodes[2], &args, &page).await?;
        let bytes = std::fs::read(&png)?;
        assert!(bytes.starts_with(b"\x89PNG"), "{file} is not a PNG");
        if let Some(dir) = std::env::var_os("SPEGEL_DEBUG_PAGE_SCREENSHOTS") {
            std::fs::write(std::path::Path::new(&dir).join(file), &bytes)?;
        }
    }
    Ok(())
}
