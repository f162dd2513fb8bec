//! The advertiser: keeps what the DHT says this node holds equal to what containerd holds.
//!
//! On start, whenever containerd reports an image or content event, and every reconcile
//! interval (for blobs the garbage collector removes), it lists the
//! images, walks each one (index → the manifests that exist → config and layers that exist),
//! and advertises every digest plus each tag key `<registry>/<repository>:<tag>`, withdrawing
//! keys that are gone. containerd going away is waited out with backoff, never fatal.
//!
//! Reads containerd, writes only to the router.

mod inventory;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use spegel_containerd::Containerd;
use spegel_oci::ImageFilter;
use spegel_routing::{Key, Router};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use inventory::{Inventory, RegistryCounts};

/// How the advertiser runs.
#[derive(Debug, Clone)]
pub struct AdvertiserConfig {
    /// Which images are advertised.
    pub filter: ImageFilter,
    /// How often to reconcile without an event (to notice garbage-collected blobs).
    pub reconcile_interval: Duration,
}

/// How long one listing of containerd's images and content may take before it is given up
/// (and retried with backoff): a hung containerd must not freeze what the DHT is told.
const RECONCILE_DEADLINE: Duration = Duration::from_secs(60);

fn timed_out() -> spegel_containerd::Error {
    spegel_containerd::Error::Unexpected {
        call: "image and content listing",
        detail: format!("no answer within {RECONCILE_DEADLINE:?}"),
    }
}

/// Runs until `shutdown`. Publishes each reconciled inventory's counts on `counts`.
pub async fn run(
    containerd: Containerd,
    router: Router,
    config: AdvertiserConfig,
    counts: watch::Sender<Vec<RegistryCounts>>,
    shutdown: CancellationToken,
) {
    let changed = std::sync::Arc::new(Notify::new());
    // Both halves run in this task, so whoever supervises it sees either one end.
    tokio::select! {
        () = watch_events(containerd.clone(), changed.clone(), shutdown.clone()) => {}
        () = reconcile_loop(containerd, router, config, counts, changed, shutdown) => {}
    }
}

/// Reconciles on every event and every interval, until `shutdown` or the router is gone.
async fn reconcile_loop(
    containerd: Containerd,
    router: Router,
    config: AdvertiserConfig,
    counts: watch::Sender<Vec<RegistryCounts>>,
    changed: std::sync::Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut inventory = Inventory::default();
    let mut advertised: HashSet<Key> = HashSet::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let listed = tokio::time::timeout(
            RECONCILE_DEADLINE,
            inventory.reconcile(&containerd, &config.filter),
        )
        .await;
        let wait = match listed.unwrap_or_else(|_| Err(timed_out())) {
            Ok(keys) => {
                backoff = Duration::from_millis(500);
                let added: Vec<Key> = keys.difference(&advertised).cloned().collect();
                let removed: Vec<Key> = advertised.difference(&keys).cloned().collect();
                if !added.is_empty() || !removed.is_empty() {
                    info!(
                        added = added.len(),
                        removed = removed.len(),
                        total = keys.len(),
                        "advertising"
                    );
                }
                if router.advertise(added).await.is_err() || router.withdraw(removed).await.is_err()
                {
                    return;
                }
                advertised = keys;
                counts.send_replace(inventory.counts());
                config.reconcile_interval
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "cannot list containerd's content");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = changed.notified() => {
                // Let a burst of events (a pull creates several records) settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Subscribes to containerd's events and signals `changed` on each; resubscribes with
/// backoff when containerd restarts.
async fn watch_events(
    containerd: Containerd,
    changed: std::sync::Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let subscribed = tokio::select! {
            () = shutdown.cancelled() => return,
            s = containerd.content_events() => s,
        };
        match subscribed {
            Ok(mut events) => {
                // containerd may have changed while we were away.
                changed.notify_one();
                loop {
                    let event = tokio::select! {
                        () = shutdown.cancelled() => return,
                        e = events.next() => e,
                    };
                    match event {
                        Some(Ok(topic)) => {
                            backoff = Duration::from_millis(500);
                            debug!(%topic, "containerd event");
                            changed.notify_one();
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "containerd event stream broke");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => debug!(error = %e, "cannot subscribe to containerd events yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
