//! `spegel-node registry`: wiring the containerd store, the peer-to-peer half, the registry
//! server and shutdown.

use anyhow::Context;
use spegel_containerd::{Containerd, ContainerdConfig, ContentStore};
use spegel_registry::{Mirror, MirrorConfig, Registry, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RegistryArgs;

/// How often containerd's `ingest/` directory is looked at (downloads appear 10-20 ms before
/// their first byte; followers lag by at most this plus containerd's 1 MiB write steps).
const INGEST_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    crate::host::preflight(&args.host)?;
    let membership = crate::membership::load(&args.membership)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let host = crate::host::Host::start(&args.host, shutdown.clone()).await?;

    let mut store = Containerd::new(ContainerdConfig {
        socket: args.containerd_sock.clone(),
        namespace: args.containerd_namespace.clone(),
        content_dir: Some(args.containerd_content_path.clone()),
    })?;
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

    let p2p = crate::p2p::start(
        &args.p2p,
        registry_addr.port(),
        membership.pre_shared_key(),
        store.clone(),
        shutdown.clone(),
    )
    .await?;
    if let Some(events) = ingests {
        tokio::spawn(crate::p2p::advertise_in_flight(
            events,
            p2p.router.clone(),
            shutdown.clone(),
        ));
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
            ..MirrorConfig::default()
        },
        host.metrics.clone(),
    );
    let config = ServerConfig {
        max_connections: args.max_connections,
        shutdown_grace: args.shutdown_grace,
        metrics: host.metrics.clone(),
        ..ServerConfig::default()
    };
    host.export_advertised(p2p.counts.clone(), shutdown.clone());
    let (router, counts) = (p2p.router.clone(), p2p.counts.clone());
    let supervisor = crate::systemd::Supervisor::new(registry_addr, store.clone())
        .with_status(move || format!("{} peers", router.peer_count()))
        .with_status(move || crate::host::advertised_status(&counts.borrow()));
    host.supervise(supervisor, shutdown.clone());
    let registry = Registry::with_mirror(store, mirror).with_access(membership.access);
    spegel_registry::serve(listener, registry, config, shutdown).await;
    host.finish().await;
    info!("stopped");
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
