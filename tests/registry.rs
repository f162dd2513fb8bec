//! `spegel-node registry` over a real containerd, checked with real clients: skopeo, a second
//! containerd pulling through CRI as kubelet does, and plain HTTP.
//!
//! Every test builds its own random image, pushes it to a real `docker-registry` and lets a
//! real containerd pull it, so nothing here is faked.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use anyhow::{Context, Result, ensure};
use spegel_testbed::{Containerd, ImageSpec, SpegelNode, TestImage, Upstream, http};
use tokio::process::Command;

const REPO: &str = "test/img";

/// An upstream holding one image, a containerd that pulled it, and a node serving it.
struct Served {
    upstream: Upstream,
    _source: Containerd,
    node: SpegelNode,
    image: TestImage,
    _layout: tempfile::TempDir,
}

impl Served {
    async fn start(spec: ImageSpec) -> Result<Served> {
        spegel_testbed::require_root_tools()?;
        let upstream = Upstream::start().await?;
        let layout = tempfile::tempdir()?;
        let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
        spegel_testbed::push(&image, &upstream.host(), REPO).await?;
        let source = Containerd::start().await?;
        source.mirror_to(&upstream.host())?;
        source.cri_pull(&self_image(&upstream)).await?;
        let node = SpegelNode::start(&source, &[]).await?;
        Ok(Served {
            upstream,
            _source: source,
            node,
            image,
            _layout: layout,
        })
    }

    fn image_name(&self) -> String {
        self_image(&self.upstream)
    }
}

fn self_image(upstream: &Upstream) -> String {
    format!("{}/{REPO}:v1", upstream.host())
}

async fn skopeo(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("skopeo").args(args).output().await?;
    ensure!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

#[tokio::test]
async fn skopeo_gets_byte_identical_manifests_and_blobs_from_the_node() -> Result<()> {
    let s = Served::start(ImageSpec {
        layers: vec![1 << 20, 3 << 20],
        multi_platform: false,
    })
    .await?;
    let by_digest = format!(
        "docker://{}/{REPO}@{}",
        s.node.host(),
        s.image.manifest_digest
    );

    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &by_digest]).await?;
    assert_eq!(raw, s.image.read_blob(&s.image.manifest_digest)?);

    // skopeo verifies every blob's digest as it copies; compare the bytes as well.
    let out = tempfile::tempdir()?;
    let dest = format!("oci:{}:copied", out.path().display());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &by_digest,
        &dest,
    ])
    .await?;
    for blob in s.image.all_blobs() {
        let hex = blob.digest.trim_start_matches("sha256:");
        let copied = std::fs::read(out.path().join("blobs/sha256").join(hex))
            .with_context(|| format!("{} missing from the copy", blob.digest))?;
        assert_eq!(copied, s.image.read_blob(&blob.digest)?, "{}", blob.digest);
    }
    Ok(())
}

#[tokio::test]
async fn a_tag_with_ns_resolves_to_the_pulled_manifest() -> Result<()> {
    let s = Served::start(ImageSpec {
        layers: vec![64 << 10],
        multi_platform: false,
    })
    .await?;
    let ns = s.upstream.host().replace(':', "%3A");
    let url = format!("{}/v2/{REPO}/manifests/v1?ns={ns}", s.node.url());
    for response in [http::head(&url, &[]).await?, http::get(&url, &[]).await?] {
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("docker-content-digest"),
            Some(s.image.manifest_digest.as_str())
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
    }
    // Without ns the node cannot know which registry the tag is from.
    let bare = format!("{}/v2/{REPO}/manifests/v1", s.node.url());
    assert_eq!(http::get(&bare, &[]).await?.status, 404);
    // A registry it has no image from.
    let other = format!("{}/v2/{REPO}/manifests/v1?ns=example.com", s.node.url());
    assert_eq!(http::get(&other, &[]).await?.status, 404);
    Ok(())
}

/// A second node's containerd, mirrored to the first node through `certs.d/_default`,
/// pulls through CRI while the upstream is down.
async fn second_containerd_pulls_with_upstream_stopped(spec: ImageSpec) -> Result<()> {
    let mut s = Served::start(spec).await?;
    let puller = Containerd::start().await?;
    puller.write_hosts_toml(
        "_default",
        &format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            s.node.host()
        ),
    )?;
    s.upstream.stop().await?;
    puller
        .cri_pull(&s.image_name())
        .await
        .with_context(|| format!("node log:\n{}", s.node.log().unwrap_or_default()))?;
    let held = puller.content_digests().await?;
    for blob in s.image.all_blobs() {
        assert!(held.contains(&blob.digest), "{} not pulled", blob.digest);
    }
    for blob in s.image.other_platform_blobs() {
        assert!(
            !held.contains(&blob.digest),
            "{} pulled needlessly",
            blob.digest
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_second_containerd_pulls_through_cri_with_the_upstream_stopped() -> Result<()> {
    second_containerd_pulls_with_upstream_stopped(ImageSpec {
        layers: vec![2 << 20, 512 << 10],
        multi_platform: false,
    })
    .await
}

#[tokio::test]
async fn a_multi_platform_index_pulls_through_cri_with_the_upstream_stopped() -> Result<()> {
    second_containerd_pulls_with_upstream_stopped(ImageSpec {
        layers: vec![1 << 20],
        multi_platform: true,
    })
    .await
}

#[tokio::test]
async fn ranges_head_and_bad_input_over_real_http() -> Result<()> {
    let s = Served::start(ImageSpec {
        layers: vec![100_000],
        multi_platform: false,
    })
    .await?;
    let layer = s.image.layer_digests[0].clone();
    let bytes = s.image.read_blob(&layer)?;
    let size = bytes.len();
    let blob_url = format!("{}/v2/{REPO}/blobs/{layer}", s.node.url());

    let whole = http::get(&blob_url, &[]).await?;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));

    let head = http::head(&blob_url, &[]).await?;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(head.body.is_empty());

    let part = http::get(&blob_url, &[("range", "bytes=100-1099")]).await?;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[100..1100]);
    let content_range = format!("bytes 100-1099/{size}");
    assert_eq!(part.header("content-range"), Some(content_range.as_str()));

    let tail = http::get(&blob_url, &[("range", "bytes=-10")]).await?;
    assert_eq!(tail.body, bytes[size - 10..]);

    let past = format!("bytes={size}-");
    assert_eq!(http::get(&blob_url, &[("range", &past)]).await?.status, 416);
    assert_eq!(
        http::get(&blob_url, &[("range", "bytes=0-1,3-4")])
            .await?
            .status,
        400
    );
    assert_eq!(
        http::get(&blob_url, &[("range", "lines=1-2")])
            .await?
            .status,
        400
    );

    let unknown = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (format!("/v2/{REPO}/blobs/{unknown}"), 404, "BLOB_UNKNOWN"),
        (
            format!("/v2/{REPO}/manifests/{unknown}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{REPO}/manifests/{layer}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{REPO}/blobs/sha256:1234"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{REPO}/blobs/sha1:{}", "0".repeat(40)),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/a%2F..%2F..%2Fb/blobs/{layer}"),
            400,
            "NAME_INVALID",
        ),
    ];
    for (path, status, code) in cases {
        let r = http::get(&format!("{}{path}", s.node.url()), &[]).await?;
        assert_eq!(r.status, status, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&r.body)?;
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    let put = http::request(http::Method::PUT, &blob_url, &[]).await?;
    assert_eq!(put.status, 405);
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_node_cleanly() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let containerd = Containerd::start().await?;
    let mut node = SpegelNode::start(&containerd, &[]).await?;
    // Alone, the node is live but not ready: /readyz waits for a peer.
    let live = http::get(&format!("{}/livez", node.url()), &[]).await?;
    assert_eq!(live.status, 200);
    let ready = http::get(&format!("{}/readyz", node.url()), &[]).await?;
    assert_eq!(ready.status, 503);
    let status = node.terminate().await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test]
async fn blobs_stream_over_containerds_api_when_the_content_dir_is_unreadable() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let upstream = Upstream::start().await?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec {
        layers: vec![3 << 20],
        multi_platform: false,
    };
    let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
    spegel_testbed::push(&image, &upstream.host(), REPO).await?;
    let containerd = Containerd::start().await?;
    containerd.mirror_to(&upstream.host())?;
    containerd.cri_pull(&self_image(&upstream)).await?;
    // A content path that does not exist: every byte must come through containerd's Content.Read.
    let node = SpegelNode::start(
        &containerd,
        &["--containerd-content-path", "/nonexistent/content"],
    )
    .await?;
    let layer = &image.layer_digests[0];
    let url = format!("{}/v2/{REPO}/blobs/{layer}", node.url());
    let whole = http::get(&url, &[]).await?;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, image.read_blob(layer)?);
    let part = http::get(&url, &[("range", "bytes=1000000-1000099")]).await?;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, image.read_blob(layer)?[1_000_000..1_000_100]);
    Ok(())
}
