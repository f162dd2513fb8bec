//! A DHT member that floods a real `spegel-node`: ADD_PROVIDER for junk keys and for more
//! digest-shaped keys than its quota, and PUT_VALUE records of 14 KB. The node's memory
//! stays bounded (peak RSS under the unit's `MemoryMax=100M`) and its own keys are still
//! found by an honest peer. And 600 members that keep asking it something: the node's
//! connection table stays at its limits and its peak RSS under the unit's `MemoryHigh=80M`.
//! And 24 peers flooding it with provider batches (`/spegel/provide/1.0.0`), half of them
//! trickled in to hold its places: the node refuses what is past its limits, its memory
//! stays under `MemoryHigh=80M`, and an honest member's keys still reach its store.
//!
//! The attackers are plain libp2p peers in this process speaking spegel's protocols
//! (`/spegel/kad/1.0.0` through libp2p's Kademlia, `/spegel/provide/1.0.0` written by
//! hand); the honest peers are `spegel_routing::Router`.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::kad::{self, Mode, QueryResult, Quorum, Record, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use spegel_oci::Digest;
use spegel_routing::{Key, Keypair, Router, RouterConfig, StaticBootstrap};
use spegel_testbed::{Containerd, ImageSpec, SpegelNode, Upstream, http};
use tokio_util::sync::CancellationToken;

const MEMORY_MAX: u64 = 100_000_000;
const JUNK_KEYS: usize = 20_000;
const DIGEST_KEYS: usize = 25_000;
const VALUES: usize = 2_000;
const BATCH: usize = 1_000;

type Rogue = libp2p::Swarm<kad::Behaviour<MemoryStore>>;

/// A libp2p peer with a fresh identity over TCP, Noise and yamux (no cluster secret: the
/// nodes these tests flood run an open DHT), idle connections kept for a minute.
fn plain_swarm<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<libp2p::Swarm<B>> {
    Ok(
        libp2p::SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build(),
    )
}

fn rogue(node: PeerId, addr: Multiaddr) -> Result<Rogue> {
    let mut swarm = plain_swarm(|key| {
        let local = key.public().to_peer_id();
        let mut config = kad::Config::new(StreamProtocol::new("/spegel/kad/1.0.0"));
        config.set_query_timeout(Duration::from_secs(20));
        let store = MemoryStore::with_config(
            local,
            MemoryStoreConfig {
                max_records: 1_000_000,
                max_provided_keys: 1_000_000,
                max_value_bytes: 1 << 20,
                ..MemoryStoreConfig::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(local, store, config);
        kad.set_mode(Some(Mode::Server));
        kad
    })?;
    swarm.behaviour_mut().add_address(&node, addr);
    Ok(swarm)
}

/// Runs the swarm until `queries` queries (announcements or puts) have finished.
async fn finish(swarm: &mut Rogue, mut queries: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while queries > 0 {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some()).await;
        let Ok(event) = event else { return };
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: QueryResult::StartProviding(_) | QueryResult::PutRecord(_),
            step,
            ..
        }) = event
            && step.last
        {
            queries -= 1;
        }
    }
}

/// An honest member: the project's own router, joined through the node.
async fn honest_member(
    router_addr: std::net::SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Router> {
    let bootstrap = Arc::new(StaticBootstrap::new(&[router_addr.to_string()], 0)?);
    let config = RouterConfig::new(
        "127.0.0.1:0".parse()?,
        Keypair::generate_ed25519(),
        1,
        bootstrap,
    );
    let (router, _task) = Router::start(config, shutdown.child_token()).await?;
    tokio::time::timeout(Duration::from_secs(10), router.wait_for_peers()).await??;
    Ok(router)
}

/// A provider of `key` that an honest member joining through the node finds (asking for
/// up to 15 s).
async fn found_by_a_member(
    router_addr: std::net::SocketAddr,
    key: &Key,
) -> Result<Option<spegel_routing::Provider>> {
    let shutdown = CancellationToken::new();
    let member = honest_member(router_addr, &shutdown).await?;
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while found.is_none() && Instant::now() < deadline {
        let mut providers = member.resolve(key, 1).await?;
        found = tokio::time::timeout(Duration::from_secs(2), providers.recv())
            .await
            .ok()
            .flatten();
    }
    shutdown.cancel();
    Ok(found)
}

/// The providers of `key` the node's own store names: a plain Kademlia peer that knows only
/// the node asks it (`GET_PROVIDERS`) and takes its first answer.
async fn stored_at(node: PeerId, addr: &Multiaddr, key: &Key) -> Result<Vec<PeerId>> {
    let mut swarm = rogue(node, addr.clone())?;
    swarm.behaviour_mut().set_mode(Some(Mode::Client));
    swarm
        .behaviour_mut()
        .get_providers(RecordKey::new(&key.to_string()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .context("the node did not answer GET_PROVIDERS")?;
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { result, step, .. }) =
            event
        {
            match result {
                QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => return Ok(providers.into_iter().collect()),
                _ if step.last => return Ok(Vec::new()),
                _ => {}
            }
        }
    }
}

/// A `spegel-node` on `containerd` with an open DHT on a loopback router port: the peers these
/// tests run speak plain Kademlia, as good as members (with a cluster secret they would be
/// nodes holding it; the store's quotas and the connection limits are the same). Returns the
/// node, its peer ID and its router's address (as a socket address and as a multiaddr).
async fn open_dht_node(
    containerd: &Containerd,
) -> Result<(SpegelNode, PeerId, std::net::SocketAddr, Multiaddr)> {
    let router_addr = spegel_testbed::port::free_loopback_addr()?;
    let node = SpegelNode::start(
        containerd,
        &[
            &format!("--router-addr={router_addr}"),
            "--log-level=info",
            "--insecure-open-dht",
        ],
    )
    .await?;
    let status: serde_json::Value = serde_json::from_slice(
        &http::get(&format!("{}/_spegel/status", node.url()), &[])
            .await?
            .body,
    )?;
    let peer: PeerId = status["peer_id"].as_str().context("peer_id")?.parse()?;
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", router_addr.port()).parse()?;
    Ok((node, peer, router_addr, addr))
}

/// A `spegel-node` with an open DHT ([`open_dht_node`]) whose containerd has pulled a
/// one-layer image from a local upstream: the node advertises that layer.
struct NodeWithAnImage {
    node: SpegelNode,
    peer: PeerId,
    router_addr: std::net::SocketAddr,
    multiaddr: Multiaddr,
    layer: Key,
    // Dropped after the node.
    _containerd: Containerd,
    _upstream: Upstream,
    _layout: tempfile::TempDir,
}

impl NodeWithAnImage {
    async fn start() -> Result<NodeWithAnImage> {
        spegel_testbed::require_root_tools()?;
        let upstream = Upstream::start().await?;
        let layout = tempfile::tempdir()?;
        let spec = ImageSpec {
            layers: vec![1024],
            multi_platform: false,
        };
        let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
        spegel_testbed::push(&image, &upstream.host(), "test/img").await?;
        let containerd = Containerd::start().await?;
        containerd.mirror_to(&upstream.host())?;
        containerd
            .cri_pull(&format!("{}/test/img:v1", upstream.host()))
            .await?;
        let (node, peer, router_addr, multiaddr) = open_dht_node(&containerd).await?;
        Ok(NodeWithAnImage {
            node,
            peer,
            router_addr,
            multiaddr,
            layer: Key::Digest(image.layer_digests[0].parse()?),
            _containerd: containerd,
            _upstream: upstream,
            _layout: layout,
        })
    }
}

#[tokio::test]
#[ignore = "long: about 2 minutes of flooding; CI runs it (scripts/test.sh --include-ignored)"]
async fn junk_key_and_value_floods_leave_memory_bounded_and_own_keys_advertised() -> Result<()> {
    let held = NodeWithAnImage::start().await?;
    let (node, node_peer, router_addr, node_multiaddr) = (
        &held.node,
        held.peer,
        held.router_addr,
        held.multiaddr.clone(),
    );

    let mut swarm = rogue(node_peer, node_multiaddr)?;
    let started = Instant::now();
    let junk: Vec<RecordKey> = (0..JUNK_KEYS)
        .map(|i| RecordKey::new(&format!("junk-{i}-{}", "x".repeat(64))))
        .collect();
    let digests: Vec<RecordKey> = (0..DIGEST_KEYS)
        .map(|i| RecordKey::new(&Digest::sha256_of(&i.to_be_bytes()).to_string()))
        .collect();
    for batch in junk.chunks(BATCH).chain(digests.chunks(BATCH)) {
        for key in batch {
            swarm.behaviour_mut().start_providing(key.clone())?;
        }
        finish(&mut swarm, batch.len()).await;
    }
    for batch in (0..VALUES).collect::<Vec<_>>().chunks(BATCH) {
        for i in batch {
            let record = Record::new(RecordKey::new(&format!("value-{i}")), vec![7; 14_000]);
            swarm.behaviour_mut().put_record(record, Quorum::One)?;
        }
        finish(&mut swarm, batch.len()).await;
    }
    let flood_took = started.elapsed();

    let found = found_by_a_member(router_addr, &held.layer.clone()).await?;
    let log = node.log()?;
    let peak = node.peak_rss()?;
    eprintln!(
        "DHT flood: {JUNK_KEYS} junk keys, {DIGEST_KEYS} digest keys, {VALUES} values of 14 KB in {flood_took:?}; spegel-node peak RSS {:.1} MB; own layer found: {}",
        peak as f64 / 1e6,
        found.is_some()
    );
    ensure!(peak < MEMORY_MAX, "peak RSS {peak}");
    let provider = found.context("an honest peer no longer finds the node's own layer")?;
    ensure!(provider.peer == node_peer, "{provider:?}");
    eprintln!(
        "DHT flood: the node reported refusals: {}",
        log.lines()
            .filter(|l| l.contains("refused DHT records from peers"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Members that connect at once, more than the node admits inbound (384 of 512).
const MEMBERS: usize = 600;
/// How often each member asks the node something, as in a busy cluster of hundreds of nodes:
/// well inside the node's idle timeout, and past the 10 s after which a full node may close
/// a quiet connection to make room.
const MEMBER_PERIOD: Duration = Duration::from_secs(15);
/// How long the node is held at a full connection table.
const HOLD: Duration = Duration::from_secs(60);
/// The unit's `MemoryHigh=80M`: past it systemd throttles the node.
const MEMORY_HIGH: u64 = 80_000_000;

/// One member: a plain Kademlia client that asks the node for the peers closest to a random
/// key every [`MEMBER_PERIOD`] (re-dialling when the node refused or closed its connection).
async fn member(
    index: usize,
    node: PeerId,
    addr: Multiaddr,
    stop: CancellationToken,
) -> Result<()> {
    let mut swarm = rogue(node, addr.clone())?;
    swarm.behaviour_mut().set_mode(Some(Mode::Client));
    // Members start spread over one period, as nodes of a cluster do.
    let offset = MEMBER_PERIOD.mul_f64(index as f64 / MEMBERS as f64);
    let mut ask = tokio::time::interval_at(tokio::time::Instant::now() + offset, MEMBER_PERIOD);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = ask.tick() => {
                // Kademlia forgets an address whose dial failed (refused at the limit).
                swarm.behaviour_mut().add_address(&node, addr.clone());
                swarm.behaviour_mut().get_closest_peers(PeerId::random());
            }
            _ = swarm.select_next_some() => {}
        }
    }
}

/// The `dht_connections*` figures of the node's status.
async fn dht_connections(url: &str) -> Result<(u64, u64, u64, u64)> {
    let status: serde_json::Value =
        serde_json::from_slice(&http::get(&format!("{url}/_spegel/status"), &[]).await?.body)?;
    let field = |name: &str| {
        status[name]
            .as_u64()
            .with_context(|| format!("no {name} in {status}"))
    };
    Ok((
        field("dht_connections")?,
        field("dht_connections_peak")?,
        field("dht_connections_denied")?,
        field("dht_connections_closed_for_room")?,
    ))
}

/// A full DHT connection table, as a node of a cluster of hundreds sees it (or as members
/// flooding it make it): 600 members ask the node something every 15 s. The node admits no
/// more inbound connections than its limit, closes quiet ones for room or refuses the rest
/// (members dial again on their next request), and its peak RSS stays under
/// the unit's `MemoryHigh=80M`. Prints the RSS before and at the peak, and what one
/// connection costs, for docs/scale.md.
#[tokio::test]
#[ignore = "long: about 2 minutes of 600 DHT connections; CI runs it (scripts/test.sh --include-ignored)"]
async fn a_full_connection_table_keeps_memory_under_the_units_high_mark() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let containerd = Containerd::start().await?;
    let (node, node_peer, _, node_multiaddr) = open_dht_node(&containerd).await?;
    let url = node.url();
    let before = spegel_testbed::attack::rss(node.pid().context("spegel-node exited")?)?;

    let limit = spegel_routing::DhtTuning::default().max_inbound_connections as u64;
    let stop = CancellationToken::new();
    let members: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let (addr, stop) = (node_multiaddr.clone(), stop.child_token());
            tokio::spawn(member(i, node_peer, addr, stop))
        })
        .collect();
    // Every member has asked once after one period; then the node holds a table at its
    // limits (closing quiet connections for room, refusing past the hard limit) for HOLD.
    let held_until = Instant::now() + MEMBER_PERIOD + HOLD;
    let mut most = 0;
    while Instant::now() < held_until {
        let (now, _, _, _) = dht_connections(&url).await?;
        most = most.max(now);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (_, peak_connections, denied, closed) = dht_connections(&url).await?;
    let peak = node.peak_rss()?;
    stop.cancel();
    for m in members {
        m.await??;
    }
    let per_connection = peak.saturating_sub(before) as f64 / peak_connections.max(1) as f64;
    eprintln!(
        "full DHT table: {MEMBERS} members every {MEMBER_PERIOD:?}; connections seen at most {most} (peak {peak_connections}, inbound limit {limit}), {denied} refused, {closed} closed for room; spegel-node RSS {:.1} MB before, peak {:.1} MB, {:.0} KB per connection",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        per_connection / 1e3,
    );
    // The table was full as far as the node is concerned (at its high watermark, 7/8 of
    // the inbound limit), never over the limit, and the limits acted.
    ensure!(
        peak_connections >= limit - limit / 8 && peak_connections <= limit,
        "{peak_connections} connections at the peak"
    );
    ensure!(
        denied + closed > 0,
        "600 members and no connection refused or closed"
    );
    ensure!(peak < MEMORY_HIGH, "peak RSS {peak} over MemoryHigh");
    Ok(())
}

/// Peers that flood the node with provider batches (`/spegel/provide/1.0.0`, the sweep's
/// protocol).
const BATCH_FLOODERS: usize = 24;
/// Requests each keeps open on its connection: the node's limit per connection.
const BATCH_STREAMS: usize = 8;
/// How long they flood.
const BATCH_FLOOD: Duration = Duration::from_secs(60);
/// Keys per batch (the node's limit).
const BATCH_KEYS: usize = 512;
/// Different batches of keys each flooder sends (then it sends them again): 24 × 6 × 512 =
/// 73,728 records at most, under the 100,000 the node's store keeps of all peers, so an
/// honest member's records still fit. This test is about reading batches; the store's
/// quotas are flooded by the test above.
const KEY_SETS: usize = 6;
/// Keys an honest member announces during the flood: enough to go in a sweep's batches.
const HONEST_KEYS: usize = 100;

/// A provider batch as the wire format of `crates/routing/src/swarm/batch.rs` has it,
/// written by hand so this test checks the format from outside: `u16` address count,
/// each address as `u16` length and bytes, then the keys the same way. `slow` requests
/// are written 1 KiB a second, to hold a place of the node's while they trickle in.
#[derive(Debug)]
struct RawBatch {
    bytes: Vec<u8>,
    slow: bool,
}

impl RawBatch {
    fn new(flooder: usize, number: usize, slow: bool) -> RawBatch {
        let mut bytes = Vec::new();
        let address = "/ip4/127.0.0.1/tcp/9"
            .parse::<Multiaddr>()
            .unwrap()
            .to_vec();
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&(address.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&address);
        bytes.extend_from_slice(&(BATCH_KEYS as u16).to_be_bytes());
        for i in 0..BATCH_KEYS {
            let seed = format!("{flooder}-{number}-{i}");
            let key = Digest::sha256_of(seed.as_bytes()).to_string();
            bytes.extend_from_slice(&(key.len() as u16).to_be_bytes());
            bytes.extend_from_slice(key.as_bytes());
        }
        RawBatch { bytes, slow }
    }
}

/// Writes [`RawBatch`]es and reads the node's answer: how many records it kept.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl libp2p::request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = RawBatch;
    type Response = u32;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<RawBatch>
    where
        T: futures_util::AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("a flooder answers nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u32>
    where
        T: futures_util::AsyncRead + Unpin + Send,
    {
        use futures_util::AsyncReadExt;
        let mut bytes = [0; 4];
        io.read_exact(&mut bytes).await?;
        Ok(u32::from_be_bytes(bytes))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        batch: RawBatch,
    ) -> std::io::Result<()>
    where
        T: futures_util::AsyncWrite + Unpin + Send,
    {
        use futures_util::AsyncWriteExt;
        if batch.slow {
            for piece in batch.bytes.chunks(1024) {
                io.write_all(piece).await?;
                io.flush().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        } else {
            io.write_all(&batch.bytes).await?;
        }
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: u32,
    ) -> std::io::Result<()>
    where
        T: futures_util::AsyncWrite + Unpin + Send,
    {
        Err(std::io::Error::other("a flooder answers nothing"))
    }
}

/// What one flooder saw: batches answered (trickled ones apart) and batches that failed
/// (refused unread, dropped past the per-connection limit, or timed out).
#[derive(Debug, Default)]
struct Flooded {
    answered: u64,
    answered_slow: u64,
    failed: u64,
}

/// One flooder: keeps [`BATCH_STREAMS`] batches open to the node for [`BATCH_FLOOD`], every
/// other one slow, sending the next as soon as one ends.
async fn batch_flooder(index: usize, node: PeerId, addr: Multiaddr) -> Result<Flooded> {
    use libp2p::request_response::{self, Event, Message, ProtocolSupport};
    let mut swarm = plain_swarm(|_| {
        request_response::Behaviour::with_codec(
            RawCodec,
            [(
                StreamProtocol::new("/spegel/provide/1.0.0"),
                ProtocolSupport::Outbound,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(90))
                .with_max_concurrent_streams(BATCH_STREAMS),
        )
    })?;
    swarm.add_peer_address(node, addr);
    let mut sent = 0;
    let mut open = std::collections::HashMap::new();
    let mut seen = Flooded::default();
    let until = tokio::time::Instant::now() + BATCH_FLOOD;
    loop {
        while open.len() < BATCH_STREAMS && tokio::time::Instant::now() < until {
            let slow = sent % 2 == 0;
            let id = swarm
                .behaviour_mut()
                .send_request(&node, RawBatch::new(index, sent % KEY_SETS, slow));
            open.insert(id, slow);
            sent += 1;
        }
        if open.is_empty() {
            return Ok(seen);
        }
        // Everything sent ends within the request timeout; past it, something is wrong.
        let event = tokio::time::timeout(Duration::from_secs(120), swarm.select_next_some())
            .await
            .context("a flooder's request never ended")?;
        match event {
            SwarmEvent::Behaviour(Event::Message {
                message: Message::Response { request_id, .. },
                ..
            }) => {
                if open.remove(&request_id) == Some(true) {
                    seen.answered_slow += 1;
                }
                seen.answered += 1;
            }
            SwarmEvent::Behaviour(Event::OutboundFailure { request_id, .. }) => {
                open.remove(&request_id);
                seen.failed += 1;
            }
            _ => {}
        }
    }
}

/// Peers flood the node with provider batches, half of them trickled in to hold the places
/// the node reads batches in: 24 peers × 8 batches at once for a minute, each of 512
/// digest-shaped keys. The node reads at most 64 at once and refuses the rest unread,
/// drops batches that take more than 5 s to arrive, its peak RSS stays under the unit's
/// `MemoryHigh=80M`, and honest members still get through: the node's own content is
/// found, and 100 keys an honest member announces during the flood (in a sweep's batches,
/// or one by one when the node refuses them) are in the node's store.
#[tokio::test]
#[ignore = "long: about 2 minutes of flooding; CI runs it (scripts/test.sh --include-ignored)"]
async fn provider_batch_floods_are_refused_past_the_limits_and_honest_members_get_through()
-> Result<()> {
    let held = NodeWithAnImage::start().await?;
    let (node, node_peer, router_addr, node_multiaddr) = (
        &held.node,
        held.peer,
        held.router_addr,
        held.multiaddr.clone(),
    );
    let before = spegel_testbed::attack::rss(node.pid().context("spegel-node exited")?)?;

    let flooders: Vec<_> = (0..BATCH_FLOODERS)
        .map(|i| tokio::spawn(batch_flooder(i, node_peer, node_multiaddr.clone())))
        .collect();

    // An honest member announces its keys while the flood is on, then leaves.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let shutdown = CancellationToken::new();
    let announcer = honest_member(router_addr, &shutdown).await?;
    // Joined first, so that its keys go out in a sweep (batches), not one by one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !announcer.stats().await?.joined {
        ensure!(Instant::now() < deadline, "the honest member did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys: Vec<Key> = (0..HONEST_KEYS)
        .map(|i| Key::Digest(Digest::sha256_of(format!("honest-{i}").as_bytes())))
        .collect();
    announcer.advertise(keys.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(45);
    let announced = loop {
        let stats = announcer.stats().await?;
        if stats.announcements >= HONEST_KEYS as u64 && stats.announcements_pending == 0 {
            break stats;
        }
        ensure!(
            Instant::now() < deadline,
            "the honest member's announcements did not end during the flood: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let announcer_peer = announcer.local_peer_id();
    shutdown.cancel();

    let mut seen = Vec::new();
    for f in flooders {
        seen.push(f.await??);
    }
    let peak = node.peak_rss()?;
    let answered: u64 = seen.iter().map(|s| s.answered).sum();
    let answered_slow: u64 = seen.iter().map(|s| s.answered_slow).sum();
    let failed: u64 = seen.iter().map(|s| s.failed).sum();
    let own = found_by_a_member(router_addr, &held.layer.clone()).await?;
    let mut honest_found = 0;
    for key in keys.iter().step_by(20) {
        if stored_at(node_peer, &node_multiaddr, key)
            .await?
            .contains(&announcer_peer)
        {
            honest_found += 1;
        }
    }
    eprintln!(
        "provider batch flood: {BATCH_FLOODERS} peers x {BATCH_STREAMS} batches of {BATCH_KEYS} keys for {BATCH_FLOOD:?}, half trickled; {answered} answered ({answered_slow} of them trickled), {failed} failed or refused; spegel-node RSS {:.1} MB before, peak {:.1} MB; own layer found: {}; honest member's {HONEST_KEYS} keys: {} batches sent, {} sent again, {} given up (their keys then announced one by one), {} records acknowledged in batches; {honest_found} of 5 in the node's store after it left",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        own.is_some(),
        announced.batches_sent,
        announced.batches_retried,
        announced.batches_failed,
        announced.batch_records_acknowledged,
    );
    ensure!(answered > 0, "no batch was answered: {seen:?}");
    ensure!(
        answered_slow == 0,
        "{answered_slow} batches trickled in over 5 s were read"
    );
    ensure!(
        failed > 0,
        "{} batches at once and none refused",
        BATCH_FLOODERS * BATCH_STREAMS
    );
    ensure!(peak < MEMORY_HIGH, "peak RSS {peak} over MemoryHigh");
    let provider = own.context("an honest peer no longer finds the node's own layer")?;
    ensure!(provider.peer == node_peer, "{provider:?}");
    ensure!(
        honest_found == 5,
        "{honest_found} of 5 of an honest member's keys in the node's store"
    );
    Ok(())
}
