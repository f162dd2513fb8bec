//! Membership: loading the cluster secret (or the explicit opt-out) into who may join the DHT
//! and who may read from the registry, and `spegel-node generate-secret`.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use spegel_registry::{Access, Cidr};
use spegel_secret::ClusterSecret;
use tracing::{info, warn};

use crate::config::{GenerateSecretArgs, MembershipArgs};
use crate::exit::BadConfig;

/// The validated membership settings of a node.
pub struct Membership {
    /// `None` only with `--insecure-open-dht`.
    pub secret: Option<Arc<ClusterSecret>>,
    pub access: Access,
}

impl Membership {
    /// The libp2p pre-shared key, if the cluster has a secret.
    pub fn pre_shared_key(&self) -> Option<[u8; 32]> {
        self.secret.as_ref().map(|s| s.psk())
    }
}

/// Reads the secret and the allowed networks; a missing or bad secret is [`BadConfig`].
pub fn load(args: &MembershipArgs) -> anyhow::Result<Membership> {
    match (&args.cluster_secret_file, args.insecure_open_dht) {
        (Some(_), true) => Err(BadConfig(
            "--cluster-secret-file and --insecure-open-dht exclude each other: give one".into(),
        )
        .into()),
        (None, false) => Err(BadConfig(
            "no cluster secret: give --cluster-secret-file (create one with `spegel-node generate-secret --cluster-secret-file FILE` and copy it to every node), or --insecure-open-dht to let anyone on the network join the DHT and read every blob".into(),
        )
        .into()),
        (None, true) => {
            if !args.registry_allowed_clients.is_empty() {
                return Err(BadConfig(
                    "--registry-allowed-clients has no effect with --insecure-open-dht: everyone may read".into(),
                )
                .into());
            }
            warn!(
                "INSECURE: --insecure-open-dht: any machine that reaches the router port joins the DHT and can make this node's containerd pull its images under any tag; any machine that reaches the registry port reads every blob. Use --cluster-secret-file outside isolated test networks."
            );
            Ok(Membership {
                secret: None,
                access: Access::open(),
            })
        }
        (Some(path), false) => {
            let secret = ClusterSecret::load(path).map_err(|e| BadConfig(e.to_string()))?;
            let mut allowed = spegel_registry::own_addresses()
                .context("cannot list this host's network addresses")?;
            allowed.extend(args.registry_allowed_clients.iter().copied());
            info!(
                file = %path.display(),
                fingerprint = %spegel_routing::psk_fingerprint(secret.psk()),
                allowed = %show(&allowed),
                "cluster secret loaded: only members join the DHT and read from peers"
            );
            let secret = Arc::new(secret);
            Ok(Membership {
                access: Access::members(secret.clone(), &allowed),
                secret: Some(secret),
            })
        }
    }
}

/// `spegel-node generate-secret`: a new secret to the file (0600, never overwriting) or stdout.
pub fn generate(args: &GenerateSecretArgs) -> anyhow::Result<()> {
    let secret = ClusterSecret::generate()?;
    match &args.cluster_secret_file {
        Some(path) => {
            secret
                .write_new(path)
                .map_err(|e| BadConfig(e.to_string()))?;
            eprintln!(
                "spegel-node: wrote a new cluster secret to {} (mode 0600); copy it to every node",
                path.display()
            );
        }
        None => std::io::stdout()
            .write_all(secret.to_file_text().as_bytes())
            .context("cannot write the secret to stdout")?,
    }
    Ok(())
}

fn show(networks: &[Cidr]) -> String {
    networks
        .iter()
        .map(Cidr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
