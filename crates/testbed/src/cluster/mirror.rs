//! What a cluster node's containerd asks before the upstream: its own spegel-node (as
//! `spegel-node configuration` sets up a real node), nothing, or one central pull-through
//! cache shared by every node (as Gardener's registry-cache does). The benchmarks compare
//! the three on otherwise identical clusters.

use std::net::Ipv4Addr;

use crate::containerd::Snapshotter;

/// Which mirror, if any, a node's `hosts.toml` lists before the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorMode {
    /// Each node runs spegel-node on `<node ip>:5000`, listed first.
    Spegel,
    /// No mirror and no spegel-node: containerd pulls straight from the upstream.
    Direct,
    /// No spegel-node; one `docker-registry` in proxy mode (`proxy.remoteurl` = the
    /// upstream) on a host of its own, listed first by every node.
    PullThroughCache,
}

/// How to start a [`Cluster`](super::Cluster).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Nodes (each a namespace with a containerd).
    pub nodes: usize,
    /// What containerd asks first.
    pub mirror: MirrorMode,
    /// Arguments passed to every spegel-node ([`MirrorMode::Spegel`] only).
    pub node_args: Vec<String>,
    /// Where each node's containerd unpacks images.
    pub snapshotter: Snapshotter,
    /// Node `i`'s zone is `zones[i]` (nodes past the list have none).
    pub zones: Vec<String>,
    /// Tell each spegel-node its zone (`--zone`); false runs the nodes zone-blind in the
    /// same places.
    pub tell_zones: bool,
    /// Shape each node's traffic to the nodes of other zones to this many Mbit/s (and count
    /// it: `Cluster::cross_zone_bytes`).
    pub cross_zone_mbit: Option<u32>,
}

impl ClusterOptions {
    /// `nodes` nodes with `mirror`, no extra spegel-node arguments.
    pub fn new(nodes: usize, mirror: MirrorMode) -> Self {
        Self {
            nodes,
            mirror,
            node_args: Vec::new(),
            snapshotter: Snapshotter::default(),
            zones: Vec::new(),
            tell_zones: true,
            cross_zone_mbit: None,
        }
    }
}

/// The `hosts.toml` for the upstream `upstream_host` on the node at `node_ip`; `cache_host`
/// is the pull-through cache's `ip:port` (needed for [`MirrorMode::PullThroughCache`]).
pub(super) fn hosts_toml(
    mode: MirrorMode,
    upstream_host: &str,
    node_ip: Ipv4Addr,
    cache_host: Option<&str>,
) -> String {
    let first = match (mode, cache_host) {
        (MirrorMode::Spegel, _) => format!("{node_ip}:5000"),
        (MirrorMode::PullThroughCache, Some(cache)) => cache.to_owned(),
        // containerd ignores a hosts.toml holding only `server`: list the upstream itself.
        (MirrorMode::Direct | MirrorMode::PullThroughCache, _) => upstream_host.to_owned(),
    };
    format!(
        "server = \"http://{upstream_host}\"\n\n[host.\"http://{first}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 3);

    #[test]
    fn spegel_lists_the_nodes_own_registry_first() {
        assert_eq!(
            hosts_toml(MirrorMode::Spegel, "10.231.0.2:5000", NODE, None),
            "server = \"http://10.231.0.2:5000\"\n\n[host.\"http://10.231.0.3:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
    }

    #[test]
    fn direct_lists_only_the_upstream() {
        let toml = hosts_toml(MirrorMode::Direct, "10.231.0.2:5000", NODE, None);
        assert!(toml.contains("[host.\"http://10.231.0.2:5000\"]"), "{toml}");
        assert!(!toml.contains("10.231.0.3"), "{toml}");
    }

    #[test]
    fn the_cache_is_listed_first_and_the_upstream_is_the_fallback() {
        let toml = hosts_toml(
            MirrorMode::PullThroughCache,
            "10.231.0.2:5000",
            NODE,
            Some("10.231.0.9:5000"),
        );
        assert!(
            toml.starts_with("server = \"http://10.231.0.2:5000\""),
            "{toml}"
        );
        assert!(toml.contains("[host.\"http://10.231.0.9:5000\"]"), "{toml}");
    }
}
