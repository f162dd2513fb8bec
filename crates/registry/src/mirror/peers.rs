//! [`Peers`]: the providers of one request, tried same zone first and least-used first
//! within a zone, with hedging.

use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Response;
use hyper::body::Incoming;
use spegel_routing::{Key, Provider};
use tokio::sync::mpsc;
use tracing::debug;

use super::zones::Relation;
use super::{Ask, Mirror};

/// Providers a node with a zone looks up for one request, to find some in its zone.
const ZONE_CANDIDATES: usize = 20;

/// The providers of one request, in the order they should be tried.
pub(super) struct Peers {
    /// More providers as the lookup finds them (`None` for a fixed list).
    found: Option<mpsc::Receiver<Provider>>,
    queue: Vec<Provider>,
    tried: usize,
    max: usize,
}

impl Peers {
    /// Resolves providers of `key`; `None` when none arrives within the resolve timeout.
    pub(super) async fn resolve(mirror: &Mirror, key: &Key, ask: &Ask<'_>) -> Option<Peers> {
        let max = mirror.config.max_peers.max(1);
        // With a zone, look further than the peers it will try: the first few found may
        // all be in other zones.
        let limit = match mirror.zones.local().get() {
            Some(_) => max.max(ZONE_CANDIDATES),
            None => max,
        };
        let started = Instant::now();
        // One deadline for handing the lookup to the router (its queue may be full) and
        // for the first provider to arrive.
        let timeout = mirror.config.resolve_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let first = match mirror.start_lookup(key, limit, deadline).await {
            Some(mut found) => match tokio::time::timeout_at(deadline, found.recv()).await {
                Ok(Some(first)) => Some((first, found)),
                // The log tells a lookup that ended empty from one that was too slow.
                Ok(None) => {
                    debug!(%key, took = ?started.elapsed(), "lookup ended with no provider");
                    None
                }
                Err(_) => {
                    debug!(%key, ?timeout, "no provider within the resolve timeout");
                    None
                }
            },
            None => None,
        };
        // Misses are timed too: a lookup that finds nobody costs containerd this long.
        mirror.metrics.observe_resolve("libp2p", started.elapsed());
        let (first, mut found) = first?;
        let mut queue = vec![first];
        while let Ok(more) = found.try_recv() {
            queue.push(more);
        }
        let mut peers = Peers {
            found: Some(found),
            queue,
            tried: 0,
            max,
        };
        peers.find_zones(mirror).await;
        peers.order(mirror, ask);
        Some(peers)
    }

    /// With a zone of its own, this node learns the zones of the providers found so far
    /// (those it has not heard from yet are asked), and when none is in its zone it waits a
    /// little longer for one: a lookup reports providers as they answer, and the first to
    /// answer may well be in another zone.
    async fn find_zones(&mut self, mirror: &Mirror) {
        if mirror.zones.local().get().is_none() {
            return;
        }
        mirror.ask_zones(&self.queue).await;
        let same = |q: &[Provider]| {
            q.iter()
                .any(|p| mirror.zones.relation(&p.peer) == Relation::Same)
        };
        if same(&self.queue) {
            return;
        }
        let Some(found) = self.found.as_mut() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + mirror.config.resolve_timeout;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, found.recv()).await {
            mirror.ask_zones(std::slice::from_ref(&more)).await;
            let near = mirror.zones.relation(&more.peer) == Relation::Same;
            self.queue.push(more);
            if near {
                break;
            }
        }
    }

    /// A fixed list of providers to try in the given order (after zone and least-used
    /// ordering; their zones are known from the probe that found them).
    pub(super) fn fixed(mirror: &Mirror, providers: Vec<Provider>, ask: &Ask<'_>) -> Peers {
        let mut peers = Peers {
            found: None,
            max: providers.len(),
            queue: providers,
            tried: 0,
        };
        peers.order(mirror, ask);
        peers
    }

    /// This node's zone first, then peers of unknown zone, then other zones; least used
    /// first within each (the queue is popped from the end). Peers that sent bad bytes for
    /// this digest, or failed this transfer, are dropped. Hedging takes the next in this
    /// order, so it stays inside the zone while a provider there is left.
    fn order(&mut self, mirror: &Mirror, ask: &Ask<'_>) {
        self.queue.retain(|p| {
            !ask.excluded.contains(&p.peer)
                && !mirror.is_untrusted(ask.fetch.digest.as_ref(), &p.peer)
        });
        self.queue.dedup_by(|a, b| a.peer == b.peer);
        self.queue.sort_by_key(|p| {
            std::cmp::Reverse((mirror.zones.relation(&p.peer), mirror.usage(&p.peer)))
        });
    }

    /// The next peer to try, waiting briefly for more providers when the queue is empty.
    async fn next(&mut self, mirror: &Mirror, ask: &Ask<'_>) -> Option<Provider> {
        if self.tried >= self.max {
            return None;
        }
        if self.queue.is_empty() {
            let found = self.found.as_mut()?;
            let more = tokio::time::timeout(mirror.config.resolve_timeout, found.recv()).await;
            self.queue.extend(more.ok().flatten());
            while let Ok(more) = found.try_recv() {
                self.queue.push(more);
            }
            mirror.ask_zones(&self.queue).await;
            self.order(mirror, ask);
        }
        let peer = self.queue.pop()?;
        self.tried += 1;
        Some(peer)
    }

    /// Asks peers in turn, hedging to the next when one is slow, and returns the first
    /// good answer.
    pub(super) async fn first_answer(
        &mut self,
        mirror: &Mirror,
        ask: &Ask<'_>,
    ) -> Option<(Provider, Response<Incoming>)> {
        let mut asking = FuturesUnordered::new();
        let request = |peer: Provider| async move {
            let result = mirror.request(&peer, ask).await;
            (peer, result)
        };
        loop {
            if asking.is_empty() {
                let peer = self.next(mirror, ask).await?;
                asking.push(request(peer));
            }
            tokio::select! {
                Some((peer, result)) = asking.next() => match result {
                    Ok(response) => return Some((peer, response)),
                    Err(e) => debug!(peer = %peer.peer, registry = %peer.registry, error = %e, "peer could not serve"),
                },
                () = tokio::time::sleep(mirror.config.hedge_after), if self.tried < self.max => {
                    if let Some(peer) = self.next(mirror, ask).await {
                        debug!(peer = %peer.peer, "first peer is slow; asking another");
                        asking.push(request(peer));
                    }
                }
            }
        }
    }
}
