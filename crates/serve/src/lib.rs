//! Plumbing shared by spegel's servers (the node's registry and metrics endpoints, the
//! bootstrapper's HTTPS and operations endpoints): how they are configured (`:PORT`
//! addresses, `10s` durations) and how they accept connections: every connection accepted
//! at once, capped in total and per client IP with an immediate refusal past the caps,
//! slow and silent clients dropped, and a graceful shutdown.
//!
//! Knows nothing of HTTP routes, TLS or what a connection serves; never logs values of
//! requests.

mod accept;
mod admission;
mod flags;
mod guard;

pub use accept::{Busy, Limits, accept_loop};
pub use flags::{parse_addr, parse_duration};
pub use guard::{Guarded, Timeouts};
pub use hyper_util::server::graceful::Watcher;
