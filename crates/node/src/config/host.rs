//! Flags for the host integration: metrics export, the debug page, the containerd preflight check, and the
//! `configuration` / `cleanup` subcommands that edit containerd's registry hosts directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::{parse_addr, parse_duration};

/// containerd's registry hosts directory (its CRI `registry.config_path`).
const HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// Flags of `spegel-node registry` for metrics and the preflight check.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// Address of the Prometheus `/metrics` endpoint; `:PORT` means every IPv4 address.
    #[arg(long, env = "SPEGEL_METRICS_ADDR", default_value = ":9090", value_parser = parse_addr)]
    pub metrics_addr: SocketAddr,
    /// Serve the operator's debug page at /debug/ on --metrics-addr (this node, its peers,
    /// what it advertises and mirrored, and a measure tool); `--debug-page=false` turns it
    /// off.
    #[arg(long, env = "SPEGEL_DEBUG_PAGE", default_value_t = true, action = ArgAction::Set)]
    pub debug_page: bool,
    /// File node-exporter's textfile collector reads the metrics from; empty: none is written.
    #[arg(
        long,
        env = "SPEGEL_METRICS_TEXTFILE",
        default_value = "/var/lib/node-exporter/textfile-collector/spegel.prom"
    )]
    pub metrics_textfile: String,
    /// How often the metrics textfile is rewritten (e.g. 15s, 1m).
    #[arg(long, env = "SPEGEL_METRICS_TEXTFILE_INTERVAL", default_value = "15s", value_parser = parse_positive_duration)]
    pub metrics_textfile_interval: Duration,
    /// containerd's config file, checked at start: CRI must read mirror configuration from
    /// --containerd-registry-config-path and keep unpacked layers. A missing file is a warning.
    #[arg(
        long,
        env = "SPEGEL_CONTAINERD_CONFIG_PATH",
        default_value = "/etc/containerd/config.toml"
    )]
    pub containerd_config_path: PathBuf,
    /// containerd's registry hosts directory, where `spegel-node configuration` writes.
    #[arg(long, env = "SPEGEL_CONTAINERD_REGISTRY_CONFIG_PATH", default_value = HOSTS_DIR)]
    pub containerd_registry_config_path: PathBuf,
    /// Start even if containerd's config would keep spegel from working.
    #[arg(long, env = "SPEGEL_SKIP_PREFLIGHT")]
    pub skip_preflight: bool,
}

/// Flags of `spegel-node configuration`.
#[derive(Debug, Args)]
pub struct ConfigurationArgs {
    /// containerd's registry hosts directory (its CRI `registry.config_path`).
    #[arg(long, env = "SPEGEL_CONTAINERD_REGISTRY_CONFIG_PATH", default_value = HOSTS_DIR)]
    pub containerd_registry_config_path: PathBuf,
    /// Registries to mirror, comma-separated (e.g. docker.io,https://ghcr.io). Empty: every
    /// registry, through `_default` and each registry directory that already exists.
    #[arg(long, env = "SPEGEL_MIRRORED_REGISTRIES", value_delimiter = ',')]
    pub mirrored_registries: Vec<String>,
    /// Mirrors containerd asks first, in order, comma-separated.
    #[arg(
        long,
        env = "SPEGEL_MIRROR_TARGETS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:5000"
    )]
    pub mirror_targets: Vec<String>,
    /// Let containerd resolve tags through the mirrors (`resolve` capability); with false,
    /// only content by digest is pulled through them.
    #[arg(long, env = "SPEGEL_RESOLVE_TAGS", default_value_t = true, action = ArgAction::Set)]
    pub resolve_tags: bool,
}

/// Flags of `spegel-node cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// containerd's registry hosts directory (its CRI `registry.config_path`).
    #[arg(long, env = "SPEGEL_CONTAINERD_REGISTRY_CONFIG_PATH", default_value = HOSTS_DIR)]
    pub containerd_registry_config_path: PathBuf,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} is too short: use at least 1s")),
        d => Ok(d),
    }
}
