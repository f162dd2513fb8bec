//! [`Mirror::measure`] against scripted peers (see `common`): an image by tag is resolved
//! through its tag key, its manifest and blobs fetched from peers, verified and timed; a peer
//! that lies is reported, and the size limit stops the measure.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Peer, REGISTRY, Reply, Script, Seen, blob};
use http::StatusCode;
use spegel_metrics::Metrics;
use spegel_oci::{Digest, Reference, Repository, Tag};
use spegel_registry::{BlobKind, MeasureLimits, MeasureTarget, Mirror, MirrorConfig};
use spegel_routing::{Key, PeerId};

/// A manifest naming `config` and `layer`, and its digest.
fn manifest(config: &Digest, layer: &Digest) -> (Bytes, Digest) {
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":1}}]}}"#
    );
    let digest = Digest::sha256_of(json.as_bytes());
    (Bytes::from(json), digest)
}

struct Image {
    manifest: (Bytes, Digest),
    config: (Bytes, Digest),
    layer: (Bytes, Digest),
}

fn image() -> Image {
    let config = blob(300, 1);
    let layer = blob(100_000, 2);
    Image {
        manifest: manifest(&config.1, &layer.1),
        config,
        layer,
    }
}

/// A peer holding `image`; `layer_bytes` is what it sends for the layer.
fn holder(image: &Image, layer_bytes: Bytes) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let (m, md) = image.manifest.clone();
    let (c, cd) = image.config.clone();
    let ld = image.layer.1.clone();
    move |seen: &Seen| {
        if seen.path.contains("/manifests/v1") {
            Reply::blob(&m).header("docker-content-digest", md.to_string())
        } else if seen.path.contains(&cd.to_string()) {
            Reply::blob(&c)
        } else if seen.path.contains(&ld.to_string()) {
            Reply::blob(&layer_bytes)
        } else {
            Reply::status(StatusCode::NOT_FOUND)
        }
    }
}

fn target() -> MeasureTarget {
    MeasureTarget {
        registry: REGISTRY.to_owned(),
        repository: Repository::parse("library/app").unwrap(),
        reference: Reference::Tag(Tag::parse("v1").unwrap()),
    }
}

fn mirror_with(peer: &Peer, image: &Image) -> Mirror {
    let script = Script::new(PeerId::random());
    script.provide(
        Key::tag(REGISTRY, "library/app", "v1"),
        vec![peer.provider()],
    );
    for digest in [&image.config.1, &image.layer.1] {
        script.provide(Key::Digest(digest.clone()), vec![peer.provider()]);
    }
    Mirror::new(script, MirrorConfig::default(), Arc::new(Metrics::new()))
}

#[tokio::test]
async fn a_tag_is_measured_manifest_config_and_layer_from_the_peer_that_holds_them() {
    let image = image();
    let peer = Peer::start(holder(&image, image.layer.0.clone())).await;
    let mirror = mirror_with(&peer, &image);

    let measured = mirror.measure(&target(), MeasureLimits::default()).await;

    assert_eq!(measured.stopped, None);
    let kinds: Vec<BlobKind> = measured.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [BlobKind::Manifest, BlobKind::Config, BlobKind::Layer]
    );
    for step in &measured.steps {
        assert_eq!(step.error, None, "{step:?}");
        assert_eq!(step.peer.as_ref().unwrap().peer, peer.id);
    }
    assert_eq!(measured.steps[0].digest.as_ref(), Some(&image.manifest.1));
    assert_eq!(measured.steps[2].bytes, 100_000);
    assert_eq!(
        measured.bytes(),
        (image.manifest.0.len() + image.config.0.len() + 100_000) as u64
    );
    // Every request was a peer's request, so the peer served it from its own store only.
    assert!(
        peer.gets()
            .iter()
            .all(|s| s.header("x-spegel-mirrored") == Some("true"))
    );
    assert!(
        peer.gets()
            .iter()
            .all(|s| s.path.contains("?ns=example.com"))
    );
}

#[tokio::test]
async fn a_layer_whose_bytes_do_not_match_is_reported_not_counted_as_good() {
    let image = image();
    let wrong = blob(100_000, 99).0;
    let peer = Peer::start(holder(&image, wrong)).await;
    let mirror = mirror_with(&peer, &image);

    let measured = mirror.measure(&target(), MeasureLimits::default()).await;

    let layer = measured.steps.last().unwrap();
    assert_eq!(layer.kind, BlobKind::Layer);
    assert_eq!(
        layer.error.as_deref(),
        Some("the bytes do not match the digest")
    );
}

#[tokio::test]
async fn the_size_limit_stops_the_measure() {
    let image = image();
    let peer = Peer::start(holder(&image, image.layer.0.clone())).await;
    let mirror = mirror_with(&peer, &image);
    let limits = MeasureLimits {
        max_bytes: 10_000,
        ..MeasureLimits::default()
    };

    let measured = mirror.measure(&target(), limits).await;

    let layer = measured.steps.last().unwrap();
    assert_eq!(layer.error.as_deref(), Some("size limit reached"));
    assert!(measured.bytes() <= 10_000 + 16 * 1024 + 1000);
}

#[tokio::test]
async fn an_image_no_peer_holds_says_so() {
    let mirror = Mirror::new(
        Script::new(PeerId::random()),
        MirrorConfig::default(),
        Arc::new(Metrics::new()),
    );
    let limits = MeasureLimits {
        lookup_timeout: std::time::Duration::from_millis(50),
        ..MeasureLimits::default()
    };

    let measured = mirror.measure(&target(), limits).await;

    assert_eq!(measured.steps.len(), 1);
    assert_eq!(measured.steps[0].error.as_deref(), Some("no peer holds it"));
    assert!(measured.stopped.is_some());
}
