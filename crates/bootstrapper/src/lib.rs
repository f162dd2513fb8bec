//! `spegel-bootstrapper`: the control-plane entry point of spegel's DHT.
//!
//! Owns: a live view of the cluster's Nodes (a kube-rs watcher feeding a reflector store,
//! [`watch`]), the choice of bootstrap peers ([`nodes`]), the HTTPS server that answers them
//! to nodes presenting a client certificate ([`server`], [`handler`]), TLS files reloaded on
//! rotation ([`tls_reload`]), metrics and probes on a plain port, and a scripted fake API
//! server for tests ([`testing`]).
//!
//! The layers read top to bottom: `server` (sockets, TLS, HTTP) → `handler` (routes, the only
//! place answers become HTTP) → `nodes` (pure choice) over `watch` (the store).
//!
//! It must never write to the Kubernetes API (it needs get/list/watch on Nodes only), never
//! LIST per request, and never answer a bootstrap request without a verified client
//! certificate. The wire format and TLS loading live in `spegel-bootstrap`, shared with the
//! node. Nothing depends on this crate.

pub mod asker;
pub mod config;
mod error;
pub mod handler;
pub mod metrics;
pub mod nodes;
pub mod run;
pub mod server;
pub mod testing;
pub mod tls_reload;
pub mod watch;

pub use config::{Cli, Config};
pub use error::{Error, Result};
pub use run::{Listeners, kube_client, run};
