//! Starting real routers on loopback for the routing crate's integration tests.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use spegel_routing::{Keypair, Router, RouterConfig, StaticBootstrap};
use tokio_util::sync::CancellationToken;

/// A router on 127.0.0.1 that bootstraps from `bootstrap` (retrying every 500 ms at most),
/// with whatever `adjust` changes in its config.
pub async fn router(
    bootstrap: &[String],
    shutdown: &CancellationToken,
    adjust: impl FnOnce(&mut RouterConfig),
) -> Router {
    let bootstrap = Arc::new(StaticBootstrap::new(bootstrap, 0).unwrap());
    let mut config = RouterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Keypair::generate_ed25519(),
        5000,
        bootstrap,
    );
    config.bootstrap_max_backoff = Duration::from_millis(500);
    adjust(&mut config);
    Router::start(config, shutdown.child_token())
        .await
        .unwrap()
        .0
}

/// True once `router` has a peer, within `wait`.
pub async fn joins_within(router: &Router, wait: Duration) -> bool {
    tokio::time::timeout(wait, router.wait_for_peers())
        .await
        .is_ok()
}
