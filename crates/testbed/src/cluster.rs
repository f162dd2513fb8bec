//! A cluster on one machine: an upstream registry and N nodes, each in its own network
//! namespace with its own containerd and `spegel-node`, as on real Kubernetes nodes.
//!
//! Host 0 runs the upstream (`10.231.0.2:5000`); node `i` (1-based) runs on host `i`
//! (`10.231.0.<i+2>`) with its registry on `:5000` and its router on `:5001`. Each node's
//! containerd is configured the way `spegel-node configuration` configures a real one:
//! the upstream's `certs.d/<host>/hosts.toml` lists the node's own spegel-node first and
//! falls back to the upstream. Dropping the cluster stops every process, then deletes the
//! namespaces.
//!
//! [`Cluster::start_with`] can leave spegel-node out: nodes then pull straight from the
//! upstream, or through one pull-through cache on host `N+1` (see [`MirrorMode`]).

mod mirror;

use anyhow::{Context, Result};

use crate::{Containerd, Host, ImageSpec, Network, SpegelNode, TestImage, Upstream};

pub use mirror::{ClusterOptions, MirrorMode};

/// The secret file's name in the cluster's secret directory.
const SECRET_FILE: &str = "cluster-secret";

/// One node: its namespace, containerd and spegel-node.
pub struct ClusterNode {
    /// Declared first: dropped (killed) before containerd.
    pub spegel: Option<SpegelNode>,
    pub containerd: Containerd,
    pub host: Host,
    /// The zone the node is placed in ([`ClusterOptions::zones`]), if any.
    pub zone: Option<String>,
    /// Whether its spegel-node is told the zone (`--zone`) or runs zone-blind.
    tell_zone: bool,
}

impl ClusterNode {
    /// `http://<ip>:5000`, this node's registry.
    pub fn registry_url(&self) -> String {
        format!("http://{}:5000", self.host.ip)
    }

    /// The router address other nodes bootstrap from.
    pub fn router_addr(&self) -> String {
        format!("{}:5001", self.host.ip)
    }

    /// The running spegel-node.
    pub fn spegel(&self) -> Result<&SpegelNode> {
        self.spegel
            .as_ref()
            .context("this node's spegel-node is not running")
    }

    /// `GET <path>` on this node's registry, from inside its namespace.
    pub async fn get(&self, path: &str) -> Result<crate::http::Response> {
        let url = format!("{}{path}", self.registry_url());
        crate::http::request_in(Some(&self.host), crate::http::Method::GET, &url, &[]).await
    }

    /// Waits until this node resolves each of `digests` to at least `count` providers (its
    /// `/_spegel/providers` view of the DHT); false when `timeout` passed first.
    pub async fn until_providers(
        &self,
        digests: &[String],
        count: usize,
        timeout: std::time::Duration,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        for digest in digests {
            let path = format!("/_spegel/providers/{digest}?limit={count}");
            loop {
                let found = self.get_json(&path).await?;
                if found.as_array().is_some_and(|p| p.len() >= count) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(true)
    }

    /// Waits (up to 30 s) until this node resolves every blob of `image` to a provider. The
    /// watcher advertises an image blob by blob: one layer being findable says nothing about
    /// the config, so a test asserting a pull never goes upstream waits for all of them.
    pub async fn until_image_resolvable(&self, image: &TestImage) -> Result<()> {
        let digests: Vec<String> = image.all_blobs().into_iter().map(|b| b.digest).collect();
        let found = self
            .until_providers(&digests, 1, std::time::Duration::from_secs(30))
            .await?;
        anyhow::ensure!(
            found,
            "{} never found every blob of the image",
            self.host.ip
        );
        Ok(())
    }

    /// `GET <path>` parsed as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let response = self.get(path).await?;
        serde_json::from_slice(&response.body)
            .with_context(|| format!("{path} is not JSON: {}", response.text()))
    }
}

/// The upstream and the nodes. Fields drop in order: nodes, cache, upstream, the network,
/// then the secret.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    /// The pull-through cache ([`MirrorMode::PullThroughCache`] only), on the host after
    /// the last node.
    pub cache: Option<Upstream>,
    pub upstream: Upstream,
    pub network: Network,
    layouts: Vec<tempfile::TempDir>,
    /// Holds the cluster's secret file, passed to every spegel-node (see [`Cluster::secret_path`]).
    secret: tempfile::TempDir,
}

impl Cluster {
    /// Starts an upstream and `count` nodes. Every node but the first bootstraps from the
    /// first; `node_args` are passed to every spegel-node.
    pub async fn start(count: usize, node_args: &[&str]) -> Result<Cluster> {
        let mut options = ClusterOptions::new(count, MirrorMode::Spegel);
        options.node_args = node_args.iter().map(|&arg| arg.to_owned()).collect();
        Self::start_with(&options).await
    }

    /// Starts an upstream, a pull-through cache if `options.mirror` asks for one, and
    /// `options.nodes` nodes whose containerd asks that mirror first. spegel-node runs
    /// only with [`MirrorMode::Spegel`], as in [`Cluster::start`].
    pub async fn start_with(options: &ClusterOptions) -> Result<Cluster> {
        crate::require_root_tools()?;
        let count = options.nodes;
        let with_cache = options.mirror == MirrorMode::PullThroughCache;
        let network = Network::create(count + 1 + usize::from(with_cache)).await?;
        let upstream = Upstream::start_in(Some(network.host(0))).await?;
        let secret = tempfile::Builder::new()
            .prefix("spegel-cluster-secret-")
            .tempdir()?;
        spegel_secret::ClusterSecret::generate()?.write_new(&secret.path().join(SECRET_FILE))?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            cache: None,
            upstream,
            network,
            layouts: Vec::new(),
            secret,
        };
        if with_cache {
            let host = cluster.network.host(count + 1);
            let cache = Upstream::start_proxy_in(Some(host), &cluster.upstream.url()).await?;
            cluster.cache = Some(cache);
        }
        let cache_host = cluster.cache.as_ref().map(Upstream::host);
        let node_args: Vec<&str> = options.node_args.iter().map(String::as_str).collect();
        for i in 1..=count {
            let host = cluster.network.host(i).clone();
            let containerd = Containerd::start_in_with(Some(&host), options.snapshotter).await?;
            let upstream_host = cluster.upstream.host();
            let hosts_toml = mirror::hosts_toml(
                options.mirror,
                &upstream_host,
                host.ip,
                cache_host.as_deref(),
            );
            containerd.write_hosts_toml(&upstream_host, &hosts_toml)?;
            cluster.nodes.push(ClusterNode {
                spegel: None,
                containerd,
                host,
                zone: options.zones.get(i - 1).cloned(),
                tell_zone: options.tell_zones,
            });
        }
        if let Some(mbit) = options.cross_zone_mbit {
            cluster.shape_between_zones(mbit).await?;
        }
        if options.mirror == MirrorMode::Spegel {
            for i in 0..count {
                cluster.start_spegel(i, &node_args).await?;
            }
        }
        Ok(cluster)
    }

    /// Shapes every node's traffic towards the nodes of other zones to `mbit` Mbit/s (see
    /// [`Host::shape_towards`]); [`Cluster::cross_zone_bytes`] counts it.
    async fn shape_between_zones(&self, mbit: u32) -> Result<()> {
        for node in &self.nodes {
            let others: Vec<_> = self
                .nodes
                .iter()
                .filter(|other| other.zone != node.zone)
                .map(|other| other.host.ip)
                .collect();
            node.host.shape_towards(&others, mbit).await?;
        }
        Ok(())
    }

    /// Bytes every node sent to nodes of other zones so far (needs
    /// [`ClusterOptions::cross_zone_mbit`]).
    pub async fn cross_zone_bytes(&self) -> Result<u64> {
        let mut sum = 0;
        for node in &self.nodes {
            sum += node.host.shaped_bytes().await?;
        }
        Ok(sum)
    }

    /// The cluster's secret file, generated for this cluster and given to every spegel-node
    /// (unless its args name `--cluster-secret-file` or `--insecure-open-dht`).
    pub fn secret_path(&self) -> std::path::PathBuf {
        self.secret.path().join(SECRET_FILE)
    }

    /// (Re)starts node `index`'s spegel-node (0-based), bootstrapping from node 0.
    pub async fn start_spegel(&mut self, index: usize, node_args: &[&str]) -> Result<()> {
        let seed = self.nodes[0].router_addr();
        let secret = self.secret_path().to_string_lossy().into_owned();
        let node = &mut self.nodes[index];
        node.spegel = None;
        let mut args: Vec<&str> = Vec::new();
        if index > 0 {
            args.extend(["--bootstrap-peers", seed.as_str()]);
        }
        let membership_given = node_args.iter().any(|a| {
            a.starts_with("--cluster-secret-file") || a.starts_with("--insecure-open-dht")
        });
        if !membership_given {
            args.extend(["--cluster-secret-file", secret.as_str()]);
        }
        if let (Some(zone), true) = (&node.zone, node.tell_zone) {
            args.extend(["--zone", zone.as_str()]);
        }
        args.extend(node_args);
        node.spegel = Some(SpegelNode::start_in(&node.host, &node.containerd, &args).await?);
        Ok(())
    }

    /// Builds an image and pushes it to the upstream as `<repo>:<tag>`.
    pub async fn push(&mut self, spec: &ImageSpec, repo: &str, tag: &str) -> Result<TestImage> {
        let layout = tempfile::tempdir()?;
        let image = crate::build_oci_layout(layout.path(), spec, tag)?;
        // skopeo runs in the upstream's namespace to reach it.
        let upstream_host = self.upstream.host();
        crate::image::push_in(&image, Some(self.network.host(0)), &upstream_host, repo).await?;
        self.layouts.push(layout);
        Ok(image)
    }

    /// The full image name of `<repo>:<tag>` on the upstream.
    pub fn image_name(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.upstream.host())
    }

    /// Waits until every node's routing table has a peer.
    pub async fn wait_until_joined(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let status = node.get_json("/_spegel/status").await?;
                if status["routing_table_peers"].as_u64().unwrap_or(0) > 0 {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "node {} never joined the DHT: {status}",
                    node.host.ip
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}
