//! Wiring the peer-to-peer half: identity, bootstrap source, router, advertiser.

use std::sync::Arc;

use spegel_advertiser::{AdvertiserConfig, RegistryCounts};
use spegel_bootstrap::HttpBootstrapConfig;
use spegel_containerd::Containerd;
use spegel_oci::ImageFilter;
use spegel_registry::{LocalZone, Zone};
use spegel_routing::{
    Bootstrap, BootstrapPeer, DnsBootstrap, PeersFuture, Router, RouterConfig, StaticBootstrap,
    parse_peer_addr,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{BootstrapKind, P2pArgs};
use crate::exit::BadConfig;
use crate::tasks::Tasks;

/// The running peer-to-peer half.
pub struct P2p {
    pub router: Router,
    pub filter: ImageFilter,
    /// What the advertiser last counted, per registry.
    pub counts: watch::Receiver<Vec<RegistryCounts>>,
}

/// Peers from the spegel-bootstrapper over mTLS. The router retries a failure with capped
/// backoff; meanwhile the node keeps serving its own content.
struct HttpBootstrap {
    config: HttpBootstrapConfig,
    /// Set to the zone the bootstrapper tells, when `--zone` did not name one.
    learn_zone: Option<LocalZone>,
    started: std::time::Instant,
}

impl HttpBootstrap {
    /// Takes the zone the bootstrapper told; a value that is not a label value is ignored.
    fn learn(&self, zone: Option<&str>) {
        let (Some(local), Some(told)) = (&self.learn_zone, zone) else {
            return;
        };
        match Zone::parse(told) {
            Ok(zone) => {
                if local.set(zone.clone()) {
                    info!(%zone, "the bootstrapper told this node its zone");
                }
            }
            Err(e) => warn!(error = %e, "the bootstrapper told an unusable zone; ignoring it"),
        }
    }
}

/// While the node waits for its zone from the bootstrapper, it asks this often (its Node
/// appears when kubelet registers it, moments before the first pulls), for at most
/// [`ZONE_POLL_FOR`] after start: a cluster without zone labels is not asked 6 times a
/// minute per node forever.
const ZONE_POLL: std::time::Duration = std::time::Duration::from_secs(10);
const ZONE_POLL_FOR: std::time::Duration = std::time::Duration::from_secs(10 * 60);

impl Bootstrap for HttpBootstrap {
    fn ask_again_within(&self) -> Option<std::time::Duration> {
        let waiting = self.learn_zone.as_ref().is_some_and(|z| z.get().is_none());
        (waiting && self.started.elapsed() < ZONE_POLL_FOR).then_some(ZONE_POLL)
    }

    fn peers(&self) -> PeersFuture<'_> {
        Box::pin(async move {
            let answer = spegel_bootstrap::fetch_answer(&self.config)
                .await
                .map_err(|e| spegel_routing::Error::Bootstrap(e.to_string()))?;
            self.learn(answer.zone.as_deref());
            let port = self.config.router_port;
            let mut peers = Vec::new();
            for peer in answer.peers {
                let id = peer.id.as_deref().and_then(|id| id.parse().ok());
                let addrs = peer
                    .addrs
                    .iter()
                    .filter_map(|a| parse_peer_addr(a, port).ok())
                    .flat_map(|p| p.addrs)
                    .collect();
                peers.push(BootstrapPeer { id, addrs });
            }
            Ok(peers)
        })
    }
}

/// The peer-to-peer half, checked and loaded (identity, bootstrap source, filters) before
/// anything binds: every mistake here is a [`BadConfig`].
pub struct Plan {
    zone: LocalZone,
    filter: ImageFilter,
    keypair: spegel_routing::Keypair,
    bootstrap: Arc<dyn Bootstrap>,
    router_addr: std::net::SocketAddr,
    provider_ttl: std::time::Duration,
    republish_interval: std::time::Duration,
    reconcile_interval: std::time::Duration,
}

impl Plan {
    /// Checks the peer-to-peer flags and loads what they name.
    pub fn new(args: &P2pArgs) -> anyhow::Result<Plan> {
        let bad = |e: &dyn std::fmt::Display| BadConfig(e.to_string());
        let filter = ImageFilter::new(&args.mirrored_registries, &args.registry_filters)
            .map_err(|e| bad(&e))?;
        if args.provider_republish_interval >= args.provider_ttl {
            return Err(BadConfig(
                "--provider-republish-interval must be shorter than --provider-ttl, or records expire before they are renewed".into(),
            )
            .into());
        }
        if args.mirror_resolve_retries == 0 {
            return Err(BadConfig(
                "--mirror-resolve-retries must be at least 1, or no peer is ever asked".into(),
            )
            .into());
        }
        if args.reconcile_interval.is_zero() {
            return Err(BadConfig("--reconcile-interval must be longer than 0".into()).into());
        }
        let keypair = spegel_routing::load_or_create_identity(args.data_dir.as_deref())
            .map_err(|e| bad(&e))?;
        let router_port = args.router_addr.port();
        let zone = args
            .zone
            .clone()
            .map_or_else(LocalZone::default, LocalZone::fixed);
        let bootstrap: Arc<dyn Bootstrap> = match args.bootstrap_kind {
            BootstrapKind::Static => Arc::new(
                StaticBootstrap::new(&args.bootstrap_peers, router_port).map_err(|e| bad(&e))?,
            ),
            BootstrapKind::Dns => {
                let name = args.bootstrap_dns_name.as_deref().ok_or_else(|| {
                    BadConfig("--bootstrap-kind dns needs --bootstrap-dns-name".into())
                })?;
                Arc::new(DnsBootstrap::new(name, router_port).map_err(|e| bad(&e))?)
            }
            BootstrapKind::Http => {
                let url = args.http_bootstrap_url.as_deref().ok_or_else(|| {
                    BadConfig("--bootstrap-kind http needs --http-bootstrap-url".into())
                })?;
                let config =
                    HttpBootstrapConfig::new(url, &args.http_bootstrap_cert_dir, router_port)
                        .map_err(|e| bad(&e))?;
                let learn_zone = args.zone.is_none().then(|| zone.clone());
                Arc::new(HttpBootstrap {
                    config,
                    learn_zone,
                    started: std::time::Instant::now(),
                })
            }
        };
        Ok(Plan {
            zone,
            filter,
            keypair,
            bootstrap,
            router_addr: args.router_addr,
            provider_ttl: args.provider_ttl,
            republish_interval: args.provider_republish_interval,
            reconcile_interval: args.reconcile_interval,
        })
    }

    /// Which images are advertised and mirrored.
    pub fn filter(&self) -> &ImageFilter {
        &self.filter
    }

    /// This node's zone: `--zone`, or what the bootstrapper tells later.
    pub fn zone(&self) -> &LocalZone {
        &self.zone
    }

    /// Starts the router (listening at once) and the advertiser under `tasks`.
    pub async fn start(
        self,
        registry_port: u16,
        pre_shared_key: Option<[u8; 32]>,
        containerd: Containerd,
        tasks: &Tasks,
    ) -> anyhow::Result<P2p> {
        let mut config = RouterConfig::new(
            self.router_addr,
            self.keypair,
            registry_port,
            self.bootstrap,
        );
        config.provider_ttl = self.provider_ttl;
        config.republish_interval = self.republish_interval;
        config.pre_shared_key = pre_shared_key;
        let (router, task) = Router::start(config, tasks.shutdown()).await?;
        tasks.watch("the router", task);

        let (counts_tx, counts) = watch::channel(Vec::new());
        let advertiser = AdvertiserConfig {
            filter: self.filter.clone(),
            reconcile_interval: self.reconcile_interval,
        };
        tasks.spawn_essential(
            "the advertiser",
            spegel_advertiser::run(
                containerd,
                router.clone(),
                advertiser,
                counts_tx,
                tasks.shutdown(),
            ),
        );
        Ok(P2p {
            router,
            filter: self.filter,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(learn_zone: Option<LocalZone>) -> HttpBootstrap {
        let config = HttpBootstrapConfig::new(
            "https://bootstrapper.example:8443/v1/bootstrap-peers",
            std::path::Path::new("/nonexistent"),
            5001,
        )
        .unwrap();
        HttpBootstrap {
            config,
            learn_zone,
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn the_bootstrappers_zone_is_taken_checked_and_asked_for_until_it_arrives() {
        let zone = LocalZone::default();
        let source = bootstrap(Some(zone.clone()));
        assert_eq!(source.ask_again_within(), Some(ZONE_POLL));
        source.learn(None);
        source.learn(Some("not a zone!"));
        assert_eq!(zone.get(), None, "nothing, or nothing usable, was told");
        source.learn(Some("eu-1b"));
        assert_eq!(zone.get().map(|z| z.to_string()), Some("eu-1b".to_owned()));
        assert_eq!(source.ask_again_within(), None, "known: the usual refresh");
    }

    #[test]
    fn a_zone_given_with_the_flag_is_not_replaced_and_not_polled_for() {
        // `--zone` given: `Plan::new` hands the bootstrap no zone to learn.
        let source = bootstrap(None);
        source.learn(Some("eu-1b"));
        assert_eq!(source.ask_again_within(), None);
    }
}
