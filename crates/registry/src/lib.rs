//! spegel's read-only OCI registry.
//!
//! Layers, top to bottom:
//! - [`server`]: accepts TCP connections and runs HTTP/1 on them until shutdown;
//! - [`Registry`] (`handler`): request → parse route → local store → response, in one place;
//! - [`response`]: the only place errors become HTTP (status + OCI error JSON) and bodies are built;
//! - storage is a [`spegel_containerd::ContentStore`], never touched directly.
//!
//! Mirroring from peers hooks in between the local store and the response (a later layer).
//! This crate never writes to the store and never reads a path it did not build from a
//! validated digest.

mod handler;
mod response;
mod server;

pub use handler::Registry;
pub use response::Body;
pub use server::{ServerConfig, serve};
