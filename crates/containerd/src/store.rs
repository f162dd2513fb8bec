//! The content store the registry serves from.

use std::future::Future;
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use spegel_oci::{Digest, Repository, Tag};

use crate::{Error, Result};

/// Bytes of a blob, streamed in chunks; an `Err` item means the stream broke.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Content held on this node, addressed the way registry requests address it.
///
/// Implementations must stream (never load a whole blob into memory) and must only ever
/// read content the node holds: a digest is the only handle to a blob.
pub trait ContentStore: Clone + Send + Sync + 'static {
    /// The digest that `<registry>/<repository>:<tag>` points at, if the node has that image.
    fn resolve_tag(
        &self,
        registry: &str,
        repository: &Repository,
        tag: &Tag,
    ) -> impl Future<Output = Result<Option<Digest>>> + Send;

    /// The size of the blob with `digest`, if the node holds it.
    fn size(&self, digest: &Digest) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Streams `len` bytes of the blob starting at byte `first`.
    fn read(
        &self,
        digest: &Digest,
        first: u64,
        len: u64,
    ) -> impl Future<Output = Result<BlobStream>> + Send;

    /// The content file of the blob with `digest`, opened for reading, so the registry can
    /// hand it to the kernel (`sendfile`) instead of streaming it through [`read`]. `None`
    /// when the store has no file for it (no content directory, or the file cannot be
    /// opened): the caller then uses [`read`].
    ///
    /// [`read`]: ContentStore::read
    fn open_file(&self, digest: &Digest) -> impl Future<Output = Option<std::fs::File>> + Send {
        let _ = digest;
        std::future::ready(None)
    }

    /// Whether the blob with `digest` is known to be a manifest or an index, so that reading
    /// it whole as one is worth it (a client asking for a layer by a manifest URL must not
    /// make the node buffer layers). Stores that cannot tell answer `true`; the manifest
    /// size cap still bounds what is read.
    fn is_manifest(&self, digest: &Digest) -> impl Future<Output = Result<bool>> + Send {
        let _ = digest;
        std::future::ready(Ok(true))
    }

    /// Succeeds when the store can answer right now.
    fn check(&self) -> impl Future<Output = Result<()>> + Send;

    /// The size of `digest` if containerd is downloading it right now (not committed yet).
    /// Stores that cannot see downloads answer `None`.
    fn in_flight(&self, _digest: &Digest) -> Option<u64> {
        None
    }

    /// Waits up to `timeout` for a download of `digest` to start; its size if one did.
    fn wait_in_flight(
        &self,
        _digest: &Digest,
        _timeout: std::time::Duration,
    ) -> impl Future<Output = Option<u64>> + Send {
        async { None }
    }

    /// Streams a blob that is being downloaded from byte `first` to its end, following the
    /// download; the stream fails when the download stops or stalls for `stall_timeout`.
    fn follow(
        &self,
        digest: &Digest,
        _first: u64,
        _stall_timeout: std::time::Duration,
    ) -> impl Future<Output = Result<BlobStream>> + Send {
        let digest = digest.to_string();
        async move {
            Err(Error::InFlight {
                digest,
                source: io::Error::other("this store does not see downloads"),
            })
        }
    }
}
