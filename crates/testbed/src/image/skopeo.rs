//! skopeo against a plain-HTTP registry: pushing a test image byte for byte, and
//! reading manifests back exactly as the registry stores them.

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use super::TestImage;
use crate::netns::Host;

/// Copies `image` (every platform) to `docker://<upstream_host>/<repo>:<tag>` over plain
/// HTTP. `--preserve-digests` makes skopeo fail rather than rewrite (e.g. compress) a
/// blob or manifest, so the registry serves exactly the bytes in the layout.
pub async fn push(image: &TestImage, upstream_host: &str, repo: &str) -> Result<()> {
    push_in(image, None, upstream_host, repo).await
}

/// Like [`push`], with skopeo running inside `host`'s network namespace.
pub async fn push_in(
    image: &TestImage,
    host: Option<&Host>,
    upstream_host: &str,
    repo: &str,
) -> Result<()> {
    let source = format!("oci:{}:{}", image.layout_dir.display(), image.tag);
    let destination = format!("docker://{upstream_host}/{repo}:{}", image.tag);
    run_in(
        host,
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--quiet",
            &source,
            &destination,
        ],
    )
    .await?;
    Ok(())
}

/// The raw manifest (or index) bytes the registry at `upstream_host` serves for
/// `<repo>:<tag>` or `<repo>@<digest>`, via `skopeo inspect --raw`.
pub async fn inspect_raw(upstream_host: &str, repo_and_reference: &str) -> Result<Vec<u8>> {
    let source = format!("docker://{upstream_host}/{repo_and_reference}");
    run(&["inspect", "--raw", "--tls-verify=false", &source]).await
}

/// Runs `skopeo --insecure-policy <args>` and returns its stdout.
async fn run(args: &[&str]) -> Result<Vec<u8>> {
    run_in(None, args).await
}

/// Runs skopeo, inside `host`'s namespace when one is given.
async fn run_in(host: Option<&Host>, args: &[&str]) -> Result<Vec<u8>> {
    let mut command = match host {
        Some(host) => host.command("skopeo"),
        None => Command::new("skopeo"),
    };
    let output = command
        .arg("--insecure-policy")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("running skopeo")?;
    if !output.status.success() {
        bail!(
            "skopeo {} failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}
