//! Several routers on loopback in one process form a DHT: what one advertises, the others
//! resolve, with the advertiser's registry port; never themselves.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use spegel_oci::Digest;
use spegel_routing::{Key, Keypair, Provider, Router, RouterConfig, StaticBootstrap};
use tokio_util::sync::CancellationToken;

async fn router(registry_port: u16, bootstrap: &[String], shutdown: &CancellationToken) -> Router {
    start(config(registry_port, bootstrap), shutdown).await
}

/// The default config of a router on loopback that bootstraps from `bootstrap`.
fn config(registry_port: u16, bootstrap: &[String]) -> RouterConfig {
    let bootstrap = Arc::new(StaticBootstrap::new(bootstrap, 0).unwrap());
    RouterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Keypair::generate_ed25519(),
        registry_port,
        bootstrap,
    )
}

async fn start(config: RouterConfig, shutdown: &CancellationToken) -> Router {
    Router::start(config, shutdown.child_token())
        .await
        .unwrap()
        .0
}

async fn resolve_within(router: &Router, key: &Key, limit: usize) -> Vec<Provider> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut rx = router.resolve(key, limit).await.unwrap();
        let mut found = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            found.push(p);
        }
        if found.len() >= limit || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `router` has a peer in its routing table; if none comes within 10 s, fails
/// with what the router knows (its connections, and which peers identified themselves), so
/// a rare failure says where joining stopped.
async fn until_routable(router: &Router) {
    if tokio::time::timeout(Duration::from_secs(10), router.wait_for_peers())
        .await
        .is_ok()
    {
        return;
    }
    let stats = router.stats().await.unwrap();
    let peers = router.peers().await.unwrap();
    panic!(
        "{} has no routable peer after 10 s; {} connection(s) open, {} peer(s) connected; peers known: {peers:#?}",
        router.local_peer_id(),
        stats.connections,
        stats.connected_peers,
    );
}

#[tokio::test]
async fn what_one_node_advertises_the_others_resolve() {
    let shutdown = CancellationToken::new();
    let a = router(5101, &[], &shutdown).await;
    let seed = vec![a.listen_addr().to_string()];
    let b = router(5102, &seed, &shutdown).await;
    let c = router(5103, &seed, &shutdown).await;
    for r in [&a, &b, &c] {
        until_routable(r).await;
    }
    let key = Key::Digest(Digest::sha256_of(b"layer"));
    a.advertise(vec![key.clone()]).await.unwrap();
    b.advertise(vec![key.clone()]).await.unwrap();

    let found = resolve_within(&c, &key, 2).await;
    let mut ports: Vec<u16> = found.iter().map(|p| p.registry.port()).collect();
    ports.sort();
    assert_eq!(ports, [5101, 5102]);
    assert!(found.iter().all(|p| p.registry.ip().is_loopback()));

    // A node never resolves to itself.
    let from_a = resolve_within(&a, &key, 1).await;
    assert_eq!(from_a.len(), 1);
    assert_eq!(from_a[0].peer, b.local_peer_id());

    // A tag key works the same way.
    let tag = Key::tag("example.com:5000", "test/img", "v1");
    c.advertise(vec![tag.clone()]).await.unwrap();
    let found = resolve_within(&a, &tag, 1).await;
    assert_eq!(found[0].peer, c.local_peer_id());
    assert_eq!(found[0].registry.port(), 5103);
    shutdown.cancel();
}

/// The periodic walk runs on the router's own spread timer (libp2p's is off): with a
/// 200 ms interval, a joined node has walked several times within 2 s.
#[tokio::test]
async fn a_joined_node_walks_the_dht_on_its_timer() {
    let shutdown = CancellationToken::new();
    let a = router(5401, &[], &shutdown).await;
    let mut config = config(5402, &[a.listen_addr().to_string()]);
    config.dht.bootstrap_interval = Duration::from_millis(200);
    let b = start(config, &shutdown).await;
    until_routable(&b).await;
    let before = b.stats().await.unwrap().walks;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let walks = b.stats().await.unwrap().walks - before;
    // Each wait is 150 to 250 ms: 8 to 14 walks in 2 s (fewer if the machine stalls).
    assert!(walks >= 4, "{walks} walks in 2 s");
    assert!(
        walks <= 14,
        "{walks} walks in 2 s: some waited under 150 ms"
    );
    shutdown.cancel();
}

/// A router re-announces its keys on its own schedule (libp2p's job is off): with records
/// that live 3 s and a 1 s re-announce interval, what a node advertised is still found well
/// after the first records expired, and it was announced several times.
#[tokio::test]
async fn records_are_renewed_before_they_expire() {
    let shutdown = CancellationToken::new();
    let short_lived = |port: u16, bootstrap: &[String]| {
        let mut config = config(port, bootstrap);
        config.provider_ttl = Duration::from_secs(3);
        config.republish_interval = Duration::from_secs(1);
        config
    };
    let a = start(short_lived(5501, &[]), &shutdown).await;
    let b = start(short_lived(5502, &[a.listen_addr().to_string()]), &shutdown).await;
    until_routable(&b).await;
    until_routable(&a).await;
    let key = Key::Digest(Digest::sha256_of(b"renewed"));
    a.advertise(vec![key.clone()]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;

    assert!(
        b.stored_providers(&key).await.unwrap() > 0,
        "b's record was renewed"
    );
    let found = resolve_within(&b, &key, 1).await;
    assert_eq!(found.first().map(|p| p.peer), Some(a.local_peer_id()));
    let announcements = a.stats().await.unwrap().announcements;
    // 7 s at 0.75–1 s apart: 7 to 10, fewer if a round was still running when it came due.
    assert!(
        (4..=12).contains(&announcements),
        "{announcements} announcements in 7 s"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn an_unknown_key_resolves_to_nobody_quickly() {
    let shutdown = CancellationToken::new();
    let a = router(5201, &[], &shutdown).await;
    let b = router(5202, &[a.listen_addr().to_string()], &shutdown).await;
    until_routable(&b).await;
    let key = Key::Digest(Digest::sha256_of(b"nobody has this"));
    let mut rx = b.resolve(&key, 1).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(first, None);
    shutdown.cancel();
}

#[tokio::test]
async fn a_peer_given_without_its_id_is_joined() {
    let shutdown = CancellationToken::new();
    let a = router(5301, &[], &shutdown).await;
    // Bare IP:PORT, no /p2p/ part.
    let bare = a
        .listen_addr()
        .to_string()
        .trim_start_matches("/ip4/")
        .replace("/tcp/", ":");
    let b = router(5302, &[bare], &shutdown).await;
    until_routable(&b).await;
    assert_eq!(b.peer_count(), 1);
    shutdown.cancel();
}

/// Every connection counts what the router writes to it (`RouterStats::bytes_sent`): a
/// lookup sends at least its key to a peer, and the peer's answer (and announcement) is
/// counted on its side.
#[tokio::test]
async fn a_router_counts_the_bytes_it_sends() {
    let shutdown = CancellationToken::new();
    let a = router(5111, &[], &shutdown).await;
    let b = router(5112, &[a.listen_addr().to_string()], &shutdown).await;
    until_routable(&b).await;
    let (a_before, b_before) = (
        a.stats().await.unwrap().bytes_sent,
        b.stats().await.unwrap().bytes_sent,
    );
    assert!(b_before > 0, "joining sent nothing");
    let key = Key::Digest(Digest::sha256_of(b"counted"));
    a.advertise(vec![key.clone()]).await.unwrap();
    assert_eq!(resolve_within(&b, &key, 1).await.len(), 1);
    let b_sent = b.stats().await.unwrap().bytes_sent - b_before;
    let a_sent = a.stats().await.unwrap().bytes_sent - a_before;
    assert!(b_sent >= key.to_string().len() as u64, "{b_sent} bytes");
    assert!(a_sent > 0, "the answer was not counted");
    shutdown.cancel();
}
