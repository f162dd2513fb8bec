//! The re-announcement sweep: many keys announced with a few walks and one request per peer.
//!
//! Announcing one key is a walk to the nodes closest to it (about 40 requests at 1,000
//! nodes) and an `ADD_PROVIDER` to each of the `k` (20) closest: ~63 requests a key, so a
//! node holding 2,000 digests sends ~126,000 every re-announcement round (`docs/scale.md`).
//! Most of that is the walks, and keys near each other in the key space walk to the same
//! nodes. The sweep walks each region of the key space once instead of each key:
//!
//! * Keys are taken in key-space order. The walk to the first key `t` of a region returns
//!   its `k` closest nodes; the `k`-th shares `L` leading bits with `t`. Every node sharing
//!   more than `L` bits with `t` is closer than the `k`-th, so the walk found them all: the
//!   prefix of `t` of `L + 1` bits is *covered*. The prefix of `L` bits (the region) holds
//!   at least `k` nodes, so every key in it has its `k` closest nodes inside it.
//! * While the region has parts not covered, a walk goes to a point in one (a preimage
//!   whose hash falls there: Kademlia hashes what it walks to) and covers more.
//! * Once the region is covered, every node in it is known, and each key's `k` closest
//!   are worked out here: the same nodes `ADD_PROVIDER` would have reached.
//!
//! A region holding one key needs no more than its first walk, exactly what a single
//! announcement costs, so a sweep never costs much more than announcing key by key; at
//! 1,000 nodes a region holds ~20 to 40 nodes and takes 2 to 3 walks.
//! Each peer then gets its keys in one request ([`super::batch`]). A walk that fails puts
//! its region's keys back to be announced one by one, as does a batch that fails.
//!
//! [`Sweep`] is the plan, without I/O: the swarm task asks it for the next step, runs the
//! walk or sends the batches, and reports back ([`Task::drive_sweep`]).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::kad::{self, PeerInfo, QueryId};
use libp2p::request_response::{OutboundFailure, OutboundRequestId};
use libp2p::{Multiaddr, PeerId};
use tracing::debug;

use super::Task;
use super::batch::{self, Batch};
use crate::Key;

/// Normal keys announced together at or above which a sweep is used instead of one
/// announcement per key (below, a sweep saves little: regions hold one or two keys).
pub(super) const SWEEP_MIN_KEYS: usize = 64;
/// Batches one node has in flight at once; the sweep waits for answers past this.
const MAX_BATCHES_IN_FLIGHT: usize = 32;
/// The longest prefix a walk target is searched for (2^bits hashes on average, at most 16
/// times that: ~5 ms and ~80 ms on the swarm task at 14 bits). A region of k nodes has a
/// prefix of about log2(N / k) bits and its parts a few more: 14 bits is far past 10,000
/// nodes.
const MAX_TARGET_BITS: u32 = 14;
/// Times a batch is sent when its connection closes or it times out.
const BATCH_TRIES: u8 = 2;
/// Walks one region may take. Honest networks need 2 or 3; peers that answer walks with
/// made-up nodes could otherwise keep a region from ever being covered.
const MAX_WALKS_PER_REGION: u32 = 12;

/// A point of the Kademlia key space: the SHA-256 of a key, a peer ID, or a walk target.
pub(super) type Point = [u8; 32];

pub(super) fn point_of(bytes: &[u8]) -> Point {
    crate::key::key_space_point(bytes)
}

fn point_of_peer(peer: &PeerId) -> Point {
    let mut point = [0; 32];
    point.copy_from_slice(kad::KBucketKey::from(*peer).hashed_bytes());
    point
}

/// Leading bits `a` and `b` share (256 when equal).
fn common_bits(a: &Point, b: &Point) -> u32 {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let differ = x ^ y;
        if differ != 0 {
            return i as u32 * 8 + differ.leading_zeros();
        }
    }
    256
}

/// The points whose first `bits` bits are those of `point`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    point: Point,
    bits: u32,
}

impl Prefix {
    const ALL: Prefix = Prefix {
        point: [0; 32],
        bits: 0,
    };

    fn contains(&self, point: &Point) -> bool {
        common_bits(&self.point, point) >= self.bits
    }

    /// The prefix one bit longer, with that bit 0 and 1.
    fn halves(&self) -> [Prefix; 2] {
        let (byte, bit) = ((self.bits / 8) as usize, 7 - self.bits % 8);
        let mut zero = self.point;
        zero[byte] &= !(1 << bit);
        let mut one = self.point;
        one[byte] |= 1 << bit;
        [zero, one].map(|point| Prefix {
            point,
            bits: self.bits + 1,
        })
    }
}

/// A part of `region` no prefix in `covered` covers, if any.
fn uncovered_in(region: Prefix, covered: &[Prefix]) -> Option<Prefix> {
    if covered
        .iter()
        .any(|c| c.bits <= region.bits && c.contains(&region.point))
    {
        return None;
    }
    let partly = covered
        .iter()
        .any(|c| c.bits > region.bits && region.contains(&c.point));
    if !partly || region.bits >= 255 {
        return Some(region);
    }
    region
        .halves()
        .into_iter()
        .find_map(|half| uncovered_in(half, covered))
}

/// Bytes whose hash falls in `prefix` (what a walk into it is given), if one is found
/// within a few times 2^bits tries.
fn target_in(prefix: Prefix, salt: u64) -> Option<Vec<u8>> {
    if prefix.bits > MAX_TARGET_BITS {
        return None;
    }
    let tries = 16u64 << prefix.bits;
    (0..tries)
        .map(|i| format!("spegel-sweep-{salt}-{i}").into_bytes())
        .find(|bytes| prefix.contains(&point_of(bytes)))
}

/// What the sweep needs done next.
#[derive(Debug)]
pub(super) enum Step {
    /// Walk to the nodes closest to these bytes' hash, then call [`Sweep::walked`].
    Walk(Vec<u8>),
    /// Send each peer its keys (the peers' addresses as the walks found them); `keys`
    /// were placed.
    Send {
        per_peer: Vec<(PeerId, Vec<Multiaddr>, Vec<Key>)>,
        keys: usize,
    },
    /// Keys the sweep could not place: announce them one by one.
    Fallback(Vec<Key>),
    Done,
}

/// The region being explored.
struct Region {
    /// Index in `keys` of the region's first key (the first walk's target).
    first: usize,
    /// Set by the first walk: the region and the index past its last key.
    prefix: Option<Prefix>,
    end: usize,
    /// The walk running: where it goes; and the walks made.
    walking: Option<Point>,
    walks: u32,
    failed: bool,
    known: HashMap<PeerId, (Point, Vec<Multiaddr>)>,
    covered: Vec<Prefix>,
}

/// A sweep over a set of keys (see the module doc).
pub(super) struct Sweep {
    /// The keys, in key-space order.
    keys: Vec<(Point, Key)>,
    /// Keys before this one are placed (or given back).
    next: usize,
    region: Option<Region>,
    /// Nodes each key is sent to.
    k: usize,
    salt: u64,
    pub(super) started: Instant,
    /// Walks this sweep made.
    pub(super) walks: u64,
}

impl Sweep {
    pub(super) fn new(keys: Vec<Key>, k: usize, now: Instant) -> Sweep {
        let mut keys: Vec<(Point, Key)> = keys
            .into_iter()
            .map(|key| (point_of(key.record_key().as_ref()), key))
            .collect();
        keys.sort_by_key(|(point, _)| *point);
        Sweep {
            keys,
            next: 0,
            region: None,
            k: k.max(1),
            salt: (crate::tuning::random_fraction() * 1e9) as u64,
            started: now,
            walks: 0,
        }
    }

    /// Keys not placed yet.
    pub(super) fn remaining(&self) -> usize {
        self.keys.len() - self.next
    }

    /// The next step; call again after a `Send` or `Fallback`, and after [`Self::walked`]
    /// once a `Walk` is done.
    pub(super) fn next_step(&mut self) -> Step {
        let Some(region) = &mut self.region else {
            let Some((_, key)) = self.keys.get(self.next) else {
                return Step::Done;
            };
            let target = key.record_key().to_vec();
            self.region = Some(Region {
                first: self.next,
                prefix: None,
                end: self.next + 1,
                walking: Some(point_of(&target)),
                walks: 1,
                failed: false,
                known: HashMap::new(),
                covered: Vec::new(),
            });
            return Step::Walk(target);
        };
        let Some(prefix) = region.prefix.filter(|_| !region.failed) else {
            return self.give_back();
        };
        match uncovered_in(prefix, &region.covered) {
            Some(_) if region.walks >= MAX_WALKS_PER_REGION => self.give_back(),
            Some(part) => match target_in(part, self.salt) {
                Some(target) => {
                    region.walking = Some(point_of(&target));
                    region.walks += 1;
                    Step::Walk(target)
                }
                None => self.give_back(),
            },
            None => self.place(),
        }
    }

    /// The walk asked for ended with these peers (`None`: it failed).
    pub(super) fn walked(&mut self, peers: Option<Vec<PeerInfo>>) {
        self.walks += 1;
        let Some(region) = &mut self.region else {
            return;
        };
        let (Some(target), Some(peers)) = (region.walking.take(), peers) else {
            self.region_failed();
            return;
        };
        let mut found: Vec<(Point, PeerId)> = Vec::with_capacity(peers.len());
        for peer in peers {
            let point = point_of_peer(&peer.peer_id);
            found.push((point, peer.peer_id));
            region.known.insert(peer.peer_id, (point, peer.addrs));
        }
        // Fewer than k nodes answered: that is every node there is.
        let covered = if found.len() < self.k {
            Prefix::ALL
        } else {
            found.sort_by_key(|(point, _)| distance(&target, point));
            let kth = common_bits(&target, &found[self.k - 1].0);
            Prefix {
                point: target,
                bits: (kth + 1).min(256),
            }
        };
        region.covered.push(covered);
        if region.prefix.is_none() {
            // The first walk: the region is what its k closest nodes share with the key.
            let prefix = if covered == Prefix::ALL {
                Prefix::ALL
            } else {
                Prefix {
                    point: target,
                    bits: covered.bits - 1,
                }
            };
            region.prefix = Some(prefix);
            region.end = region.first
                + self.keys[region.first..]
                    .iter()
                    .take_while(|(point, _)| prefix.contains(point))
                    .count();
            if region.end == region.first + 1 {
                // One key: its walk found its k closest already.
                region.covered.push(prefix);
            }
        }
    }

    /// Works out each key's k closest among the region's nodes, and moves on.
    fn place(&mut self) -> Step {
        let Some(region) = self.region.take() else {
            return Step::Done;
        };
        let mut per_peer: HashMap<PeerId, Vec<Key>> = HashMap::new();
        let mut nodes: Vec<(&PeerId, &Point)> =
            region.known.iter().map(|(id, (p, _))| (id, p)).collect();
        for (point, key) in &self.keys[region.first..region.end] {
            nodes.sort_by_key(|(_, p)| distance(point, p));
            for (peer, _) in nodes.iter().take(self.k) {
                per_peer.entry(**peer).or_default().push(key.clone());
            }
        }
        self.next = region.end;
        let mut known = region.known;
        Step::Send {
            per_peer: per_peer
                .into_iter()
                .map(|(peer, keys)| {
                    let addrs = known.remove(&peer).map(|(_, a)| a).unwrap_or_default();
                    (peer, addrs, keys)
                })
                .collect(),
            keys: region.end - region.first,
        }
    }

    /// The region's keys go back to be announced one by one.
    fn give_back(&mut self) -> Step {
        let Some(region) = self.region.take() else {
            return Step::Done;
        };
        self.next = region.end;
        Step::Fallback(
            self.keys[region.first..region.end]
                .iter()
                .map(|(_, key)| key.clone())
                .collect(),
        )
    }

    /// A walk failed: `next_step` gives the region's keys back (the first walk's key
    /// alone when that walk failed).
    fn region_failed(&mut self) {
        if let Some(region) = &mut self.region {
            region.failed = true;
        }
    }

    /// The keys not placed yet (the sweep took too long): announce them one by one.
    pub(super) fn abandon(&mut self) -> Vec<Key> {
        let from = self.region.take().map_or(self.next, |r| r.first);
        self.next = self.keys.len();
        self.keys[from..]
            .iter()
            .map(|(_, key)| key.clone())
            .collect()
    }
}

fn distance(a: &Point, b: &Point) -> Point {
    let mut d = [0; 32];
    for (i, byte) in d.iter_mut().enumerate() {
        *byte = a[i] ^ b[i];
    }
    d
}

/// A batch waiting for its answer: where it went, its keys, and how many times it was sent.
pub(super) struct InFlight {
    peer: PeerId,
    addresses: Vec<Multiaddr>,
    pub(super) keys: Vec<Key>,
    tries: u8,
}

/// The batch that carries `keys`, with our `addresses`.
fn batch_of(addresses: &[Multiaddr], keys: &[Key]) -> Batch {
    Batch {
        addresses: addresses.to_vec(),
        keys: keys.iter().map(Key::record_key).collect(),
        receiving: None,
    }
}

/// Splits one peer's keys into the keys of batches under both request limits.
fn batches_of(addresses: &[Multiaddr], keys: Vec<Key>) -> Vec<Vec<Key>> {
    let empty = batch_of(addresses, &[]).encoded_len();
    let (mut batches, mut current, mut size) = (Vec::new(), Vec::new(), empty);
    for key in keys {
        let grows = 2 + key.record_key().as_ref().len();
        if current.len() == batch::MAX_KEYS || size + grows > batch::MAX_REQUEST_BYTES {
            batches.push(std::mem::take(&mut current));
            size = empty;
        }
        size += grows;
        current.push(key);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The swarm task's side of the sweep: starting one, running its walks, sending its
/// batches, answering other nodes' batches.
impl Task {
    /// Announces `keys`: one by one, or in a sweep when there are many (and the node has
    /// joined, so walks reach somebody). Keys come while a sweep runs wait for the next.
    pub(super) fn announce_many(&mut self, keys: Vec<Key>) {
        let (urgent, normal): (Vec<Key>, Vec<Key>) = keys
            .into_iter()
            .partition(|key| matches!(key, Key::InFlight(_) | Key::Coming(_)));
        for key in urgent {
            self.provide(key);
        }
        if self.sweep.is_some() {
            self.sweep_next.extend(normal);
            return;
        }
        if normal.len() < SWEEP_MIN_KEYS || self.unannounced {
            for key in normal {
                self.provide(key);
            }
            return;
        }
        let now = Instant::now();
        for key in &normal {
            self.announcing.remove(key);
            self.unannounced_keys.remove(key);
        }
        self.reannounce
            .announced_together(&normal, now, self.republish_interval);
        debug!(keys = normal.len(), "sweep started");
        self.stats.sweeps += 1;
        let k = self.replication_factor;
        self.sweep = Some(Sweep::new(normal, k, now));
        self.drive_sweep();
    }

    /// Runs the sweep's next steps until it waits for a walk or for batch answers.
    pub(super) fn drive_sweep(&mut self) {
        while self.sweep_walk.is_none() && self.batches.len() < MAX_BATCHES_IN_FLIGHT {
            let Some(sweep) = &mut self.sweep else {
                return;
            };
            if sweep.started.elapsed() > self.republish_interval / 2 {
                // Far too slow to keep records fresh: the rest one by one.
                let rest = sweep.abandon();
                debug!(
                    keys = rest.len(),
                    "sweep took too long; announcing the rest one by one"
                );
                self.provide_advertised(rest);
                continue;
            }
            match sweep.next_step() {
                Step::Walk(target) => {
                    let query = self.kad().get_closest_peers(target);
                    self.sweep_walk = Some(query);
                }
                Step::Send { per_peer, keys } => {
                    self.stats.announcements += keys as u64;
                    for (peer, addresses, keys) in per_peer {
                        self.send_batches(peer, addresses, keys);
                    }
                }
                Step::Fallback(keys) => self.provide_advertised(keys),
                Step::Done => {
                    let walks = sweep.walks;
                    debug!(walks, took = ?sweep.started.elapsed(), "sweep done");
                    self.sweep = None;
                    // Keys withdrawn while they waited are not announced.
                    let mut waiting = std::mem::take(&mut self.sweep_next);
                    waiting.retain(|key| self.advertised.contains(key));
                    if !waiting.is_empty() {
                        self.announce_many(waiting);
                    }
                    return;
                }
            }
        }
    }

    fn send_batches(&mut self, peer: PeerId, addresses: Vec<Multiaddr>, keys: Vec<Key>) {
        let ours: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let keys: Vec<Key> = keys
            .into_iter()
            .filter(|k| self.advertised.contains(k))
            .collect();
        for keys in batches_of(&ours, keys) {
            self.send_batch(InFlight {
                peer,
                addresses: addresses.clone(),
                keys,
                tries: 1,
            });
        }
    }

    fn send_batch(&mut self, in_flight: InFlight) {
        let ours: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let batch = batch_of(&ours, &in_flight.keys);
        let behaviour = self.swarm.behaviour_mut();
        // Its connections stay open until the answer (`MakeRoom` sees only Kademlia's use).
        behaviour.kad.asked(in_flight.peer);
        let request = behaviour.batch.send_request_with_addresses(
            &in_flight.peer,
            batch,
            in_flight.addresses.clone(),
        );
        self.stats.announcement_requests += 1;
        self.stats.batches_sent += 1;
        self.stats.batch_records_sent += in_flight.keys.len() as u64;
        self.batches.insert(request, in_flight);
    }

    /// Announces those of `keys` still advertised one by one.
    fn provide_advertised(&mut self, keys: Vec<Key>) {
        for key in keys {
            if self.advertised.contains(&key) {
                self.provide(key);
            }
        }
    }

    /// A sweep walk ended; `requests`: what it sent.
    pub(super) fn sweep_walked(
        &mut self,
        query: QueryId,
        peers: Option<Vec<PeerInfo>>,
        requests: u32,
    ) {
        if self.sweep_walk != Some(query) {
            return;
        }
        self.sweep_walk = None;
        self.stats.announcement_requests += u64::from(requests);
        self.stats.sweep_walks += 1;
        if let Some(sweep) = &mut self.sweep {
            sweep.walked(peers);
        }
        self.drive_sweep();
    }

    /// A batch we sent was answered (`Ok`: records the peer kept) or failed. A batch whose
    /// connection closed or that timed out is sent once more; one that failed again, or
    /// whose peer cannot be reached or does not speak the protocol (an older version), has
    /// its keys announced one by one (to all k nodes: a few records more than needed,
    /// simpler than a walk per key to one node).
    pub(super) fn batch_answered(
        &mut self,
        request: OutboundRequestId,
        answer: Result<u32, &OutboundFailure>,
    ) {
        let Some(in_flight) = self.batches.remove(&request) else {
            return;
        };
        self.swarm.behaviour_mut().kad.answered(in_flight.peer);
        match answer {
            Ok(stored) => self.stats.batch_records_acknowledged += u64::from(stored),
            Err(
                OutboundFailure::ConnectionClosed
                | OutboundFailure::Timeout
                | OutboundFailure::Io(_),
            ) if in_flight.tries < BATCH_TRIES => {
                let keys: Vec<Key> = in_flight
                    .keys
                    .into_iter()
                    .filter(|k| self.advertised.contains(k))
                    .collect();
                self.stats.batches_retried += 1;
                self.send_batch(InFlight {
                    keys,
                    tries: in_flight.tries + 1,
                    ..in_flight
                });
            }
            Err(_) => {
                self.stats.batches_failed += 1;
                self.provide_advertised(in_flight.keys);
            }
        }
        self.drive_sweep();
    }

    /// Stores the records of a batch from `peer` as Kademlia stores an `ADD_PROVIDER`;
    /// returns how many the store kept.
    pub(super) fn store_batch(&mut self, peer: PeerId, batch: Batch) -> u32 {
        let seen = self.peers.get(&peer).and_then(|p| p.ip);
        let addresses: Vec<Multiaddr> = batch
            .addresses
            .into_iter()
            .filter(|a| crate::addrs::ip_of(a) == seen)
            .collect();
        let expires = Some(Instant::now() + self.provider_ttl);
        let mut stored = 0;
        for key in batch.keys {
            let record = kad::ProviderRecord {
                key,
                provider: peer,
                expires,
                addresses: addresses.clone(),
            };
            if peer != self.local
                && kad::store::RecordStore::add_provider(self.kad().store_mut(), record).is_ok()
            {
                stored += 1;
            }
        }
        self.stats.requests_served += 1;
        self.stats.add_providers_stored += u64::from(stored);
        stored
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use spegel_oci::Digest;

    use super::*;

    /// A network of `n` nodes in which every walk is exact: the `k` closest to the target.
    struct Network {
        nodes: Vec<(Point, PeerId)>,
    }

    impl Network {
        fn new(n: usize) -> Network {
            let nodes = (0..n)
                .map(|_| {
                    let id = Keypair::generate_ed25519().public().to_peer_id();
                    (point_of_peer(&id), id)
                })
                .collect();
            Network { nodes }
        }

        fn closest(&self, target: &Point, k: usize) -> Vec<PeerId> {
            let mut nodes = self.nodes.clone();
            nodes.sort_by_key(|(p, _)| distance(target, p));
            nodes.into_iter().take(k).map(|(_, id)| id).collect()
        }

        fn walk(&self, target: &[u8], k: usize) -> Vec<PeerInfo> {
            self.closest(&point_of(target), k)
                .into_iter()
                .map(|peer_id| PeerInfo {
                    peer_id,
                    addrs: Vec::new(),
                })
                .collect()
        }
    }

    fn digest(i: u32) -> Key {
        Key::Digest(Digest::sha256_of(&i.to_be_bytes()))
    }

    /// Runs a sweep to the end; returns where each key went, the walks, and the keys given
    /// back. `fail`: walks that fail, by number.
    fn run(
        network: &Network,
        keys: Vec<Key>,
        k: usize,
        fail: &[u64],
    ) -> (HashMap<Key, Vec<PeerId>>, u64, Vec<Key>) {
        let mut sweep = Sweep::new(keys, k, Instant::now());
        let (mut placed, mut given_back) = (HashMap::<Key, Vec<PeerId>>::new(), Vec::new());
        loop {
            match sweep.next_step() {
                Step::Walk(target) => {
                    let failed = fail.contains(&(sweep.walks + 1));
                    sweep.walked((!failed).then(|| network.walk(&target, k)));
                }
                Step::Send { per_peer, .. } => {
                    for (peer, _, keys) in per_peer {
                        for key in keys {
                            placed.entry(key).or_default().push(peer);
                        }
                    }
                }
                Step::Fallback(keys) => given_back.extend(keys),
                Step::Done => return (placed, sweep.walks, given_back),
            }
        }
    }

    fn sorted(mut peers: Vec<PeerId>) -> Vec<PeerId> {
        peers.sort();
        peers
    }

    #[test]
    fn every_key_reaches_exactly_its_k_closest_nodes_with_few_walks() {
        let network = Network::new(1000);
        let keys: Vec<Key> = (0..2000).map(digest).collect();
        let (placed, walks, given_back) = run(&network, keys.clone(), 20, &[]);
        assert!(given_back.is_empty());
        assert_eq!(placed.len(), keys.len());
        for key in &keys {
            let want = network.closest(&point_of(key.record_key().as_ref()), 20);
            assert_eq!(sorted(placed[key].clone()), sorted(want), "{key}");
        }
        // One walk per key would be 2,000; a region of ~20 to 40 nodes takes 2 or 3 (84
        // walks in one run).
        assert!(walks < 150, "{walks} walks");
    }

    #[test]
    fn a_small_network_or_a_lone_key_costs_one_walk() {
        let small = Network::new(12);
        let keys: Vec<Key> = (0..100).map(digest).collect();
        let (placed, walks, _) = run(&small, keys, 20, &[]);
        assert_eq!(walks, 1);
        assert!(placed.values().all(|peers| peers.len() == 12));

        let network = Network::new(1000);
        let (placed, walks, _) = run(&network, vec![digest(7)], 20, &[]);
        assert_eq!((walks, placed[&digest(7)].len()), (1, 20));
    }

    #[test]
    fn keys_of_a_region_whose_walk_failed_are_given_back_and_the_rest_placed() {
        let network = Network::new(300);
        let keys: Vec<Key> = (0..500).map(digest).collect();
        let (placed, _, given_back) = run(&network, keys.clone(), 20, &[1, 4]);
        assert!(!given_back.is_empty());
        assert_eq!(placed.len() + given_back.len(), keys.len());
        for key in placed.keys() {
            let want = network.closest(&point_of(key.record_key().as_ref()), 20);
            assert_eq!(sorted(placed[key].clone()), sorted(want));
        }
    }

    #[test]
    fn a_walk_target_falls_in_the_prefix_asked_for() {
        let prefix = Prefix {
            point: [0b1010_1100; 32],
            bits: 11,
        };
        let target = target_in(prefix, 3).unwrap();
        assert!(prefix.contains(&point_of(&target)));
        let too_long = Prefix {
            bits: MAX_TARGET_BITS + 1,
            ..prefix
        };
        assert_eq!(target_in(too_long, 3), None);
    }

    #[test]
    fn uncovered_parts_are_found_inside_a_region() {
        let region = Prefix {
            point: [0; 32],
            bits: 2,
        };
        let [left, right] = region.halves();
        assert_eq!(uncovered_in(region, &[]), Some(region));
        assert_eq!(uncovered_in(region, &[left]), Some(right));
        assert_eq!(uncovered_in(region, &[left, right]), None);
        assert_eq!(uncovered_in(region, &[Prefix::ALL]), None);
        let [right_left, right_right] = right.halves();
        assert_eq!(uncovered_in(region, &[left, right_left]), Some(right_right));
    }

    #[test]
    fn batches_stay_under_both_limits() {
        let keys: Vec<Key> = (0..1200).map(digest).collect();
        let batches: Vec<Batch> = batches_of(&[], keys)
            .iter()
            .map(|keys| batch_of(&[], keys))
            .collect();
        assert_eq!(
            batches.iter().map(|b| b.keys.len()).collect::<Vec<_>>(),
            vec![batch::MAX_KEYS, batch::MAX_KEYS, 1200 - 2 * batch::MAX_KEYS]
        );
        assert!(
            batches
                .iter()
                .all(|b| b.encoded_len() <= batch::MAX_REQUEST_BYTES)
        );
    }
}
