//! A DHT with a pre-shared key (`pnet`) admits only routers holding the same key: routers
//! without a key or with another one never get a peer, members find each other as usual.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use spegel_routing::Router;
use tokio_util::sync::CancellationToken;

async fn router(
    psk: Option<[u8; 32]>,
    bootstrap: &[String],
    shutdown: &CancellationToken,
) -> Router {
    common::router(bootstrap, shutdown, |c| c.pre_shared_key = psk).await
}

use common::joins_within;

#[tokio::test]
async fn only_routers_with_the_same_key_join() {
    let shutdown = CancellationToken::new();
    let key = [7u8; 32];
    let seed = router(Some(key), &[], &shutdown).await;
    let addr = vec![seed.listen_addr().to_string()];

    let member = router(Some(key), &addr, &shutdown).await;
    let no_key = router(None, &addr, &shutdown).await;
    let other_key = router(Some([8u8; 32]), &addr, &shutdown).await;

    assert!(joins_within(&member, Duration::from_secs(10)).await);
    assert!(!joins_within(&no_key, Duration::from_secs(3)).await);
    assert!(!joins_within(&other_key, Duration::from_millis(100)).await);
    // The seed knows the member only.
    assert_eq!(seed.peer_count(), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn a_keyed_router_does_not_join_an_open_dht() {
    let shutdown = CancellationToken::new();
    let open = router(None, &[], &shutdown).await;
    let addr = vec![open.listen_addr().to_string()];

    let keyed = router(Some([9u8; 32]), &addr, &shutdown).await;

    assert!(!joins_within(&keyed, Duration::from_secs(3)).await);
    assert_eq!(open.peer_count(), 0);
    shutdown.cancel();
}

#[test]
fn fingerprints_tell_keys_apart_without_showing_them() {
    let a = spegel_routing::psk_fingerprint([1; 32]);
    let b = spegel_routing::psk_fingerprint([2; 32]);
    assert_ne!(a, b);
    assert!(!a.contains("0101010101"), "{a}");
}
