//! [`Resolver`]: the mirror's view of the DHT, a seam so the mirror's logic (least-used
//! order, hedging, resume, distrust, holds, single flight) is tested against scripted peers.

use std::future::Future;
use std::pin::Pin;

use spegel_routing::{Key, PeerId, Provider, Router};
use tokio::sync::mpsc;

/// A boxed future, as trait objects need them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who holds what: the part of the router the mirror needs.
pub trait Resolver: Send + Sync + 'static {
    /// Looks up peers holding `key`: they arrive on the channel as found (never this node),
    /// at most `limit`; the lookup ends when the receiver is dropped. `None` when the
    /// router is gone.
    fn resolve(&self, key: &Key, limit: usize) -> BoxFuture<'_, Option<mpsc::Receiver<Provider>>>;

    /// This node's peer ID.
    fn local_peer_id(&self) -> PeerId;

    /// How many peers the routing table holds.
    fn peer_count(&self) -> usize;

    /// This node's view of the DHT, for `/_spegel/status`.
    fn status(&self) -> BoxFuture<'_, serde_json::Value>;
}

impl Resolver for Router {
    fn resolve(&self, key: &Key, limit: usize) -> BoxFuture<'_, Option<mpsc::Receiver<Provider>>> {
        let key = key.clone();
        Box::pin(async move { Router::resolve(self, &key, limit).await.ok() })
    }

    fn local_peer_id(&self) -> PeerId {
        Router::local_peer_id(self)
    }

    fn peer_count(&self) -> usize {
        Router::peer_count(self)
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let advertised = self.advertised().await.unwrap_or_default();
            let stats = self.stats().await.unwrap_or_default();
            let count = |f: fn(&Key) -> bool| advertised.iter().filter(|k| f(k)).count();
            serde_json::json!({
                "peer_id": self.local_peer_id().to_string(),
                "router_addr": self.listen_addr().to_string(),
                "routing_table_peers": self.peer_count(),
                "advertised_digests": count(|k| matches!(k, Key::Digest(_))),
                "advertised_in_flight": count(|k| matches!(k, Key::InFlight(_))),
                "advertised_coming": count(|k| matches!(k, Key::Coming(_))),
                "advertised_tags": count(|k| matches!(k, Key::Tag(_))),
                "dht_connections": stats.connections,
                "dht_connections_peak": stats.connections_peak,
                "dht_connections_denied": stats.connections_denied,
                "dht_connections_closed_for_room": stats.connections_closed_for_room,
            })
        })
    }
}
