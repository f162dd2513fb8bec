//! What the DHT advertises: content digests, downloads in progress and image tags, as one
//! key space.

use std::fmt;

use spegel_oci::{Digest, Repository, Tag};

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
    /// Content this node is about to download: the config and layers of a manifest it has
    /// just committed. Tells a node that misses the blob that others will want it too
    /// (`coming:<digest>`).
    Coming(Digest),
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
            Key::Digest(_) | Key::InFlight(_) | Key::Coming(_) => None,
            Key::Tag(name) => name.split('/').next(),
        }
    }

    /// Parses a DHT record key back into a [`Key`]: the one parser of keys arriving from
    /// peers. `None` for anything that is not exactly the text form of a key this node
    /// would advertise itself (the DHT stores nothing else).
    ///
    /// Each kind of key is one parser in [`KEY_PARSERS`], tried in order; a new kind adds its
    /// variant, its `Display` arm and one parser there.
    pub fn from_record_key(bytes: &[u8]) -> Option<Key> {
        if bytes.len() > MAX_KEY_BYTES {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        KEY_PARSERS.iter().find_map(|parse| parse(text))
    }

    pub(crate) fn record_key(&self) -> libp2p::kad::RecordKey {
        libp2p::kad::RecordKey::new(&self.to_string())
    }
}

/// Longest key text accepted from peers: a registry host (255) and a repository (255) and a
/// tag (128) with their separators fit.
const MAX_KEY_BYTES: usize = 640;

/// Where record-key (or any) `bytes` sit in the Kademlia key space: their SHA-256, what
/// libp2p's `kbucket::Key` computes for a walk target or a record key.
pub(crate) fn key_space_point(bytes: &[u8]) -> [u8; 32] {
    let mut point = [0; 32];
    point.copy_from_slice(libp2p::kad::KBucketKey::new(bytes.to_vec()).hashed_bytes());
    point
}

/// The parsers of [`Key::from_record_key`], one per kind of key.
const KEY_PARSERS: &[fn(&str) -> Option<Key>] =
    &[parse_digest, parse_in_flight, parse_coming, parse_tag];

/// `coming:sha256:<64 hex>`.
fn parse_coming(text: &str) -> Option<Key> {
    match parse_digest(text.strip_prefix("coming:")?)? {
        Key::Digest(digest) => Some(Key::Coming(digest)),
        _ => None,
    }
}

/// `inflight:sha256:<64 hex>`.
fn parse_in_flight(text: &str) -> Option<Key> {
    match parse_digest(text.strip_prefix("inflight:")?)? {
        Key::Digest(digest) => Some(Key::InFlight(digest)),
        _ => None,
    }
}

/// `sha256:<64 hex>` (what `Digest`'s `Display` writes).
fn parse_digest(text: &str) -> Option<Key> {
    let digest: Digest = text.parse().ok()?;
    // Only the canonical text: no case or other variants of one digest as distinct keys.
    (digest.to_string() == text).then_some(Key::Digest(digest))
}

/// `<registry host[:port]>/<repository>:<tag>`, each part valid.
fn parse_tag(text: &str) -> Option<Key> {
    let (registry, rest) = text.split_once('/')?;
    let (repository, tag) = rest.rsplit_once(':')?;
    let plausible_host = !registry.is_empty()
        && registry.len() <= 255
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plausible_host {
        return None;
    }
    let repository = Repository::parse(repository)?;
    let tag = Tag::parse(tag)?;
    Some(Key::tag(registry, repository.as_str(), tag.as_str()))
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Digest(d) => d.fmt(f),
            Key::InFlight(d) => write!(f, "inflight:{d}"),
            Key::Coming(d) => write!(f, "coming:{d}"),
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
    fn record_keys_parse_back_only_when_they_are_keys() {
        let digest = Digest::sha256_of(b"x");
        let valid = [
            Key::Digest(digest.clone()),
            Key::InFlight(digest.clone()),
            Key::Coming(digest.clone()),
            Key::tag("docker.io", "library/nginx", "1.27"),
            Key::tag("10.0.0.1:5000", "a/b-c", "v1.2_3"),
        ];
        for key in valid {
            assert_eq!(
                Key::from_record_key(key.to_string().as_bytes()),
                Some(key.clone()),
                "{key}"
            );
        }
        let upper = digest
            .to_string()
            .to_uppercase()
            .replace("SHA256", "sha256");
        let invalid: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"junk".to_vec(),
            vec![0xff, 0xfe],
            b"sha256:abc".to_vec(),
            b"inflight:sha256:abc".to_vec(),
            format!("inflight:inflight:{digest}").into_bytes(),
            upper.into_bytes(),
            b"docker.io/library/nginx".to_vec(),
            b"docker.io/UPPER:1".to_vec(),
            b"/a:b".to_vec(),
            b"reg istry/a:b".to_vec(),
            b"docker.io/a:b/c".to_vec(),
            format!("docker.io/a:{}", "t".repeat(200)).into_bytes(),
            vec![b'a'; 10_000],
        ];
        for bytes in invalid {
            assert_eq!(
                Key::from_record_key(&bytes),
                None,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
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
