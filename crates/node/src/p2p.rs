//! Wiring the peer-to-peer half: identity, bootstrap source, router, advertiser.

use std::sync::Arc;

use anyhow::{Context, bail};
use spegel_advertiser::{AdvertiserConfig, RegistryCounts};
use spegel_containerd::Containerd;
use spegel_oci::ImageFilter;
use spegel_routing::{Bootstrap, DnsBootstrap, Router, RouterConfig, StaticBootstrap};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{BootstrapKind, P2pArgs};

/// The running peer-to-peer half.
pub struct P2p {
    pub router: Router,
    pub filter: ImageFilter,
    /// What the advertiser last counted, per registry.
    pub counts: watch::Receiver<Vec<RegistryCounts>>,
}

/// Starts the router (listening at once) and the advertiser.
pub async fn start(
    args: &P2pArgs,
    registry_port: u16,
    containerd: Containerd,
    shutdown: CancellationToken,
) -> anyhow::Result<P2p> {
    let filter = ImageFilter::new(&args.mirrored_registries, &args.registry_filters)?;
    if args.provider_republish_interval >= args.provider_ttl {
        bail!(
            "--provider-republish-interval must be shorter than --provider-ttl, or records expire before they are renewed"
        );
    }
    let keypair = spegel_routing::load_or_create_identity(args.data_dir.as_deref())?;
    let router_port = args.router_addr.port();
    let bootstrap: Arc<dyn Bootstrap> = match args.bootstrap_kind {
        BootstrapKind::Static => {
            Arc::new(StaticBootstrap::new(&args.bootstrap_peers, router_port)?)
        }
        BootstrapKind::Dns => {
            let name = args
                .bootstrap_dns_name
                .as_deref()
                .context("--bootstrap-kind dns needs --bootstrap-dns-name")?;
            Arc::new(DnsBootstrap::new(name, router_port)?)
        }
        BootstrapKind::Http => bail!("--bootstrap-kind http is not available in this build yet"),
    };
    let mut config = RouterConfig::new(args.router_addr, keypair, registry_port, bootstrap);
    config.provider_ttl = args.provider_ttl;
    config.republish_interval = args.provider_republish_interval;
    let (router, _task) = Router::start(config, shutdown.clone()).await?;

    let (counts_tx, counts) = watch::channel(Vec::new());
    let advertiser = AdvertiserConfig {
        filter: filter.clone(),
        reconcile_interval: args.reconcile_interval,
    };
    tokio::spawn(spegel_advertiser::run(
        containerd,
        router.clone(),
        advertiser,
        counts_tx,
        shutdown,
    ));
    Ok(P2p {
        router,
        filter,
        counts,
    })
}
