//! [`Peers`]: the providers of one request, tried least-used first, with hedging.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Response;
use hyper::body::Incoming;
use spegel_routing::Provider;
use tokio::sync::mpsc;
use tracing::debug;

use super::{Fetch, Mirror};

/// The providers of one request, in the order they should be tried.
pub(super) struct Peers {
    found: mpsc::Receiver<Provider>,
    queue: Vec<Provider>,
    tried: usize,
    max: usize,
}

impl Peers {
    /// Resolves providers; `None` when none arrives within the resolve timeout.
    pub(super) async fn resolve(mirror: &Mirror, fetch: &Fetch) -> Option<Peers> {
        let max = mirror.config.max_peers.max(1);
        let mut found = mirror.router.resolve(&fetch.key, max).await.ok()?;
        let started = std::time::Instant::now();
        let first = tokio::time::timeout(mirror.config.resolve_timeout, found.recv())
            .await
            .ok()
            .flatten()?;
        mirror.metrics.observe_resolve("libp2p", started.elapsed());
        let mut queue = vec![first];
        while let Ok(more) = found.try_recv() {
            queue.push(more);
        }
        let mut peers = Peers {
            found,
            queue,
            tried: 0,
            max,
        };
        peers.order(mirror, fetch);
        Some(peers)
    }

    /// Least used first; peers that sent bad bytes for this digest are dropped.
    fn order(&mut self, mirror: &Mirror, fetch: &Fetch) {
        self.queue
            .retain(|p| !mirror.is_untrusted(fetch.digest.as_ref(), &p.peer));
        self.queue
            .sort_by_key(|p| std::cmp::Reverse(mirror.usage(&p.peer)));
    }

    /// The next peer to try, waiting briefly for more providers when the queue is empty.
    async fn next(&mut self, mirror: &Mirror, fetch: &Fetch) -> Option<Provider> {
        if self.tried >= self.max {
            return None;
        }
        if self.queue.is_empty() {
            let more = tokio::time::timeout(mirror.config.resolve_timeout, self.found.recv()).await;
            self.queue.extend(more.ok().flatten());
            while let Ok(more) = self.found.try_recv() {
                self.queue.push(more);
            }
            self.order(mirror, fetch);
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
        fetch: &Fetch,
        range: Option<&str>,
    ) -> Option<(Provider, Response<Incoming>)> {
        let mut asking = FuturesUnordered::new();
        let ask = |peer: Provider| async move {
            let result = mirror.request(&peer, fetch, range).await;
            (peer, result)
        };
        loop {
            if asking.is_empty() {
                let peer = self.next(mirror, fetch).await?;
                asking.push(ask(peer));
            }
            tokio::select! {
                Some((peer, result)) = asking.next() => match result {
                    Ok(response) => return Some((peer, response)),
                    Err(e) => debug!(peer = %peer.peer, registry = %peer.registry, error = %e, "peer could not serve"),
                },
                () = tokio::time::sleep(mirror.config.hedge_after), if self.tried < self.max => {
                    if let Some(peer) = self.next(mirror, fetch).await {
                        debug!(peer = %peer.peer, "first peer is slow; asking another");
                        asking.push(ask(peer));
                    }
                }
            }
        }
    }
}
