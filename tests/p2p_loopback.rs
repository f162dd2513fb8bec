//! Two nodes on loopback (no network namespaces): node 2's containerd pulls an image that
//! only node 1 holds, through node 2's spegel-node, with the upstream stopped. The quick
//! check of the mirror path; the multi-node cluster tests live in `tests/p2p.rs`.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::time::Duration;

use anyhow::{Context, Result};
use spegel_testbed::{Containerd, ImageSpec, SpegelNode, Upstream, http, port};

#[tokio::test]
async fn a_node_mirrors_an_image_from_its_peer() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let mut upstream = Upstream::start().await?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec {
        layers: vec![3 << 20, 1 << 20],
        multi_platform: true,
    };
    let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
    spegel_testbed::push(&image, &upstream.host(), "p2p/img").await?;
    let name = format!("{}/p2p/img:v1", upstream.host());

    let one = Containerd::start().await?;
    one.mirror_to(&upstream.host())?;
    one.cri_pull(&name).await?;
    let router_one = port::free_loopback_addr()?.to_string();
    let node_one = SpegelNode::start(&one, &["--router-addr", &router_one]).await?;

    let two = Containerd::start().await?;
    let node_two = SpegelNode::start(&two, &["--bootstrap-peers", &router_one]).await?;
    two.write_hosts_toml(
        "_default",
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            node_two.host()
        ),
    )?;

    // Ready once the two routers know each other and node 1 advertised its content.
    let ready = format!("{}/readyz", node_two.url());
    let probe = format!(
        "{}/v2/p2p/img/manifests/v1?ns={}",
        node_two.url(),
        upstream.host().replace(':', "%3A")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ok = http::get(&ready, &[]).await?.status == 200
            && http::head(&probe, &[]).await?.status == 200;
        if ok {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node 2 never resolved the tag through node 1:\n{}",
            node_two.log()?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    upstream.stop().await?;
    two.cri_pull(&name)
        .await
        .with_context(|| format!("node 2 log:\n{}", node_two.log().unwrap_or_default()))?;
    let held = two.content_digests().await?;
    for blob in image.all_blobs() {
        assert!(held.contains(&blob.digest), "{} not pulled", blob.digest);
    }
    drop(node_one);
    Ok(())
}
