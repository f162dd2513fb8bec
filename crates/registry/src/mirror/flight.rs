//! The cluster-wide single flight for cold misses, with no coordinator.
//!
//! When several nodes miss the same blob at the same moment, each one's containerd has
//! already opened its ingest (containerd creates it before it asks any host), so each node
//! advertises `inflight:<digest>` within milliseconds: that advertisement is its claim. After
//! a claim window every node knows the same claimants, and ranks them the same way:
//! rendezvous hashing of (digest, peer ID). The first in that order is the owner: its node
//! answers its containerd 404, so only that containerd goes upstream. Every other node holds
//! its containerd's request (no headers sent yet) and asks the nodes ranked above it, in
//! order; a node asked for a blob it is deciding about holds that request until it has
//! decided, and then serves its download as it grows. If nobody above answers within the
//! hold, the node takes over (it becomes the owner for its own containerd).
//!
//! A node only ever follows a node ranked above it (or one that had already decided before
//! it asked), so following can never form a cycle. A node that arrives after the others
//! decided finds them in the probe and follows them instead of fetching again.
//!
//! [`Flights`] is this node's side of it: which blobs it is deciding about, owns or follows,
//! and which streams from peers were cut (so containerd's `Range` retry gets a 404 and goes
//! upstream from where it stopped).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use spegel_oci::Digest;
use spegel_routing::PeerId;
use tokio::sync::watch;

/// Blobs remembered at once; each entry is small, this only bounds a flood of misses.
const MAX_FLIGHTS: usize = 10_000;

/// How long a decision or a cut is remembered.
const REMEMBER: Duration = Duration::from_secs(120);

/// This node's part in the download of one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its containerd asked for the blob and it does not know yet where the bytes come
    /// from (looking for a complete copy, or in the claim window).
    Deciding,
    /// Its containerd fetches the blob from the upstream.
    Owner,
    /// It streams the blob from a peer (into its containerd, which writes its own ingest).
    Following,
    /// A stream from peers broke with nobody to resume from: containerd retries with `Range`
    /// and gets a 404, so it continues from the upstream.
    Cut,
}

struct Entry {
    decision: Decision,
    /// The peer it follows ([`Decision::Following`]).
    source: Option<PeerId>,
    at: Instant,
}

/// This node's decisions, by digest. Shared by the mirror (which decides) and the handler
/// (which holds peers' requests while a decision is pending).
pub struct Flights {
    entries: Mutex<HashMap<Digest, Entry>>,
    /// Bumped on every decision, so held requests wake up.
    changed: watch::Sender<u64>,
}

impl Default for Flights {
    fn default() -> Flights {
        Flights {
            entries: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Flights {
    /// Records this node's decision about `digest`.
    pub fn decide(&self, digest: &Digest, decision: Decision) {
        self.record(digest, decision, None);
    }

    /// Records that this node streams `digest` from `source`'s download.
    pub fn follow(&self, digest: &Digest, source: PeerId) {
        self.record(digest, Decision::Following, Some(source));
    }

    /// Whether this node streams `digest` from `peer` (so `peer` must not follow it back).
    pub fn follows(&self, digest: &Digest, peer: &PeerId) -> bool {
        self.entries.lock().is_ok_and(|entries| {
            entries
                .get(digest)
                .is_some_and(|e| e.source.as_ref() == Some(peer) && e.at.elapsed() < REMEMBER)
        })
    }

    fn record(&self, digest: &Digest, decision: Decision, source: Option<PeerId>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_FLIGHTS {
                entries.retain(|_, e| e.at.elapsed() < REMEMBER);
                if entries.len() >= MAX_FLIGHTS {
                    entries.clear();
                }
            }
            entries.insert(
                digest.clone(),
                Entry {
                    decision,
                    source,
                    at: Instant::now(),
                },
            );
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This node's current decision about `digest`, if it made one recently.
    pub fn decision(&self, digest: &Digest) -> Option<Decision> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(digest)?;
        (entry.at.elapsed() < REMEMBER).then_some(entry.decision)
    }

    /// Waits up to `timeout` until this node has decided about `digest` (its containerd
    /// opens a download a moment before it asks this node, so a peer may ask first); returns
    /// the decision then: `None` or `Deciding` if it did not decide in time.
    pub async fn decided(&self, digest: &Digest, timeout: Duration) -> Option<Decision> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let decision = self.decision(digest);
            if decision.is_some_and(|d| d != Decision::Deciding) {
                return decision;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return decision;
            }
        }
    }
}

/// The rendezvous rank of `peer` for `digest`: every node computes the same order.
pub fn rank(digest: &Digest, peer: &PeerId) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(digest.to_string().as_bytes());
    hasher.update(peer.to_bytes());
    hasher.finalize().into()
}

/// The claimants and this node (`local`), each once, in rendezvous order for `digest`.
pub fn ranked(
    digest: &Digest,
    claimants: impl Iterator<Item = PeerId>,
    local: PeerId,
) -> Vec<PeerId> {
    let mut order: Vec<PeerId> = claimants.chain(std::iter::once(local)).collect();
    order.sort_unstable();
    order.dedup();
    self::order(digest, &mut order);
    order
}

/// `peers` in rendezvous order for `digest`, first = the owner.
pub fn order(digest: &Digest, peers: &mut [PeerId]) {
    peers.sort_by_cached_key(|p| std::cmp::Reverse(rank(digest, p)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_ranks_the_claimants_the_same_way() {
        let digest = Digest::sha256_of(b"layer");
        let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
        let mut a = peers.clone();
        let mut b: Vec<PeerId> = peers.iter().rev().cloned().collect();
        order(&digest, &mut a);
        order(&digest, &mut b);
        assert_eq!(a, b);
        // Another digest, another owner (with overwhelming probability for 8 peers).
        let owners: std::collections::HashSet<PeerId> = (0..16u8)
            .map(|i| {
                let mut p = peers.clone();
                order(&Digest::sha256_of(&[i]), &mut p);
                p[0]
            })
            .collect();
        assert!(owners.len() > 1);
    }

    #[test]
    fn a_subset_of_claimants_keeps_their_relative_order() {
        let digest = Digest::sha256_of(b"config");
        let mut all: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        order(&digest, &mut all);
        let mut some = vec![all[4], all[1], all[3]];
        order(&digest, &mut some);
        assert_eq!(some, vec![all[1], all[3], all[4]]);
    }

    #[tokio::test]
    async fn a_held_request_wakes_when_the_node_decides() {
        let flights = std::sync::Arc::new(Flights::default());
        let digest = Digest::sha256_of(b"x");
        assert_eq!(flights.decided(&digest, Duration::ZERO).await, None);
        let undecided = {
            let (flights, digest) = (flights.clone(), digest.clone());
            tokio::spawn(async move { flights.decided(&digest, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        flights.decide(&digest, Decision::Following);
        assert_eq!(undecided.await.unwrap(), Some(Decision::Following));
        flights.decide(&digest, Decision::Deciding);
        let waiter = {
            let (flights, digest) = (flights.clone(), digest.clone());
            tokio::spawn(async move { flights.decided(&digest, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        flights.decide(&digest, Decision::Owner);
        assert_eq!(waiter.await.unwrap(), Some(Decision::Owner));
        flights.decide(&digest, Decision::Deciding);
        assert_eq!(
            flights.decided(&digest, Duration::from_millis(10)).await,
            Some(Decision::Deciding)
        );
    }
}
