//! The image `scripts/build-image.sh` builds without Docker runs in a real containerd:
//! imported with `ctr images import`, started with `ctr run`, both binaries answer
//! `--version`, and the image runs as nonroot unless told otherwise. Its `--push` puts the
//! same image into a registry, from where CRI pulls it.
//!
//! Packs the binaries the other end-to-end tests run (no release build here).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use anyhow::{Result, ensure};
use spegel_testbed::containerd::RunOptions;
use spegel_testbed::{Containerd, SpegelImage, Upstream};

#[tokio::test]
async fn the_built_image_runs_spegel_node_in_containerd() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let dir = tempfile::tempdir()?;
    let registry = Upstream::start().await?;
    let version = env!("CARGO_PKG_VERSION");
    let pushed = format!("{}/spegel:{version}", registry.host());
    let image = SpegelImage::build(
        dir.path(),
        &[
            "--push",
            &format!("docker://{pushed}"),
            "--push-tls-verify",
            "false",
        ],
    )
    .await?;
    ensure!(image.layout == dir.path().join("spegel"), "{image:?}");

    // The config: spegel-node as entrypoint, nonroot by default.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.layout.join("index.json"))?)?;
    let manifest = image.blob(index["manifests"][0]["digest"].as_str().unwrap())?;
    let config = image.blob(manifest["config"]["digest"].as_str().unwrap())?;
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/spegel-node");

    let containerd = Containerd::start().await?;
    // Pushed: CRI pulls the very image (its config digest is the image ID).
    containerd.mirror_to(&registry.host())?;
    let id = containerd.cri_pull(&pushed).await?;
    assert_eq!(id, manifest["config"]["digest"].as_str().unwrap());

    containerd.import(&image.archive).await?;
    let version = format!("spegel-node {version}");
    let options = RunOptions {
        read_only: true,
        ..RunOptions::default()
    };
    for (id, binary, expected) in [
        ("node", "/usr/bin/spegel-node", version.as_str()),
        (
            "bootstrapper",
            "/usr/bin/spegel-bootstrapper",
            "spegel-bootstrapper",
        ),
    ] {
        let out = containerd
            .run(&image.name, id, &options, &[binary, "--version"])
            .await?;
        ensure!(
            out.starts_with(expected),
            "{binary} --version printed {out:?}"
        );
    }
    Ok(())
}
