//! Writing an OCI image layout: `oci-layout`, `blobs/sha256/<hex>` and `index.json`.
//!
//! Layers are streamed through a hashing writer into a temporary file and renamed to
//! their digest, so a large layer never sits in memory.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Blob, media_type};

/// The `org.opencontainers.image.ref.name` annotation skopeo's `oci:` transport matches.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout directory being written.
pub(super) struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Creates `dir/blobs/sha256` and writes `dir/oci-layout`.
    pub(super) fn create(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let marker = dir.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .with_context(|| format!("writing {}", marker.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Serializes `value` and stores it as a blob of `media_type`.
    pub(super) fn write_json(&self, value: &Value, media_type: &str) -> Result<Blob> {
        let bytes = serde_json::to_vec(value).context("serializing JSON")?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let path = blob_path(&self.dir, &digest);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(Blob {
            digest,
            size: len_u64(bytes.len()),
            media_type: media_type.to_owned(),
        })
    }

    /// Writes an uncompressed tar layer holding one file, `file_name`, of `size` random
    /// bytes. For an uncompressed layer the digest is also the config's diff id.
    pub(super) fn write_random_layer(&self, file_name: &str, size: u64) -> Result<Blob> {
        let blobs = self.dir.join("blobs").join("sha256");
        let temp = tempfile::NamedTempFile::new_in(&blobs)
            .with_context(|| format!("creating a temporary file in {}", blobs.display()))?;
        let writer = HashingWriter::new(temp.reopen().context("reopening a temporary file")?);
        let mut tar = tar::Builder::new(writer);
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        let random = File::open("/dev/urandom")
            .context("opening /dev/urandom")?
            .take(size);
        tar.append_data(&mut header, file_name, random)
            .with_context(|| format!("writing {size} random bytes into a layer"))?;
        let (digest, written) = tar
            .into_inner()
            .context("finishing a layer tar")?
            .finish()
            .context("flushing a layer")?;
        let path = blob_path(&self.dir, &digest);
        temp.persist(&path)
            .with_context(|| format!("moving a layer to {}", path.display()))?;
        Ok(Blob {
            digest,
            size: written,
            media_type: media_type::LAYER_TAR.to_owned(),
        })
    }

    /// Writes `index.json` naming `root` as `tag`.
    pub(super) fn write_index_json(&self, root: &Blob, tag: &str) -> Result<()> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type::INDEX,
            "manifests": [{
                "mediaType": root.media_type,
                "digest": root.digest,
                "size": root.size,
                "annotations": { REF_NAME_ANNOTATION: tag },
            }],
        });
        let path = self.dir.join("index.json");
        let bytes = serde_json::to_vec_pretty(&index).context("serializing index.json")?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

/// Where blob `digest` (`sha256:<hex>`) lives in the layout at `dir`.
pub(super) fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(algorithm).join(hex)
}

/// A buffered file writer that hashes and counts what passes through.
struct HashingWriter {
    file: BufWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl HashingWriter {
    fn new(file: File) -> Self {
        Self {
            file: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Flushes to disk and returns the digest and the byte count.
    fn finish(mut self) -> io::Result<(String, u64)> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        Ok((digest, self.written))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += len_u64(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_layer_is_a_tar_with_one_file_of_the_asked_size_stored_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();

        let blob = layout.write_random_layer("data.bin", 10_000).unwrap();

        let bytes = std::fs::read(blob_path(dir.path(), &blob.digest)).unwrap();
        assert_eq!(len_u64(bytes.len()), blob.size);
        assert_eq!(
            blob.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
        );
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                (path, entry.size())
            })
            .collect();
        assert_eq!(entries, vec![("data.bin".to_owned(), 10_000)]);
    }

    #[test]
    fn two_random_layers_of_the_same_size_differ() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();

        let a = layout.write_random_layer("a", 1024).unwrap();
        let b = layout.write_random_layer("a", 1024).unwrap();

        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn index_json_names_the_root_under_the_ref_name_annotation() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let root = layout
            .write_json(&json!({"schemaVersion": 2}), media_type::MANIFEST)
            .unwrap();

        layout.write_index_json(&root, "v1").unwrap();

        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], root.digest);
        assert_eq!(entry["annotations"][REF_NAME_ANNOTATION], "v1");
        assert!(dir.path().join("oci-layout").exists());
    }
}
