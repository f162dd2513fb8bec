//! spegel's read-only OCI registry.
//!
//! Layers, top to bottom:
//! - [`server`]: accepts TCP connections and runs HTTP/1 on them until shutdown;
//! - [`Access`]: who may read (this node's containerd, allowed networks, members proving the
//!   cluster secret), checked before anything else; everyone else gets `403 DENIED`;
//! - [`Registry`] (`handler`): request → parse route → local store → response, in one place;
//! - [`response`]: the only place errors become HTTP (status + OCI error JSON) and bodies are built;
//! - `sendfile`: bodies of local blobs sent from their content file with `sendfile(2)`
//!   (hyper still writes the head and frames the body);
//! - `metered`: the `http_*` metrics around each request (route label, duration to the last
//!   byte, bytes sent), recorded into the `spegel_metrics::Metrics` in [`ServerConfig`];
//! - storage is a [`spegel_containerd::ContentStore`], never touched directly.
//!
//! - [`Faults`]: background parts of the node that died, so `/readyz` answers 503;
//! - [`Mirror`]: on a local miss, content from the peers that hold it (resolved through
//!   `spegel-routing`), verified against its digest on the way through; it keeps the last
//!   requests it mirrored ([`MirrorLog`]) and measures how fast peers serve an image
//!   ([`Mirror::measure`], fetched and thrown away) for the debug page.
//!
//! This crate never writes to the store and never reads a path it did not build from a
//! validated digest.

mod access;
mod faults;
mod handler;
mod metered;
mod mirror;
mod response;
mod sendfile;
mod server;

pub use access::{Access, Caller, Cidr, ClientAddr, own_addresses};
pub use faults::Faults;
pub use handler::Registry;
pub use mirror::{
    BlobKind, BoxFuture, Decision, FLIGHT_HEADER, Flights, HOLD_HEADER, IDLE, MIRROR_LOG_ENTRIES,
    MIRRORED_HEADER, MeasureLimits, MeasureTarget, Measured, Measurement, Mirror, MirrorConfig,
    MirrorLog, MirroredRequest, Outcome, Resolver, SOURCE_HEADER,
};
pub use mirror::{LocalZone, PeerZones, ZONE_HEADER, Zone};
pub use response::Body;
pub use server::{ServerConfig, serve};
