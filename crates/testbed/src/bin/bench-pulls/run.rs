//! One run of one mode on N nodes: a fresh cluster, the same images pushed, the links
//! shaped, then every workload pulled through CRI, as kubelet pulls: on every node, or on
//! the first node alone for the lone-node image.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::future::join_all;
use spegel_testbed::{Cluster, ClusterOptions, SpegelNode};

use crate::cpu::{CpuClock, CpuUse};
use crate::{Args, Mode, Phase, Workload};

/// The repository every benchmark image is pushed to.
const REPO: &str = "bench/pulls";

/// Pause after each phase, so transfers still running (a cache filling its storage)
/// finish before the next phase starts. Not counted in any figure.
const SETTLE: Duration = Duration::from_secs(2);

/// How long a rolling batch waits for the previous batch's advertisements (spegel only).
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which cluster to build and measure.
pub struct Config<'a> {
    /// Nodes in the cluster.
    pub nodes: u16,
    /// 1-based number of this run of the configuration.
    pub run: u16,
    pub mode: Mode,
    pub args: &'a Args,
}

/// What one workload measured in one run of one mode on one cluster size.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Nodes in the cluster (the lone-node pull uses one of them).
    pub nodes: u16,
    /// 1-based number of the run.
    pub run: u16,
    pub mode: Mode,
    /// Index into the workloads.
    pub workload: usize,
    /// Per node that pulled, in node order: from the start of its batch until its pull
    /// returned.
    pub pulls: Vec<Duration>,
    /// Until every node had the image: create, launch to last pull done; rolling, the sum
    /// of the batches' times (the pauses between batches are not counted).
    pub wall: Duration,
    /// Time spent between rolling batches waiting for advertisements (spegel only).
    pub waited: Duration,
    /// Bytes of blob GETs of this image the upstream's access log records.
    pub upstream_bytes: u64,
    /// The highest `VmHWM` of any spegel-node during the phase (spegel only).
    pub peak_rss: Option<u64>,
    /// CPU the phase used (the cluster's processes, and the machine as a whole).
    pub cpu: CpuUse,
}

/// Whether `mode` measures `workload`: the lone-node pull compares direct and spegel only.
fn measures(mode: Mode, workload: &Workload) -> bool {
    workload.phase != Phase::Lone || matches!(mode, Mode::Direct | Mode::Spegel)
}

/// Runs every workload of `config.mode` on a cluster of its own, which is torn down on
/// return.
pub async fn run_mode(config: &Config<'_>, workloads: &[Workload]) -> Result<Vec<Measurement>> {
    let Config {
        nodes, mode, args, ..
    } = *config;
    let mut options = ClusterOptions::new(usize::from(nodes), mode.mirror());
    options.node_args = vec!["--log-level".to_owned(), "warn".to_owned()];
    options.snapshotter = args.snapshotter.snapshotter();
    let cluster = Cluster::start_with(&options)
        .await
        .with_context(|| format!("starting the cluster for mode {}", mode.name()))?;
    let upstream_host = cluster.upstream.host();
    for workload in workloads {
        spegel_testbed::image::push_in(
            &workload.image,
            Some(cluster.network.host(0)),
            &upstream_host,
            REPO,
        )
        .await
        .with_context(|| format!("pushing {}", workload.tag))?;
    }
    let pushed = cluster.upstream.requests().await?.len();
    if mode == Mode::Spegel {
        cluster.wait_until_joined().await?;
    }
    shape(&cluster, args).await?;

    let mut measurements = Vec::new();
    for (index, workload) in workloads.iter().enumerate() {
        if !measures(mode, workload) {
            continue;
        }
        let measurement = match workload.phase {
            Phase::Create => create(&cluster, config, index, workload).await?,
            Phase::Rolling => rolling(&cluster, config, index, workload).await?,
            Phase::Lone => lone(&cluster, config, index, workload).await?,
        };
        println!(
            "  {:<16} {:<7} all pulls done in {:>6.2} s (slowest node {:.2} s)",
            workload.tag,
            mode.name(),
            measurement.wall.as_secs_f64(),
            measurement
                .pulls
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
        );
        measurements.push(measurement);
        tokio::time::sleep(SETTLE).await;
    }

    let requests = cluster.upstream.requests().await?;
    let served = requests.get(pushed..).unwrap_or_default();
    for measurement in &mut measurements {
        let blobs = workloads[measurement.workload].image.all_blobs();
        measurement.upstream_bytes = served
            .iter()
            .filter(|r| r.is_blob_get())
            .filter(|r| blobs.iter().any(|b| requested_digest(&r.path) == b.digest))
            .map(|r| r.bytes)
            .sum();
    }
    Ok(measurements)
}

/// Limits the upstream's link, and the nodes' and the cache's when asked.
async fn shape(cluster: &Cluster, args: &Args) -> Result<()> {
    if args.upstream_mbit > 0 {
        cluster.network.host(0).shape(args.upstream_mbit).await?;
    }
    if args.node_mbit > 0 {
        for host in cluster.network.hosts().iter().skip(1) {
            host.shape(args.node_mbit).await?;
        }
    }
    Ok(())
}

/// Every node pulls at once.
async fn create(
    cluster: &Cluster,
    config: &Config<'_>,
    index: usize,
    workload: &Workload,
) -> Result<Measurement> {
    let nodes: Vec<usize> = (0..cluster.nodes.len()).collect();
    at_once(cluster, config, &nodes, index, workload).await
}

/// The first node pulls alone while the others idle.
async fn lone(
    cluster: &Cluster,
    config: &Config<'_>,
    index: usize,
    workload: &Workload,
) -> Result<Measurement> {
    at_once(cluster, config, &[0], index, workload).await
}

/// The nodes `members` pull at once.
async fn at_once(
    cluster: &Cluster,
    config: &Config<'_>,
    members: &[usize],
    index: usize,
    workload: &Workload,
) -> Result<Measurement> {
    let name = cluster.image_name(REPO, &workload.tag);
    reset_peak_rss(cluster);
    let timeout = pull_timeout(config, workload);
    let clock = CpuClock::start(containerd_pids(cluster), spegel_pids(cluster).collect());
    let (done, wall) = pull_batch(cluster, members, &name, timeout).await?;
    let cpu = clock.stop();
    Ok(Measurement {
        nodes: config.nodes,
        run: config.run,
        mode: config.mode,
        workload: index,
        pulls: done.into_iter().map(|(_, took)| took).collect(),
        wall,
        waited: Duration::ZERO,
        upstream_bytes: 0,
        peak_rss: peak_rss(cluster),
        cpu,
    })
}

/// Batches of `--batch-percent` of the nodes pull one after another. With spegel, each
/// batch first waits (bounded) until the previous batches' content is advertised, as a
/// rolling update's next node would find it minutes later.
async fn rolling(
    cluster: &Cluster,
    config: &Config<'_>,
    index: usize,
    workload: &Workload,
) -> Result<Measurement> {
    let Config { mode, args, .. } = *config;
    let name = cluster.image_name(REPO, &workload.tag);
    let nodes: Vec<usize> = (0..cluster.nodes.len()).collect();
    let timeout = pull_timeout(config, workload);
    let mut pulls = vec![Duration::ZERO; nodes.len()];
    let mut wall = Duration::ZERO;
    let mut waited = Duration::ZERO;
    let mut cpu = CpuUse::default();
    reset_peak_rss(cluster);
    for (batch, members) in nodes.chunks(args.batch_size(config.nodes)).enumerate() {
        if batch > 0 && mode == Mode::Spegel {
            waited += wait_until_advertised(cluster, members[0], workload).await?;
        }
        let clock = CpuClock::start(containerd_pids(cluster), spegel_pids(cluster).collect());
        let (done, took) = pull_batch(cluster, members, &name, timeout).await?;
        cpu.add(&clock.stop(), took, wall);
        wall += took;
        for (node, took) in done {
            pulls[node] = took;
        }
    }
    Ok(Measurement {
        nodes: config.nodes,
        run: config.run,
        mode,
        workload: index,
        pulls,
        wall,
        waited,
        upstream_bytes: 0,
        peak_rss: peak_rss(cluster),
        cpu,
    })
}

/// Pulls `name` on the nodes `members` at once; returns each node's time and the batch's.
async fn pull_batch(
    cluster: &Cluster,
    members: &[usize],
    name: &str,
    timeout: Duration,
) -> Result<(Vec<(usize, Duration)>, Duration)> {
    let start = Instant::now();
    let pulls = members.iter().map(|&node| async move {
        cluster.nodes[node]
            .containerd
            .cri_pull_within(name, timeout)
            .await
            .with_context(|| format!("node {} pulling {name}", node + 1))?;
        Ok::<_, anyhow::Error>((node, start.elapsed()))
    });
    let done = join_all(pulls)
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok((done, start.elapsed()))
}

/// A generous bound for one pull: every node's copy through the upstream link, four
/// times over, plus a minute.
fn pull_timeout(config: &Config<'_>, workload: &Workload) -> Duration {
    let bytes_per_second = match config.args.upstream_mbit {
        0 => 100e6,
        mbit => f64::from(mbit) * 1e6 / 8.0,
    };
    let all_nodes = f64::from(config.nodes) * workload.bytes as f64;
    Duration::from_secs_f64(60.0 + 4.0 * all_nodes / bytes_per_second)
}

/// Waits until node `node` resolves every blob of the workload's image to a provider;
/// returns how long that took. Gives up quietly after [`ADVERTISE_TIMEOUT`]: the pull
/// then shows what a node finds without the advertisement.
async fn wait_until_advertised(
    cluster: &Cluster,
    node: usize,
    workload: &Workload,
) -> Result<Duration> {
    let start = Instant::now();
    for blob in workload.image.all_blobs() {
        let path = format!("/_spegel/providers/{}?limit=1", blob.digest);
        loop {
            let providers = cluster.nodes[node].get_json(&path).await?;
            if providers.as_array().is_some_and(|p| !p.is_empty()) {
                break;
            }
            if start.elapsed() > ADVERTISE_TIMEOUT {
                eprintln!(
                    "  warning: node {} found no provider for {} within {ADVERTISE_TIMEOUT:?}",
                    node + 1,
                    blob.digest
                );
                return Ok(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(start.elapsed())
}

/// The digest a `/v2/<name>/blobs/<digest>` request asked for.
fn requested_digest(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

/// The spegel-node processes' ids (none outside spegel mode).
fn spegel_pids(cluster: &Cluster) -> impl Iterator<Item = u32> + '_ {
    cluster
        .nodes
        .iter()
        .filter_map(|node| node.spegel.as_ref().and_then(SpegelNode::pid))
}

/// The nodes' containerd processes.
fn containerd_pids(cluster: &Cluster) -> Vec<u32> {
    let pids = cluster
        .nodes
        .iter()
        .filter_map(|node| node.containerd.pid());
    pids.collect()
}

/// Resets every spegel-node's peak RSS (`VmHWM`) to its current RSS (`clear_refs` 5), so
/// each phase reports its own peak.
fn reset_peak_rss(cluster: &Cluster) {
    for pid in spegel_pids(cluster) {
        let path = format!("/proc/{pid}/clear_refs");
        if let Err(error) = std::fs::write(&path, "5") {
            eprintln!(
                "  warning: cannot reset the peak RSS ({path}: {error}); it counts from the start"
            );
        }
    }
}

/// The highest `VmHWM` of the spegel-nodes, in bytes.
fn peak_rss(cluster: &Cluster) -> Option<u64> {
    spegel_pids(cluster)
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| vm_hwm(&status))
        .max()
}

/// `VmHWM` from the text of `/proc/<pid>/status`, in bytes.
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status =
            "Name:\tspegel-node\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm(status), Some(12345 * 1024));
        assert_eq!(vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn the_digest_is_the_last_path_segment() {
        assert_eq!(
            requested_digest("/v2/bench/pulls/blobs/sha256:ab?ns=x"),
            "sha256:ab"
        );
        assert_eq!(requested_digest("/v2/a/blobs/sha256:cd"), "sha256:cd");
    }
}
