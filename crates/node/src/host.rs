//! The daemon's host integration: the containerd preflight check, the metrics endpoint (and
//! the debug page beside it) and textfile, and the systemd supervisor, run under the node's [`Tasks`] (the textfile is
//! removed on the way out, so shutdown waits for them).

use std::sync::Arc;

use anyhow::Context;
use spegel_advertiser::RegistryCounts;
use spegel_containerd::ContentStore;
use spegel_debug::{DebugPage, NodeInfo, Sources};
use spegel_hostconfig::Preflight;
use spegel_metrics::{Advertised, Metrics, Pages, Textfile};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::HostArgs;
use crate::exit::BadConfig;
use crate::systemd::Supervisor;
use crate::tasks::Tasks;

/// Checks containerd's config file before anything starts; a setting to fix is [`BadConfig`].
pub fn preflight(args: &HostArgs) -> anyhow::Result<()> {
    let config = &args.containerd_config_path;
    if args.skip_preflight {
        warn!(config = %config.display(), "containerd preflight check skipped (--skip-preflight)");
        return Ok(());
    }
    match spegel_hostconfig::preflight(config, &args.containerd_registry_config_path) {
        Ok(Preflight::Passed { decided_by }) => {
            info!(config = %decided_by.display(), "containerd config suits spegel");
            if let Some(advice) = spegel_hostconfig::download_slot_advice(config) {
                warn!("{advice}");
            }
            Ok(())
        }
        Ok(Preflight::NoConfigFile) => {
            warn!(config = %config.display(), "containerd config not found: cannot check config_path and discard_unpacked_layers");
            Ok(())
        }
        Err(e) if e.is_bad_config() => Err(BadConfig(format!(
            "{e}\nspegel-node did not start; --skip-preflight starts it anyway."
        ))
        .into()),
        Err(e) => {
            warn!(error = %e, "cannot check containerd's config; starting anyway");
            Ok(())
        }
    }
}

/// The advertised keys for systemd's `STATUS=` line.
pub fn advertised_status(counts: &[RegistryCounts]) -> String {
    let tags: usize = counts.iter().map(|c| c.image_tags).sum();
    let digests: usize = counts.iter().map(|c| c.content_digests).sum();
    format!("advertising {tags} tags and {digests} digests")
}

/// The metrics and the host tasks of a running daemon.
pub struct Host {
    /// Where everything records its metrics.
    pub metrics: Arc<Metrics>,
    /// The debug page (`None` with `--debug-page=false`); it learns the router and mirror
    /// from [`Host::attach_debug_page`] once they run.
    debug_page: Option<Arc<DebugPage>>,
    tasks: Tasks,
}

impl Host {
    /// Binds `--metrics-addr`, then serves metrics there and writes the textfile until
    /// shutdown, under `tasks`.
    pub async fn start(args: &HostArgs, metrics: Metrics, tasks: &Tasks) -> anyhow::Result<Host> {
        let metrics = Arc::new(metrics);
        let tasks = tasks.clone();
        let listener = TcpListener::bind(args.metrics_addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
        info!(addr = %listener.local_addr()?, debug_page = args.debug_page, "metrics listening");
        let debug_page = args.debug_page.then(|| {
            Arc::new(DebugPage::new(NodeInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                zone: None,
            }))
        });
        let pages = debug_page.clone().map(|page| page as Arc<dyn Pages>);
        tasks.spawn_essential(
            "the metrics server",
            spegel_metrics::serve_metrics_and_pages(
                listener,
                metrics.clone(),
                pages,
                tasks.shutdown(),
            ),
        );
        if args.metrics_textfile.is_empty() {
            info!("no metrics textfile (--metrics-textfile is empty)");
        } else {
            let textfile = Textfile {
                path: args.metrics_textfile.clone().into(),
                interval: args.metrics_textfile_interval,
            };
            tasks.spawn_essential(
                "the metrics textfile writer",
                spegel_metrics::write_textfile(metrics.clone(), textfile, tasks.shutdown()),
            );
        }
        Ok(Host {
            metrics,
            debug_page,
            tasks,
        })
    }

    /// Gives the debug page (if on) the router and mirror it shows and measures with.
    pub fn attach_debug_page(&self, sources: Sources) {
        if let Some(page) = &self.debug_page {
            page.attach(sources);
        }
    }

    /// Keeps the `spegel_advertised_*` gauges equal to the advertiser's latest counts.
    pub fn export_advertised(&self, mut counts: watch::Receiver<Vec<RegistryCounts>>) {
        let metrics = self.metrics.clone();
        let shutdown = self.tasks.shutdown();
        self.tasks.spawn(async move {
            loop {
                for registry in counts.borrow_and_update().iter() {
                    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                    metrics.set_advertised(
                        &registry.registry,
                        Advertised {
                            image_tags: as_u64(registry.image_tags),
                            image_digests: as_u64(registry.image_digests),
                            content_digests: as_u64(registry.content_digests),
                        },
                    );
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = counts.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    /// Runs `supervisor` (systemd notifications) until shutdown.
    pub fn supervise<S: ContentStore>(&self, supervisor: Supervisor<S>) {
        let supervisor = supervisor.with_faults(self.tasks.faults());
        self.tasks.spawn(supervisor.run(self.tasks.shutdown()));
    }
}
