//! [`Router`]: the handle the rest of spegel uses, and the bootstrap loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::swarm::{self, Command};
use crate::{Bootstrap, BootstrapPeer, DhtTuning, Error, Key, Result, RouterStats};

/// How the router runs.
pub struct RouterConfig {
    /// Where libp2p listens (`--router-addr`, default `:5001`).
    pub listen: SocketAddr,
    /// The node's identity (see [`crate::load_or_create_identity`]).
    pub keypair: Keypair,
    /// This node's registry port, announced to peers so they know where to fetch from.
    pub registry_port: u16,
    /// Where bootstrap peers come from.
    pub bootstrap: Arc<dyn Bootstrap>,
    /// How long other nodes keep our provider records.
    pub provider_ttl: Duration,
    /// How often our provider records are announced again (well inside `provider_ttl`).
    pub republish_interval: Duration,
    /// How often bootstrap peers are fetched and dialled again once we have peers.
    pub bootstrap_refresh: Duration,
    /// The longest wait between bootstrap attempts while we know no peer.
    pub bootstrap_max_backoff: Duration,
    /// The cluster's libp2p pre-shared key: with it only peers holding the same key can
    /// connect (`pnet`); `None` leaves the DHT open to anyone who reaches the port.
    pub pre_shared_key: Option<[u8; 32]>,
    /// Kademlia's replication, query and connection settings.
    pub dht: DhtTuning,
    /// Listen and dial on libp2p's in-process memory transport instead of TCP (`listen` is
    /// then ignored): for benchmarks running many routers in one process, where TCP would
    /// need two file descriptors per connection. Peers on it count as this host. Never set
    /// by `spegel-node`.
    pub in_memory: bool,
}

impl RouterConfig {
    /// A config whose records live 20 min and are re-announced every 10 min (Spegel
    /// re-provides every 15 min with records valid ~19 min; see docs/scale.md for the traffic).
    pub fn new(
        listen: SocketAddr,
        keypair: Keypair,
        registry_port: u16,
        bootstrap: Arc<dyn Bootstrap>,
    ) -> RouterConfig {
        RouterConfig {
            listen,
            keypair,
            registry_port,
            bootstrap,
            provider_ttl: Duration::from_secs(20 * 60),
            republish_interval: Duration::from_secs(10 * 60),
            bootstrap_refresh: Duration::from_secs(5 * 60),
            bootstrap_max_backoff: Duration::from_secs(30),
            pre_shared_key: None,
            dht: DhtTuning::default(),
            in_memory: false,
        }
    }
}

/// A peer that holds a key, and where its registry answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Provider {
    pub peer: PeerId,
    pub registry: SocketAddr,
}

/// A cheap, cloneable handle to the router task.
#[derive(Clone)]
pub struct Router {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    listen: Multiaddr,
    peers: watch::Receiver<usize>,
}

impl Router {
    /// Starts listening, spawns the task that owns the swarm and the bootstrap loop, and
    /// returns once the listener is bound. The returned handle covers both: it ends when
    /// `shutdown` is cancelled, or earlier only if the router failed (the caller should say
    /// so: lookups and announcements no longer happen).
    pub async fn start(
        config: RouterConfig,
        shutdown: CancellationToken,
    ) -> Result<(Router, JoinHandle<()>)> {
        let local = config.keypair.public().to_peer_id();
        let (commands, receiver) = mpsc::channel(1024);
        let (peers_tx, peers) = watch::channel(0);
        let (listen, task) = swarm::spawn(&config, receiver, peers_tx, shutdown.clone()).await?;
        info!(peer = %local, %listen, "router listening");
        let router = Router {
            commands,
            local,
            listen,
            peers,
        };
        let bootstrap = bootstrap_loop(router.clone(), config, shutdown);
        let both = tokio::spawn(async move {
            tokio::select! {
                ended = task => if let Err(e) = ended {
                    error!(error = %e, "the router task failed");
                },
                () = bootstrap => {}
            }
        });
        Ok((router, both))
    }

    /// This node's peer ID.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The address the router listens on (with the real port when `:0` was asked for).
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen
    }

    /// How many peers are in the routing table.
    pub fn peer_count(&self) -> usize {
        *self.peers.borrow()
    }

    /// Waits until the routing table holds at least one peer.
    pub async fn wait_for_peers(&self) -> Result<()> {
        let mut peers = self.peers.clone();
        peers
            .wait_for(|n| *n > 0)
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(())
    }

    /// Announces that this node holds `keys`.
    pub async fn advertise(&self, keys: Vec<Key>) -> Result<()> {
        self.send(Command::Advertise(keys)).await
    }

    /// Stops announcing `keys`. Records already held by other nodes expire after the
    /// provider TTL; our own store forgets them at once.
    pub async fn withdraw(&self, keys: Vec<Key>) -> Result<()> {
        self.send(Command::Withdraw(keys)).await
    }

    /// Looks up peers that hold `key`. Providers arrive on the returned channel as they are
    /// found (never this node); it closes after `limit` providers or when the lookup ends.
    pub async fn resolve(&self, key: &Key, limit: usize) -> Result<mpsc::Receiver<Provider>> {
        let (tx, rx) = mpsc::channel(limit.max(1));
        self.send(Command::Resolve {
            key: key.clone(),
            limit,
            providers: tx,
        })
        .await?;
        Ok(rx)
    }

    /// Dials `peers` (used by the bootstrap loop; useful in tests).
    pub async fn dial(&self, peers: Vec<BootstrapPeer>) -> Result<()> {
        self.send(Command::Dial(peers)).await
    }

    /// The keys this node currently advertises.
    pub async fn advertised(&self) -> Result<Vec<Key>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Advertised(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// What this node's DHT did so far: lookups, announcements, connections.
    pub async fn stats(&self) -> Result<RouterStats> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Every peer connected now or heard from before (at most a few thousand), sorted by ID.
    pub async fn peers(&self) -> Result<Vec<crate::PeerSummary>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Peers(tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// How many provider records of other peers for `key` this node's store holds: a lookup
    /// of `key` from this node is answered from that store when it is not zero.
    pub async fn stored_providers(&self, key: &Key) -> Result<usize> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::StoredProviders(key.clone(), tx)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Stopped)
    }
}

/// Fetches bootstrap peers and dials them: with capped backoff while the routing table is
/// empty, then every `bootstrap_refresh` (or sooner, when the source asks for it).
async fn bootstrap_loop(router: Router, config: RouterConfig, shutdown: CancellationToken) {
    let first_backoff = Duration::from_millis(500);
    let mut backoff = first_backoff;
    loop {
        let lonely = router.peer_count() == 0;
        match config.bootstrap.peers().await {
            Ok(peers) if peers.is_empty() => debug!("bootstrap source returned no peers"),
            Ok(peers) => {
                debug!(count = peers.len(), "dialling bootstrap peers");
                if router.dial(peers).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(error = %e, "bootstrap failed; retrying"),
        }
        let wait = if lonely {
            let wait = backoff;
            backoff = (backoff * 2).min(config.bootstrap_max_backoff);
            wait
        } else {
            backoff = first_backoff;
            let sooner = config.bootstrap.ask_again_within();
            sooner.map_or(config.bootstrap_refresh, |s| {
                s.min(config.bootstrap_refresh)
            })
        };
        let mut peers = router.peers.clone();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            // Lost every peer: start over at once instead of waiting for the refresh.
            _ = peers.wait_for(|n| *n == 0), if !lonely => {}
        }
    }
}
