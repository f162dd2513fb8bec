//! What can go wrong while configuring or checking containerd.

use std::path::PathBuf;

use crate::preflight::Problem;

/// A host configuration failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--mirror-targets` entry is not an `http(s)://host[:port]` URL.
    #[error("{value:?} is not a mirror target: {reason} (expected e.g. http://127.0.0.1:5000)")]
    InvalidMirrorTarget {
        /// What the operator gave.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `--mirrored-registries` entry is not a registry host.
    #[error("{value:?} is not a registry: {reason} (expected e.g. docker.io or https://ghcr.io)")]
    InvalidRegistry {
        /// What the operator gave.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TOML file does not parse.
    #[error("{} is not valid TOML: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A `hosts.toml` whose hosts are not `[host."<url>"]` tables: spegel cannot put its
    /// mirror first without rewriting it.
    #[error(
        "{}: hosts are not written as [host.\"<url>\"] tables, so spegel-node cannot put its mirror first; rewrite them as tables",
        path.display()
    )]
    UnsupportedHosts {
        /// The file.
        path: PathBuf,
    },
    /// spegel's marker says the file replaced an original, but the backup is gone.
    #[error(
        "{} was written by spegel-node over an original that should be in {}, but that backup is gone: put the original back by hand",
        path.display(),
        backup.display()
    )]
    BackupMissing {
        /// The managed `hosts.toml`.
        path: PathBuf,
        /// Where the backup should be.
        backup: PathBuf,
    },
    /// containerd's configuration keeps spegel from working.
    #[error("containerd is not configured for spegel:\n{}", list(.0))]
    Preflight(Vec<Problem>),
}

impl Error {
    /// Whether an operator must change configuration to fix this (the daemon exits 64).
    pub fn is_bad_config(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("- {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
