//! The image `scripts/build-image.sh` builds without Docker runs in a real containerd:
//! imported with `ctr images import`, started with `ctr run`, both binaries answer
//! `--version`, and the image runs as nonroot unless told otherwise.
//!
//! Packs the binaries the other end-to-end tests run (no release build here).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use spegel_testbed::Containerd;
use tokio::process::Command;

/// The repository root.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs build-image.sh on the binaries next to spegel-node; returns the layout's path
/// (the script's last line).
async fn build_image(out: &Path) -> Result<PathBuf> {
    let node = spegel_testbed::spegel_node_binary()?;
    let bin_dir = node.parent().context("spegel-node has no directory")?;
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/build-image.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out)
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "build-image.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout
        .lines()
        .last()
        .context("build-image.sh printed nothing")?;
    Ok(PathBuf::from(last))
}

/// The JSON blob `digest` (`sha256:<hex>`) of the layout.
fn blob(layout: &Path, digest: &str) -> Result<serde_json::Value> {
    let hex = digest.trim_start_matches("sha256:");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[tokio::test]
async fn the_built_image_runs_spegel_node_in_containerd() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let dir = tempfile::tempdir()?;
    let layout = build_image(&dir.path().join("spegel")).await?;
    ensure!(layout == dir.path().join("spegel"), "{}", layout.display());

    // The config: spegel-node as entrypoint, nonroot by default.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest = blob(&layout, index["manifests"][0]["digest"].as_str().unwrap())?;
    let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap())?;
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/spegel-node");
    let name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
        .as_str()
        .unwrap()
        .to_owned();

    // Into a real containerd, as an OCI archive.
    let archive = dir.path().join("spegel.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .await?;
    ensure!(tar.success(), "tar failed");
    let containerd = Containerd::start().await?;
    containerd
        .ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            archive.to_str().unwrap(),
        ])
        .await?;
    let version = format!("spegel-node {}", env!("CARGO_PKG_VERSION"));
    for (id, binary, expected) in [
        ("node", "/usr/bin/spegel-node", version.as_str()),
        (
            "bootstrapper",
            "/usr/bin/spegel-bootstrapper",
            "spegel-bootstrapper",
        ),
    ] {
        let out = containerd
            .ctr(&[
                "run",
                "--rm",
                "--snapshotter",
                "native",
                &name,
                id,
                binary,
                "--version",
            ])
            .await?;
        ensure!(
            out.starts_with(expected),
            "{binary} --version printed {out:?}"
        );
    }
    Ok(())
}
