//! [`Containerd`]: the [`ContentStore`] over containerd's gRPC API and content directory.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{GetImageRequest, InfoRequest, ReadContentRequest};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use spegel_oci::{Digest, Repository, Tag};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::{
    BlobStream, ContentStore, Error, FollowLimits, IngestEvent, IngestWatch, Result, file,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Labels containerd puts only on manifests and indexes (the content they reference).
const MANIFEST_LABEL_PREFIX: &str = "containerd.io/gc.ref.content.";

/// How long a unary call to containerd may take before the request gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where containerd is and which part of it to serve.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket, e.g. `/run/containerd/containerd.sock`.
    pub socket: PathBuf,
    /// The containerd namespace whose images are served (kubelet's is `k8s.io`).
    pub namespace: String,
    /// containerd's content directory (`…/io.containerd.content.v1.content`). Blobs are read
    /// from `blobs/<algorithm>/<hex>` beneath it when readable, else over gRPC.
    pub content_dir: Option<PathBuf>,
}

/// A handle to one containerd. Cheap to clone; the connection is shared and re-established
/// by the channel whenever containerd restarts.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: MetadataValue<Ascii>,
    content_dir: Option<PathBuf>,
    /// Downloads in progress, once [`Containerd::watch_ingests`] started watching them.
    ingests: Option<IngestWatch>,
}

impl Containerd {
    /// Prepares a connection to containerd. Nothing is dialled until the first call, so a
    /// node can start before containerd and connect once it is up.
    pub fn new(config: ContainerdConfig) -> Result<Containerd> {
        let namespace = config
            .namespace
            .parse()
            .map_err(|_| Error::InvalidNamespace(config.namespace.clone()))?;
        let socket = config.socket;
        // The URI is required by tonic but unused: every connection dials the unix socket.
        let endpoint =
            Endpoint::from_static("http://containerd").connect_timeout(Duration::from_secs(2));
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }));
        Ok(Containerd {
            channel,
            namespace,
            content_dir: config.content_dir,
            ingests: None,
        })
    }

    /// Starts watching the blobs containerd downloads in our namespace (needs the content
    /// directory), so they can be served while in flight. Returns what the watcher reports,
    /// or `None` without a content directory.
    pub fn watch_ingests(
        &mut self,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> Option<mpsc::Receiver<IngestEvent>> {
        let dir = self.content_dir.as_ref()?;
        let namespace = self.namespace.to_str().ok()?.to_owned();
        let (watch, events) = IngestWatch::start(dir, &namespace, poll, shutdown);
        self.ingests = Some(watch);
        Some(events)
    }

    /// A request carrying the namespace header and a deadline.
    pub(crate) fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// The shared gRPC channel.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The path of a blob in the content directory, if one is configured.
    fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        let dir = self.content_dir.as_ref()?;
        // A `Digest` is validated hex, so this path cannot leave the content directory.
        Some(
            dir.join("blobs")
                .join(digest.algorithm().as_str())
                .join(digest.hex()),
        )
    }

    /// Streams a range over containerd's Content `Read` call.
    async fn read_over_grpc(&self, digest: &Digest, first: u64, len: u64) -> Result<BlobStream> {
        let (offset, size) = (to_i64(first)?, to_i64(len)?);
        let request = self.request(
            ReadContentRequest {
                digest: digest.to_string(),
                offset,
                size,
            },
            None,
        );
        let stream = ContentClient::new(self.channel.clone())
            .read(request)
            .await
            .map_err(|s| Error::call("content read", s))?
            .into_inner();
        let bytes = stream.map(|message| {
            message
                .map(|m| bytes::Bytes::from(m.data))
                .map_err(io::Error::other)
        });
        Ok(Box::pin(bytes))
    }
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Unexpected {
        call: "content read",
        detail: format!("offset {n} does not fit containerd's int64"),
    })
}

impl ContentStore for Containerd {
    async fn resolve_tag(
        &self,
        registry: &str,
        repository: &Repository,
        tag: &Tag,
    ) -> Result<Option<Digest>> {
        let name = format!("{registry}/{repository}:{tag}");
        let request = self.request(GetImageRequest { name }, Some(CALL_TIMEOUT));
        let response = match ImagesClient::new(self.channel.clone()).get(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(Error::call("image get", status)),
        };
        let target = response
            .image
            .and_then(|image| image.target)
            .ok_or_else(|| Error::Unexpected {
                call: "image get",
                detail: "image without a target".into(),
            })?;
        let digest = target.digest.parse().map_err(|e| Error::Unexpected {
            call: "image get",
            detail: format!("target digest {:?}: {e}", target.digest),
        })?;
        Ok(Some(digest))
    }

    async fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let request = self.request(
            InfoRequest {
                digest: digest.to_string(),
            },
            Some(CALL_TIMEOUT),
        );
        let response = match ContentClient::new(self.channel.clone()).info(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(Error::call("content info", status)),
        };
        let size = response.info.map(|info| info.size).unwrap_or(-1);
        u64::try_from(size)
            .map(Some)
            .map_err(|_| Error::Unexpected {
                call: "content info",
                detail: format!("size {size}"),
            })
    }

    /// containerd labels every manifest and index it pulled with the content it references
    /// (`containerd.io/gc.ref.content.config`, `.l.<i>`, `.m.<i>`); layers and configs carry
    /// no such label.
    async fn is_manifest(&self, digest: &Digest) -> Result<bool> {
        let request = self.request(
            InfoRequest {
                digest: digest.to_string(),
            },
            Some(CALL_TIMEOUT),
        );
        let response = match ContentClient::new(self.channel.clone()).info(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(false),
            Err(status) => return Err(Error::call("content info", status)),
        };
        Ok(response.info.is_some_and(|info| {
            info.labels
                .keys()
                .any(|label| label.starts_with(MANIFEST_LABEL_PREFIX))
        }))
    }

    async fn read(&self, digest: &Digest, first: u64, len: u64) -> Result<BlobStream> {
        if let Some(path) = self.blob_path(digest) {
            match file::stream_range(&path, first, len).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    debug!(path = %path.display(), error = %e, "content file not readable, reading over gRPC")
                }
            }
        }
        self.read_over_grpc(digest, first, len).await
    }

    async fn open_file(&self, digest: &Digest) -> Option<std::fs::File> {
        let path = self.blob_path(digest)?;
        let opened = tokio::task::spawn_blocking(move || std::fs::File::open(&path)).await;
        match opened {
            Ok(Ok(file)) => Some(file),
            Ok(Err(e)) => {
                debug!(error = %e, "content file not openable, streaming it instead");
                None
            }
            Err(_) => None,
        }
    }

    fn in_flight(&self, digest: &Digest) -> Option<u64> {
        Some(self.ingests.as_ref()?.get(digest)?.total)
    }

    async fn wait_in_flight(&self, digest: &Digest, timeout: Duration) -> Option<u64> {
        let ingests = self.ingests.as_ref()?;
        Some(ingests.wait_for(digest, timeout).await?.total)
    }

    async fn follow(
        &self,
        digest: &Digest,
        first: u64,
        stall_timeout: Duration,
    ) -> Result<BlobStream> {
        let failed = |source| Error::InFlight {
            digest: digest.to_string(),
            source,
        };
        let ingest = self
            .ingests
            .as_ref()
            .and_then(|i| i.get(digest).map(|ingest| (i, ingest)));
        let Some((ingests, ingest)) = ingest else {
            return Err(failed(io::Error::other("not being downloaded")));
        };
        crate::follow(ingests, &ingest, first, FollowLimits { stall_timeout })
            .await
            .map_err(failed)
    }

    async fn check(&self) -> Result<()> {
        let request = self.request((), Some(CALL_TIMEOUT));
        VersionClient::new(self.channel.clone())
            .version(request)
            .await
            .map_err(|s| Error::call("version", s))?;
        Ok(())
    }
}
