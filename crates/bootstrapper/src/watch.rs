//! A live view of the cluster's Nodes: a kube-rs watcher feeding a reflector store.
//!
//! One LIST, then a WATCH from its resource version; on errors the watcher retries with
//! kube's default backoff (0.8 s doubling to 30 s), and on `410 Gone` it lists again. Requests
//! read the store, never the API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::nodes::{ReadyNode, named_node, ready_node, slim, zone_of};

/// The watched Nodes. Cheap to clone; all clones see the same store.
#[derive(Debug, Clone)]
pub struct NodeWatch {
    store: Store<Node>,
    synced: Arc<AtomicBool>,
}

impl NodeWatch {
    /// Starts watching every Node with `client` until `shutdown` is cancelled.
    pub fn spawn(
        client: Client,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> NodeWatch {
        let (store, writer) = reflector::store::<Node>();
        let view = NodeWatch {
            store,
            synced: Arc::new(AtomicBool::new(false)),
        };
        let events = watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .map_ok(|event| event.modify(slim))
            .reflect(writer);
        let task_view = view.clone();
        tracker.spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => break,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => task_view.observe(&event, &metrics),
                    Some(Err(e)) => {
                        metrics.watch_errors.inc();
                        warn!(error = %e, "listing or watching Nodes failed; retrying with backoff");
                    }
                    None => break,
                }
            }
            debug!("node watch stopped");
        });
        view
    }

    fn observe(&self, event: &watcher::Event<Node>, metrics: &Metrics) {
        match event {
            watcher::Event::InitApply(_) | watcher::Event::Init => return,
            watcher::Event::InitDone => {
                if !self.synced.swap(true, Ordering::SeqCst) {
                    info!(nodes = self.store.len(), "node list synced");
                } else {
                    debug!(nodes = self.store.len(), "nodes relisted");
                }
            }
            watcher::Event::Apply(node) | watcher::Event::Delete(node) => {
                debug!(
                    node = node.metadata.name.as_deref().unwrap_or_default(),
                    "node changed"
                );
            }
        }
        metrics.nodes.set(gauge(self.store.len()));
        metrics.ready_nodes.set(gauge(self.ready_nodes().len()));
    }

    /// Whether the first LIST has completed; until then answers would be guesses.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Every Node that can be a bootstrap peer now, in no particular order.
    pub fn ready_nodes(&self) -> Vec<ReadyNode> {
        self.store
            .state()
            .iter()
            .filter_map(|node| ready_node(node))
            .collect()
    }

    /// The zone label of the Node `is_asker` picks, in whatever state it is.
    pub fn zone_of(&self, is_asker: impl Fn(&ReadyNode) -> bool) -> Option<String> {
        self.store.state().iter().find_map(|node| {
            let named = named_node(node)?;
            is_asker(&named).then(|| zone_of(node).map(str::to_owned))?
        })
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
