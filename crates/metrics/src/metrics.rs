//! [`Metrics`]: every metric spegel exports, with typed label sets.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::exposition;
use crate::process::ProcessCollector;

/// Upper bounds of `http_request_duration_seconds`: Prometheus' defaults, plus 30 s and 60 s
/// because a large blob streams for that long.
const HTTP_DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds of `http_response_size_bytes`: 100 B to 1 GB, ×10 (as Spegel).
const HTTP_SIZE_BUCKETS: [f64; 8] = [1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Upper bounds of `spegel_resolve_duration_seconds`: a lookup takes milliseconds.
const RESOLVE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Whether a mirrored request was served from a peer (`hit`) or not (`miss`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Cache {
    Hit,
    Miss,
}

impl EncodeLabelValue for Cache {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Cache::Hit => "hit",
            Cache::Miss => "miss",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    registry: String,
    cache: Cache,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouterLabels {
    router: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    handler: &'static str,
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: &'static str,
}

/// How many keys a node advertises for one registry (the `spegel_advertised_*` gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advertised {
    /// Image tags (`<registry>/<repo>:<tag>` keys).
    pub image_tags: u64,
    /// Image digests (indexes and manifests that name an image).
    pub image_digests: u64,
    /// Every content digest (indexes, manifests, configs, layers).
    pub content_digests: u64,
}

/// Every metric spegel exports. Create one with [`Metrics::new`], share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    mirror_requests: Family<MirrorLabels, Counter>,
    mirror_last_success: Gauge<f64, AtomicU64>,
    resolve_duration: HistogramFamily<RouterLabels>,
    advertised_image_tags: Family<RegistryLabels, Gauge>,
    advertised_image_digests: Family<RegistryLabels, Gauge>,
    advertised_content_digests: Family<RegistryLabels, Gauge>,
    http_request_duration: HistogramFamily<HttpLabels>,
    http_response_size: HistogramFamily<HttpLabels>,
    http_requests_inflight: Family<HandlerLabels, Gauge>,
    /// Bytes by source and single-flight outcomes.
    pub transfer: crate::TransferMetrics,
    registry_labels: crate::labels::RegistryLabels,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry holding every metric, all at zero, plus the process metrics; `registry`
    /// labels bounded as [`Metrics::with_registries`] says, with no list.
    pub fn new() -> Metrics {
        Metrics::with_registries(&[])
    }

    /// [`Metrics::new`] whose `registry` label values are only `registries` (the
    /// `--mirrored-registries`, as hosts) and `other`; with an empty list, the first
    /// [`crate::MAX_UNLISTED_REGISTRIES`] registries seen and `other`.
    pub fn with_registries(registries: &[String]) -> Metrics {
        let mut registry = Registry::default();
        let mirror_requests = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "spegel_mirror_requests",
            "Requests for content this node did not hold, by upstream registry and whether a peer served it (hit) or not (miss)",
            mirror_requests.clone(),
        );
        let mirror_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "spegel_mirror_last_success_timestamp_seconds",
            "Unix time of the last request a peer served",
            mirror_last_success.clone(),
        );
        let resolve_duration: HistogramFamily<RouterLabels> =
            Family::new_with_constructor(|| Histogram::new(RESOLVE_BUCKETS));
        registry.register(
            "spegel_resolve_duration_seconds",
            "Time to find the peers holding a key, by router",
            resolve_duration.clone(),
        );
        let advertised_image_tags = Family::<RegistryLabels, Gauge>::default();
        registry.register(
            "spegel_advertised_image_tags",
            "Image tags this node advertises to its peers, by registry",
            advertised_image_tags.clone(),
        );
        let advertised_image_digests = Family::<RegistryLabels, Gauge>::default();
        registry.register(
            "spegel_advertised_image_digests",
            "Image digests this node advertises to its peers, by registry",
            advertised_image_digests.clone(),
        );
        let advertised_content_digests = Family::<RegistryLabels, Gauge>::default();
        registry.register(
            "spegel_advertised_content_digests",
            "Content digests (indexes, manifests, configs, layers) this node advertises to its peers, by registry",
            advertised_content_digests.clone(),
        );
        let http_request_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(|| Histogram::new(HTTP_DURATION_BUCKETS));
        registry.register(
            "http_request_duration_seconds",
            "Time from a registry request to the last byte of its response",
            http_request_duration.clone(),
        );
        let http_response_size: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(|| Histogram::new(HTTP_SIZE_BUCKETS));
        registry.register(
            "http_response_size_bytes",
            "Body bytes sent per registry response",
            http_response_size.clone(),
        );
        let http_requests_inflight = Family::<HandlerLabels, Gauge>::default();
        registry.register(
            "http_requests_inflight",
            "Registry requests being answered now",
            http_requests_inflight.clone(),
        );
        let transfer = crate::TransferMetrics::register(&mut registry);
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            transfer,
            registry,
            mirror_requests,
            mirror_last_success,
            resolve_duration,
            advertised_image_tags,
            advertised_image_digests,
            advertised_content_digests,
            http_request_duration,
            http_response_size,
            http_requests_inflight,
            registry_labels: crate::labels::RegistryLabels::new(registries),
        }
    }

    /// Counts one request for content the node did not hold locally, for upstream
    /// `registry` (the `ns` of the request): `hit` when a peer served it. A hit also sets
    /// `spegel_mirror_last_success_timestamp_seconds` to now.
    pub fn mirror_request(&self, registry: &str, hit: bool) {
        let cache = if hit { Cache::Hit } else { Cache::Miss };
        self.mirror_requests
            .get_or_create(&MirrorLabels {
                registry: self.registry_labels.label(registry),
                cache,
            })
            .inc();
        if hit {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.mirror_last_success.set(now.as_secs_f64());
        }
    }

    /// A timer for one peer lookup by `router`; it records into
    /// `spegel_resolve_duration_seconds` when dropped.
    pub fn resolve_timer(&self, router: &str) -> Timer {
        Timer {
            histogram: self.resolve_duration.get_or_create_owned(&RouterLabels {
                router: router.to_owned(),
            }),
            start: Instant::now(),
        }
    }

    /// Records one peer lookup by `router` that took `elapsed`.
    pub fn observe_resolve(&self, router: &str, elapsed: Duration) {
        self.resolve_duration
            .get_or_create(&RouterLabels {
                router: router.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the `spegel_advertised_*` gauges of `registry`.
    pub fn set_advertised(&self, registry: &str, advertised: Advertised) {
        let labels = RegistryLabels {
            registry: self.registry_labels.label(registry),
        };
        let set = |family: &Family<RegistryLabels, Gauge>, n: u64| {
            family
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set(&self.advertised_image_tags, advertised.image_tags);
        set(&self.advertised_image_digests, advertised.image_digests);
        set(&self.advertised_content_digests, advertised.content_digests);
    }

    /// Starts measuring one HTTP request to route `handler` (e.g. `"blob"`): counts it in
    /// `http_requests_inflight` until the returned guard is dropped, which then records the
    /// duration and response size under the status set with [`HttpRequest::set_status`].
    pub fn http_request(&self, handler: &'static str, method: &Method) -> HttpRequest {
        let inflight = self
            .http_requests_inflight
            .get_or_create_owned(&HandlerLabels { handler });
        inflight.inc();
        HttpRequest {
            handler,
            method: method_label(method),
            status: None,
            bytes: 0,
            start: Instant::now(),
            duration: self.http_request_duration.clone(),
            size: self.http_response_size.clone(),
            inflight,
        }
    }

    /// The exposition in the OpenMetrics text format (what `/metrics` serves to Prometheus).
    pub fn encode_openmetrics(&self) -> crate::Result<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The exposition in the Prometheus text format 0.0.4 (what node-exporter's textfile
    /// collector reads).
    pub fn encode_prometheus(&self) -> crate::Result<String> {
        Ok(exposition::openmetrics_to_prometheus(
            &self.encode_openmetrics()?,
        ))
    }
}

/// A bounded label value for an HTTP method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Measures one duration; records it into its histogram when dropped.
#[derive(Debug)]
pub struct Timer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// One HTTP request being answered (see [`Metrics::http_request`]).
///
/// Dropped without a status (the client went away before a response was made), it only
/// leaves `http_requests_inflight`.
#[derive(Debug)]
pub struct HttpRequest {
    handler: &'static str,
    method: &'static str,
    status: Option<u16>,
    bytes: u64,
    start: Instant,
    duration: HistogramFamily<HttpLabels>,
    size: HistogramFamily<HttpLabels>,
    inflight: Gauge,
}

impl HttpRequest {
    /// The status code of the response (the `code` label).
    pub fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Counts `n` more body bytes sent.
    pub fn add_bytes(&mut self, n: u64) {
        self.bytes = self.bytes.saturating_add(n);
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        self.inflight.dec();
        let Some(code) = self.status else { return };
        let labels = HttpLabels {
            handler: self.handler,
            method: self.method,
            code,
        };
        self.duration
            .get_or_create(&labels)
            .observe(self.start.elapsed().as_secs_f64());
        // Precision loss past 2^53 bytes is irrelevant for bucketing.
        #[allow(clippy::cast_precision_loss)]
        self.size.get_or_create(&labels).observe(self.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix)?.trim().parse().ok())
    }

    #[test]
    fn every_spegel_metric_name_is_exported() {
        let metrics = Metrics::new();
        metrics.mirror_request("docker.io", true);
        metrics.mirror_request("docker.io", false);
        drop(metrics.resolve_timer("libp2p"));
        metrics.set_advertised("docker.io", Advertised::default());
        let mut request = metrics.http_request("blob", &Method::GET);
        request.set_status(200);
        drop(request);

        let text = metrics.encode_prometheus().unwrap();

        for name in [
            "# TYPE spegel_mirror_requests_total counter",
            "# TYPE spegel_mirror_last_success_timestamp_seconds gauge",
            "# TYPE spegel_resolve_duration_seconds histogram",
            "# TYPE spegel_advertised_image_tags gauge",
            "# TYPE spegel_advertised_image_digests gauge",
            "# TYPE spegel_advertised_content_digests gauge",
            "# TYPE http_request_duration_seconds histogram",
            "# TYPE http_response_size_bytes histogram",
            "# TYPE http_requests_inflight gauge",
            "# TYPE spegel_process_resident_memory_bytes gauge",
            "# TYPE spegel_process_cpu_seconds_total counter",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn mirror_requests_are_counted_by_registry_and_cache() {
        let metrics = Metrics::new();
        metrics.mirror_request("ghcr.io", true);
        metrics.mirror_request("ghcr.io", true);
        metrics.mirror_request("ghcr.io", false);

        let text = metrics.encode_prometheus().unwrap();

        assert_eq!(
            sample(
                &text,
                r#"spegel_mirror_requests_total{registry="ghcr.io",cache="hit"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"spegel_mirror_requests_total{registry="ghcr.io",cache="miss"}"#
            ),
            Some(1.0)
        );
        let last = sample(&text, "spegel_mirror_last_success_timestamp_seconds").unwrap();
        assert!(last > 1.7e9, "{last}");
    }

    #[test]
    fn an_http_request_is_inflight_until_its_guard_drops() {
        let metrics = Metrics::new();
        let mut request = metrics.http_request("manifest", &Method::HEAD);
        let inflight = r#"http_requests_inflight{handler="manifest"}"#;
        assert_eq!(
            sample(&metrics.encode_prometheus().unwrap(), inflight),
            Some(1.0)
        );
        request.set_status(404);
        request.add_bytes(120);
        drop(request);

        let text = metrics.encode_prometheus().unwrap();

        assert_eq!(sample(&text, inflight), Some(0.0));
        let labels = r#"{handler="manifest",method="HEAD",code="404"}"#;
        assert_eq!(
            sample(&text, &format!("http_response_size_bytes_count{labels}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("http_response_size_bytes_sum{labels}")),
            Some(120.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("http_request_duration_seconds_count{labels}")
            ),
            Some(1.0)
        );
    }

    #[test]
    fn a_request_dropped_before_its_response_records_no_duration() {
        let metrics = Metrics::new();
        drop(metrics.http_request("blob", &Method::GET));

        let text = metrics.encode_prometheus().unwrap();

        assert!(
            !text.contains("http_request_duration_seconds_count"),
            "{text}"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::HEAD), "HEAD");
    }

    #[test]
    fn the_resolve_timer_records_when_dropped() {
        let metrics = Metrics::new();
        let timer = metrics.resolve_timer("libp2p");
        let count = r#"spegel_resolve_duration_seconds_count{router="libp2p"}"#;
        assert_eq!(
            sample(&metrics.encode_prometheus().unwrap(), count),
            Some(0.0)
        );
        drop(timer);
        metrics.observe_resolve("libp2p", Duration::from_millis(3));

        assert_eq!(
            sample(&metrics.encode_prometheus().unwrap(), count),
            Some(2.0)
        );
    }

    #[test]
    fn advertised_counts_are_set_per_registry() {
        let metrics = Metrics::new();
        metrics.set_advertised(
            "docker.io",
            Advertised {
                image_tags: 3,
                image_digests: 4,
                content_digests: 20,
            },
        );

        let text = metrics.encode_prometheus().unwrap();

        assert_eq!(
            sample(
                &text,
                r#"spegel_advertised_image_tags{registry="docker.io"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"spegel_advertised_content_digests{registry="docker.io"}"#
            ),
            Some(20.0)
        );
    }
}
