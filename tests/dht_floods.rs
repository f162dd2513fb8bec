//! A DHT member that floods a real `spegel-node`: ADD_PROVIDER for junk keys and for more
//! digest-shaped keys than its quota, and PUT_VALUE records of 14 KB. The node's memory
//! stays bounded (peak RSS under the unit's `MemoryMax=100M`) and its own keys are still
//! found by an honest peer.
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
    let router_addr = spegel_testbed::port::free_loopback_addr()?;
    let node = SpegelNode::start(
        &containerd,
        // An open DHT: the flooding peer here is as good as a member (with a cluster secret it
        // would be one that holds the secret), which is what the store's limits are for.
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
    let node_peer: PeerId = status["peer_id"].as_str().context("peer_id")?.parse()?;
    let node_multiaddr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", router_addr.port()).parse()?;

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
