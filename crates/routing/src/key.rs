//! What the DHT advertises: content digests, downloads in progress and image tags, as one
//! key space.

use std::fmt;

use spegel_oci::Digest;

/// A key a node can provide. Kinds cannot collide: a tag key always contains `/`
/// (`<registry>/<repository>:<tag>`), a digest and an in-flight key never do, and an
/// in-flight key (`inflight:<digest>`) has two colons where a digest has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Content addressed by digest (index, manifest, config or layer), held complete.
    Digest(Digest),
    /// Content this node's containerd is downloading right now: peers may follow the
    /// download, and nodes that want it at the same moment elect one of them to fetch it.
    InFlight(Digest),
    /// An image tag, `<registry>/<repository>:<tag>`, e.g. `docker.io/library/nginx:1.27`.
    Tag(String),
}

impl Key {
    /// A tag key for `<registry>/<repository>:<tag>`.
    pub fn tag(registry: &str, repository: &str, tag: &str) -> Key {
        Key::Tag(format!("{registry}/{repository}:{tag}"))
    }

    /// The registry part of the key, for metrics labels (`None` for digests).
    pub fn registry(&self) -> Option<&str> {
        match self {
            Key::Digest(_) | Key::InFlight(_) => None,
            Key::Tag(name) => name.split('/').next(),
        }
    }

    pub(crate) fn record_key(&self) -> libp2p::kad::RecordKey {
        libp2p::kad::RecordKey::new(&self.to_string())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Digest(d) => d.fmt(f),
            Key::InFlight(d) => write!(f, "inflight:{d}"),
            Key::Tag(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_name_registry_repository_and_tag() {
        let key = Key::tag("docker.io", "library/nginx", "1.27");
        assert_eq!(key.to_string(), "docker.io/library/nginx:1.27");
        assert_eq!(key.registry(), Some("docker.io"));
    }

    #[test]
    fn digest_and_tag_keys_differ_in_the_dht() {
        let d = Digest::sha256_of(b"x");
        let digest = Key::Digest(d.clone());
        let tag = Key::Tag(d.to_string());
        // Same text would mean the same DHT key; tags are never bare digests in practice.
        assert_eq!(digest.record_key(), tag.record_key());
        assert_ne!(digest.record_key(), Key::tag("r", "a", "b").record_key());
        let in_flight = Key::InFlight(d.clone());
        assert_eq!(in_flight.to_string(), format!("inflight:{d}"));
        assert_ne!(in_flight.record_key(), digest.record_key());
    }
}
