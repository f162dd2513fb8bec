//! Real components for spegel's integration tests and demo.
//!
//! Every helper starts a real program in its own temporary directory, on loopback
//! addresses and free ports, and kills it and removes the directory on drop (also when
//! a test panics):
//!
//! | module | stands up |
//! |---|---|
//! | [`containerd`] | a `containerd` (Debian's, or the build in `$SPEGEL_TEST_CONTAINERD`) with its own root, sockets and `certs.d`; CRI pulls; `ctr` |
//! | [`upstream`] | a `docker-registry` upstream (or pull-through cache) with its access log |
//! | [`image`] | random OCI test images in a layout, pushed with skopeo |
//! | [`node`] | a `spegel-node registry` process |
//! | [`spegel_image`] | the image `scripts/build-image.sh` builds, ready for `ctr images import` |
//! | [`http`] | a small HTTP/1 client |
//! | [`attack`] | connection floods and peak-memory readings for the robustness tests |
//!
//! Being test code, it reports errors with `anyhow`. It must never become a dependency
//! of a production crate.

pub mod attack;
pub mod cluster;
pub mod containerd;
pub mod http;
pub mod image;
pub mod netns;
pub mod node;
pub mod plot;
pub mod port;
mod process;
pub mod spegel_image;
pub mod stats;
mod tools;
pub mod upstream;

pub use cluster::{Cluster, ClusterNode, ClusterOptions, MirrorMode};
pub use containerd::Containerd;
pub use image::{Blob, ImageSpec, TestImage, build_oci_layout, push};
pub use netns::{Host, Network};
pub use node::{SpegelNode, spegel_node_binary};
pub use spegel_image::SpegelImage;
pub use tools::require_root_tools;
pub use upstream::Upstream;

/// Sends `tracing` output to the test writer, filtered by `RUST_LOG` (default `info`).
/// Safe to call from every test; only the first call installs the subscriber.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
