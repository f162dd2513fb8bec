//! A DHT member that floods a real `spegel-node`: ADD_PROVIDER for junk keys and for more
//! digest-shaped keys than its quota, and PUT_VALUE records of 14 KB. The node's memory
//! stays bounded (peak RSS under the unit's `MemoryMax=100M`) and its own keys are still
//! found by an honest peer. And 600 members that keep asking it something: the node's
//! connection table stays at its limits and its peak RSS under the unit's `MemoryHigh=80M`.
//!
//! The attacker is a plain libp2p Kademlia peer in this process speaking spegel's protocol
//! (`/spegel/kad/1.0.0`); the honest peer is `spegel_routing::Router`.

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

fn rogue(node: PeerId, addr: Multiaddr) -> Result<Rogue> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
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
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
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

#[tokio::test]
#[ignore = "long: about 2 minutes of flooding; CI runs it (scripts/test.sh --include-ignored)"]
async fn junk_key_and_value_floods_leave_memory_bounded_and_own_keys_advertised() -> Result<()> {
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
    let (node, node_peer, router_addr, node_multiaddr) = open_dht_node(&containerd).await?;

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

    // An honest member still finds the node's own content.
    let shutdown = CancellationToken::new();
    let bootstrap = Arc::new(StaticBootstrap::new(&[router_addr.to_string()], 0)?);
    let config = RouterConfig::new(
        "127.0.0.1:0".parse()?,
        Keypair::generate_ed25519(),
        1,
        bootstrap,
    );
    let (honest, _task) = Router::start(config, shutdown.clone()).await?;
    tokio::time::timeout(Duration::from_secs(10), honest.wait_for_peers()).await??;
    let layer = Key::Digest(image.layer_digests[0].parse()?);
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while found.is_none() && Instant::now() < deadline {
        let mut providers = honest.resolve(&layer, 1).await?;
        found = tokio::time::timeout(Duration::from_secs(2), providers.recv())
            .await
            .ok()
            .flatten();
    }
    shutdown.cancel();
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
