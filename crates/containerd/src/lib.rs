//! spegel's view of containerd: what the node holds and how to read it.
//!
//! Owns the [`ContentStore`] abstraction the registry serves from, and [`Containerd`], its
//! implementation over containerd's gRPC API (Images, Content, Version; only calls that
//! containerd 1.6 already has) plus direct reads of the content directory.
//!
//! Blobs containerd is still downloading are served too ([`ingest`]): containerd's
//! `ingest/<ref>/data` grows until it is renamed into `blobs/sha256/`, and a peer can follow
//! it, which is how many nodes cold-pulling one image cost one download.
//!
//! Never calls the network beyond containerd's socket, never writes to containerd.

mod client;
mod error;
mod file;
mod ingest;
mod inventory;
mod store;

pub use client::{Containerd, ContainerdConfig};
pub use error::{Error, Result};
pub use ingest::{FollowLimits, Ingest, IngestEvent, IngestKind, IngestWatch, follow};
pub use inventory::{ImageRecord, read_small};
pub use store::{BlobStream, ContentStore};
