//! Provider lookups: a Kademlia `GET_PROVIDERS` query per [`super::Command::Resolve`], whose
//! providers are handed to the caller once their registry address is known (identify), and
//! which ends early at the first answer naming providers when [`stops_early`] says so.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::QueryId;
use libp2p::kad::store::RecordStore;
use libp2p::swarm::dial_opts::DialOpts;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::Task;
use crate::{Key, Provider};

/// How long a lookup may wait for a provider's address before giving up on it.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(10);
/// Lookups in flight at once; past this a lookup finds nothing (the request answers 404 and
/// containerd goes to the upstream) instead of queueing DHT work without bound.
const MAX_LOOKUPS: usize = 256;

/// A provider lookup in flight.
pub(super) struct Lookup {
    providers: mpsc::Sender<Provider>,
    limit: usize,
    sent: HashSet<PeerId>,
    /// Providers found whose registry address we are still learning (dial + identify).
    waiting: HashSet<PeerId>,
    finished: bool,
    started: Instant,
    /// End the DHT query at the first answer naming providers (see [`stops_early`]).
    stop_at_first_answer: bool,
    /// Cancelled when the lookup is dropped, so its watcher in `abandoned` lets go.
    _ended: DropGuard,
}

impl Task {
    /// Starts a lookup of `key` for up to `limit` providers, sent to `providers`.
    pub(super) fn start_lookup(
        &mut self,
        key: Key,
        limit: usize,
        providers: mpsc::Sender<Provider>,
    ) {
        if self.lookups.len() >= MAX_LOOKUPS {
            // Dropping `providers` answers "nobody has it" at once.
            debug!(%key, "too many lookups in flight; not looking up");
            return;
        }
        let local = self.stored_providers(&key) > 0;
        let stop_at_first_answer = stops_early(self.stop_at_first_provider_answer, &key);
        let query = self.kad().get_providers(key.record_key());
        self.lookup_started_local.insert(query, local);
        // Watches the caller without keeping its channel open once the lookup ends.
        let (caller, ended) = (providers.clone(), CancellationToken::new());
        let ended_guard = ended.clone().drop_guard();
        self.abandoned.push(Box::pin(async move {
            tokio::select! {
                () = caller.closed() => {}
                () = ended.cancelled() => {}
            }
            query
        }));
        self.lookups.insert(
            query,
            Lookup {
                providers,
                limit,
                sent: HashSet::new(),
                waiting: HashSet::new(),
                finished: false,
                started: Instant::now(),
                stop_at_first_answer,
                _ended: ended_guard,
            },
        );
    }

    /// An answer of lookup `query`'s DHT query named `providers`; `last`: the query is over.
    pub(super) fn found_providers(
        &mut self,
        query: QueryId,
        providers: HashSet<PeerId>,
        last: bool,
    ) {
        let named_some = providers.iter().any(|p| *p != self.local);
        for peer in providers {
            self.offer(query, peer);
        }
        // Kademlia reports every answer, also those naming no provider.
        let stop = self
            .lookups
            .get(&query)
            .is_some_and(|l| l.stop_at_first_answer);
        if stop
            && named_some
            && let Some(mut q) = self.kad().query_mut(&query)
        {
            q.finish();
        }
        if last {
            self.finish_lookup(query);
        }
    }

    /// `peer`'s registry address is known now: lookups waiting for it get it.
    pub(super) fn registry_known(&mut self, peer: PeerId) {
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

    pub(super) fn finish_lookup(&mut self, query: QueryId) {
        if let Some(lookup) = self.lookups.get_mut(&query) {
            lookup.finished = true;
            if lookup.waiting.is_empty() {
                self.lookups.remove(&query);
            }
        }
    }

    pub(super) fn forget_waiting(&mut self, peer: PeerId) {
        for lookup in self.lookups.values_mut() {
            lookup.waiting.remove(&peer);
        }
        self.lookups
            .retain(|_, l| !(l.finished && l.waiting.is_empty()));
    }

    /// Drops lookups whose callers are gone or that waited too long, and finishes their
    /// DHT queries.
    pub(super) fn expire_lookups(&mut self) {
        let over: Vec<QueryId> = self
            .lookups
            .iter()
            .filter(|(_, l)| {
                let done = l.providers.is_closed() || (l.finished && l.waiting.is_empty());
                done || l.started.elapsed() >= RESOLVE_DEADLINE
            })
            .map(|(id, _)| *id)
            .collect();
        for query in over {
            self.end_lookup(query);
        }
    }

    /// Forgets lookup `query` and stops its DHT query (its caller is gone or it is over).
    pub(super) fn end_lookup(&mut self, query: QueryId) {
        if self.lookups.remove(&query).is_some()
            && let Some(mut q) = self.kad().query_mut(&query)
        {
            q.finish();
        }
    }

    /// How many unexpired provider records of other peers for `key` our store holds.
    pub(super) fn stored_providers(&mut self, key: &Key) -> usize {
        let (now, local) = (Instant::now(), self.local);
        self.kad()
            .store_mut()
            .providers(&key.record_key())
            .iter()
            .filter(|p| p.provider != local && !p.is_expired(now))
            .count()
    }
}

/// Whether a lookup of `key` ends at the first answer naming providers, when that is
/// `enabled` ([`crate::DhtTuning::stop_at_first_provider_answer`]). Any holder of a digest or
/// a tag serves, so the first answer is enough. The cold-pull single flight elects an owner
/// among *all* claimants of an `inflight:` key and needs to know whether anyone at all
/// announced `coming:`; one answer may name only some of them (a record holder that missed an
/// ADD_PROVIDER), so those lookups walk to the closest nodes.
fn stops_early(enabled: bool, key: &Key) -> bool {
    enabled && matches!(key, Key::Digest(_) | Key::Tag(_))
}

#[cfg(test)]
mod tests {
    use spegel_oci::Digest;

    use super::*;

    #[test]
    fn only_digest_and_tag_lookups_stop_at_the_first_answer() {
        let digest = Digest::sha256_of(b"layer");
        assert!(stops_early(true, &Key::Digest(digest.clone())));
        assert!(stops_early(
            true,
            &Key::tag("docker.io", "library/nginx", "1.27")
        ));
        assert!(!stops_early(true, &Key::InFlight(digest.clone())));
        assert!(!stops_early(true, &Key::Coming(digest.clone())));
        assert!(!stops_early(false, &Key::Digest(digest)));
    }
}
