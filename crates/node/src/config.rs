//! Command line and environment: every flag has a `SPEGEL_…` environment twin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spegel_registry::Zone;

mod host;
mod membership;

pub use host::{CleanupArgs, ConfigurationArgs, HostArgs};
pub use membership::{GenerateSecretArgs, MembershipArgs};

/// Peer-to-peer OCI registry mirror serving containerd's content store.
#[derive(Debug, Parser)]
#[command(name = "spegel-node", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start; its size does not matter
pub enum Command {
    /// Serve containerd's content as a read-only OCI registry (the daemon).
    Registry(RegistryArgs),
    /// Write containerd's mirror configuration (hosts.toml files) pointing at spegel, then exit.
    Configuration(ConfigurationArgs),
    /// Put containerd's mirror configuration back as it was before `configuration`, then exit.
    Cleanup(CleanupArgs),
    /// Write a new cluster secret (a libp2p pre-shared key) for --cluster-secret-file, then exit.
    GenerateSecret(GenerateSecretArgs),
}

/// Logging flags, shared by every subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Minimum level to log (error, warn, info, debug, trace), or a tracing filter such as
    /// `info,spegel_registry=debug`.
    #[arg(long, env = "SPEGEL_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(long, env = "SPEGEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/log shippers).
    Json,
}

/// Flags of `spegel-node registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Address the registry listens on; `:PORT` means every IPv4 address.
    #[arg(long, env = "SPEGEL_REGISTRY_ADDR", default_value = ":5000", value_parser = parse_addr)]
    pub registry_addr: SocketAddr,
    /// containerd's gRPC socket.
    #[arg(
        long,
        env = "SPEGEL_CONTAINERD_SOCK",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_sock: PathBuf,
    /// containerd namespace whose images are served (kubelet uses k8s.io).
    #[arg(long, env = "SPEGEL_CONTAINERD_NAMESPACE", default_value = "k8s.io")]
    pub containerd_namespace: String,
    /// containerd's content directory; blobs are read from it directly when readable, else
    /// streamed over containerd's API.
    #[arg(
        long,
        env = "SPEGEL_CONTAINERD_CONTENT_PATH",
        default_value = "/var/lib/containerd/io.containerd.content.v1.content"
    )]
    pub containerd_content_path: PathBuf,
    /// How long open requests may finish after SIGTERM/SIGINT (e.g. 10s, 500ms, 1m).
    #[arg(long, env = "SPEGEL_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Most connections from other hosts served at once; past it (or past
    /// --max-connections-per-ip) a client gets 503 at once. Loopback clients (the node's own
    /// containerd) count only against --max-connections-per-ip.
    #[arg(long, env = "SPEGEL_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most connections one client IP may hold at once.
    #[arg(long, env = "SPEGEL_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,
    #[command(flatten)]
    pub p2p: P2pArgs,
    #[command(flatten)]
    pub membership: MembershipArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Where bootstrap peers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootstrapKind {
    /// The peers in --bootstrap-peers (none: this node waits to be found).
    Static,
    /// Every address --bootstrap-dns-name resolves to.
    Dns,
    /// Ask the spegel-bootstrapper at --http-bootstrap-url over mTLS.
    Http,
}

/// Peer-to-peer flags: the DHT, bootstrap, advertising and mirroring.
#[derive(Debug, Args)]
pub struct P2pArgs {
    /// Address the libp2p router listens on; `:PORT` means every IPv4 address.
    #[arg(long, env = "SPEGEL_ROUTER_ADDR", default_value = ":5001", value_parser = parse_addr)]
    pub router_addr: SocketAddr,
    /// Directory for state that should survive restarts (the node's identity key). Without
    /// it the peer ID changes on every start.
    #[arg(long, env = "SPEGEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where bootstrap peers come from.
    #[arg(long, env = "SPEGEL_BOOTSTRAP_KIND", value_enum, default_value_t = BootstrapKind::Static)]
    pub bootstrap_kind: BootstrapKind,
    /// Static bootstrap peers, comma-separated: IP:PORT, IP (router port assumed), or
    /// multiaddrs such as /ip4/10.0.0.1/tcp/5001[/p2p/<peer id>].
    #[arg(long, env = "SPEGEL_BOOTSTRAP_PEERS", value_delimiter = ',')]
    pub bootstrap_peers: Vec<String>,
    /// DNS name (HOST or HOST:PORT) whose addresses are the bootstrap peers.
    #[arg(long, env = "SPEGEL_BOOTSTRAP_DNS_NAME")]
    pub bootstrap_dns_name: Option<String>,
    /// The spegel-bootstrapper endpoint for --bootstrap-kind http, e.g.
    /// https://bootstrapper.example:8443/bootstrap-nodes (or /v1/bootstrap-peers).
    #[arg(long, env = "SPEGEL_HTTP_BOOTSTRAP_URL")]
    pub http_bootstrap_url: Option<String>,
    /// Directory with ca.crt, tls.crt and tls.key for mTLS to the bootstrapper (re-read on
    /// every request, so rotated certificates are picked up).
    #[arg(
        long,
        env = "SPEGEL_HTTP_BOOTSTRAP_CERT_DIR",
        default_value = "/etc/spegel/bootstrap"
    )]
    pub http_bootstrap_cert_dir: PathBuf,
    /// Registries to mirror, comma-separated (e.g. https://docker.io,ghcr.io); empty: all.
    #[arg(long, env = "SPEGEL_MIRRORED_REGISTRIES", value_delimiter = ',')]
    pub mirrored_registries: Vec<String>,
    /// Regular expressions, comma-separated: images whose name matches one are neither
    /// advertised nor mirrored.
    #[arg(long, env = "SPEGEL_REGISTRY_FILTERS", value_delimiter = ',')]
    pub registry_filters: Vec<String>,
    /// How long a request waits for the first peer holding the content before answering 404
    /// (so containerd falls back to the upstream registry).
    #[arg(long, env = "SPEGEL_MIRROR_RESOLVE_TIMEOUT", default_value = "20ms", value_parser = parse_duration)]
    pub mirror_resolve_timeout: Duration,
    /// How many peers one request may try.
    #[arg(long, env = "SPEGEL_MIRROR_RESOLVE_RETRIES", default_value_t = 3)]
    pub mirror_resolve_retries: usize,
    /// How often containerd's content is listed again to advertise new and withdraw gone
    /// content (containerd 1.6 deletes blobs without events).
    #[arg(long, env = "SPEGEL_RECONCILE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// How long other nodes keep this node's provider records.
    #[arg(long, env = "SPEGEL_PROVIDER_TTL", default_value = "20m", value_parser = parse_duration)]
    pub provider_ttl: Duration,
    /// How often provider records are announced again (each key 3/4 to 1 interval after
    /// its last announcement, so they stay spread); must be shorter than --provider-ttl.
    #[arg(long, env = "SPEGEL_PROVIDER_REPUBLISH_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub provider_republish_interval: Duration,
    /// This node's zone (a Kubernetes label value, e.g. `eu-west-1a`): peers in the same zone
    /// are asked first and other zones only when none of them answers. Without it the node
    /// takes the zone the bootstrapper tells (`--bootstrap-kind http`: the
    /// `topology.kubernetes.io/zone` label of its Node), else it has none and ranks peers by
    /// load alone.
    #[arg(long, env = "SPEGEL_ZONE", value_parser = parse_zone)]
    pub zone: Option<Zone>,
    /// Cold pulls: when several nodes miss a blob nobody holds at the same moment, elect one
    /// to fetch it upstream and let the others stream its download as it grows
    /// (`--single-flight=false` sends every node upstream, as Spegel does).
    #[arg(long, env = "SPEGEL_SINGLE_FLIGHT", default_value_t = true, action = clap::ArgAction::Set)]
    pub single_flight: bool,
    /// How long a node that misses a blob waits for the claims of other nodes that missed it
    /// at the same moment, before they elect who fetches it (a node pulling alone pays this
    /// once per blob).
    #[arg(long, env = "SPEGEL_INFLIGHT_CLAIM_WINDOW", default_value = "200ms", value_parser = parse_duration)]
    pub inflight_claim_window: Duration,
    /// The longest a request is held waiting for another node's download to start; then the
    /// node fetches the blob itself.
    #[arg(long, env = "SPEGEL_INFLIGHT_HOLD", default_value = "5s", value_parser = parse_duration)]
    pub inflight_hold: Duration,
    /// A download in progress served to a peer that gains no byte for this long is given up:
    /// the response is cut so the peer continues elsewhere.
    #[arg(long, env = "SPEGEL_INFLIGHT_STALL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub inflight_stall_timeout: Duration,
}

/// Flag values every spegel binary parses the same way.
pub use spegel_serve::{parse_addr, parse_duration};

/// `--zone`: a Kubernetes label value.
fn parse_zone(value: &str) -> Result<Zone, String> {
    Zone::parse(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
