//! Test images built on the spot, without internet: random-content layers in an OCI
//! image layout, pushed to a registry with skopeo keeping every digest.
//!
//! Layers are uncompressed tars so containerd can unpack them and the config's
//! `rootfs.diff_ids` equal the layer digests. A multi-platform image is an OCI index
//! over a manifest for the host platform and one for another architecture.

mod layout;
mod skopeo;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

pub use skopeo::{inspect_raw, push, push_in};

/// OCI media types the builder writes.
pub mod media_type {
    /// An OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed tar layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
}

/// Size of the single layer of the non-host platform in a multi-platform image.
const OTHER_PLATFORM_LAYER_BYTES: usize = 64 * 1024;

/// What image to build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Bytes of random data in each layer, one entry per layer.
    pub layers: Vec<usize>,
    /// Whether to wrap the image in an index that also lists a manifest for another
    /// architecture (with its own config and layer).
    pub multi_platform: bool,
}

/// One blob of a test image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The media type it is referenced with.
    pub media_type: String,
}

/// An image written to an OCI layout by [`build_oci_layout`].
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The tag the layout's `index.json` names it by.
    pub tag: String,
    /// The digest a tag resolves to: the index if multi-platform, else the manifest.
    pub root_digest: String,
    /// The manifest for the host platform (linux/amd64 here).
    pub manifest_digest: String,
    /// The host platform's config.
    pub config_digest: String,
    /// The host platform's layers, in order.
    pub layer_digests: Vec<String>,
    /// The OCI layout directory.
    pub layout_dir: PathBuf,
    host_blobs: Vec<Blob>,
    other_platform_blobs: Vec<Blob>,
}

impl TestImage {
    /// Every blob a pull for the host platform fetches: the index (if any), the
    /// manifest, the config and the layers.
    pub fn all_blobs(&self) -> Vec<Blob> {
        self.host_blobs.clone()
    }

    /// Blobs only a pull for the other platform fetches (empty unless multi-platform).
    pub fn other_platform_blobs(&self) -> &[Blob] {
        &self.other_platform_blobs
    }

    /// Where blob `digest` is stored in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        layout::blob_path(&self.layout_dir, digest)
    }

    /// The bytes of blob `digest`, e.g. the manifest as it must come back from a registry.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Writes `spec` as an OCI image layout in `dir` (one image per directory; an existing
/// `index.json` is replaced) and names it `tag`.
pub fn build_oci_layout(dir: &Path, spec: &ImageSpec, tag: &str) -> Result<TestImage> {
    let layout = layout::Layout::create(dir)?;
    let host = write_platform_image(&layout, host_architecture(), &spec.layers)?;
    let mut host_blobs = host.blobs();
    let (root, other_platform_blobs) = if spec.multi_platform {
        let other_layers = [OTHER_PLATFORM_LAYER_BYTES];
        let other = write_platform_image(&layout, other_architecture(), &other_layers)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type::INDEX,
            "manifests": [host.index_entry(), other.index_entry()],
        });
        let index = layout.write_json(&index, media_type::INDEX)?;
        host_blobs.insert(0, index.clone());
        (index, other.blobs())
    } else {
        (host.manifest.clone(), Vec::new())
    };
    layout.write_index_json(&root, tag)?;
    Ok(TestImage {
        tag: tag.to_owned(),
        root_digest: root.digest,
        manifest_digest: host.manifest.digest.clone(),
        config_digest: host.config.digest.clone(),
        layer_digests: host.layers.iter().map(|l| l.digest.clone()).collect(),
        layout_dir: dir.to_owned(),
        host_blobs,
        other_platform_blobs,
    })
}

/// The single-platform image for one architecture.
struct PlatformImage {
    architecture: &'static str,
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
}

impl PlatformImage {
    /// Manifest, config and layers.
    fn blobs(&self) -> Vec<Blob> {
        [self.manifest.clone(), self.config.clone()]
            .into_iter()
            .chain(self.layers.iter().cloned())
            .collect()
    }

    /// This manifest's entry in an image index.
    fn index_entry(&self) -> Value {
        json!({
            "mediaType": self.manifest.media_type,
            "digest": self.manifest.digest,
            "size": self.manifest.size,
            "platform": { "architecture": self.architecture, "os": "linux" },
        })
    }
}

fn write_platform_image(
    layout: &layout::Layout,
    architecture: &'static str,
    layer_sizes: &[usize],
) -> Result<PlatformImage> {
    let layers = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let size = u64::try_from(size).context("layer size")?;
            layout.write_random_layer(&format!("layer-{i}.bin"), size)
        })
        .collect::<Result<Vec<_>>>()?;
    let config = layout.write_json(&config_json(architecture, &layers)?, media_type::CONFIG)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::MANIFEST,
        "config": descriptor(&config),
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    let manifest = layout.write_json(&manifest, media_type::MANIFEST)?;
    Ok(PlatformImage {
        architecture,
        manifest,
        config,
        layers,
    })
}

/// A valid OCI image config. A random label makes every build's config unique, even
/// for an image without layers.
fn config_json(architecture: &str, layers: &[Blob]) -> Result<Value> {
    let mut nonce = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut nonce,
    )
    .context("reading /dev/urandom")?;
    Ok(json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Cmd": ["/layer-0.bin"],
            "Env": ["PATH=/"],
            "Labels": { "dev.spegel.testbed.nonce": hex::encode(nonce) },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>(),
        },
        "history": layers
            .iter()
            .enumerate()
            .map(|(i, _)| json!({ "created_by": format!("spegel-testbed layer {i}") }))
            .collect::<Vec<_>>(),
    }))
}

fn descriptor(blob: &Blob) -> Value {
    json!({ "mediaType": blob.media_type, "digest": blob.digest, "size": blob.size })
}

/// The host's architecture in OCI terms (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An architecture that is not the host's, for the second manifest of an index.
fn other_architecture() -> &'static str {
    if host_architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_json(image: &TestImage, digest: &str) -> Value {
        serde_json::from_slice(&image.read_blob(digest).unwrap()).unwrap()
    }

    #[test]
    fn a_single_platform_image_roots_at_its_manifest_and_diff_ids_equal_layer_digests() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            layers: vec![1000, 2000],
            multi_platform: false,
        };

        let image = build_oci_layout(dir.path(), &spec, "v1").unwrap();

        assert_eq!(image.root_digest, image.manifest_digest);
        assert_eq!(image.layer_digests.len(), 2);
        let config = read_json(&image, &image.config_digest);
        assert_eq!(config["rootfs"]["diff_ids"], json!(image.layer_digests));
        assert_eq!(config["architecture"], host_architecture());
        let manifest = read_json(&image, &image.manifest_digest);
        assert_eq!(manifest["config"]["digest"], image.config_digest);
        assert_eq!(manifest["layers"][1]["mediaType"], media_type::LAYER_TAR);
        assert_eq!(image.all_blobs().len(), 4);
        assert!(image.other_platform_blobs().is_empty());
    }

    #[test]
    fn a_multi_platform_image_roots_at_an_index_listing_both_architectures() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            layers: vec![1000],
            multi_platform: true,
        };

        let image = build_oci_layout(dir.path(), &spec, "v1").unwrap();

        let index = read_json(&image, &image.root_digest);
        assert_eq!(index["mediaType"], media_type::INDEX);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0]["digest"], image.manifest_digest);
        assert_eq!(
            manifests[0]["platform"]["architecture"],
            host_architecture()
        );
        assert_eq!(
            manifests[1]["platform"]["architecture"],
            other_architecture()
        );
        let host: Vec<String> = image.all_blobs().into_iter().map(|b| b.digest).collect();
        assert_eq!(host.len(), 4, "index, manifest, config, layer");
        assert_eq!(host[0], image.root_digest);
        assert_eq!(image.other_platform_blobs().len(), 3);
        for blob in image.other_platform_blobs() {
            assert!(!host.contains(&blob.digest));
        }
    }

    #[test]
    fn every_blob_is_stored_with_its_recorded_size() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            layers: vec![3000],
            multi_platform: true,
        };

        let image = build_oci_layout(dir.path(), &spec, "v1").unwrap();

        for blob in image.all_blobs().iter().chain(image.other_platform_blobs()) {
            let len = std::fs::metadata(image.blob_path(&blob.digest))
                .unwrap()
                .len();
            assert_eq!(len, blob.size, "{}", blob.digest);
        }
    }
}
