//! Proxied vs direct: the same blob fetched from the node that holds it, and through a
//! second node that holds nothing and streams it from the first (one peer hop, every byte
//! hashed on the way), as containerd on the second node would get it.
//!
//! The blob becomes the layer of an image `bench.example/bench/proxied:v1` imported into the
//! first node's containerd (`ctr images import --no-unpack`), so the first node advertises
//! it; the second node (its own empty containerd) bootstraps from the first node's router.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use spegel_testbed::{Containerd, SpegelNode, http};

use crate::blob::StoredBlob;
use crate::{Measured, median_and_best, spread};

/// The upstream registry the image claims to come from (the `ns` containerd would send).
const REGISTRY: &str = "bench.example";
const REPOSITORY: &str = "bench/proxied";

/// How long the second node may take to resolve the blob through the first.
const RESOLVE_PATIENCE: Duration = Duration::from_secs(30);

/// The first node: its containerd, router address and registry (with its pid).
pub struct Holder<'a> {
    pub containerd: &'a Containerd,
    pub router: &'a str,
    pub server: &'a crate::Server,
}

/// `rounds` rounds of one GET of `blob` from the holder and one through a second node,
/// alternating which goes first; prints the table and the ratio.
pub async fn run(binary: &Path, holder: &Holder<'_>, blob: &StoredBlob, rounds: u32) -> Result<()> {
    import_image(holder.containerd, blob).await?;
    let empty = Containerd::start().await?;
    let proxy_node =
        SpegelNode::start_binary(binary, &empty, &["--bootstrap-peers", holder.router]).await?;
    let proxy = crate::Server {
        kind: crate::Kind::Spegel,
        addr: proxy_node.addr(),
        pids: vec![
            proxy_node
                .pid()
                .context("the second spegel-node has no pid")?,
        ],
    };
    let path = format!("/v2/{REPOSITORY}/blobs/{}?ns={REGISTRY}", blob.digest);
    let direct_path = format!("/v2/{REPOSITORY}/blobs/{}", blob.digest);
    wait_until_resolved(&proxy_node, &path).await?;
    let checked = crate::load::get(proxy.addr, &path, blob.size, true).await?;
    if checked.digest.as_deref() != Some(blob.digest.as_str()) {
        bail!("the proxied body has digest {:?}", checked.digest);
    }

    let both: Vec<u32> = holder
        .server
        .pids
        .iter()
        .chain(&proxy.pids)
        .copied()
        .collect();
    let (mut direct, mut proxied, mut proxy_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for proxied_first in [round % 2 == 1, round % 2 == 0] {
            if proxied_first {
                let proxy_before = crate::load::cpu_seconds(&proxy.pids)?;
                let before = crate::load::cpu_seconds(&both)?;
                let fetched = crate::load::get(proxy.addr, &path, blob.size, false).await?;
                let measured = Measured {
                    bytes: fetched.bytes,
                    elapsed: fetched.elapsed,
                    server_cpu: crate::load::cpu_seconds(&both)? - before,
                };
                proxy_cpu.push(Measured {
                    server_cpu: crate::load::cpu_seconds(&proxy.pids)? - proxy_before,
                    ..measured
                });
                proxied.push(measured);
            } else {
                let before = crate::load::cpu_seconds(&holder.server.pids)?;
                let fetched =
                    crate::load::get(holder.server.addr, &direct_path, blob.size, false).await?;
                direct.push(Measured {
                    bytes: fetched.bytes,
                    elapsed: fetched.elapsed,
                    server_cpu: crate::load::cpu_seconds(&holder.server.pids)? - before,
                });
            }
        }
    }
    println!();
    println!(
        "## Proxied vs direct: one {} MiB blob, {rounds} rounds",
        blob.size >> 20
    );
    println!(
        "| path | median MB/s | min–max MB/s | CPU s/GiB (median), all spegel-nodes on the path | of which the proxying node |"
    );
    println!("|---|---|---|---|---|");
    let row = |name: &str, runs: &[Measured], own: Option<&[Measured]>| {
        let (median, min, max) = spread(runs.iter().map(Measured::mb_per_s));
        let cpu = median_and_best(runs.iter().map(Measured::cpu_per_gib)).median;
        let own = own.map_or("–".to_owned(), |own| {
            format!(
                "{:.2}",
                median_and_best(own.iter().map(Measured::cpu_per_gib)).median
            )
        });
        println!("| {name} | {median:.0} | {min:.0}–{max:.0} | {cpu:.2} | {own} |");
    };
    row("direct (holder)", &direct, None);
    row("proxied (one hop, hashed)", &proxied, Some(&proxy_cpu));
    let ratio = median_and_best(
        proxied
            .iter()
            .zip(&direct)
            .map(|(p, d)| p.mb_per_s() / d.mb_per_s()),
    );
    println!(
        "ratio proxied/direct: median of per-round ratios {:.2}",
        ratio.median
    );
    drop(proxy_node);
    Ok(())
}

/// Waits until the proxying node answers a HEAD of the blob (it found the holder).
async fn wait_until_resolved(node: &SpegelNode, path: &str) -> Result<()> {
    let url = format!("{}{path}", node.url());
    let started = Instant::now();
    loop {
        if http::head(&url, &[]).await?.status == 200 {
            return Ok(());
        }
        if started.elapsed() > RESOLVE_PATIENCE {
            bail!(
                "the second node never found the blob through the first:\n{}",
                node.log()?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Imports an image whose one layer is `blob` into `containerd`, so its node advertises it.
async fn import_image(containerd: &Containerd, blob: &StoredBlob) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let archive = dir.path().join("proxied.tar");
    let layer = containerd.blob_path(&blob.digest);
    let (archive_path, blob) = (archive.clone(), blob.clone());
    tokio::task::spawn_blocking(move || write_archive(&archive_path, &layer, &blob))
        .await
        .context("the archive writer panicked")??;
    containerd
        .ctr(&[
            "images",
            "import",
            "--no-unpack",
            "--all-platforms",
            &archive.to_string_lossy(),
        ])
        .await?;
    Ok(())
}

fn write_archive(path: &Path, layer: &Path, blob: &StoredBlob) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let mut append = |name: &str, bytes: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
            .with_context(|| format!("writing {name}"))
    };
    let descriptor = |bytes: &[u8], media_type: &str| {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        (
            digest.clone(),
            json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}),
        )
    };
    let layer_descriptor = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": blob.digest,
        "size": blob.size,
    });
    let config = serde_json::to_vec(&json!({
        "architecture": spegel_testbed::image::host_architecture(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [blob.digest]},
    }))?;
    let (config_digest, config_descriptor) =
        descriptor(&config, "application/vnd.oci.image.config.v1+json");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [layer_descriptor],
    }))?;
    let (manifest_digest, mut manifest_descriptor) =
        descriptor(&manifest, "application/vnd.oci.image.manifest.v1+json");
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": format!("{REGISTRY}/{REPOSITORY}:v1"),
        "org.opencontainers.image.ref.name": "v1",
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))?;
    append("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(&blob_name(&config_digest), &config)?;
    append(&blob_name(&manifest_digest), &manifest)?;
    append("index.json", &index)?;
    let mut layer_file =
        File::open(layer).with_context(|| format!("opening {}", layer.display()))?;
    tar.append_file(blob_name(&blob.digest), &mut layer_file)
        .context("writing the layer into the archive")?;
    tar.into_inner()
        .context("finishing the archive")?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing the archive")?;
    Ok(())
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}
