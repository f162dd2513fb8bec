//! What containerd holds: image records, the set of blobs, and image events.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{ListContentRequest, ListImagesRequest, SubscribeRequest};
use futures_util::{Stream, StreamExt};
use spegel_oci::Digest;

use crate::{Containerd, ContentStore, Error, Result};

/// An image record: its name and the digest it points at (a manifest or an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    pub target: Digest,
}

/// Event topics that can change what the node holds: image events, and content events
/// (`/content/delete` from 1.6 on, `/content/create` from 2.1 on; blobs the garbage
/// collector removes are left to the periodic reconcile). Proven per release in
/// `tests/containerd_versions.rs`.
const TOPIC_FILTERS: [&str; 2] = ["topic~=\"^/images/\"", "topic~=\"^/content/\""];

impl Containerd {
    /// Every image record in the namespace.
    pub async fn images(&self) -> Result<Vec<ImageRecord>> {
        let request = self.request(ListImagesRequest { filters: vec![] }, None);
        let images = ImagesClient::new(self.channel())
            .list(request)
            .await
            .map_err(|s| Error::call("image list", s))?
            .into_inner()
            .images;
        Ok(images
            .into_iter()
            .filter_map(|image| {
                let target = image.target?.digest.parse().ok()?;
                Some(ImageRecord {
                    name: image.name,
                    target,
                })
            })
            .collect())
    }

    /// The digest of every blob in the namespace.
    pub async fn blob_digests(&self) -> Result<HashSet<Digest>> {
        let request = self.request(ListContentRequest { filters: vec![] }, None);
        let mut stream = ContentClient::new(self.channel())
            .list(request)
            .await
            .map_err(|s| Error::call("content list", s))?
            .into_inner();
        let mut digests = HashSet::new();
        while let Some(page) = stream.next().await {
            let page = page.map_err(|s| Error::call("content list", s))?;
            digests.extend(page.info.into_iter().filter_map(|i| i.digest.parse().ok()));
        }
        Ok(digests)
    }

    /// A stream of the topics of events that may change what the node holds. The stream
    /// ends (or yields an error) when containerd goes away; subscribe again to resume.
    ///
    /// containerd answers a subscription only when the first event arrives, so await this
    /// in a task of its own.
    pub async fn content_events(&self) -> Result<impl Stream<Item = Result<String>> + use<>> {
        let filters = TOPIC_FILTERS.iter().map(|f| (*f).to_owned()).collect();
        let request = self.request(SubscribeRequest { filters }, None);
        let stream = EventsClient::new(self.channel())
            .subscribe(request)
            .await
            .map_err(|s| Error::call("events subscribe", s))?
            .into_inner();
        Ok(stream.map(|envelope| {
            envelope
                .map(|e| e.topic)
                .map_err(|s| Error::call("events subscribe", s))
        }))
    }
}

/// Reads a whole blob of at most `max` bytes (a manifest). `None` if it is not held or larger.
pub async fn read_small<S: ContentStore>(
    store: &S,
    digest: &Digest,
    max: u64,
) -> Result<Option<Bytes>> {
    let Some(size) = store.size(digest).await? else {
        return Ok(None);
    };
    if size > max {
        return Ok(None);
    }
    let mut stream = store.read(digest, 0, size).await?;
    let mut bytes = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Unexpected {
            call: "content read",
            detail: e.to_string(),
        })?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes.freeze()))
}
