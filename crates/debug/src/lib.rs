//! The operator's debug page, `/debug/` on the metrics address (never the registry port):
//! server-rendered HTML with no external assets and no JavaScript.
//!
//! - [`DebugPage`] answers the metrics server through its [`Pages`] seam: this node (peer
//!   ID, zone, version, uptime), its peers, what it advertises, the last requests it
//!   mirrored, and the **measure** tool (`/debug/measure?image=<reference>`): the image is
//!   fetched from peers through [`Mirror::measure`] (nothing stored) and each manifest and
//!   blob's lookup and transfer times, bytes, peer and throughput are shown.
//! - One measure at a time (a second gets a "busy" page), within [`MeasureLimits`]; a bad
//!   reference is a 400 page saying what is wrong.
//! - The metrics server starts before the router and mirror exist: until [`DebugPage::attach`]
//!   gives them, the page says they have not started.
//!
//! This crate only reads: it never writes to containerd, never advertises, never changes
//! how the node mirrors.

mod html;
mod render;
mod request;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use spegel_metrics::{Page, PageFuture, Pages};
use spegel_registry::{MeasureLimits, Mirror};
use spegel_routing::{PeerSummary, Router};
use tokio::sync::Semaphore;

use render::{NodeView, PeerRow};
use request::Route;

pub use request::parse_image;

/// How long the page waits for the router's answers (peers, advertised keys).
const ROUTER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the node knows of itself from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// spegel-node's version.
    pub version: String,
    /// This node's zone (`None`: it has none; the page says "(none)").
    pub zone: Option<String>,
}

/// Where the page's data comes from, once the node has started them.
#[derive(Clone)]
pub struct Sources {
    pub router: Router,
    pub mirror: Mirror,
}

/// The debug pages; give them to `spegel_metrics::serve_metrics_and_pages`.
pub struct DebugPage {
    node: NodeInfo,
    started: Instant,
    sources: OnceLock<Sources>,
    /// One measure at a time.
    measuring: Semaphore,
    limits: MeasureLimits,
}

impl DebugPage {
    /// The page for a node described by `node`, measuring within the default limits.
    pub fn new(node: NodeInfo) -> DebugPage {
        DebugPage {
            node,
            started: Instant::now(),
            sources: OnceLock::new(),
            measuring: Semaphore::new(1),
            limits: MeasureLimits::default(),
        }
    }

    /// Measures within `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: MeasureLimits) -> DebugPage {
        self.limits = limits;
        self
    }

    /// Gives the page its data sources; only the first call counts.
    pub fn attach(&self, sources: Sources) {
        let _ = self.sources.set(sources);
    }

    async fn overview(&self) -> Page {
        let now = SystemTime::now();
        let sources = self.sources.get();
        let (peers, keys) = match sources {
            Some(s) => (
                with_timeout(s.router.peers()).await,
                with_timeout(s.router.advertised()).await,
            ),
            None => (None, None),
        };
        let peers: Option<Vec<PeerRow>> = peers.map(|peers| {
            peers
                .into_iter()
                .map(|peer| PeerRow {
                    zone: peer_zone(sources, &peer),
                    peer,
                })
                .collect()
        });
        let log = sources.map(|s| s.mirror.log().recent());
        let mut body = render::node(&self.view());
        body.push_str(&render::peers(peers.as_deref(), now));
        body.push_str(&render::advertised(keys.as_deref()));
        body.push_str(&render::mirrored(log.as_deref(), now));
        body.push_str(&render::measure_form(None));
        Page::html(StatusCode::OK, html::page("spegel-node debug", &body))
    }

    async fn measure(&self, image: Option<String>) -> Page {
        let title = "spegel-node debug: measure";
        let back = "<p><a href=\"/debug/\">back to the overview</a></p>\n";
        let Some(image) = image else {
            let body = format!("{back}{}", render::measure_form(None));
            return Page::html(StatusCode::OK, html::page(title, &body));
        };
        let form = render::measure_form(Some(&image));
        let target = match parse_image(&image) {
            Ok(target) => target,
            Err(e) => {
                let body = format!(
                    "{back}<p id=\"error\" class=\"bad\">{}</p>\n{form}",
                    html::escape(&e)
                );
                return Page::html(StatusCode::BAD_REQUEST, html::page(title, &body));
            }
        };
        let Ok(_one) = self.measuring.try_acquire() else {
            let body = format!(
                "{back}<p id=\"error\" class=\"bad\">Busy: another measure is running on this node; try again when it is done (at most {} s).</p>\n{form}",
                self.limits.deadline.as_secs()
            );
            return Page::html(StatusCode::TOO_MANY_REQUESTS, html::page(title, &body));
        };
        let Some(sources) = self.sources.get() else {
            let body = format!(
                "{back}<p id=\"error\" class=\"bad\">{}</p>\n{form}",
                html::escape(render::NOT_STARTED)
            );
            return Page::html(StatusCode::SERVICE_UNAVAILABLE, html::page(title, &body));
        };
        tracing::info!(image = %image, "measuring an image through peers (debug page)");
        let measured = sources.mirror.measure(&target, self.limits).await;
        let body = format!("{back}{}{form}", render::measurement(&image, &measured));
        Page::html(StatusCode::OK, html::page(title, &body))
    }

    fn view(&self) -> NodeView {
        NodeView {
            peer_id: self
                .sources
                .get()
                .map(|s| s.router.local_peer_id().to_string()),
            zone: self.zone(),
            version: self.node.version.clone(),
            uptime: self.started.elapsed(),
        }
    }
}

impl DebugPage {
    /// This node's zone: the one the mirror runs with (`--zone`, or told by the
    /// bootstrapper later), else the one configured at start.
    fn zone(&self) -> Option<String> {
        self.sources
            .get()
            .and_then(|s| s.mirror.zones().local().get())
            .map(|z| z.to_string())
            .or_else(|| self.node.zone.clone())
    }
}

/// A peer's zone as this node knows it: what the peer named in its last answer to this
/// node's mirror (`X-Spegel-Zone`); none before the first.
fn peer_zone(sources: Option<&Sources>, peer: &PeerSummary) -> Option<String> {
    sources?
        .mirror
        .zones()
        .zone_of(&peer.id)
        .map(|z| z.to_string())
}

impl Pages for DebugPage {
    fn get<'a>(&'a self, path: &'a str, query: Option<&'a str>) -> PageFuture<'a> {
        Box::pin(async move {
            match request::route(path, query) {
                Route::Overview => self.overview().await,
                Route::Measure(image) => self.measure(image).await,
                Route::NotFound => Page::html(
                    StatusCode::NOT_FOUND,
                    html::page(
                        "not found",
                        "<p>The debug pages are <a href=\"/debug/\">/debug/</a> and /debug/measure.</p>\n",
                    ),
                ),
            }
        })
    }
}

/// A router answer, or `None` when the router is gone or slower than [`ROUTER_TIMEOUT`].
async fn with_timeout<T>(
    answer: impl std::future::Future<Output = spegel_routing::Result<T>>,
) -> Option<T> {
    tokio::time::timeout(ROUTER_TIMEOUT, answer)
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests;
