//! The spegel image as `scripts/build-image.sh` builds it, from the binaries the tests run
//! (the directory of [`spegel_node_binary`](crate::spegel_node_binary); no release build),
//! as an OCI layout and the archive `ctr images import` takes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

/// A built image.
#[derive(Debug, Clone)]
pub struct SpegelImage {
    /// The OCI layout the script printed.
    pub layout: PathBuf,
    /// The layout as a tar archive, for `ctr images import`.
    pub archive: PathBuf,
    /// The name `ctr images import` gives it (`localhost/spegel:<version>`).
    pub name: String,
}

impl SpegelImage {
    /// Runs `build-image.sh --bin-dir <binaries> --out <dir>/spegel <extra_args>` and packs
    /// the layout into `<dir>/spegel.tar`.
    pub async fn build(dir: &Path, extra_args: &[&str]) -> Result<Self> {
        let node = crate::spegel_node_binary()?;
        let bin_dir = node.parent().context("spegel-node has no directory")?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-image.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--out")
            .arg(dir.join("spegel"))
            .args(extra_args)
            .output()
            .await
            .context("running build-image.sh")?;
        ensure!(
            output.status.success(),
            "build-image.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout)?;
        let layout = PathBuf::from(
            stdout
                .lines()
                .last()
                .context("build-image.sh printed nothing")?,
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
            .as_str()
            .context("index.json names no image")?
            .to_owned();
        let archive = dir.join("spegel.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .await?;
        ensure!(tar.success(), "tar of {} failed", layout.display());
        Ok(Self {
            layout,
            archive,
            name,
        })
    }

    /// The JSON blob `digest` (`sha256:<hex>`) of the layout.
    pub fn blob(&self, digest: &str) -> Result<serde_json::Value> {
        let hex = digest.trim_start_matches("sha256:");
        let path = self.layout.join("blobs/sha256").join(hex);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}
