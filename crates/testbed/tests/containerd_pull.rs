//! A real containerd pulls test images from a real docker-registry through CRI.

use std::collections::BTreeSet;

use spegel_testbed::{
    Containerd, ImageSpec, TestImage, Upstream, build_oci_layout, push, require_root_tools,
};

const MIB: usize = 1024 * 1024;

/// Builds `spec`, pushes it to `upstream` as `test/img:v1`, and returns the image with
/// the name containerd pulls it by. The layout dir lives as long as the returned guard.
async fn pushed_image(
    upstream: &Upstream,
    spec: &ImageSpec,
) -> anyhow::Result<(TestImage, String, tempfile::TempDir)> {
    let layout = tempfile::tempdir()?;
    let image = build_oci_layout(layout.path(), spec, "v1")?;
    push(&image, &upstream.host(), "test/img").await?;
    let name = format!("{}/test/img:v1", upstream.host());
    Ok((image, name, layout))
}

fn digests(blobs: &[spegel_testbed::Blob]) -> BTreeSet<String> {
    blobs.iter().map(|b| b.digest.clone()).collect()
}

#[tokio::test]
async fn a_cri_pull_stores_every_blob_of_the_image_in_the_content_store() {
    require_root_tools().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let spec = ImageSpec {
        layers: vec![MIB, 3 * MIB],
        multi_platform: false,
    };
    let (image, name, _layout) = pushed_image(&upstream, &spec).await.unwrap();
    let containerd = Containerd::start().await.unwrap();
    containerd.mirror_to(&upstream.host()).unwrap();

    let image_ref = containerd.cri_pull(&name).await.unwrap();

    assert_eq!(
        image_ref, image.config_digest,
        "CRI reports the config digest"
    );
    let stored: BTreeSet<String> = containerd
        .content_digests()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stored, digests(&image.all_blobs()));
    for blob in image.all_blobs() {
        let path = containerd.blob_path(&blob.digest);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), blob.size);
    }
    let listed = containerd.cri_list().await.unwrap();
    assert!(listed.contains(&name), "{listed:?}");
    let fetched: BTreeSet<String> = upstream
        .blob_requests()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|path| path.rsplit('/').next().map(str::to_owned))
        .collect();
    assert_eq!(
        fetched,
        digests(&image.all_blobs()[1..]),
        "config and layers"
    );
}

#[tokio::test]
async fn a_cri_pull_of_a_multi_platform_image_fetches_only_the_host_platform() {
    require_root_tools().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let spec = ImageSpec {
        layers: vec![MIB, 2 * MIB],
        multi_platform: true,
    };
    let (image, name, _layout) = pushed_image(&upstream, &spec).await.unwrap();
    let containerd = Containerd::start().await.unwrap();
    containerd.mirror_to(&upstream.host()).unwrap();

    containerd.cri_pull(&name).await.unwrap();

    let stored: BTreeSet<String> = containerd
        .content_digests()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stored, digests(&image.all_blobs()));
    assert!(stored.contains(&image.root_digest), "the index is stored");
    for other in image.other_platform_blobs() {
        assert!(
            !stored.contains(&other.digest),
            "{} was pulled",
            other.digest
        );
    }
}

#[tokio::test]
async fn two_containerds_run_side_by_side_and_pull_independently() {
    require_root_tools().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let spec = ImageSpec {
        layers: vec![MIB],
        multi_platform: false,
    };
    let (image, name, _layout) = pushed_image(&upstream, &spec).await.unwrap();
    let (first, second) = tokio::join!(Containerd::start(), Containerd::start());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.socket(), second.socket());

    first.mirror_to(&upstream.host()).unwrap();
    first.cri_pull(&name).await.unwrap();

    assert!(first.cri_list().await.unwrap().contains(&name));
    assert!(second.cri_list().await.unwrap().is_empty());
    second.mirror_to(&upstream.host()).unwrap();
    second.cri_pull(&name).await.unwrap();
    for containerd in [&first, &second] {
        let layer = containerd.blob_path(&image.layer_digests[0]);
        assert!(layer.exists(), "{}", layer.display());
    }
}

#[tokio::test]
async fn a_restarted_containerd_keeps_its_images_and_serves_again() {
    require_root_tools().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let spec = ImageSpec {
        layers: vec![64 * 1024],
        multi_platform: false,
    };
    let (_image, name, _layout) = pushed_image(&upstream, &spec).await.unwrap();
    let mut containerd = Containerd::start().await.unwrap();
    containerd.mirror_to(&upstream.host()).unwrap();
    containerd.cri_pull(&name).await.unwrap();

    containerd.stop().await.unwrap();
    assert!(containerd.cri_list().await.is_err());
    containerd.restart().await.unwrap();

    assert!(containerd.cri_list().await.unwrap().contains(&name));
    containerd.cri_remove(&name).await.unwrap();
    assert!(!containerd.cri_list().await.unwrap().contains(&name));
}
