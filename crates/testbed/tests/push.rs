//! A test image pushed to a real docker-registry comes back byte for byte.

use spegel_testbed::image::inspect_raw;
use spegel_testbed::{ImageSpec, Upstream, build_oci_layout, push, require_root_tools};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_pushed_image_is_served_with_the_exact_manifest_bytes_we_wrote() {
    require_root_tools().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let layout = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        layers: vec![MIB, 3 * MIB],
        multi_platform: false,
    };
    let image = build_oci_layout(layout.path(), &spec, "v1").unwrap();

    push(&image, &upstream.host(), "test/img").await.unwrap();

    let served = inspect_raw(&upstream.host(), "test/img:v1").await.unwrap();
    assert_eq!(served, image.read_blob(&image.manifest_digest).unwrap());
    let pushed_blobs: Vec<String> = upstream
        .requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        pushed_blobs.len(),
        3,
        "config and two layers: {pushed_blobs:?}"
    );
}

#[tokio::test]
async fn a_pushed_multi_platform_image_keeps_the_index_and_every_manifest_digest() {
    require_root_tools().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let layout = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        layers: vec![MIB],
        multi_platform: true,
    };
    let image = build_oci_layout(layout.path(), &spec, "v2").unwrap();

    push(&image, &upstream.host(), "test/multi").await.unwrap();

    let index = inspect_raw(&upstream.host(), "test/multi:v2")
        .await
        .unwrap();
    assert_eq!(index, image.read_blob(&image.root_digest).unwrap());
    let by_digest = format!("test/multi@{}", image.manifest_digest);
    let manifest = inspect_raw(&upstream.host(), &by_digest).await.unwrap();
    assert_eq!(manifest, image.read_blob(&image.manifest_digest).unwrap());
}

#[tokio::test]
async fn a_stopped_upstream_serves_the_same_images_after_starting_again() {
    require_root_tools().unwrap();
    let mut upstream = Upstream::start().await.unwrap();
    let host = upstream.host();
    let layout = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        layers: vec![1024],
        multi_platform: false,
    };
    let image = build_oci_layout(layout.path(), &spec, "v1").unwrap();
    push(&image, &host, "test/img").await.unwrap();

    upstream.stop().await.unwrap();
    assert!(inspect_raw(&host, "test/img:v1").await.is_err());
    upstream.start_again().await.unwrap();

    assert_eq!(upstream.host(), host);
    let served = inspect_raw(&host, "test/img:v1").await.unwrap();
    assert_eq!(served, image.read_blob(&image.manifest_digest).unwrap());
}
