//! Wiring: Kubernetes client, Node watch, TLS reloading and both servers under one
//! cancellation root.

use std::path::Path;
use std::sync::Arc;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, LogFormat};
use crate::handler::App;
use crate::metrics::Metrics;
use crate::server::{ServerLimits, serve_https, serve_ops};
use crate::tls_reload::ReloadingTls;
use crate::watch::NodeWatch;
use crate::{Error, Result};

/// The two bound sockets the bootstrapper serves on.
#[derive(Debug)]
pub struct Listeners {
    /// HTTPS, client certificates required (`--listen-addr`).
    pub bootstrap: TcpListener,
    /// Plain HTTP for metrics and probes (`--metrics-addr`).
    pub ops: TcpListener,
}

impl Listeners {
    /// Binds `--listen-addr` and `--metrics-addr`.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        Ok(Listeners {
            bootstrap: bind(config.listen_addr).await?,
            ops: bind(config.metrics_addr).await?,
        })
    }
}

/// A Kubernetes client from `--kubeconfig`, else the in-cluster service account, else
/// `$KUBECONFIG` / `~/.kube/config`.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| Error::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| Error::NoCredentials {
                    in_cluster,
                    kubeconfig,
                })?,
        },
    };
    Ok(Client::try_from(config)?)
}

/// Runs the bootstrapper until `shutdown` is cancelled, then lets open requests finish for
/// `config.shutdown_grace`.
pub async fn run(
    config: Config,
    client: Client,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let tls = ReloadingTls::load(config.tls.clone(), metrics.clone())?;
    let tracker = TaskTracker::new();
    let nodes = NodeWatch::spawn(client, metrics.clone(), &tracker, shutdown.clone());
    tracker.spawn(
        tls.clone()
            .watch(config.tls_reload_interval, shutdown.clone()),
    );
    let app = App::new(nodes, metrics, config.peers);
    let limits = ServerLimits {
        max_connections_per_ip: config.max_connections_per_ip,
        handshake_timeout: config.tls_handshake_timeout,
        shutdown_grace: config.shutdown_grace,
        ..ServerLimits::default()
    };
    tracker.spawn(serve_ops(
        listeners.ops,
        app.clone(),
        limits.clone(),
        shutdown.clone(),
    ));
    info!(
        max_peers = config.peers.max_peers,
        router_port = config.peers.router_port,
        "spegel-bootstrapper started"
    );
    serve_https(listeners.bootstrap, tls, app, limits, shutdown).await;
    tracker.close();
    tracker.wait().await;
    info!("spegel-bootstrapper stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            _ => {
                warn!("cannot install signal handlers; stop with SIGKILL");
                return;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = shutdown.cancelled() => return,
        };
        info!(signal = name, "shutting down");
        shutdown.cancel();
    });
}

/// Installs the global tracing subscriber, writing to stderr.
pub fn init_logging(level: &str, format: LogFormat) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| Error::Config {
        flag: "--log-level",
        problem: format!("{level:?} is not a level or filter: {e}"),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| Error::Logging(e.to_string()))
}
