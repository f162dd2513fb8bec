//! Plumbing shared by spegel's servers (the node's registry and metrics endpoints, the
//! bootstrapper's HTTPS and operations endpoints): how they are configured (`:PORT`
//! addresses, `10s` durations) and how they accept connections (bounded, with a graceful
//! shutdown).
//!
//! Knows nothing of HTTP routes, TLS or what a connection serves; never logs values of
//! requests.

mod accept;
mod flags;

pub use accept::{Limits, accept_loop};
pub use flags::{parse_addr, parse_duration};
pub use hyper_util::server::graceful::Watcher;
