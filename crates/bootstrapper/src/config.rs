//! Command line and environment: every flag has a `SPEGEL_BOOTSTRAPPER_…` twin. Parsed by
//! clap, then validated once into an immutable [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use spegel_bootstrap::tls::ServerTlsFiles;

use crate::{Error, Result};

/// Answers spegel nodes, over mutual TLS, which peers to join the DHT through.
#[derive(Debug, Parser)]
#[command(name = "spegel-bootstrapper", version, about, long_about = None)]
pub struct Cli {
    /// HTTPS address (client certificates required); `:PORT` means every IPv4 address.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_LISTEN_ADDR", default_value = ":8443", value_parser = parse_addr)]
    pub listen_addr: SocketAddr,
    /// Plain HTTP address of /metrics, /healthz and /readyz (probes cannot present client certs).
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_METRICS_ADDR", default_value = ":9090", value_parser = parse_addr)]
    pub metrics_addr: SocketAddr,
    /// Server certificate chain (PEM); re-read when it changes.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// Server private key (PEM); re-read when it changes.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; re-read when it changes.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_CLIENT_CA_FILE")]
    pub client_ca_file: PathBuf,
    /// How often the three TLS files are checked for changes (e.g. 10s, 500ms).
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Kubeconfig to use; without it: in-cluster config, else $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How many peers one answer holds.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_MAX_PEERS", default_value_t = 3)]
    pub max_peers: usize,
    /// Port of the nodes' DHT routers, for the multiaddrs of /v1/bootstrap-peers.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_ROUTER_PORT", default_value_t = 5001)]
    pub router_port: u16,
    /// Connections one client IP may hold on each listener; further ones are closed at once.
    #[arg(
        long,
        env = "SPEGEL_BOOTSTRAPPER_MAX_CONNECTIONS_PER_IP",
        default_value_t = 32
    )]
    pub max_connections_per_ip: usize,
    /// How long a client may take for its TLS handshake before it is dropped.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// How long open requests may finish after SIGTERM/SIGINT.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Minimum level to log, or a tracing filter such as `info,kube=debug`.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, env = "SPEGEL_BOOTSTRAPPER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which peers an answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    pub max_peers: usize,
    pub router_port: u16,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub tls: ServerTlsFiles,
    pub tls_reload_interval: Duration,
    pub kubeconfig: Option<PathBuf>,
    pub peers: PeerPolicy,
    pub max_connections_per_ip: usize,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
}

/// Upper bound of `--max-peers`: an answer is a bootstrap hint, not a peer list.
const MAX_PEERS_LIMIT: usize = 100;

impl Cli {
    /// Checks every value that clap cannot, including that the TLS files load.
    pub fn validate(self) -> Result<Config> {
        let bad = |flag, problem: String| Error::Config { flag, problem };
        if self.max_peers == 0 || self.max_peers > MAX_PEERS_LIMIT {
            return Err(bad(
                "--max-peers",
                format!(
                    "must be between 1 and {MAX_PEERS_LIMIT}, not {}",
                    self.max_peers
                ),
            ));
        }
        if self.max_connections_per_ip == 0 {
            return Err(bad(
                "--max-connections-per-ip",
                "must be at least 1".to_owned(),
            ));
        }
        if self.tls_handshake_timeout.is_zero() {
            return Err(bad(
                "--tls-handshake-timeout",
                "must be longer than 0".to_owned(),
            ));
        }
        if self.router_port == 0 {
            return Err(bad("--router-port", "must not be 0".to_owned()));
        }
        if self.tls_reload_interval < Duration::from_millis(100) {
            return Err(bad(
                "--tls-reload-interval",
                "must be at least 100ms".to_owned(),
            ));
        }
        if self.listen_addr == self.metrics_addr && self.listen_addr.port() != 0 {
            return Err(bad(
                "--metrics-addr",
                format!("must differ from --listen-addr ({})", self.listen_addr),
            ));
        }
        if let Some(path) = &self.kubeconfig
            && !path.is_file()
        {
            return Err(bad(
                "--kubeconfig",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let tls = ServerTlsFiles {
            cert: self.tls_cert_file,
            key: self.tls_key_file,
            client_ca: self.client_ca_file,
        };
        tls.server_config().map_err(|e| {
            bad(
                "--tls-cert-file/--tls-key-file/--client-ca-file",
                format!("cannot serve TLS with these files: {e}"),
            )
        })?;
        Ok(Config {
            listen_addr: self.listen_addr,
            metrics_addr: self.metrics_addr,
            tls,
            tls_reload_interval: self.tls_reload_interval,
            kubeconfig: self.kubeconfig,
            peers: PeerPolicy {
                max_peers: self.max_peers,
                router_port: self.router_port,
            },
            max_connections_per_ip: self.max_connections_per_ip,
            tls_handshake_timeout: self.tls_handshake_timeout,
            shutdown_grace: self.shutdown_grace,
            log_level: self.log_level,
            log_format: self.log_format,
        })
    }
}

/// Flag values every spegel binary parses the same way.
pub use spegel_serve::{parse_addr, parse_duration};

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_environment_twin() {
        for arg in Cli::command().get_arguments() {
            if arg
                .get_long()
                .is_some_and(|l| l != "help" && l != "version")
            {
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert!(
                    env.as_deref()
                        .is_some_and(|e| e.starts_with("SPEGEL_BOOTSTRAPPER_")),
                    "--{:?} has env {env:?}",
                    arg.get_long()
                );
            }
        }
    }

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec![
            "spegel-bootstrapper",
            "--tls-cert-file=/nonexistent/tls.crt",
            "--tls-key-file=/nonexistent/tls.key",
            "--client-ca-file=/nonexistent/ca.crt",
        ];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases = [
            (vec!["--max-peers=0"], "--max-peers"),
            (vec!["--max-peers=1000"], "--max-peers"),
            (vec!["--router-port=0"], "--router-port"),
            (
                vec!["--max-connections-per-ip=0"],
                "--max-connections-per-ip",
            ),
            (
                vec!["--tls-handshake-timeout=0s"],
                "--tls-handshake-timeout",
            ),
            (vec!["--tls-reload-interval=10ms"], "--tls-reload-interval"),
            (vec!["--metrics-addr=:8443"], "--metrics-addr"),
            (vec!["--kubeconfig=/nonexistent/kubeconfig"], "--kubeconfig"),
            (vec![], "--tls-cert-file"),
        ];
        for (args, flag) in cases {
            let error = cli(&args).validate().unwrap_err();
            assert!(error.is_bad_config());
            assert!(error.to_string().starts_with(flag), "{args:?}: {error}");
        }
    }
}
