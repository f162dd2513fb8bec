//! Zones in the mirror, against scripted peers on 127.0.0.1 under paused time (see
//! `mirror.rs` for why the timings are exact): a node asks the peers of its own zone first,
//! learns unknown peers' zones before it picks one, hedges inside its zone while it can, and
//! crosses a zone only when nobody in its zone answers.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Node, Peer, Reply, Script, Seen, blob, blob_path, get, head, ranked, receive};
use http::{Method, StatusCode};
use spegel_registry::{
    FLIGHT_HEADER, HOLD_HEADER, LocalZone, MirrorConfig, SOURCE_HEADER, ZONE_HEADER, Zone,
};
use spegel_routing::{Key, PeerId};

const BLOB_LEN: usize = 100_000;

/// A peer in `zone` holding `bytes`: it names its zone in every answer, as spegel-node does.
fn holder(zone: &'static str, bytes: &Bytes, delay: Duration) -> impl Fn(&Seen) -> Reply + use<> {
    let bytes = bytes.clone();
    move |seen: &Seen| {
        let reply = if seen.path.starts_with("/v2/?") || seen.path == "/v2/" {
            Reply::status(StatusCode::OK)
        } else {
            Reply::honest(&bytes, seen).after(delay)
        };
        reply.header(ZONE_HEADER, zone)
    }
}

fn in_zone(zone: &str) -> MirrorConfig {
    MirrorConfig {
        zone: LocalZone::fixed(Zone::parse(zone).unwrap()),
        ..MirrorConfig::default()
    }
}

fn blob_gets(peer: &Peer) -> usize {
    peer.seen()
        .iter()
        .filter(|s| s.method == Method::GET && s.path.contains("/blobs/"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_node_learns_its_providers_zones_and_fetches_from_its_own_zone() {
    let (bytes, digest) = blob(BLOB_LEN, 1);
    let far = Peer::start(holder("a", &bytes, Duration::ZERO)).await;
    let near = Peer::start(holder("b", &bytes, Duration::ZERO)).await;
    let script = Script::new(PeerId::random());
    // Without zones the last listed would be asked first: the far one.
    script.provide(
        Key::Digest(digest.clone()),
        vec![near.provider(), far.provider()],
    );
    let node = Node::start(script, in_zone("b")).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[ZONE_HEADER],
        "b",
        "the node names its zone"
    );
    let received = receive(response).await;
    assert!(received.complete);
    assert_eq!(received.bytes, bytes);

    assert_eq!((blob_gets(&near), blob_gets(&far)), (1, 0));
    for peer in [&near, &far] {
        assert!(
            peer.seen()
                .iter()
                .any(|s| s.method == Method::HEAD && s.path == "/v2/"),
            "each peer was asked its zone before one was picked"
        );
    }
    let same = node.metric("spegel_peer_bytes_total{zone=\"same\"}");
    assert_eq!(same, Some(BLOB_LEN as f64));
    assert_eq!(node.metric("spegel_peer_bytes_total{zone=\"other\"}"), None);

    // Zones are asked once per peer.
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    receive(response).await;
    let asked = far.seen().iter().filter(|s| s.path == "/v2/").count();
    assert_eq!((asked, blob_gets(&near), blob_gets(&far)), (1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn hedging_stays_in_the_zone_while_a_provider_there_is_left() {
    let (bytes, digest) = blob(BLOB_LEN, 2);
    let far = Peer::start(holder("a", &bytes, Duration::ZERO)).await;
    let slow = Peer::start(holder("b", &bytes, Duration::from_secs(5))).await;
    let near = Peer::start(holder("b", &bytes, Duration::ZERO)).await;
    let script = Script::new(PeerId::random());
    // Least used ties: the last listed of a zone is asked first, so the slow one is.
    script.provide(
        Key::Digest(digest.clone()),
        vec![far.provider(), near.provider(), slow.provider()],
    );
    let node = Node::start(script, in_zone("b")).await;

    let received = receive(get(node.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);
    assert_eq!(
        (blob_gets(&slow), blob_gets(&near), blob_gets(&far)),
        (1, 1, 0),
        "the hedge went to the other peer in the zone, not across"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_crosses_a_zone_when_its_zone_does_not_answer_in_time() {
    let (bytes, digest) = blob(BLOB_LEN, 3);
    let far = Peer::start(holder("a", &bytes, Duration::ZERO)).await;
    let slow = Peer::start(holder("b", &bytes, Duration::from_secs(5))).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![far.provider(), slow.provider()],
    );
    let node = Node::start(script, in_zone("b")).await;

    let started = tokio::time::Instant::now();
    let received = receive(get(node.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert_eq!((blob_gets(&slow), blob_gets(&far)), (1, 1));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "crossed after the hedge delay"
    );
    let other = node.metric("spegel_peer_bytes_total{zone=\"other\"}");
    assert_eq!(other, Some(BLOB_LEN as f64));
}

#[tokio::test(start_paused = true)]
async fn only_another_zone_holding_it_is_no_obstacle_and_zoneless_nodes_rank_by_use_only() {
    let (bytes, digest) = blob(BLOB_LEN, 4);
    let far = Peer::start(holder("a", &bytes, Duration::ZERO)).await;
    let script = Script::new(PeerId::random());
    script.provide(Key::Digest(digest.clone()), vec![far.provider()]);
    let zoned = Node::start(script.clone(), in_zone("b")).await;
    let received = receive(get(zoned.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);

    // A node without a zone asks nobody for theirs and names none.
    let zoneless = Node::start(script, MirrorConfig::default()).await;
    let response = head(zoneless.addr, &blob_path(&digest)).await;
    assert!(response.headers().get(ZONE_HEADER).is_none());
    let asked = far.seen().iter().filter(|s| s.path == "/v2/").count();
    assert_eq!(asked, 1, "only the zoned node asked");
    let unknown = zoneless.metric("spegel_peer_bytes_total{zone=\"unknown\"}");
    assert_eq!(unknown, None, "a HEAD moves no blob bytes");
}

/// A node in zone b that misses a blob other nodes are downloading: the one fetching it from
/// the upstream is in zone a, a node following it is in zone b. Following the zone-b node,
/// zone b takes one copy across the boundary instead of one per node.
#[tokio::test(start_paused = true)]
async fn a_cold_pull_follows_a_download_in_its_own_zone_rather_than_the_owner_across() {
    let (bytes, digest) = blob(BLOB_LEN, 5);
    let downloading = |zone: &'static str, following: bool, bytes: &Bytes| {
        let bytes = bytes.clone();
        move |seen: &Seen| {
            let reply = if seen.path == "/v2/" {
                Reply::status(StatusCode::OK)
            } else {
                let reply = Reply::honest(&bytes, seen).header(SOURCE_HEADER, "in-flight");
                if following {
                    reply.header(FLIGHT_HEADER, "following")
                } else {
                    reply.header(FLIGHT_HEADER, "owner")
                }
            };
            reply.header(ZONE_HEADER, zone)
        }
    };
    let owner = Peer::start(downloading("a", false, &bytes)).await;
    let follower = Peer::start(downloading("b", true, &bytes)).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::InFlight(digest.clone()),
        vec![owner.provider(), follower.provider()],
    );
    let node = Node::start(script, in_zone("b")).await;

    let received = receive(get(node.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert_eq!((blob_gets(&owner), blob_gets(&follower)), (0, 1));
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"followed\"}"),
        Some(1.0)
    );
}

/// The DHT lists the node's only zone-mate after more peers than the node tries: it looks
/// further than it tries, so it still finds it.
#[tokio::test(start_paused = true)]
async fn a_zone_mate_found_after_more_providers_than_are_tried_is_still_chosen() {
    let (bytes, digest) = blob(BLOB_LEN, 6);
    let mut far = Vec::new();
    for _ in 0..4 {
        far.push(Peer::start(holder("a", &bytes, Duration::ZERO)).await);
    }
    let near = Peer::start(holder("b", &bytes, Duration::ZERO)).await;
    let script = Script::new(PeerId::random());
    let mut providers: Vec<_> = far.iter().map(Peer::provider).collect();
    providers.push(near.provider());
    script.provide(Key::Digest(digest.clone()), providers);
    let config = in_zone("b");
    assert!(config.max_peers < 5);
    let node = Node::start(script, config).await;

    let received = receive(get(node.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);
    assert_eq!(blob_gets(&near), 1);
    assert_eq!(far.iter().map(blob_gets).sum::<usize>(), 0);
}

/// A cold pull: the node ranked first (the owner) is in zone a; a node of zone b ranked
/// above this one (zone b) is still deciding too. This node holds its request on its
/// zone-mate, not on the owner across the zone: zone b takes one copy across.
#[tokio::test(start_paused = true)]
async fn in_an_election_a_node_waits_on_its_zones_first_claimant_before_the_owner() {
    let (bytes, digest) = blob(BLOB_LEN, 7);
    let ids = ranked(&digest, 3);
    let deciding = |zone: &'static str, bytes: &Bytes| {
        let bytes = bytes.clone();
        move |seen: &Seen| {
            let reply = match (seen.method == Method::HEAD, seen.header(HOLD_HEADER)) {
                (false, Some(_)) => Reply::blob(&bytes)
                    .header(SOURCE_HEADER, "in-flight")
                    .after(Duration::from_secs(1)),
                (true, _) if seen.path == "/v2/" => Reply::status(StatusCode::OK),
                _ => Reply::status(StatusCode::NOT_FOUND),
            };
            reply.header(ZONE_HEADER, zone)
        }
    };
    let owner = Peer::start_as(ids[0], deciding("a", &bytes)).await;
    let mate = Peer::start_as(ids[1], deciding("b", &bytes)).await;
    let script = Script::new(ids[2]);
    script.provide(
        Key::InFlight(digest.clone()),
        vec![owner.provider(), mate.provider()],
    );
    let node = Node::start(script, in_zone("b")).await;

    let received = receive(get(node.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert_eq!((blob_gets(&owner), blob_gets(&mate)), (0, 1));
}
