//! spegel's Prometheus metrics.
//!
//! - [`Metrics`]: one owned registry holding every metric spegel exports, under the names
//!   Spegel uses (so its dashboards work), with typed label sets. It is created once by the
//!   binary and injected (`Arc<Metrics>`) into whatever records: nothing here is global.
//!   Timers ([`Timer`], [`HttpRequest`]) record when dropped.
//! - [`serve_metrics`]: the `GET /metrics` HTTP server for `--metrics-addr`; with
//!   [`serve_metrics_and_pages`] it also answers `/debug/…` through a [`Pages`] trait object
//!   (the debug page lives in `spegel-debug`; this crate only routes to it).
//! - [`write_textfile`]: the node-exporter textfile writer for `--metrics-textfile`
//!   (temp file in the same directory → fsync → rename; removed on clean shutdown).
//! - `registry` label values are bounded (`labels`): a client-chosen `ns` never becomes a
//!   new series.
//! - process metrics (RSS, CPU, threads, open files) are read from `/proc/self` at encode time.
//!
//! This crate knows nothing about registries, containerd or peers: it only counts what its
//! callers tell it, and never calls into other spegel crates.

mod error;
mod exposition;
mod labels;
mod metrics;
mod pages;
mod process;
mod server;
mod textfile;
mod transfer;

pub use error::{Error, Result};
pub use exposition::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use labels::{MAX_UNLISTED as MAX_UNLISTED_REGISTRIES, OTHER as OTHER_REGISTRY};
pub use metrics::{Advertised, HttpRequest, Metrics, Timer};
pub use pages::{PAGES_PREFIX, Page, PageFuture, Pages};
pub use server::{serve_metrics, serve_metrics_and_pages};
pub use textfile::{Textfile, write_textfile, write_textfile_once};
pub use transfer::{FlightOutcome, Source, TransferMetrics, ZoneRelation};
