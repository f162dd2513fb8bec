//! The CRI v1 ImageService spoken over containerd's unix socket, the way kubelet does.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// How long one pull may take; test images are a few MiB on loopback.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// Opens an ImageService client on the containerd socket at `socket`.
pub(super) async fn image_client(socket: &Path) -> Result<ImageServiceClient<Channel>> {
    let path = socket.to_owned();
    let channel = Endpoint::try_from("http://[::]")
        .context("building the CRI endpoint")?
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connecting to CRI on {}", socket.display()))?;
    Ok(ImageServiceClient::new(channel))
}

/// Pulls `image` and returns the image reference the runtime reports (`sha256:…`).
pub(super) async fn pull(socket: &Path, image: &str) -> Result<String> {
    pull_within(socket, image, PULL_TIMEOUT).await
}

/// [`pull`], giving up after `timeout`.
pub(super) async fn pull_within(socket: &Path, image: &str, timeout: Duration) -> Result<String> {
    let mut client = image_client(socket).await?;
    let request = cri::PullImageRequest {
        image: Some(spec(image)),
        auth: None,
        sandbox_config: None,
    };
    let response = tokio::time::timeout(timeout, client.pull_image(request))
        .await
        .with_context(|| format!("CRI PullImage {image} took longer than {timeout:?}"))?
        .with_context(|| format!("CRI PullImage {image}"))?;
    Ok(response.into_inner().image_ref)
}

/// Removes `image` (a tag, digest reference or image id).
pub(super) async fn remove(socket: &Path, image: &str) -> Result<()> {
    let mut client = image_client(socket).await?;
    let request = cri::RemoveImageRequest {
        image: Some(spec(image)),
    };
    client
        .remove_image(request)
        .await
        .with_context(|| format!("CRI RemoveImage {image}"))?;
    Ok(())
}

/// Lists images as kubelet sees them.
pub(super) async fn list(socket: &Path) -> Result<Vec<cri::Image>> {
    let mut client = image_client(socket).await?;
    let response = client
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .context("CRI ListImages")?;
    Ok(response.into_inner().images)
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}
