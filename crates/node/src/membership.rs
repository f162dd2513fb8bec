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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

    use std::path::PathBuf;

    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn args(secret: Option<PathBuf>, insecure: bool, allowed: &[&str]) -> MembershipArgs {
        MembershipArgs {
            cluster_secret_file: secret,
            insecure_open_dht: insecure,
            registry_allowed_clients: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn bad_config(result: anyhow::Result<Membership>) -> String {
        let error = result.err().expect("a configuration error");
        assert!(error.is::<BadConfig>(), "{error}");
        error.to_string()
    }

    fn secret_file(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("cluster-secret");
        ClusterSecret::generate().unwrap().write_new(&path).unwrap();
        path
    }

    #[test]
    fn no_secret_and_no_opt_out_is_refused_with_both_ways_out() {
        let error = bad_config(load(&args(None, false, &[])));
        assert!(error.contains("--cluster-secret-file"), "{error}");
        assert!(error.contains("generate-secret"), "{error}");
        assert!(error.contains("--insecure-open-dht"), "{error}");
    }

    #[test]
    fn a_secret_and_the_opt_out_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let error = bad_config(load(&args(Some(secret_file(dir.path())), true, &[])));
        assert!(error.contains("exclude each other"), "{error}");
    }

    #[test]
    fn allowed_clients_mean_nothing_on_an_open_dht() {
        let error = bad_config(load(&args(None, true, &["10.0.0.0/8"])));
        assert!(error.contains("--registry-allowed-clients"), "{error}");
    }

    #[test]
    fn the_opt_out_runs_open() {
        let membership = load(&args(None, true, &[])).unwrap();
        assert!(membership.secret.is_none());
        assert_eq!(membership.pre_shared_key(), None);
    }

    #[test]
    fn a_bad_secret_file_is_a_configuration_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = bad_config(load(&args(Some(missing.clone()), false, &[])));
        assert!(error.contains(&missing.display().to_string()), "{error}");
    }

    #[test]
    fn a_secret_allows_loopback_own_addresses_and_the_given_networks() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(dir.path());
        let membership = load(&args(Some(path.clone()), false, &["192.0.2.0/24"])).unwrap();
        let secret = ClusterSecret::load(&path).unwrap();
        assert_eq!(membership.pre_shared_key(), Some(secret.psk()));
        let allowed = membership.access.allowed();
        assert!(
            allowed.contains(&"192.0.2.0/24".parse().unwrap()),
            "{allowed:?}"
        );
        assert!(
            allowed.contains(&"127.0.0.0/8".parse().unwrap()),
            "{allowed:?}"
        );
        for own in spegel_registry::own_addresses().unwrap() {
            assert!(allowed.contains(&own), "{own} missing from {allowed:?}");
        }
    }

    #[test]
    fn allowed_clients_parse_from_a_comma_separated_flag() {
        let cli = Cli::try_parse_from([
            "spegel-node",
            "registry",
            "--registry-allowed-clients",
            "10.0.0.0/8,192.0.2.7",
        ])
        .unwrap();
        let Command::Registry(registry) = cli.command else {
            panic!("not the registry command");
        };
        let allowed: Vec<String> = registry
            .membership
            .registry_allowed_clients
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["10.0.0.0/8", "192.0.2.7/32"]);
        let error = Cli::try_parse_from([
            "spegel-node",
            "registry",
            "--registry-allowed-clients",
            "10.0.0.0/40",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("is not a network"), "{error}");
    }
}
