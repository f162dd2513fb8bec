//! Membership flags: the cluster secret, the explicit opt-out, and who may read without one.

use std::path::PathBuf;

use clap::Args;
use spegel_registry::Cidr;

/// Who belongs to the cluster and who may read from this node.
#[derive(Debug, Args)]
pub struct MembershipArgs {
    /// The cluster secret: a libp2p pre-shared key file (`spegel-node generate-secret`
    /// writes one), the same on every node, mode 0600. Only nodes holding it join the DHT
    /// and read from peers.
    #[arg(long, env = "SPEGEL_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Run without a cluster secret: anyone who reaches the router port joins the DHT (and can
    /// answer tags with any image), anyone who reaches the registry port reads every blob.
    /// Only for isolated test networks.
    #[arg(long, env = "SPEGEL_INSECURE_OPEN_DHT")]
    pub insecure_open_dht: bool,
    /// Networks (comma-separated CIDRs or addresses) whose clients may read from the
    /// registry without a peer's proof, in addition to loopback and this host's own
    /// addresses (e.g. when containerd reaches spegel through another address, or for skopeo).
    #[arg(long, env = "SPEGEL_REGISTRY_ALLOWED_CLIENTS", value_delimiter = ',')]
    pub registry_allowed_clients: Vec<Cidr>,
}

/// Flags of `spegel-node generate-secret`.
#[derive(Debug, Args)]
pub struct GenerateSecretArgs {
    /// Where to write the new secret (mode 0600; an existing file is never overwritten).
    /// Without it the secret is printed to stdout.
    #[arg(long, env = "SPEGEL_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}
