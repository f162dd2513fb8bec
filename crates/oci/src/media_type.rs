//! Manifest media types, and how to tell them from a manifest's bytes.
//!
//! containerd does not record a blob's media type, so the registry reads a manifest (they are
//! small) and takes its `mediaType` field, falling back to its shape when the field is absent
//! (it is optional in OCI manifests and indexes).

use serde::Deserialize;

/// Manifest media types spegel serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl MediaType {
    /// The media type string, as sent in `Content-Type`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            MediaType::OciIndex => "application/vnd.oci.image.index.v1+json",
            MediaType::DockerManifest => "application/vnd.docker.distribution.manifest.v2+json",
            MediaType::DockerManifestList => {
                "application/vnd.docker.distribution.manifest.list.v2+json"
            }
        }
    }

    fn from_str(s: &str) -> Option<MediaType> {
        [
            MediaType::OciManifest,
            MediaType::OciIndex,
            MediaType::DockerManifest,
            MediaType::DockerManifestList,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// True for indexes and manifest lists (documents that point at other manifests).
    pub fn is_index(self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }
}

/// Just the fields needed to tell a manifest's kind.
#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// The media type of a manifest document, or `None` when `bytes` is not a manifest or index.
pub fn detect_manifest_media_type(bytes: &[u8]) -> Option<MediaType> {
    let shape: Shape = serde_json::from_slice(bytes).ok()?;
    match shape.media_type {
        Some(declared) => MediaType::from_str(&declared),
        None if shape.manifests.is_some() => Some(MediaType::OciIndex),
        None if shape.config.is_some() => Some(MediaType::OciManifest),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_field_or_the_shape() {
        let cases: &[(&str, Option<MediaType>)] = &[
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}"#,
                Some(MediaType::DockerManifest),
            ),
            (
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#,
                Some(MediaType::DockerManifestList),
            ),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#,
                Some(MediaType::OciIndex),
            ),
            (
                r#"{"schemaVersion":2,"config":{},"layers":[]}"#,
                Some(MediaType::OciManifest),
            ),
            (r#"{"mediaType":"text/plain"}"#, None),
            (r#"{"architecture":"amd64"}"#, None),
            ("\u{0}\u{1}binary", None),
            ("", None),
        ];
        for (doc, want) in cases {
            assert_eq!(detect_manifest_media_type(doc.as_bytes()), *want, "{doc}");
        }
    }
}
