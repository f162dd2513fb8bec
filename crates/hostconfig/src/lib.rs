//! containerd host configuration for spegel: everything `spegel-node` changes or checks on
//! the host outside its own process.
//!
//! - [`configure`] / [`cleanup`]: containerd's registry hosts directory (`certs.d`). spegel
//!   writes `_default/hosts.toml` and/or one `<registry>/hosts.toml` per mirrored registry
//!   pointing at the local mirror; where a `hosts.toml` already exists it injects the mirror
//!   as the **first** host and keeps everything else, after backing the original up byte for
//!   byte. Writes are atomic (temp file, fsync, rename) and idempotent; [`cleanup`] restores
//!   exactly what was there. TOML is edited with `toml_edit`, keeping order and comments.
//! - [`preflight`]: reads containerd's `config.toml` (and its imports) and names the exact
//!   setting to change when containerd would ignore the mirror or discard the layers spegel
//!   serves.
//!
//! Parsing of operator input ([`MirrorTarget`], [`UpstreamRegistry`]) happens at the edge,
//! before any file is touched. This crate never talks to containerd and never restarts it.

mod error;
mod hosts;
mod mirror;
mod preflight;
mod slots;
mod target;

pub use error::{Error, Result};
pub use mirror::{Action, Change, MirrorConfig, cleanup, configure};
pub use preflight::{Preflight, Problem, preflight};
pub use slots::{RECOMMENDED_SLOTS, download_slot_advice};
pub use target::{DEFAULT_DIR, MirrorTarget, UpstreamRegistry};

/// The file containerd reads in each registry directory.
pub const HOSTS_TOML: &str = "hosts.toml";

/// Where spegel keeps the original `hosts.toml` it replaced, beside it.
pub const BACKUP: &str = "hosts.toml.spegel-backup";
