//! The task that owns the libp2p `Swarm`: Kademlia + identify, driven by [`Command`]s.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{self, GetProvidersOk, Mode, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bootstrap::socket_multiaddr;
use crate::memory;
use crate::{BootstrapPeer, Error, Key, Provider, Result, RouterConfig, RouterStats};

/// The Kademlia protocol name, as Spegel uses it.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/spegel/kad/1.0.0");
const IDENTIFY_PROTOCOL: &str = "/spegel/id/1.0.0";
/// Prefix of the registry port in our identify agent version.
const REGISTRY_PORT_TAG: &str = "registry-port=";
/// How long a lookup may wait for a provider's address before giving up on it.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(10);
/// Keys and provider records one node can hold: sized for nodes with many images.
const MAX_PROVIDED_KEYS: usize = 100_000;
const MAX_RECORDS: usize = 200_000;

/// What the [`crate::Router`] asks the swarm task to do.
pub(crate) enum Command {
    Advertise(Vec<Key>),
    Withdraw(Vec<Key>),
    Resolve {
        key: Key,
        limit: usize,
        providers: mpsc::Sender<Provider>,
    },
    Dial(Vec<BootstrapPeer>),
    Advertised(oneshot::Sender<Vec<Key>>),
    Stats(oneshot::Sender<RouterStats>),
    StoredProviders(Key, oneshot::Sender<usize>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

/// What we know of a peer: where it connects from and which port its registry uses.
#[derive(Default)]
struct PeerInfo {
    ip: Option<IpAddr>,
    registry_port: Option<u16>,
}

/// A provider lookup in flight.
struct Lookup {
    providers: mpsc::Sender<Provider>,
    limit: usize,
    sent: HashSet<PeerId>,
    /// Providers found whose registry address we are still learning (dial + identify).
    waiting: HashSet<PeerId>,
    finished: bool,
    started: Instant,
}

struct Task {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    peers: HashMap<PeerId, PeerInfo>,
    lookups: HashMap<QueryId, Lookup>,
    advertised: HashSet<Key>,
    peer_count: watch::Sender<usize>,
    /// True until a bootstrap completes: announcements made until then may have reached
    /// nobody and are repeated once (later bootstraps do not re-announce everything).
    unannounced: bool,
    bootstrap_requested: bool,
    stats: RouterStats,
    /// Every provider query still running, and whether our own store held providers for its
    /// key when it started (for [`RouterStats`]; outlives the entry in `lookups`).
    lookup_started_local: HashMap<QueryId, bool>,
    stop_at_first_provider_answer: bool,
    in_memory: bool,
    listen_loopback: bool,
    /// Addresses we dialled and still hold a connection to.
    dialled: HashSet<Multiaddr>,
}

/// Builds the swarm, binds the listener, and spawns the task. Returns the bound address.
pub(crate) async fn spawn(
    config: &RouterConfig,
    commands: mpsc::Receiver<Command>,
    peer_count: watch::Sender<usize>,
    shutdown: CancellationToken,
) -> Result<(Multiaddr, JoinHandle<()>)> {
    let listen_error = |reason: String| Error::Listen {
        addr: config.listen.to_string(),
        reason,
    };
    let local = config.keypair.public().to_peer_id();
    let agent = format!(
        "spegel-rs/{} {REGISTRY_PORT_TAG}{}",
        env!("CARGO_PKG_VERSION"),
        config.registry_port
    );
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_provider_record_ttl(Some(config.provider_ttl))
        .set_provider_publication_interval(Some(config.republish_interval));
    config.dht.apply(&mut kad_config);
    let store = MemoryStore::with_config(
        local,
        MemoryStoreConfig {
            max_records: MAX_RECORDS,
            max_provided_keys: MAX_PROVIDED_KEYS,
            ..MemoryStoreConfig::default()
        },
    );
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| listen_error(e.to_string()))?
        .with_other_transport(|key| memory::transport(key, config.in_memory))
        .map_err(|e| listen_error(e.to_string()))?
        .with_behaviour(|key| {
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            // On private and loopback addresses libp2p would otherwise stay a client.
            kad.set_mode(Some(Mode::Server));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(agent),
            );
            Behaviour { kad, identify }
        })
        .map_err(|e| listen_error(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.dht.idle_connection_timeout))
        .build();
    swarm
        .listen_on(if config.in_memory {
            memory::listen_addr()
        } else {
            socket_multiaddr(config.listen)
        })
        .map_err(|e| listen_error(e.to_string()))?;
    let listen_loopback = config.listen.ip().is_loopback();
    let listen = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                announce_address(&mut swarm, address.clone(), listen_loopback);
                break address;
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                let reason = reason.err().map_or("closed".to_owned(), |e| e.to_string());
                return Err(listen_error(reason));
            }
            SwarmEvent::ListenerError { error, .. } => return Err(listen_error(error.to_string())),
            _ => {}
        }
    };
    let task = Task {
        swarm,
        local,
        peers: HashMap::new(),
        lookups: HashMap::new(),
        advertised: HashSet::new(),
        peer_count,
        unannounced: true,
        bootstrap_requested: false,
        stats: RouterStats::default(),
        lookup_started_local: HashMap::new(),
        stop_at_first_provider_answer: config.dht.stop_at_first_provider_answer,
        in_memory: config.in_memory,
        listen_loopback,
        dialled: HashSet::new(),
    };
    Ok((listen, tokio::spawn(task.run(commands, shutdown))))
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = tick.tick() => self.expire_lookups(),
            }
        }
        debug!("router task stopped");
    }

    fn kad(&mut self) -> &mut kad::Behaviour<MemoryStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Advertise(keys) => {
                for key in keys {
                    self.provide(&key);
                    self.advertised.insert(key);
                }
            }
            Command::Withdraw(keys) => {
                for key in keys {
                    self.kad().stop_providing(&key.record_key());
                    self.advertised.remove(&key);
                }
            }
            Command::Resolve {
                key,
                limit,
                providers,
            } => {
                let local = self.stored_providers(&key) > 0;
                let query = self.kad().get_providers(key.record_key());
                self.lookup_started_local.insert(query, local);
                self.lookups.insert(
                    query,
                    Lookup {
                        providers,
                        limit,
                        sent: HashSet::new(),
                        waiting: HashSet::new(),
                        finished: false,
                        started: Instant::now(),
                    },
                );
            }
            Command::Dial(peers) => self.dial(peers),
            Command::Advertised(reply) => {
                let _ = reply.send(self.advertised.iter().cloned().collect());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats.clone());
            }
            Command::StoredProviders(key, reply) => {
                let _ = reply.send(self.stored_providers(&key));
            }
        }
    }

    fn provide(&mut self, key: &Key) {
        if let Err(e) = self.kad().start_providing(key.record_key()) {
            self.stats.announcements_refused += 1;
            warn!(%key, error = %e, "cannot advertise key");
        }
    }

    fn dial(&mut self, peers: Vec<BootstrapPeer>) {
        for peer in peers {
            let attempts: Vec<DialOpts> = match peer.id {
                Some(id) if id == self.local => continue,
                Some(id) if self.swarm.is_connected(&id) => continue,
                Some(id) => vec![DialOpts::peer_id(id).addresses(peer.addrs).build()],
                // Without an ID we learn it when the connection is up; an address we
                // already hold a connection to is not dialled again (the bootstrap loop
                // retries every few hundred ms until the routing table fills).
                None => peer
                    .addrs
                    .into_iter()
                    .filter(|a| !self.dialled.contains(a))
                    .map(|a| DialOpts::unknown_peer_id().address(a).build())
                    .collect(),
            };
            for opts in attempts {
                if let Err(e) = self.swarm.dial(opts) {
                    debug!(error = %e, "dial failed");
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    self.peers.entry(peer_id).or_default().ip = Some(ip);
                }
                if endpoint.is_dialer() {
                    self.dialled
                        .insert(without_peer_id(endpoint.get_remote_address()));
                }
                self.count_connections();
            }
            SwarmEvent::ConnectionClosed { endpoint, .. } => {
                if endpoint.is_dialer() {
                    self.dialled
                        .remove(&without_peer_id(endpoint.get_remote_address()));
                }
                self.count_connections();
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                announce_address(&mut self.swarm, address, self.listen_loopback);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "connection failed");
                if let Some(peer) = peer_id {
                    self.forget_waiting(peer);
                }
            }
            _ => {}
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let port = registry_port_of(&info.agent_version);
        self.peers.entry(peer).or_default().registry_port = port;
        if info.protocols.contains(&KAD_PROTOCOL) {
            let in_memory = self.in_memory;
            let dialable = |a: &Multiaddr| is_dialable(a) || (in_memory && memory::is_memory(a));
            for addr in info.listen_addrs.into_iter().filter(dialable) {
                self.kad().add_address(&peer, addr);
            }
        }
        // Lookups that were waiting for this peer's registry address.
        let ready: Vec<QueryId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.waiting.contains(&peer))
            .map(|(id, _)| *id)
            .collect();
        for query in ready {
            self.offer(query, peer);
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        self.count(&event);
        match event {
            kad::Event::RoutingUpdated { .. } => {
                let count = self.routing_table_size();
                self.peer_count.send_replace(count);
                // The first peer: join properly (Kademlia also re-bootstraps on its own
                // while the table is small, and every few minutes).
                if !self.bootstrap_requested {
                    self.bootstrap_requested = true;
                    if let Err(e) = self.kad().bootstrap() {
                        debug!(error = %e, "bootstrap not possible yet");
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                    providers, ..
                })) => {
                    let named_some = providers.iter().any(|p| *p != self.local);
                    for peer in providers {
                        self.offer(id, peer);
                    }
                    // Kademlia reports every answer, also those naming no provider.
                    if self.stop_at_first_provider_answer
                        && named_some
                        && let Some(mut query) = self.kad().query_mut(&id)
                    {
                        query.finish();
                    }
                    if step.last {
                        self.finish_lookup(id);
                    }
                }
                QueryResult::GetProviders(_) if step.last => self.finish_lookup(id),
                QueryResult::Bootstrap(Ok(done)) if done.num_remaining == 0 && self.unannounced => {
                    self.unannounced = false;
                    info!(peers = self.routing_table_size(), "joined the DHT");
                    // Records announced before we had peers reached nobody.
                    let keys: Vec<Key> = self.advertised.iter().cloned().collect();
                    for key in &keys {
                        self.provide(key);
                    }
                }
                QueryResult::StartProviding(Err(e)) => {
                    debug!(error = %e, "announcement incomplete")
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Sends `peer` to lookup `query` if we know its registry address; else dials it and
    /// waits for identify.
    fn offer(&mut self, query: QueryId, peer: PeerId) {
        if peer == self.local {
            return;
        }
        let address = self.peers.get(&peer).and_then(|info| {
            let ip = info.ip?;
            Some(SocketAddr::new(ip, info.registry_port?))
        });
        let Some(lookup) = self.lookups.get_mut(&query) else {
            return;
        };
        if lookup.sent.contains(&peer) {
            return;
        }
        match address {
            Some(registry) => {
                lookup.waiting.remove(&peer);
                lookup.sent.insert(peer);
                if lookup
                    .providers
                    .try_send(Provider { peer, registry })
                    .is_err()
                {
                    lookup.finished = true;
                }
                if lookup.sent.len() >= lookup.limit || lookup.providers.is_closed() {
                    lookup.finished = true;
                    lookup.waiting.clear();
                    if let Some(mut q) = self.kad().query_mut(&query) {
                        q.finish();
                    }
                    self.lookups.remove(&query);
                }
            }
            None => {
                if lookup.waiting.insert(peer) && !self.swarm.is_connected(&peer) {
                    // Kademlia supplies the addresses it learnt for this peer in the query.
                    if let Err(e) = self.swarm.dial(DialOpts::peer_id(peer).build()) {
                        debug!(%peer, error = %e, "cannot dial provider");
                    }
                }
            }
        }
    }

    fn finish_lookup(&mut self, query: QueryId) {
        if let Some(lookup) = self.lookups.get_mut(&query) {
            lookup.finished = true;
            if lookup.waiting.is_empty() {
                self.lookups.remove(&query);
            }
        }
    }

    fn forget_waiting(&mut self, peer: PeerId) {
        for lookup in self.lookups.values_mut() {
            lookup.waiting.remove(&peer);
        }
        self.lookups
            .retain(|_, l| !(l.finished && l.waiting.is_empty()));
    }

    /// Drops lookups whose callers are gone or that waited too long.
    fn expire_lookups(&mut self) {
        self.lookups.retain(|_, l| {
            let done = l.providers.is_closed() || (l.finished && l.waiting.is_empty());
            !done && l.started.elapsed() < RESOLVE_DEADLINE
        });
    }

    /// Updates [`RouterStats`] from a Kademlia event.
    fn count(&mut self, event: &kad::Event) {
        match event {
            kad::Event::InboundRequest { request } => {
                self.stats.requests_served += 1;
                if matches!(request, kad::InboundRequest::AddProvider { .. }) {
                    self.stats.add_providers_stored += 1;
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            } => match result {
                QueryResult::GetProviders(_) if step.last => {
                    let local = self.lookup_started_local.remove(id).unwrap_or(false);
                    self.stats.lookup_ended(local, stats.num_requests());
                }
                QueryResult::StartProviding(done) | QueryResult::RepublishProvider(done) => {
                    self.stats
                        .announcement_ended(done.is_err(), stats.num_requests());
                }
                QueryResult::Bootstrap(Ok(done)) if done.num_remaining == 0 => {
                    self.stats.joined = true;
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn count_connections(&mut self) {
        let info = self.swarm.network_info();
        let open = info.connection_counters().num_established() as usize;
        self.stats.connections_now(open, info.num_peers());
    }

    /// How many unexpired provider records of other peers for `key` our store holds.
    fn stored_providers(&mut self, key: &Key) -> usize {
        let (now, local) = (Instant::now(), self.local);
        self.kad()
            .store_mut()
            .providers(&key.record_key())
            .iter()
            .filter(|p| p.provider != local && !p.is_expired(now))
            .count()
    }

    fn routing_table_size(&mut self) -> usize {
        self.kad().kbuckets().map(|b| b.num_entries()).sum()
    }
}

/// Makes `address` (one we listen on) part of our provider records. Kademlia sends our
/// external addresses with every ADD_PROVIDER; a record without addresses is only handed
/// out by nodes that happen to have us in their routing table, so at a few hundred nodes
/// lookups of keys held by one node failed. Loopback addresses only when we listen on
/// loopback (tests, benchmarks); never the unspecified address.
fn announce_address(swarm: &mut Swarm<Behaviour>, address: Multiaddr, loopback_ok: bool) {
    let usable = match ip_of(&address) {
        _ if memory::is_memory(&address) => true,
        Some(ip) => !ip.is_unspecified() && (loopback_ok || !ip.is_loopback()),
        None => false,
    };
    if usable {
        swarm.add_external_address(address);
    }
}

/// `addr` without a trailing `/p2p/<peer id>`.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// The registry port a peer announces in its identify agent version.
fn registry_port_of(agent_version: &str) -> Option<u16> {
    agent_version
        .split_whitespace()
        .find_map(|part| part.strip_prefix(REGISTRY_PORT_TAG))
        .and_then(|port| port.parse().ok())
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        // Only a router started `in_memory` has connections over it: same process, same host.
        Protocol::Memory(_) => Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        _ => None,
    })
}

/// Listen addresses worth adding to the routing table (not unspecified `0.0.0.0`).
fn is_dialable(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_port_is_read_from_the_agent_version() {
        assert_eq!(
            registry_port_of("spegel-rs/0.1.0 registry-port=5000"),
            Some(5000)
        );
        assert_eq!(registry_port_of("go-libp2p/0.33"), None);
        assert_eq!(registry_port_of("spegel-rs/0.1.0 registry-port=x"), None);
    }
}
