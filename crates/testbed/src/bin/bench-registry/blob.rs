//! A random blob written into a testbed containerd's content store with
//! `ctr content ingest`, so `spegel-node` serves it from the content directory.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use spegel_testbed::Containerd;
use spegel_testbed::containerd::K8S_NAMESPACE;
use tokio::process::Command;

/// Bytes read from `/dev/urandom` and written per step.
const STEP: usize = 1024 * 1024;

/// A blob in the content store.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

impl StoredBlob {
    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// Writes `size` random bytes into `containerd`'s content store under a `gc.root` label
/// (so garbage collection leaves it alone) and checks the file is where spegel reads it.
pub async fn ingest_random(containerd: &Containerd, name: &str, size: u64) -> Result<StoredBlob> {
    let staging = tempfile::NamedTempFile::new().context("creating a staging file")?;
    let path = staging.path().to_owned();
    let digest = tokio::task::spawn_blocking(move || write_random(&path, size))
        .await
        .context("the blob writer panicked")??;
    let stdin = std::fs::File::open(staging.path()).context("opening the staging file")?;
    let output = Command::new("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["--namespace", K8S_NAMESPACE, "content", "ingest"])
        .args(["--expected-size", &size.to_string()])
        .args(["--expected-digest", &digest])
        .arg(name)
        .stdin(Stdio::from(stdin))
        .kill_on_drop(true)
        .output()
        .await
        .context("running ctr content ingest")?;
    if !output.status.success() {
        bail!(
            "ctr content ingest failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    drop(staging);
    containerd
        .ctr(&["content", "label", &digest, "containerd.io/gc.root=bench"])
        .await?;
    let stored = containerd.blob_path(&digest);
    let stored_size = std::fs::metadata(&stored)
        .with_context(|| format!("{} after ingest", stored.display()))?
        .len();
    if stored_size != size {
        bail!("{} has {stored_size} bytes, not {size}", stored.display());
    }
    Ok(StoredBlob { digest, size })
}

/// Fills `path` with `size` bytes from `/dev/urandom`; returns their `sha256:<hex>`.
fn write_random(path: &Path, size: u64) -> Result<String> {
    let mut random = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; STEP];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(STEP, |left| left.min(STEP));
        let chunk = &mut buf[..n];
        random.read_exact(chunk).context("reading /dev/urandom")?;
        hasher.update(&*chunk);
        file.write_all(chunk)
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_file_has_the_size_and_digest_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");

        let digest = write_random(&path, 3 * 1024 * 1024 + 5).unwrap();

        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 3 * 1024 * 1024 + 5);
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
    }
}
