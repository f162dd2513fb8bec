//! What a manifest or index points at, for walking an image's content.

use serde::Deserialize;

use crate::{Digest, MediaType, detect_manifest_media_type};

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The content a manifest document references: an index's manifests, or a manifest's config
/// and layers. `None` when `bytes` is not a manifest or index (a config or a layer).
pub fn referenced_digests(bytes: &[u8]) -> Option<(MediaType, Vec<Digest>)> {
    let media_type = detect_manifest_media_type(bytes)?;
    let document: Document = serde_json::from_slice(bytes).ok()?;
    let descriptors = document
        .manifests
        .iter()
        .chain(document.config.iter())
        .chain(document.layers.iter());
    // A descriptor with a digest we cannot parse is skipped, not fatal: the rest is still ours.
    let digests = descriptors.filter_map(|d| d.digest.parse().ok()).collect();
    Some((media_type, digests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn an_index_references_its_manifests() {
        let doc = format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"digest":"{}"}},{{"digest":"{}"}}]}}"#,
            d(1),
            d(2)
        );
        let (media_type, digests) = referenced_digests(doc.as_bytes()).unwrap();
        assert!(media_type.is_index());
        let got: Vec<String> = digests.iter().map(|x| x.to_string()).collect();
        assert_eq!(got, [d(1), d(2)]);
    }

    #[test]
    fn a_manifest_references_config_then_layers() {
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}},{{"digest":"bogus"}}]}}"#,
            d(3),
            d(4)
        );
        let (_, digests) = referenced_digests(doc.as_bytes()).unwrap();
        let got: Vec<String> = digests.iter().map(|x| x.to_string()).collect();
        assert_eq!(got, [d(3), d(4)]);
    }

    #[test]
    fn a_config_is_not_a_manifest() {
        assert!(referenced_digests(br#"{"architecture":"amd64","rootfs":{}}"#).is_none());
    }
}
