//! The cluster secret: what makes a node a member of a spegel cluster.
//!
//! One 32-byte key, kept in a file in the libp2p pre-shared key format (the format k3s
//! and go-libp2p use for private networks):
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```
//!
//! It is used twice, never in the same form:
//! - as is, as the libp2p `pnet` pre-shared key ([`ClusterSecret::psk`]): a peer without it
//!   cannot complete a connection to the DHT port;
//! - through a key derived from it (HMAC-SHA256 under a fixed label, so the raw key is never
//!   a MAC key), to sign and verify requests between peers on the registry port
//!   ([`ClusterSecret::sign`], [`ClusterSecret::verify`]; see `proof`).
//!
//! This crate does file I/O only in [`ClusterSecret::load`] and [`ClusterSecret::write_new`];
//! it never logs, and never formats the key into an error or `Debug` output.

mod file;
mod proof;

use std::fmt;
use std::path::{Path, PathBuf};

pub use proof::{PROOF_HEADER, ProofError, REPLAY_WINDOW_SECS, unix_now};

/// Everything that can go wrong with a secret file. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the cluster secret file {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error(
        "the cluster secret file {path} is not a libp2p pre-shared key: {problem} (expected three lines: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits; `spegel-node generate-secret` writes one)"
    )]
    Format { path: PathBuf, problem: String },
    #[error(
        "the cluster secret file {path} can be read by other users (mode {mode:o}): chmod 600 it"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error("cannot write the cluster secret file {path}: {reason}")]
    Write {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error(
        "{path} already exists; a cluster's secret is never overwritten: remove the file first if you mean to replace it"
    )]
    Exists { path: PathBuf },
    #[error("the system has no randomness to generate a secret: {0}")]
    Random(String),
}

/// The cluster's pre-shared key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    psk: [u8; 32],
    /// HMAC-SHA256(psk, [`proof::MAC_KEY_LABEL`]): the key request proofs are made with.
    mac_key: [u8; 32],
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from its 32 key bytes.
    pub fn from_bytes(psk: [u8; 32]) -> ClusterSecret {
        let mac_key = proof::derive_mac_key(&psk);
        ClusterSecret { psk, mac_key }
    }

    /// A new random secret.
    pub fn generate() -> Result<ClusterSecret, Error> {
        let mut psk = [0u8; 32];
        getrandom::fill(&mut psk).map_err(|e| Error::Random(e.to_string()))?;
        Ok(ClusterSecret::from_bytes(psk))
    }

    /// Reads and checks a secret file: the format above, and not readable by other users.
    pub fn load(path: &Path) -> Result<ClusterSecret, Error> {
        let text = file::read(path)?;
        let psk = file::parse(&text).map_err(|problem| Error::Format {
            path: path.to_owned(),
            problem,
        })?;
        Ok(ClusterSecret::from_bytes(psk))
    }

    /// The file's text: three lines in the pre-shared key format.
    pub fn to_file_text(&self) -> String {
        file::format(&self.psk)
    }

    /// Writes the secret to a new file `path` with mode 0600; an existing file is left
    /// alone (error), so a running cluster's secret is never overwritten by accident.
    pub fn write_new(&self, path: &Path) -> Result<(), Error> {
        file::write_new(path, &self.to_file_text())
    }

    /// The 32 bytes of the libp2p pre-shared key.
    pub fn psk(&self) -> [u8; 32] {
        self.psk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_key() {
        let secret = ClusterSecret::from_bytes([0xab; 32]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("ab"), "{shown}");
    }

    #[test]
    fn generated_secrets_differ() {
        let a = ClusterSecret::generate().unwrap();
        let b = ClusterSecret::generate().unwrap();
        assert_ne!(a.psk(), b.psk());
    }

    #[test]
    fn the_mac_key_is_not_the_psk() {
        let secret = ClusterSecret::from_bytes([7; 32]);
        assert_ne!(secret.mac_key, secret.psk);
    }
}
