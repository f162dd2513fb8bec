//! The server's TLS configuration, rebuilt when its certificate, key or client CA files change.
//!
//! A poll task re-reads the three files every `--tls-reload-interval` and compares their
//! bytes (robust to Kubernetes' symlink-swapped secret volumes and to same-second rewrites).
//! A changed set that does not load (e.g. the key is written before the certificate) keeps
//! the previous configuration serving and is retried on the next tick. New connections use
//! the new configuration; open ones keep theirs.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use spegel_bootstrap::tls::{ServerTlsFiles, ServerTlsPem};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{Metrics, Outcome};

/// The current acceptor, swapped on rotation. Cheap to clone.
#[derive(Clone)]
pub struct ReloadingTls {
    files: ServerTlsFiles,
    state: Arc<RwLock<State>>,
    metrics: Arc<Metrics>,
}

struct State {
    serving: ServerTlsPem,
    acceptor: TlsAcceptor,
    /// The last set that failed to load, so a broken set is reported once, not every tick.
    rejected: Option<ServerTlsPem>,
}

impl ReloadingTls {
    /// Loads the files now; fails when they do not make a server configuration.
    pub fn load(files: ServerTlsFiles, metrics: Arc<Metrics>) -> spegel_bootstrap::Result<Self> {
        let serving = files.read()?;
        let acceptor = TlsAcceptor::from(Arc::new(serving.server_config()?));
        Ok(ReloadingTls {
            files,
            state: Arc::new(RwLock::new(State {
                serving,
                acceptor,
                rejected: None,
            })),
            metrics,
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .acceptor
            .clone()
    }

    /// Re-reads the files; swaps in a new configuration when they changed and load.
    /// Returns whether the configuration was replaced.
    pub fn reload_if_changed(&self) -> bool {
        let read = match self.files.read() {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, "cannot read the TLS files; still serving the previous certificate");
                self.metrics.tls_reload(Outcome::Failure);
                return false;
            }
        };
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if read == state.serving || state.rejected.as_ref() == Some(&read) {
                return false;
            }
        }
        let config = read.server_config();
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match config {
            Ok(config) => {
                state.acceptor = TlsAcceptor::from(Arc::new(config));
                state.serving = read;
                state.rejected = None;
                self.metrics.tls_reload(Outcome::Success);
                info!(cert = %self.files.cert.display(), "TLS files changed; new connections use them");
                true
            }
            Err(e) => {
                state.rejected = Some(read);
                self.metrics.tls_reload(Outcome::Failure);
                warn!(error = %e, "changed TLS files do not load; still serving the previous certificate");
                false
            }
        }
    }

    /// Checks the files every `interval` until `shutdown`.
    pub async fn watch(self, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // File reads are small but blocking: keep them off the async workers.
            let this = self.clone();
            if tokio::task::spawn_blocking(move || this.reload_if_changed())
                .await
                .is_err()
            {
                warn!("TLS reload check panicked");
            }
        }
    }
}
