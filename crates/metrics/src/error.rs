//! What can go wrong while exporting metrics.

use std::path::PathBuf;

/// A metrics export failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be rendered as text (a bug: writing to a `String` cannot fail).
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
    /// The textfile (or its directory) could not be written.
    #[error("cannot write the metrics textfile {}: {source}", path.display())]
    Textfile {
        /// The file or directory that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
