//! Requests → answers, for both ports. The only place answers become HTTP.
//!
//! | port | path | answer |
//! |---|---|---|
//! | HTTPS (mTLS) | `/bootstrap-nodes` | `["10.0.0.1", …]`: Ready nodes' first InternalIP |
//! | HTTPS (mTLS) | `/v1/bootstrap-peers` | `[{"Addrs": ["/ip4/10.0.0.1/tcp/5001"]}, …]` |
//! | both | `/healthz` | 200 while the process runs |
//! | both | `/readyz` | 200 once the first Node LIST completed, else 503 |
//! | plain | `/metrics` | OpenMetrics text |
//!
//! Before the first LIST completes the bootstrap paths answer 503, never an empty list: an
//! empty list would tell a node it is alone.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use spegel_bootstrap::{BootstrapPeer, ZONE_HEADER};
use tracing::debug;

use crate::asker::Asker;
use crate::config::PeerPolicy;
use crate::metrics::{Endpoint, Metrics};
use crate::nodes::{ReadyNode, choose};
use crate::watch::NodeWatch;

/// The body type of every answer.
pub type Body = Full<Bytes>;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What both servers answer from.
#[derive(Debug, Clone)]
pub struct App {
    nodes: NodeWatch,
    metrics: Arc<Metrics>,
    peers: PeerPolicy,
}

impl App {
    pub fn new(nodes: NodeWatch, metrics: Arc<Metrics>, peers: PeerPolicy) -> App {
        App {
            nodes,
            metrics,
            peers,
        }
    }

    /// The metrics this app records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// An answer on the HTTPS port, to a client whose certificate has been verified.
    pub fn bootstrap(&self, method: &Method, path: &str, asker: &Asker) -> Response<Body> {
        let endpoint = Endpoint::of(path);
        let response = match (allowed(method), endpoint) {
            (false, _) => method_not_allowed(),
            (true, Endpoint::BootstrapNodes | Endpoint::BootstrapPeers) => {
                self.peers_answer(endpoint, asker)
            }
            (true, Endpoint::Healthz) => text(StatusCode::OK, "ok\n"),
            (true, Endpoint::Readyz) => self.readyz(),
            (true, Endpoint::Metrics | Endpoint::Other) => {
                text(StatusCode::NOT_FOUND, "not found\n")
            }
        };
        self.metrics.request(endpoint, response.status());
        response
    }

    /// An answer on the plain operations port.
    pub fn ops(&self, method: &Method, path: &str) -> Response<Body> {
        let endpoint = Endpoint::of(path);
        let response = match (allowed(method), endpoint) {
            (false, _) => method_not_allowed(),
            (true, Endpoint::Metrics) => {
                respond(StatusCode::OK, OPENMETRICS, self.metrics.encode().into())
            }
            (true, Endpoint::Healthz) => text(StatusCode::OK, "ok\n"),
            (true, Endpoint::Readyz) => self.readyz(),
            (true, _) => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        self.metrics.request(endpoint, response.status());
        response
    }

    fn readyz(&self) -> Response<Body> {
        if self.nodes.is_synced() {
            text(StatusCode::OK, "ok\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "node list not synced yet\n",
            )
        }
    }

    fn peers_answer(&self, endpoint: Endpoint, asker: &Asker) -> Response<Body> {
        if !self.nodes.is_synced() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "node list not synced yet; retry\n",
            );
        }
        let chosen = choose(
            self.nodes.ready_nodes(),
            asker.matcher(),
            self.peers.max_peers,
        );
        let zone = self.nodes.zone_of(asker.matcher());
        debug!(asker = %asker.addr, peers = chosen.len(), zone = ?zone, path = endpoint.path(), "answered bootstrap peers");
        let mut response = if endpoint == Endpoint::BootstrapNodes {
            json(&ip_strings(&chosen))
        } else {
            json(&peer_records(&chosen, self.peers.router_port))
        };
        // The asker's zone, so a node needs no flag for it: a header, because both body
        // shapes are fixed by Spegel's clients. The node checks the value.
        if let Some(value) = zone.and_then(|z| HeaderValue::from_str(&z).ok()) {
            response.headers_mut().insert(ZONE_HEADER, value);
        }
        response
    }
}

/// The Gardener PoC shape: one IP string per node.
fn ip_strings(nodes: &[ReadyNode]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(ReadyNode::primary_addr)
        .map(|ip| ip.to_string())
        .collect()
}

/// Upstream Spegel's shape: one object per node with every InternalIP as a multiaddr. The
/// bootstrapper does not know peer IDs, so `ID` is left out.
fn peer_records(nodes: &[ReadyNode], router_port: u16) -> Vec<BootstrapPeer> {
    nodes
        .iter()
        .map(|node| BootstrapPeer {
            id: None,
            addrs: node
                .addrs
                .iter()
                .map(|ip| spegel_bootstrap::multiaddr(*ip, router_port))
                .collect(),
        })
        .collect()
}

fn allowed(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn method_not_allowed() -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn json(value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(StatusCode::OK, JSON, body.into()),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, TEXT, Bytes::from_static(body.as_bytes()))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addrs: &[&str]) -> ReadyNode {
        ReadyNode {
            name: name.to_owned(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn both_shapes_render_every_chosen_node() {
        let nodes = [
            node("a", &["10.0.0.1", "fd00::1"]),
            node("b", &["10.0.0.2"]),
        ];
        assert_eq!(
            serde_json::to_string(&ip_strings(&nodes)).unwrap(),
            r#"["10.0.0.1","10.0.0.2"]"#
        );
        assert_eq!(
            serde_json::to_string(&peer_records(&nodes, 5001)).unwrap(),
            r#"[{"Addrs":["/ip4/10.0.0.1/tcp/5001","/ip6/fd00::1/tcp/5001"]},{"Addrs":["/ip4/10.0.0.2/tcp/5001"]}]"#
        );
    }
}
