//! Errors from talking to containerd.

/// Result of a containerd operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why spegel could not get an answer from containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The containerd namespace is not a valid gRPC metadata value.
    #[error("containerd namespace {0:?} is not valid")]
    InvalidNamespace(String),
    /// containerd answered a call with an error (or could not be reached).
    #[error("containerd {call} failed: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    /// containerd's answer did not have the shape its API promises.
    #[error("containerd {call} answered something unexpected: {detail}")]
    Unexpected { call: &'static str, detail: String },
    /// A blob containerd was downloading could not be followed.
    #[error("cannot follow the download of {digest}: {source}")]
    InFlight {
        digest: String,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn call(call: &'static str, status: tonic::Status) -> Error {
        Error::Call {
            call,
            status: Box::new(status),
        }
    }
}
