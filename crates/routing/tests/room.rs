//! A node whose connection table is full still lets new peers in: it closes its quietest
//! connections instead of refusing (`MakeRoom`). Real routers over loopback TCP; the seed
//! gets small limits so that a handful of routers fill it.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::joins_within;
use spegel_routing::{DhtTuning, Router};
use tokio_util::sync::CancellationToken;

async fn router(dht: DhtTuning, bootstrap: &[String], shutdown: &CancellationToken) -> Router {
    common::router(bootstrap, shutdown, |c| c.dht = dht).await
}

/// Connections that stay open unless something closes them.
fn long_idle() -> DhtTuning {
    DhtTuning {
        idle_connection_timeout: Duration::from_secs(300),
        ..DhtTuning::default()
    }
}

#[tokio::test]
async fn a_full_seed_closes_quiet_connections_and_lets_newcomers_join() {
    let shutdown = CancellationToken::new();
    let small = DhtTuning {
        max_connections: 12,
        max_inbound_connections: 8,
        quiet_before_closing: Duration::from_millis(500),
        ..long_idle()
    };
    let seed = router(small, &[], &shutdown).await;
    let addr = vec![seed.listen_addr().to_string()];

    // Eight routers take every inbound place the seed has, and keep their connections.
    let mut first = Vec::new();
    for _ in 0..8 {
        first.push(router(long_idle(), &addr, &shutdown).await);
    }
    for r in &first {
        assert!(joins_within(r, Duration::from_secs(10)).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Newcomers know the seed only: without room made for them they would be refused.
    let mut newcomers = Vec::new();
    for _ in 0..4 {
        newcomers.push(router(long_idle(), &addr, &shutdown).await);
    }
    for r in &newcomers {
        assert!(
            joins_within(r, Duration::from_secs(15)).await,
            "a newcomer did not join: {:?}",
            seed.stats().await.unwrap()
        );
    }
    let stats = seed.stats().await.unwrap();
    assert!(stats.connections_closed_for_room > 0, "{stats:?}");
    assert!(stats.connections_peak <= 12, "{stats:?}");
    shutdown.cancel();
}
