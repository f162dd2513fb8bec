//! The Node reflector against a scripted fake API server.
//!
//! No kube-apiserver can be installed where these tests run, so
//! `spegel_bootstrapper::testing::FakeApiServer` stands in for it: it speaks the real
//! list/watch JSON of `GET /api/v1/nodes` (NodeList, ADDED/MODIFIED/DELETED/ERROR events,
//! 410 Gone), and the kube-rs watcher under test is the real one.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::eventually;
use spegel_bootstrapper::metrics::Metrics;
use spegel_bootstrapper::testing::{FakeApiServer, node};
use spegel_bootstrapper::watch::NodeWatch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Watched {
    view: NodeWatch,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Watched {
    fn start(api: &FakeApiServer) -> Watched {
        common::init_logging();
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let view = NodeWatch::spawn(
            api.client().unwrap(),
            metrics.clone(),
            &tracker,
            shutdown.clone(),
        );
        Watched {
            view,
            metrics,
            shutdown,
            tracker,
        }
    }

    fn ready_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .view
            .ready_nodes()
            .into_iter()
            .map(|n| n.name)
            .collect();
        names.sort();
        names
    }

    async fn wait_for(&self, want: &[&str]) {
        eventually(&format!("ready nodes {want:?}"), || async {
            (self.ready_names() == want).then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[tokio::test]
async fn nodes_added_becoming_not_ready_and_deleted_are_followed() {
    let api = FakeApiServer::start([
        node("node-a", "10.0.0.1", true),
        node("node-b", "10.0.0.2", false),
    ])
    .await
    .unwrap();
    let watched = Watched::start(&api);
    eventually("the first list", || async {
        watched.view.is_synced().then_some(())
    })
    .await;
    assert_eq!(watched.ready_names(), ["node-a"]);

    api.apply(node("node-c", "10.0.0.3", true));
    watched.wait_for(&["node-a", "node-c"]).await;

    api.apply(node("node-b", "10.0.0.2", true));
    watched.wait_for(&["node-a", "node-b", "node-c"]).await;

    api.apply(node("node-a", "10.0.0.1", false));
    watched.wait_for(&["node-b", "node-c"]).await;

    api.delete("node-c");
    watched.wait_for(&["node-b"]).await;

    assert_eq!(api.lists(), 1, "events alone kept the view current");
    let text = watched.metrics.encode();
    assert!(text.contains("spegel_bootstrapper_ready_nodes 1"), "{text}");
    assert!(text.contains("spegel_bootstrapper_nodes 2"), "{text}");
    watched.stop().await;
}

#[tokio::test]
async fn a_410_gone_forces_a_relist_that_sees_changes_whose_events_were_lost() {
    let api = FakeApiServer::start([
        node("node-a", "10.0.0.1", true),
        node("node-b", "10.0.0.2", true),
    ])
    .await
    .unwrap();
    let watched = Watched::start(&api);
    watched.wait_for(&["node-a", "node-b"]).await;

    api.replace_quietly([
        node("node-b", "10.0.0.2", true),
        node("node-d", "10.0.0.4", true),
    ]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        watched.ready_names(),
        ["node-a", "node-b"],
        "no event, no change yet"
    );

    api.expire_watches();
    watched.wait_for(&["node-b", "node-d"]).await;
    assert_eq!(api.lists(), 2);
    assert!(
        watched.view.is_synced(),
        "a relist keeps serving the last view"
    );
    assert!(watched.metrics.watch_errors.get() >= 1);

    // The watch resumed after the relist: events flow again.
    api.apply(node("node-e", "10.0.0.5", true));
    watched.wait_for(&["node-b", "node-d", "node-e"]).await;
    watched.stop().await;
}

#[tokio::test]
async fn failed_lists_are_retried_and_the_view_is_not_synced_before_one_succeeds() {
    let api = FakeApiServer::start([node("node-a", "10.0.0.1", true)])
        .await
        .unwrap();
    api.fail_lists(2);
    let watched = Watched::start(&api);
    assert!(!watched.view.is_synced());
    eventually("two failed lists", || async {
        (watched.metrics.watch_errors.get() >= 2).then_some(())
    })
    .await;
    watched.wait_for(&["node-a"]).await;
    assert!(watched.view.is_synced());
    assert_eq!(api.lists(), 1);
    watched.stop().await;
}

#[tokio::test]
async fn a_watch_that_ends_resumes_from_its_resource_version_without_a_relist() {
    let api = FakeApiServer::start([node("node-a", "10.0.0.1", true)])
        .await
        .unwrap();
    let watched = Watched::start(&api);
    watched.wait_for(&["node-a"]).await;
    let watches = api.watches();
    api.end_watches();
    // Applied while no watch may be open: replayed to the next watch from the client's
    // resource version.
    api.apply(node("node-b", "10.0.0.2", true));
    watched.wait_for(&["node-a", "node-b"]).await;
    eventually("a new watch", || async {
        (api.watches() > watches).then_some(())
    })
    .await;
    assert_eq!(api.lists(), 1);
    watched.stop().await;
}
