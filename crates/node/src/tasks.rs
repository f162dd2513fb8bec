//! The node's one task root: every background task (router, advertiser, metrics, textfile,
//! systemd supervisor) runs under one `TaskTracker`, and one `CancellationToken` stops them.
//! An essential task that ends before shutdown (returned or panicked) is logged and recorded
//! in [`Faults`]: `/readyz` answers 503 and the watchdog is no longer pinged, so systemd
//! restarts the node. Shutdown waits for every task, bounded.

use std::future::Future;
use std::time::Duration;

use spegel_registry::Faults;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

/// The task root. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    faults: Faults,
}

impl Tasks {
    /// A root stopped by `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            shutdown,
            faults: Faults::default(),
        }
    }

    /// The token that stops every task.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What has failed so far (shared with `/readyz` and the supervisor).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Runs a task whose end does not matter before shutdown (e.g. one with nothing to do).
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(future);
    }

    /// Runs `future` as the essential task `name`: ending before shutdown is a fault.
    pub fn spawn_essential<F>(&self, name: &'static str, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.watch(name, tokio::spawn(future));
    }

    /// Watches an essential task already running (e.g. one a library spawned).
    pub fn watch(&self, name: &'static str, handle: JoinHandle<()>) {
        let (shutdown, faults) = (self.shutdown.clone(), self.faults.clone());
        self.tracker.spawn(async move {
            let ended = handle.await;
            if shutdown.is_cancelled() {
                return;
            }
            let how = match ended {
                Ok(()) => "stopped".to_owned(),
                Err(e) if e.is_panic() => "panicked".to_owned(),
                Err(e) => e.to_string(),
            };
            error!(task = name, how = %how, "an essential task ended; /readyz now answers 503 and the systemd watchdog is no longer pinged");
            faults.report(format!("{name} {how}"));
        });
    }

    /// Waits up to `grace` for every task after shutdown began.
    pub async fn finish(self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "background tasks did not finish within the grace period"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_essential_task_that_ends_early_is_a_fault() {
        let tasks = Tasks::new(CancellationToken::new());
        tasks.spawn_essential("the advertiser", async {});
        tasks.spawn_essential("the router", async { panic!("bug") });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = tasks.faults().first().unwrap();
        assert!(first.starts_with("the "), "{first}");
    }

    #[tokio::test]
    async fn tasks_ending_at_shutdown_are_not_faults_and_are_waited_for() {
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(shutdown.clone());
        let token = shutdown.clone();
        tasks.spawn_essential("the router", async move { token.cancelled().await });
        shutdown.cancel();
        tasks.clone().finish(Duration::from_secs(5)).await;
        assert_eq!(tasks.faults().first(), None);
    }
}
