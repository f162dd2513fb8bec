//! The task that owns the libp2p `Swarm`: Kademlia + identify, driven by [`Command`]s.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::kad::{self, GetProvidersOk, Mode, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::addrs::{AddressPolicy, ip_of};
use crate::bootstrap::socket_multiaddr;
use crate::store::{ProviderStore, StoreLimits};
use crate::tuning::next_walk_in;
use crate::{BootstrapPeer, Error, Key, Provider, Result, RouterConfig, RouterStats};

mod announce;
mod batch;
mod lookup;
mod reannounce;
mod room;
mod summary;
mod sweep;

use announce::AnnounceQueue;
use lookup::Lookup;
use reannounce::Reannounce;
use room::{MakeRoom, RoomLimits};
use sweep::{SWEEP_MIN_KEYS, Sweep};

/// The Kademlia protocol name, as Spegel uses it.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/spegel/kad/1.0.0");
const IDENTIFY_PROTOCOL: &str = "/spegel/id/1.0.0";
/// Prefix of the registry port in our identify agent version.
const REGISTRY_PORT_TAG: &str = "registry-port=";
/// Keys whose announcement failed, announced again per second.
const RETRY_PER_TICK: usize = 64;
/// libp2p connections per peer and handshakes in progress (the totals are in
/// [`crate::DhtTuning`]). These refuse; [`MakeRoom`] closes quiet connections before a
/// node reaches the totals.
const MAX_CONNECTIONS_PER_PEER: u32 = 2;
const MAX_PENDING_INBOUND: u32 = 64;
const MAX_PENDING_OUTBOUND: u32 = 128;

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
    Peers(oneshot::Sender<Vec<crate::PeerSummary>>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    kad: MakeRoom<kad::Behaviour<ProviderStore>>,
    identify: identify::Behaviour,
    batch: batch::Behaviour,
}

/// What we know of a peer: where it connects from and which port its registry uses. Kept
/// for the peers [`crate::peers::LastSeen`] remembers, no more.
#[derive(Default)]
struct PeerInfo {
    ip: Option<IpAddr>,
    registry_port: Option<u16>,
}

struct Task {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    peers: HashMap<PeerId, PeerInfo>,
    lookups: HashMap<QueryId, Lookup>,
    advertised: HashSet<Key>,
    /// Advertised keys whose announcement failed: announced again, a few per tick.
    unannounced_keys: HashSet<Key>,
    /// Announcements waiting for a slot, and those running.
    announcing: AnnounceQueue<QueryId>,
    /// When each advertised key is announced again, and the mean interval.
    reannounce: Reannounce,
    republish_interval: Duration,
    /// How long other nodes' records stored from our batches last (as `ADD_PROVIDER`'s).
    provider_ttl: Duration,
    /// Nodes each key is announced to (Kademlia's `k`).
    replication_factor: usize,
    /// The sweep running ([`sweep`]), its walk, the keys for the next one, and the
    /// batches in flight with their keys.
    sweep: Option<Sweep>,
    sweep_walk: Option<QueryId>,
    sweep_next: Vec<Key>,
    batches: HashMap<libp2p::request_response::OutboundRequestId, sweep::InFlight>,
    /// Completes with a lookup's ID when its caller drops the providers receiver.
    abandoned: FuturesUnordered<BoxFuture<'static, QueryId>>,
    addresses: AddressPolicy,
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
    /// Addresses we dialled and still hold a connection to.
    dialled: HashSet<Multiaddr>,
    /// When each peer was last heard from (for [`Command::Peers`]).
    last_seen: crate::peers::LastSeen,
    /// The mean time between routing-table walks (`DhtTuning::bootstrap_interval`).
    walk_interval: Duration,
    /// Bytes written to our connections so far (counted by the transport).
    bytes_sent: Arc<AtomicU64>,
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
        // Re-announcing is ours (`swarm/reannounce.rs`): libp2p's job announces every key at
        // once, past the announcement queue.
        .set_provider_publication_interval(None);
    config.dht.apply(&mut kad_config);
    let addresses = if config.in_memory {
        AddressPolicy::in_memory()
    } else {
        AddressPolicy::new(config.listen.ip().is_loopback(), config.listen.port())
    };
    let store = ProviderStore::new(local, StoreLimits::default(), addresses);
    let limits = ConnectionLimits::default()
        .with_max_established(Some(saturating_u32(config.dht.max_connections)))
        .with_max_established_incoming(Some(saturating_u32(config.dht.max_inbound_connections)))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
        .with_max_pending_outgoing(Some(MAX_PENDING_OUTBOUND));
    let bytes_sent = Arc::new(AtomicU64::new(0));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_other_transport(|key| {
            crate::transport::build(
                key,
                addresses,
                config.pre_shared_key,
                config.in_memory,
                Arc::clone(&bytes_sent),
            )
        })
        .map_err(|e| listen_error(e.to_string()))?
        .with_behaviour(|key| {
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            // On private and loopback addresses libp2p would otherwise stay a client.
            kad.set_mode(Some(Mode::Server));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(agent),
            );
            Behaviour {
                batch: batch::behaviour(),
                limits: connection_limits::Behaviour::new(limits),
                kad: MakeRoom::new(
                    kad,
                    RoomLimits::below(
                        config.dht.max_connections,
                        config.dht.max_inbound_connections,
                        config.dht.quiet_before_closing,
                    ),
                ),
                identify,
            }
        })
        .map_err(|e| listen_error(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.dht.idle_connection_timeout))
        .build();
    let listen_on = if config.in_memory {
        Multiaddr::empty().with(Protocol::Memory(0))
    } else {
        socket_multiaddr(config.listen)
    };
    swarm
        .listen_on(listen_on)
        .map_err(|e| listen_error(e.to_string()))?;
    let listen = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                announce_address(&mut swarm, addresses, address.clone());
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
        unannounced_keys: HashSet::new(),
        announcing: AnnounceQueue::default(),
        reannounce: Reannounce::default(),
        republish_interval: config.republish_interval,
        provider_ttl: config.provider_ttl,
        replication_factor: config.dht.replication_factor.get(),
        sweep: None,
        sweep_walk: None,
        sweep_next: Vec::new(),
        batches: HashMap::new(),
        abandoned: FuturesUnordered::new(),
        addresses,
        peer_count,
        unannounced: true,
        bootstrap_requested: false,
        stats: RouterStats::default(),
        lookup_started_local: HashMap::new(),
        stop_at_first_provider_answer: config.dht.stop_at_first_provider_answer,
        dialled: HashSet::new(),
        last_seen: crate::peers::LastSeen::default(),
        walk_interval: config.dht.bootstrap_interval,
        bytes_sent,
    };
    Ok((listen, tokio::spawn(task.run(commands, shutdown))))
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The routing-table walk, on our own spread timer.
        let walk = tokio::time::sleep(next_walk_in(self.walk_interval));
        tokio::pin!(walk);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(query) = self.abandoned.next(), if !self.abandoned.is_empty() => {
                    self.end_lookup(query);
                }
                () = &mut walk => {
                    match self.kad().bootstrap() {
                        Ok(_) => self.stats.walks += 1,
                        Err(e) => debug!(error = %e, "no peer to walk the DHT from"),
                    }
                    walk.as_mut().reset(tokio::time::Instant::now() + next_walk_in(self.walk_interval));
                }
                _ = tick.tick() => {
                    self.expire_lookups();
                    self.retry_unannounced();
                    self.announce_due();
                    self.kad().store_mut().sweep(Instant::now());
                }
            }
        }
        debug!("router task stopped");
    }

    fn kad(&mut self) -> &mut kad::Behaviour<ProviderStore> {
        self.swarm.behaviour_mut().kad.inner_mut()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Advertise(keys) => {
                self.advertised.extend(keys.iter().cloned());
                self.announce_many(keys);
            }
            Command::Withdraw(keys) => {
                for key in keys {
                    self.announcing.remove(&key);
                    self.reannounce.remove(&key);
                    self.kad().stop_providing(&key.record_key());
                    self.unannounced_keys.remove(&key);
                    self.advertised.remove(&key);
                }
            }
            Command::Resolve {
                key,
                limit,
                providers,
            } => self.start_lookup(key, limit, providers),
            Command::Dial(peers) => self.dial(peers),
            Command::Advertised(reply) => {
                let _ = reply.send(self.advertised.iter().cloned().collect());
            }
            Command::Stats(reply) => {
                let refused = self.kad().store_mut().refused().provider_records();
                self.stats.records_refused = refused;
                self.stats.connections_closed_for_room = self.swarm.behaviour().kad.closed();
                self.stats.bytes_sent = self.bytes_sent.load(Ordering::Relaxed);
                let pending = self.announcing.waiting()
                    + self.announcing.running()
                    + self.unannounced_keys.len()
                    + self.sweep.as_ref().map_or(0, Sweep::remaining)
                    + self.sweep_next.len()
                    + self.batches.values().map(|b| b.keys.len()).sum::<usize>();
                self.stats.announcements_pending = pending as u64;
                let _ = reply.send(self.stats.clone());
            }
            Command::StoredProviders(key, reply) => {
                let _ = reply.send(self.stored_providers(&key));
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_summaries());
            }
        }
    }

    /// Announces `key` (an advertised one) when a slot is free, else queues it (see
    /// [`AnnounceQueue`]).
    fn provide(&mut self, key: Key) {
        self.announcing.push(key);
        self.start_announcements();
    }

    /// Starts queued announcements while slots are free; a key that cannot be announced
    /// now is announced again later.
    fn start_announcements(&mut self) {
        while let Some(key) = self.announcing.next() {
            match self.kad().start_providing(key.record_key()) {
                Ok(query) => {
                    self.announcing.started(query);
                    self.unannounced_keys.remove(&key);
                    let interval = self.republish_interval;
                    self.reannounce.announced(key, Instant::now(), interval);
                }
                Err(e) => {
                    self.stats.announcements_refused += 1;
                    if self.unannounced_keys.insert(key.clone()) {
                        warn!(%key, error = %e, "cannot advertise key; will retry");
                    }
                }
            }
        }
    }

    /// Announces again the advertised keys whose time has come. A sweep's keys come due
    /// together; keys announced one by one that are due within the next quarter interval
    /// join them (announced again at least half an interval after their last time, well
    /// inside the TTL), as do all keys due soon once there are enough for a sweep.
    fn announce_due(&mut self) {
        let now = Instant::now();
        if !self.reannounce.any_due(now) {
            return;
        }
        let soon = now + self.republish_interval / 4;
        let by = if self.sweep.is_none() && self.reannounce.due_by(soon) >= SWEEP_MIN_KEYS {
            soon
        } else {
            now
        };
        let keys: Vec<Key> = self
            .reannounce
            .take_due(by)
            .into_iter()
            .filter(|key| self.advertised.contains(key))
            .collect();
        self.announce_many(keys);
    }

    /// Announces again a few of the keys whose announcement failed.
    fn retry_unannounced(&mut self) {
        let keys: Vec<Key> = self
            .unannounced_keys
            .iter()
            .take(RETRY_PER_TICK)
            .cloned()
            .collect();
        for key in keys {
            self.unannounced_keys.remove(&key);
            if self.advertised.contains(&key) {
                self.provide(key);
            }
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
        if let Some(peer) = summary::heard_from(&event)
            && let Some(forgotten) = self.last_seen.saw(peer)
        {
            // What we know of a peer is kept as long as when we last heard from it, so the
            // map stays bounded however many identities connect (without a cluster secret
            // anyone may).
            self.peers.remove(&forgotten);
        }
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
                announce_address(&mut self.swarm, self.addresses, address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Batch(event)) => self.on_batch(event),
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { .. },
                ..
            } => self.stats.connections_denied += 1,
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "connection failed");
                if matches!(error, DialError::Denied { .. }) {
                    self.stats.connections_denied += 1;
                }
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
            // Dial a peer where it was seen connecting from, never where it merely says.
            let seen = self.peers.get(&peer).and_then(|p| p.ip);
            let policy = self.addresses;
            let dialable = info
                .listen_addrs
                .into_iter()
                .filter(|a| policy.allows(a) && ip_of(a).is_some() && ip_of(a) == seen);
            for addr in dialable {
                self.kad().add_address(&peer, addr);
            }
        }
        self.registry_known(peer);
    }

    fn on_kad(&mut self, event: kad::Event) {
        self.stats.observe(&event, &mut self.lookup_started_local);
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
                id,
                result,
                step,
                stats,
            } => match result {
                QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                    providers, ..
                })) => self.found_providers(id, providers, step.last),
                QueryResult::GetProviders(_) if step.last => self.finish_lookup(id),
                QueryResult::Bootstrap(Ok(done)) if done.num_remaining == 0 && self.unannounced => {
                    self.unannounced = false;
                    info!(peers = self.routing_table_size(), "joined the DHT");
                    // Records announced before we had peers reached nobody.
                    let keys: Vec<Key> = self.advertised.iter().cloned().collect();
                    self.announce_many(keys);
                }
                QueryResult::GetClosestPeers(result) => {
                    let peers = result.ok().map(|ok| ok.peers);
                    self.sweep_walked(id, peers, stats.num_requests());
                }
                QueryResult::StartProviding(Ok(done)) => {
                    if let Some(key) = Key::from_record_key(done.key.as_ref()) {
                        let took = stats.duration().unwrap_or_default();
                        debug!(%key, ?took, requests = stats.num_requests(), "announced");
                    }
                    self.announcing.ended(&id);
                    self.start_announcements();
                }
                QueryResult::StartProviding(Err(e)) => {
                    self.announcing.ended(&id);
                    self.start_announcements();
                    debug!(error = %e, "announcement incomplete");
                    // Once joined, an announcement that reached nobody is made again.
                    if !self.unannounced
                        && let Some(key) = Key::from_record_key(e.key().as_ref())
                        && self.advertised.contains(&key)
                    {
                        self.unannounced_keys.insert(key);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn on_batch(&mut self, event: libp2p::request_response::Event<batch::Batch, u32>) {
        use libp2p::request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.swarm.behaviour_mut().kad.heard_from(peer);
                let stored = self.store_batch(peer, request);
                // The peer may be gone already; nothing to do then.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .batch
                    .send_response(channel, stored);
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.batch_answered(request_id, Ok(response)),
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                debug!(%peer, %error, "provider batch failed");
                self.batch_answered(request_id, Err(&error));
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "provider batch from a peer failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn routing_table_size(&mut self) -> usize {
        self.kad().kbuckets().map(|b| b.num_entries()).sum()
    }

    fn count_connections(&mut self) {
        let info = self.swarm.network_info();
        let open = info.connection_counters().num_established() as usize;
        self.stats.connections_now(open, info.num_peers());
    }
}

/// Makes `address` (one we listen on) part of our provider records when `policy` would let
/// a peer dial it. Kademlia sends our external addresses with every ADD_PROVIDER; a record
/// without addresses is only handed out by nodes that happen to have us in their routing
/// table, so at a few hundred nodes lookups of keys held by one node failed. A listener on
/// `0.0.0.0` reports each interface address: loopback ones only count when we listen on
/// loopback (tests, benchmarks).
fn announce_address(swarm: &mut Swarm<Behaviour>, policy: AddressPolicy, address: Multiaddr) {
    if policy.allows(&address) {
        swarm.add_external_address(address);
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
