//! Walking containerd's images into the set of keys the node can serve.

use std::collections::{BTreeMap, HashMap, HashSet};

use spegel_containerd::{Containerd, read_small};
use spegel_oci::{Digest, ImageFilter, ImageName, referenced_digests};
use spegel_routing::Key;

/// Manifests larger than this are not walked (registries refuse them too).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Advertised counts per registry, for the `spegel_advertised_*` gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryCounts {
    pub registry: String,
    pub image_tags: usize,
    pub image_digests: usize,
    pub content_digests: usize,
}

/// Per registry: tag keys, image targets and content digests seen in one reconcile.
type Seen = (HashSet<String>, HashSet<Digest>, HashSet<Digest>);

/// The walk's memory: what each manifest references (content is immutable, so this never
/// goes stale) and the counts of the last reconcile.
#[derive(Default)]
pub struct Inventory {
    /// Digest → (is an index, referenced digests); `None` for blobs that are not manifests.
    children: HashMap<Digest, Option<(bool, Vec<Digest>)>>,
    counts: Vec<RegistryCounts>,
}

impl Inventory {
    /// The keys the node can serve right now.
    pub async fn reconcile(
        &mut self,
        containerd: &Containerd,
        filter: &ImageFilter,
    ) -> spegel_containerd::Result<HashSet<Key>> {
        let images = containerd.images().await?;
        let present = containerd.blob_digests().await?;
        self.children.retain(|digest, _| present.contains(digest));
        let mut keys = HashSet::new();
        let mut per_registry: BTreeMap<String, Seen> = BTreeMap::new();
        for image in images {
            let Some(name) = ImageName::parse(&image.name) else {
                continue;
            };
            if !filter.allows(&name.registry, &image.name) || !present.contains(&image.target) {
                continue;
            }
            let counts = per_registry.entry(name.registry.clone()).or_default();
            if let Some(tag) = &name.tag {
                let key = Key::tag(&name.registry, name.repository.as_str(), tag.as_str());
                counts.0.insert(key.to_string());
                keys.insert(key);
            }
            counts.1.insert(image.target.clone());
            for digest in self.walk(containerd, &image.target, &present).await? {
                counts.2.insert(digest.clone());
                keys.insert(Key::Digest(digest));
            }
        }
        self.counts = per_registry
            .into_iter()
            .map(|(registry, (tags, images, content))| RegistryCounts {
                registry,
                image_tags: tags.len(),
                image_digests: images.len(),
                content_digests: content.len(),
            })
            .collect();
        Ok(keys)
    }

    /// Counts of the last reconcile.
    pub fn counts(&self) -> Vec<RegistryCounts> {
        self.counts.clone()
    }

    /// Every digest reachable from `root` that containerd holds.
    async fn walk(
        &mut self,
        containerd: &Containerd,
        root: &Digest,
        present: &HashSet<Digest>,
    ) -> spegel_containerd::Result<Vec<Digest>> {
        let mut found = Vec::new();
        // (digest, may be a manifest): children of a manifest are config and layers.
        let mut stack = vec![(root.clone(), true)];
        let mut seen = HashSet::new();
        while let Some((digest, may_be_manifest)) = stack.pop() {
            if !present.contains(&digest) || !seen.insert(digest.clone()) {
                continue;
            }
            found.push(digest.clone());
            if !may_be_manifest {
                continue;
            }
            if !self.children.contains_key(&digest) {
                let bytes = read_small(containerd, &digest, MAX_MANIFEST_BYTES).await?;
                let parsed = bytes
                    .as_deref()
                    .and_then(referenced_digests)
                    .map(|(media_type, children)| (media_type.is_index(), children));
                self.children.insert(digest.clone(), parsed);
            }
            if let Some(Some((is_index, children))) = self.children.get(&digest) {
                stack.extend(children.iter().map(|c| (c.clone(), *is_index)));
            }
        }
        Ok(found)
    }
}
