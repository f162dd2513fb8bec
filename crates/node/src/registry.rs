//! `spegel-node registry`: every flag checked before anything binds, then the containerd
//! store, the peer-to-peer half, the registry server, all under one task root, and shutdown.

use std::time::Duration;

use anyhow::Context;
use spegel_containerd::{Containerd, ContainerdConfig, ContentStore};
use spegel_metrics::Metrics;
use spegel_registry::{Mirror, MirrorConfig, Registry, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RegistryArgs;
use crate::exit::BadConfig;
use crate::tasks::Tasks;

/// How long background tasks may take to finish after the registry stopped.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// How often containerd's `ingest/` directory is looked at (downloads appear 10-20 ms before
/// their first byte; followers lag by at most this plus containerd's 1 MiB write steps).
const INGEST_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    check(&args)?;
    crate::host::preflight(&args.host)?;
    let membership = crate::membership::load(&args.membership)?;
    let plan = crate::p2p::Plan::new(&args.p2p)?;
    let zone = plan.zone().clone();
    if let Some(zone) = zone.get() {
        info!(%zone, "zone from --zone");
    }
    let mut store = Containerd::new(ContainerdConfig {
        socket: args.containerd_sock.clone(),
        namespace: args.containerd_namespace.clone(),
        content_dir: Some(args.containerd_content_path.clone()),
    })
    .map_err(|e| BadConfig(e.to_string()))?;

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let tasks = Tasks::new(shutdown.clone());
    let metrics = Metrics::with_registries(plan.filter().registries());
    let host = crate::host::Host::start(&args.host, metrics, &tasks).await?;
    // Downloads in progress: served to peers, advertised as in flight.
    let ingests = store.watch_ingests(INGEST_POLL, shutdown.clone());
    match store.check().await {
        Ok(()) => info!(socket = %args.containerd_sock.display(), "containerd reachable"),
        Err(e) => warn!(error = %e, "containerd not reachable yet; serving 404s until it is"),
    }

    let ingests_watched = ingests.is_some();
    let listener = TcpListener::bind(args.registry_addr)
        .await
        .with_context(|| format!("cannot listen on --registry-addr {}", args.registry_addr))?;
    let registry_addr = listener.local_addr()?;
    info!(addr = %registry_addr, "registry listening");

    let p2p = plan
        .start(
            registry_addr.port(),
            membership.pre_shared_key(),
            store.clone(),
            &tasks,
        )
        .await?;
    if let Some(events) = ingests {
        tasks.spawn_essential(
            "the downloads advertiser",
            crate::downloads::advertise(
                events,
                p2p.router.clone(),
                args.containerd_content_path.clone(),
                tasks.shutdown(),
            ),
        );
    }
    let mirror = Mirror::new(
        p2p.router.clone(),
        MirrorConfig {
            resolve_timeout: args.p2p.mirror_resolve_timeout,
            max_peers: args.p2p.mirror_resolve_retries,
            filter: p2p.filter.clone(),
            single_flight: args.p2p.single_flight && ingests_watched,
            claim_window: args.p2p.inflight_claim_window,
            inflight_hold: args.p2p.inflight_hold,
            inflight_stall_timeout: args.p2p.inflight_stall_timeout,
            secret: membership.secret.clone(),
            zone,
            ..MirrorConfig::default()
        },
        host.metrics.clone(),
    );
    let config = ServerConfig {
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        shutdown_grace: args.shutdown_grace,
        metrics: host.metrics.clone(),
        ..ServerConfig::default()
    };
    host.export_advertised(p2p.counts.clone());
    host.attach_debug_page(spegel_debug::Sources {
        router: p2p.router.clone(),
        mirror: mirror.clone(),
    });
    let (router, counts) = (p2p.router.clone(), p2p.counts.clone());
    let supervisor = crate::systemd::Supervisor::new(registry_addr, store.clone())
        .with_status(move || format!("{} peers", router.peer_count()))
        .with_status(move || crate::host::advertised_status(&counts.borrow()));
    host.supervise(supervisor);
    let registry = Registry::with_mirror(store, mirror)
        .with_access(membership.access)
        .with_faults(tasks.faults());
    spegel_registry::serve(listener, registry, config, shutdown).await;
    tasks.finish(FINISH_GRACE).await;
    info!("stopped");
    Ok(())
}

/// The checks of flags clap cannot make, before anything binds.
fn check(args: &RegistryArgs) -> anyhow::Result<()> {
    if args.max_connections == 0 || args.max_connections_per_ip == 0 {
        return Err(BadConfig(
            "--max-connections and --max-connections-per-ip must be at least 1".to_owned(),
        )
        .into());
    }
    let addrs = [
        ("--registry-addr", args.registry_addr),
        ("--router-addr", args.p2p.router_addr),
        ("--metrics-addr", args.host.metrics_addr),
    ];
    for (i, (flag, addr)) in addrs.iter().enumerate() {
        for (other, other_addr) in &addrs[i + 1..] {
            if addr.port() != 0 && addr == other_addr {
                return Err(BadConfig(format!(
                    "{flag} and {other} are both {addr}: give each its own port"
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::config::{Cli, Command};

    fn registry_args(args: &[&str]) -> RegistryArgs {
        let argv = ["spegel-node", "registry"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Registry(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn two_servers_on_one_port_are_bad_config_before_anything_binds() {
        let args = registry_args(&["--registry-addr=:5000", "--metrics-addr=:5000"]);
        let error = check(&args).unwrap_err();
        assert!(error.is::<BadConfig>());
        assert!(
            error
                .to_string()
                .contains("--registry-addr and --metrics-addr"),
            "{error}"
        );
        assert!(check(&registry_args(&["--max-connections-per-ip=0"])).is_err());
        assert!(check(&registry_args(&[])).is_ok());
    }

    #[test]
    fn the_debug_page_is_on_unless_turned_off() {
        assert!(registry_args(&[]).host.debug_page);
        assert!(!registry_args(&["--debug-page=false"]).host.debug_page);
    }
}
