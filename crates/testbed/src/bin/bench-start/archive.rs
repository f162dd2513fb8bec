//! An OCI archive of many small images, for `ctr images import --no-unpack`: each image a
//! manifest, a config and a few small layers of its own, named
//! `bench.example/start/img<N>:v1` by the `io.containerd.image.name` annotation.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Bytes of each layer (never unpacked, so any bytes do).
const LAYER_BYTES: usize = 512;

/// What was written.
pub struct Written {
    pub images: usize,
    pub blobs: usize,
}

/// Writes `images` images of `layers` layers each as a tar at `path`.
pub fn write(path: &Path, images: usize, layers: usize) -> Result<Written> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = Archive {
        builder: tar::Builder::new(BufWriter::new(file)),
        blobs: 0,
    };
    tar.append("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = Vec::with_capacity(images);
    for image in 0..images {
        let mut layer_descriptors = Vec::with_capacity(layers);
        for layer in 0..layers {
            let seed = format!("bench-start image {image} layer {layer}");
            let bytes: Vec<u8> = seed.bytes().cycle().take(LAYER_BYTES).collect();
            layer_descriptors.push(tar.blob(&bytes, LAYER_TYPE)?);
        }
        let diff_ids: Vec<&Value> = layer_descriptors.iter().map(|d| &d["digest"]).collect();
        let config = json!({
            "architecture": spegel_testbed::image::host_architecture(),
            "os": "linux",
            "config": { "Env": [format!("IMAGE={image}")] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = tar.blob(&serde_json::to_vec(&config)?, CONFIG_TYPE)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config,
            "layers": layer_descriptors,
        });
        let mut descriptor = tar.blob(&serde_json::to_vec(&manifest)?, MANIFEST_TYPE)?;
        descriptor["annotations"] = json!({
            "io.containerd.image.name": format!("bench.example/start/img{image}:v1"),
            "org.opencontainers.image.ref.name": "v1",
        });
        manifests.push(descriptor);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    tar.append("index.json", &serde_json::to_vec(&index)?)?;
    let blobs = tar.blobs;
    tar.builder
        .into_inner()
        .context("finishing the archive")?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing the archive")?;
    Ok(Written { images, blobs })
}

struct Archive {
    builder: tar::Builder<BufWriter<File>>,
    blobs: usize,
}

impl Archive {
    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        self.builder
            .append_data(&mut header, path, bytes)
            .with_context(|| format!("writing {path} into the archive"))
    }

    /// Stores `bytes` as a blob; its descriptor.
    fn blob(&mut self, bytes: &[u8], media_type: &str) -> Result<Value> {
        let hex = hex::encode(Sha256::digest(bytes));
        self.append(&format!("blobs/sha256/{hex}"), bytes)?;
        self.blobs += 1;
        Ok(json!({
            "mediaType": media_type,
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
        }))
    }
}
