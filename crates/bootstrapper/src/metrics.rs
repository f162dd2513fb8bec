//! The bootstrapper's Prometheus metrics: owned, injected, served on the plain port.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which endpoint a request was for; the label value is its path.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Endpoint {
    BootstrapNodes,
    BootstrapPeers,
    Healthz,
    Readyz,
    Metrics,
    Other,
}

impl Endpoint {
    /// The path the endpoint answers on (`other` for everything unknown).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::BootstrapNodes => spegel_bootstrap::BOOTSTRAP_NODES_PATH,
            Endpoint::BootstrapPeers => spegel_bootstrap::BOOTSTRAP_PEERS_PATH,
            Endpoint::Healthz => "/healthz",
            Endpoint::Readyz => "/readyz",
            Endpoint::Metrics => "/metrics",
            Endpoint::Other => "other",
        }
    }

    /// The endpoint of a request path.
    pub fn of(path: &str) -> Endpoint {
        [
            Endpoint::BootstrapNodes,
            Endpoint::BootstrapPeers,
            Endpoint::Healthz,
            Endpoint::Readyz,
            Endpoint::Metrics,
        ]
        .into_iter()
        .find(|endpoint| endpoint.path() == path)
        .unwrap_or(Endpoint::Other)
    }
}

impl EncodeLabelValue for Endpoint {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.path())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: Endpoint,
    pub code: u16,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

/// Every metric the bootstrapper records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub nodes: Gauge,
    pub ready_nodes: Gauge,
    pub watch_errors: Counter,
    pub handshake_failures: Counter,
    pub tls_reloads: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spegel_bootstrapper");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by endpoint and status code",
            requests.clone(),
        );
        let nodes = Gauge::default();
        registry.register("nodes", "Nodes in the watched view", nodes.clone());
        let ready_nodes = Gauge::default();
        registry.register(
            "ready_nodes",
            "Nodes that can be bootstrap peers (Ready, with an InternalIP)",
            ready_nodes.clone(),
        );
        let watch_errors = Counter::default();
        registry.register(
            "watch_errors",
            "Errors listing or watching Nodes (retried with backoff)",
            watch_errors.clone(),
        );
        let handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (e.g. a missing or untrusted client certificate)",
            handshake_failures.clone(),
        );
        let tls_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Reloads of changed TLS files, by outcome",
            tls_reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            nodes,
            ready_nodes,
            watch_errors,
            handshake_failures,
            tls_reloads,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, endpoint: Endpoint, code: http::StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                code: code.as_u16(),
            })
            .inc();
    }

    /// Counts one reload attempt.
    pub fn tls_reload(&self, outcome: Outcome) {
        self.tls_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_endpoint_and_code() {
        let metrics = Metrics::new();
        metrics.request(Endpoint::BootstrapNodes, http::StatusCode::OK);
        metrics.request(Endpoint::BootstrapNodes, http::StatusCode::OK);
        metrics.ready_nodes.set(3);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"spegel_bootstrapper_requests_total{endpoint="/bootstrap-nodes",code="200"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("spegel_bootstrapper_ready_nodes 3"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
