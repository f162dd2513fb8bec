//! The mirror's decisions against scripted peers: least-used order, hedging, resume,
//! distrust, stalls, the single flight (owner, follower, takeover) and cut streams, each
//! driven through the registry's real HTTP entry point on 127.0.0.1 as containerd drives it.
//!
//! Time is paused (`start_paused`): it only moves when every task waits, and then jumps to
//! the next timer, so the timings asserted here are the mirror's own, exactly. Peers, node
//! and client share the one runtime thread, and loopback delivers bytes within the write,
//! so no socket wait lets the clock jump past a reply that is already on its way.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{
    CHUNK, Node, Peer, Reply, Script, Seen, Step, blob, blob_path, broken_at, chunks, get, head,
    ranked, receive,
};
use http::{Method, StatusCode};
use spegel_registry::{FLIGHT_HEADER, HOLD_HEADER, IDLE, MirrorConfig, SOURCE_HEADER};
use spegel_routing::{Key, PeerId};
use tokio::time::Instant;

const BLOB_LEN: usize = 200_000;

/// A peer that serves ranges of `bytes` only: asked for the whole blob it has nothing
/// (404), so it can only be reached by a resume, whatever order the peers are tried in.
fn ranges_only(bytes: &bytes::Bytes) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let bytes = bytes.clone();
    move |seen: &Seen| match seen.range() {
        Some(_) => Reply::honest(&bytes, seen),
        None => Reply::status(StatusCode::NOT_FOUND),
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_concurrent_request_goes_to_the_peer_not_already_serving_one() {
    let (bytes, digest) = blob(BLOB_LEN, 1);
    // Each peer sends a first chunk at once and the rest a second later: the first request
    // is still being served when the second one arrives.
    let slow = |bytes: bytes::Bytes| {
        move |_: &Seen| {
            let mut body = chunks(&bytes.slice(..CHUNK));
            body.push(Step::Wait(Duration::from_secs(1)));
            body.extend(chunks(&bytes.slice(CHUNK..)));
            Reply::blob(&bytes).body(body)
        }
    };
    let a = Peer::start(slow(bytes.clone())).await;
    let b = Peer::start(slow(bytes.clone())).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![a.provider(), b.provider()],
    );
    let node = Node::start(script, MirrorConfig::default()).await;

    let first = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(second.status(), StatusCode::OK);
    let (first, second) = tokio::join!(receive(first), receive(second));

    assert!(first.complete && second.complete);
    assert_eq!(first.bytes, bytes);
    assert_eq!(second.bytes, bytes);
    assert_eq!(
        (a.gets().len(), b.gets().len()),
        (1, 1),
        "each peer serves one of the two requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_answer_within_hedge_after_makes_the_mirror_ask_the_next() {
    let (bytes, digest) = blob(BLOB_LEN, 2);
    // Whichever peer is asked first answers only after a minute; the other at once.
    let asked = Arc::new(AtomicUsize::new(0));
    let answer = |asked: Arc<AtomicUsize>, bytes: bytes::Bytes| {
        move |_: &Seen| match asked.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::blob(&bytes).after(Duration::from_secs(60)),
            _ => Reply::blob(&bytes),
        }
    };
    let a = Peer::start(answer(asked.clone(), bytes.clone())).await;
    let b = Peer::start(answer(asked.clone(), bytes.clone())).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![a.provider(), b.provider()],
    );
    let config = MirrorConfig::default();
    let hedge_after = config.hedge_after;
    let node = Node::start(script, config).await;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    let received = receive(response).await;

    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert!(
        waited >= hedge_after && waited < hedge_after + Duration::from_millis(100),
        "answered after {waited:?}: the second peer is asked once {hedge_after:?} pass"
    );
    let mut asks: Vec<Seen> = a.gets().into_iter().chain(b.gets()).collect();
    asks.sort_by_key(|s| s.at);
    assert_eq!(asks.len(), 2, "each peer is asked once");
    assert!(asks[1].at - asks[0].at >= hedge_after);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_breaks_mid_body_is_resumed_from_another_with_a_range() {
    let (bytes, digest) = blob(BLOB_LEN, 3);
    let sent = 3 * CHUNK;
    let breaking = {
        let bytes = bytes.clone();
        move |_: &Seen| Reply::blob(&bytes).body(broken_at(&bytes, sent))
    };
    let a = Peer::start(breaking).await;
    let b = Peer::start(ranges_only(&bytes)).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![a.provider(), b.provider()],
    );
    let node = Node::start(script, MirrorConfig::default()).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = receive(response).await;

    assert!(received.complete);
    assert_eq!(received.bytes, bytes, "the client receives the exact bytes");
    assert_eq!(a.gets().len(), 1);
    let resumed: Vec<Seen> = b
        .gets()
        .into_iter()
        .filter(|s| s.range().is_some())
        .collect();
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        resumed[0].header("range"),
        Some(format!("bytes={sent}-{}", BLOB_LEN - 1).as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_answer_with_the_wrong_content_range_is_refused() {
    let (bytes, digest) = blob(BLOB_LEN, 4);
    let sent = 3 * CHUNK;
    let breaking = {
        let bytes = bytes.clone();
        move |_: &Seen| Reply::blob(&bytes).body(broken_at(&bytes, sent))
    };
    // Asked for a range, it answers 206 but with the whole blob from byte 0.
    let whole_as_range = {
        let bytes = bytes.clone();
        move |seen: &Seen| match seen.range() {
            Some(_) => Reply::blob(&bytes)
                .header(
                    "content-range",
                    format!("bytes 0-{}/{}", BLOB_LEN - 1, BLOB_LEN),
                )
                .with_status(StatusCode::PARTIAL_CONTENT),
            None => Reply::status(StatusCode::NOT_FOUND),
        }
    };
    let a = Peer::start(breaking).await;
    let b = Peer::start(whole_as_range).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![a.provider(), b.provider()],
    );
    let node = Node::start(script, MirrorConfig::default()).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = receive(response).await;

    assert!(
        b.gets().iter().any(|s| s.range().is_some()),
        "b was asked to resume"
    );
    assert!(
        !received.complete,
        "the response is cut, not completed with b's bytes"
    );
    assert!(received.bytes.len() <= sent);
    assert_eq!(received.bytes, bytes[..received.bytes.len()]);
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"cut\"}"),
        Some(1.0),
        "nobody could resume: the stream was cut"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_sending_wrong_bytes_aborts_the_response_and_is_not_asked_again() {
    let (bytes, digest) = blob(BLOB_LEN, 5);
    let (wrong, _) = blob(BLOB_LEN, 6);
    let liar = Peer::start(move |_: &Seen| Reply::blob(&wrong)).await;
    let honest = {
        let bytes = bytes.clone();
        Peer::start(move |seen: &Seen| Reply::honest(&bytes, seen)).await
    };
    let script = Script::new(PeerId::random());
    script.provide(Key::Digest(digest.clone()), vec![liar.provider()]);
    let node = Node::start(script.clone(), MirrorConfig::default()).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = receive(response).await;
    assert!(!first.complete, "wrong bytes never make a complete body");
    assert!(first.bytes.len() < BLOB_LEN);

    // Both orders, so the liar would be asked first in one of them were it not excluded.
    for providers in [
        vec![liar.provider(), honest.provider()],
        vec![honest.provider(), liar.provider()],
    ] {
        script.provide(Key::Digest(digest.clone()), providers);
        let response = get(node.addr, &blob_path(&digest), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let next = receive(response).await;
        assert!(next.complete);
        assert_eq!(next.bytes, bytes);
    }
    assert_eq!(
        liar.gets().len(),
        1,
        "the peer that lied is not asked again"
    );
    assert_eq!(honest.gets().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_sends_headers_then_nothing_is_dropped_after_the_stall_timeout() {
    let (bytes, digest) = blob(BLOB_LEN, 7);
    let stalling = {
        let bytes = bytes.clone();
        move |_: &Seen| Reply::blob(&bytes).body(vec![Step::Wait(Duration::from_secs(600))])
    };
    let a = Peer::start(stalling).await;
    let b = Peer::start(ranges_only(&bytes)).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![a.provider(), b.provider()],
    );
    let config = MirrorConfig::default();
    let stall_timeout = config.stall_timeout;
    let node = Node::start(script, config).await;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = receive(response).await;
    let took = started.elapsed();

    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert!(
        took >= stall_timeout && took < stall_timeout + Duration::from_secs(1),
        "took {took:?}"
    );
    let resumed = b.gets();
    assert_eq!(
        resumed.last().and_then(|s| s.header("range")),
        Some(format!("bytes=0-{}", BLOB_LEN - 1).as_str())
    );
}

/// An owner's answer to a follower: still deciding when probed (HEAD, no hold), then, asked
/// with a hold, it holds the request for a second and streams its download in progress.
fn owner_downloading(bytes: &bytes::Bytes) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let bytes = bytes.clone();
    move |seen: &Seen| match (seen.method == http::Method::HEAD, seen.header(HOLD_HEADER)) {
        (false, Some(_)) => Reply::blob(&bytes)
            .header(SOURCE_HEADER, "in-flight")
            .after(Duration::from_secs(1)),
        _ => Reply::status(StatusCode::NOT_FOUND),
    }
}

/// A node ranked second for a blob nobody holds, and one scripted claimant ranked first.
async fn follower_of(
    claimant: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    digest: &spegel_oci::Digest,
) -> (Peer, Node) {
    let ids = ranked(digest, 2);
    let owner = Peer::start_as(ids[0], claimant).await;
    let script = Script::new(ids[1]);
    script.provide(Key::InFlight(digest.clone()), vec![owner.provider()]);
    let node = Node::start(script, MirrorConfig::default()).await;
    (owner, node)
}

/// Every node known to want the blob ranks below this one: the window would elect it
/// anyway, so after one probe (nobody decided yet) it answers 404 at once and its containerd
/// fetches the blob for the cluster.
#[tokio::test(start_paused = true)]
async fn the_node_first_in_line_answers_404_at_once_and_asks_no_claimant() {
    let (_, digest) = blob(BLOB_LEN, 8);
    let ids = ranked(&digest, 3);
    let undecided = |_: &Seen| Reply::status(StatusCode::NOT_FOUND);
    let others = [
        Peer::start_as(ids[1], undecided).await,
        Peer::start_as(ids[2], undecided).await,
    ];
    let script = Script::new(ids[0]);
    script.provide(Key::InFlight(digest.clone()), vec![others[0].provider()]);
    // The third only has the manifest yet: it will want the blob.
    script.provide(Key::Coming(digest.clone()), vec![others[1].provider()]);
    let config = MirrorConfig::default();
    let claim_window = config.claim_window;
    let node = Node::start(script, config).await;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(took < claim_window, "answered after {took:?}");
    for other in &others {
        assert!(other.gets().is_empty(), "a claimant was asked for the blob");
    }
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"owner\"}"),
        Some(1.0)
    );
}

/// First in line, but a node ranked below already fetches the blob (it missed it when it
/// knew of nobody else): this node follows it rather than fetching it a second time.
#[tokio::test(start_paused = true)]
async fn the_node_first_in_line_follows_one_that_already_decided() {
    let (bytes, digest) = blob(BLOB_LEN, 18);
    let ids = ranked(&digest, 2);
    let fetching = {
        let bytes = bytes.clone();
        move |_: &Seen| Reply::blob(&bytes).header(SOURCE_HEADER, "in-flight")
    };
    let owner = Peer::start_as(ids[1], fetching).await;
    let script = Script::new(ids[0]);
    script.provide(Key::InFlight(digest.clone()), vec![owner.provider()]);
    let node = Node::start(script, MirrorConfig::default()).await;

    let received = receive(get(node.addr, &blob_path(&digest), &[]).await).await;
    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert_eq!(owner.gets().len(), 1);
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"followed\"}"),
        Some(1.0)
    );
}

/// Two nodes miss the blob at the same moment and neither sees the other's claim at first:
/// each is first among what it saw. The lower one listens once more before taking the place,
/// sees the higher one's claim (it already fetches), and follows it instead of fetching the
/// blob a second time.
#[tokio::test(start_paused = true)]
async fn a_claim_made_at_the_same_moment_stops_a_second_node_taking_first_place() {
    let (bytes, digest) = blob(BLOB_LEN, 19);
    let ids = ranked(&digest, 3);
    let fetching = {
        let bytes = bytes.clone();
        move |_: &Seen| Reply::blob(&bytes).header(SOURCE_HEADER, "in-flight")
    };
    let higher = Peer::start_as(ids[0], fetching).await;
    let lower = Peer::start_as(ids[2], |_: &Seen| Reply::status(StatusCode::NOT_FOUND)).await;
    let script = Script::new(ids[1]);
    script.provide(Key::Coming(digest.clone()), vec![lower.provider()]);
    let late = (script.clone(), digest.clone(), higher.provider());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        late.0.provide(Key::InFlight(late.1), vec![late.2]);
    });
    let node = Node::start(script, MirrorConfig::default()).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "it follows, it does not fetch"
    );
    let received = receive(response).await;
    assert_eq!(received.bytes, bytes);
    assert_eq!(higher.gets().len(), 1);
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"owner\"}"),
        None
    );
}

/// Nobody claims the blob and no manifest elsewhere names it (`coming`): a node pulling
/// alone fetches it at once instead of waiting out the claim window.
#[tokio::test(start_paused = true)]
async fn a_node_alone_fetches_at_once_without_the_claim_window() {
    let (_, digest) = blob(BLOB_LEN, 11);
    let script = Script::new(PeerId::random());
    let config = MirrorConfig::default();
    let claim_window = config.claim_window;
    let node = Node::start(script, config).await;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(took < claim_window / 2, "answered after {took:?}");
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"owner\"}"),
        Some(1.0)
    );
}

/// On a busy node the lookups that would prove a node alone do not end in time: it cannot
/// tell "nobody wants the blob" from "no answer yet", so it waits out the claim window
/// instead of fetching at once (and maybe a second time for the cluster).
/// A node with the default config whose router takes a lookup only after an hour, and
/// the digest of a blob (made from `seed`) that nobody holds.
async fn node_with_a_busy_router(seed: u64) -> (Node, spegel_oci::Digest) {
    let (_, digest) = blob(BLOB_LEN, seed);
    let script = Script::new(PeerId::random());
    script.take_lookups_after(Duration::from_secs(3600));
    (Node::start(script, MirrorConfig::default()).await, digest)
}

/// A router too busy to take a lookup (its command queue full) costs a manifest request no
/// more than the resolve timeout: 404, and containerd goes upstream.
#[tokio::test(start_paused = true)]
async fn a_router_too_busy_to_take_a_lookup_costs_a_manifest_the_resolve_timeout() {
    let (node, digest) = node_with_a_busy_router(13).await;
    let resolve_timeout = MirrorConfig::default().resolve_timeout;

    let started = Instant::now();
    let path = format!("/v2/library/app/manifests/{digest}?ns=example.com");
    let response = get(node.addr, &path, &[]).await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(took, resolve_timeout);
}

/// The same for a blob: every lookup the single flight makes is bounded too, so the node
/// answers 404 within twice the claim window (270 ms with the defaults), not when the
/// router gets round to it (before, the request waited for the router).
#[tokio::test(start_paused = true)]
async fn a_router_too_busy_to_take_a_lookup_costs_a_blob_the_claim_window() {
    let (node, digest) = node_with_a_busy_router(14).await;
    let bound = 2 * MirrorConfig::default().claim_window;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(took <= bound, "answered after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_lookups_are_slow_does_not_take_itself_for_alone() {
    let (_, digest) = blob(BLOB_LEN, 12);
    let script = Script::new(PeerId::random());
    script.end_lookups_after(Key::InFlight(digest.clone()), Duration::from_secs(1));
    let config = MirrorConfig::default();
    let claim_window = config.claim_window;
    let node = Node::start(script, config).await;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(took >= claim_window, "answered after {took:?}");
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"owner\"}"),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_holds_the_request_then_streams_the_owners_download() {
    let (bytes, digest) = blob(BLOB_LEN, 9);
    let (owner, node) = follower_of(owner_downloading(&bytes), &digest).await;
    let config = MirrorConfig::default();

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let held = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(SOURCE_HEADER).is_none());
    let received = receive(response).await;

    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert!(
        held >= Duration::from_secs(1) && held < config.claim_window + Duration::from_secs(2),
        "held for {held:?}: until the owner answered"
    );
    let asked = owner.gets();
    assert_eq!(asked.len(), 1);
    let hold_ms: u64 = asked[0].header(HOLD_HEADER).unwrap().parse().unwrap();
    let hold = Duration::from_millis(hold_ms);
    assert!(
        hold <= config.inflight_hold && hold + config.claim_window >= config.inflight_hold,
        "asked to hold {hold:?}: the rest of this node's own hold"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_takes_over_at_once_when_the_claimant_ranked_above_does_not_serve() {
    let (_, digest) = blob(BLOB_LEN, 10);
    let (owner, node) = follower_of(|_: &Seen| Reply::status(StatusCode::NOT_FOUND), &digest).await;
    let config = MirrorConfig::default();

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        took <= config.claim_window + Duration::from_millis(50),
        "answered after {took:?}, not after the whole hold of {:?}",
        config.inflight_hold
    );
    assert!(
        owner.gets().iter().any(|s| s.header(HOLD_HEADER).is_some()),
        "the claimant ranked above was asked first"
    );
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"takeover\"}"),
        Some(1.0)
    );
}

/// containerd 2.x opens every layer's download at once and asks for three at a time: a
/// claimant ranked above whose containerd has not asked yet answers the probe `idle`, takes
/// no part in the election, and is not asked to hold the request.
#[tokio::test(start_paused = true)]
async fn a_claimant_whose_containerd_has_not_asked_yet_is_left_out_of_the_election() {
    let (_, digest) = blob(BLOB_LEN, 13);
    let idle = |_: &Seen| Reply::status(StatusCode::NOT_FOUND).header(FLIGHT_HEADER, IDLE);
    let (claimant, node) = follower_of(idle, &digest).await;
    let config = MirrorConfig::default();

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let took = started.elapsed();

    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "this node fetches it"
    );
    assert!(
        took <= config.claim_window + Duration::from_millis(50),
        "answered after {took:?}"
    );
    assert!(
        claimant
            .seen()
            .iter()
            .all(|s| s.header(HOLD_HEADER).is_none()),
        "the idle claimant was asked to hold the request"
    );
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"owner\"}"),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_nobody_can_resume_is_cut_and_the_range_retry_gets_404_at_once() {
    let (bytes, digest) = blob(BLOB_LEN, 11);
    let breaking = {
        let bytes = bytes.clone();
        move |_: &Seen| Reply::blob(&bytes).body(broken_at(&bytes, 3 * CHUNK))
    };
    let only = Peer::start(breaking).await;
    let script = Script::new(PeerId::random());
    script.provide(Key::Digest(digest.clone()), vec![only.provider()]);
    let node = Node::start(script, MirrorConfig::default()).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cut = receive(response).await;
    assert!(!cut.complete, "the client sees the body cut");
    assert_eq!(cut.bytes, bytes[..cut.bytes.len()]);

    // containerd retries from where it stopped.
    let range = format!("bytes={}-", cut.bytes.len());
    let started = Instant::now();
    let retry = get(node.addr, &blob_path(&digest), &[("range", &range)]).await;
    assert_eq!(retry.status(), StatusCode::NOT_FOUND);
    assert_eq!(started.elapsed(), Duration::ZERO, "no peer is looked up");
    assert_eq!(only.gets().len(), 1);
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"cut\"}"),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_followed_blob_counts_its_bytes_as_from_a_peer_in_flight() {
    let (bytes, digest) = blob(BLOB_LEN, 12);
    let (_owner, node) = follower_of(owner_downloading(&bytes), &digest).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(receive(response).await.complete);

    assert_eq!(
        node.metric("spegel_served_bytes_total{source=\"peer_in_flight\"}"),
        Some(BLOB_LEN as f64)
    );
    assert_eq!(
        node.metric("spegel_single_flight_total{outcome=\"followed\"}"),
        Some(1.0)
    );
    assert_eq!(
        node.metric("spegel_served_bytes_total{source=\"peer\"}"),
        None
    );
}

/// `--registry-filters` exclusions apply to mirroring, not only to advertising: an excluded
/// image is never asked of peers.
#[tokio::test(start_paused = true)]
async fn an_image_the_filters_exclude_is_not_mirrored() {
    let (bytes, digest) = blob(BLOB_LEN, 12);
    let peer = Peer::start(move |_| Reply::blob(&bytes)).await;
    let script = Script::new(PeerId::random());
    script.provide(Key::Digest(digest.clone()), vec![peer.provider()]);
    let filter =
        spegel_oci::ImageFilter::new(&[], &["example\\.com/library/.*".to_owned()]).unwrap();
    let config = MirrorConfig {
        filter,
        ..MirrorConfig::default()
    };
    let node = Node::start(script, config).await;

    let response = get(node.addr, &blob_path(&digest), &[]).await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        peer.seen().is_empty(),
        "an excluded image was asked of a peer"
    );
}

/// A HEAD for a manifest (how containerd resolves a reference) is answered from a body
/// fetched and verified, never from a peer's headers alone.
#[tokio::test(start_paused = true)]
async fn a_manifest_head_is_answered_only_after_the_body_verified() {
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#);
    let digest = spegel_oci::Digest::sha256_of(&manifest);
    let path = format!("/v2/library/app/manifests/{digest}?ns=example.com");
    let honest = {
        let manifest = manifest.clone();
        Peer::start(move |_| Reply::blob(&manifest)).await
    };
    let liar = Peer::start(|_| Reply::blob(&Bytes::from_static(b"{}"))).await;

    let script = Script::new(PeerId::random());
    script.provide(Key::Digest(digest.clone()), vec![liar.provider()]);
    let node = Node::start(script, MirrorConfig::default()).await;
    let response = head(node.addr, &path).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "a lying peer's HEAD passed"
    );

    let script = Script::new(PeerId::random());
    script.provide(Key::Digest(digest.clone()), vec![honest.provider()]);
    let node = Node::start(script, MirrorConfig::default()).await;
    let response = head(node.addr, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let length = response
        .headers()
        .get("content-length")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(length, manifest.len().to_string());
    let asked: Vec<Method> = honest.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(
        asked,
        vec![Method::GET],
        "the peer was not asked for the body"
    );
}

/// A peer that trickles a byte every few seconds (each within the stall timeout) is dropped
/// once a 10 s window brings less than the minimum rate, and the blob comes from another.
#[tokio::test(start_paused = true)]
async fn a_trickling_peer_is_dropped_below_the_minimum_rate() {
    let (bytes, digest) = blob(BLOB_LEN, 13);
    let trickling = {
        let bytes = bytes.clone();
        move |_: &Seen| {
            let steps = (0..100)
                .flat_map(|i| {
                    [
                        Step::Send(bytes.slice(i..i + 1)),
                        Step::Wait(Duration::from_secs(4)),
                    ]
                })
                .collect();
            Reply::blob(&bytes).body(steps)
        }
    };
    let a = Peer::start(trickling).await;
    let b = Peer::start(ranges_only(&bytes)).await;
    let script = Script::new(PeerId::random());
    script.provide(
        Key::Digest(digest.clone()),
        vec![a.provider(), b.provider()],
    );
    let node = Node::start(script, MirrorConfig::default()).await;

    let started = Instant::now();
    let response = get(node.addr, &blob_path(&digest), &[]).await;
    let received = receive(response).await;
    let took = started.elapsed();

    assert!(received.complete);
    assert_eq!(received.bytes, bytes);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        !b.gets().is_empty(),
        "the blob did not come from the other peer"
    );
}
