//! The results as a Markdown page (machine, command, set-up, table) and as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::process::Command;

use crate::run::Measurement;
use crate::{Args, Mode, Workload};

/// What the figures were measured on.
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory: String,
    pub containerd: String,
    pub registry: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages when the run started and ended: the
    /// machine may be shared.
    pub load: String,
    /// The command line, with any `BENCH_PULLS_*` variables in front.
    pub command: String,
}

impl Machine {
    /// Reads `/proc`, asks `date` and the tools for their versions; `load_at_start` is
    /// [`load_average`] from the start of the run.
    pub async fn describe(load_at_start: &str) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let memory = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches(" kB")
            .parse::<f64>()
            .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|_| "unknown".to_owned());
        let env: Vec<String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("BENCH_PULLS_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let argv: Vec<String> = std::env::args().collect();
        Machine {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).await,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: field(&read("/proc/cpuinfo"), "model name"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory,
            load: format!(
                "{load_at_start} at the start, {} at the end",
                load_average()
            ),
            containerd: output("containerd", &["--version"]).await,
            registry: output("docker-registry", &["--version"]).await,
            command: env.into_iter().chain(argv).collect::<Vec<_>>().join(" "),
        }
    }
}

/// The 1, 5 and 15 minute load averages, e.g. `0.52 0.80 1.10`.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line `program args` prints, or `unknown`.
async fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().await;
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `200 Mbit/s`, or `unshaped` for 0.
pub fn rate(mbit: u32) -> String {
    match mbit {
        0 => "unshaped".to_owned(),
        mbit => format!("{mbit} Mbit/s"),
    }
}

/// The `p`-th percentile (0 < p ≤ 1) by nearest rank: the smallest value with at least
/// `p` of the values at or below it.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// Seconds for one copy of the image through the upstream's link, if it is shaped.
pub fn physical_limit(args: &Args, workload: &Workload) -> Option<f64> {
    (args.upstream_mbit > 0)
        .then(|| workload.bytes as f64 * 8.0 / (f64::from(args.upstream_mbit) * 1e6))
}

/// The direct-mode measurement of the same workload, if direct was run.
pub fn direct(measurements: &[Measurement], workload: usize) -> Option<&Measurement> {
    measurements
        .iter()
        .find(|m| m.mode == Mode::Direct && m.workload == workload)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mb(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1e6)
}

fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(base) if base > 0.0 => format!("{:.2}×", value / base),
        _ => "–".to_owned(),
    }
}

/// The whole page: machine, command, set-up and the results table.
pub fn markdown(
    args: &Args,
    machine: &Machine,
    workloads: &[Workload],
    measurements: &[Measurement],
) -> String {
    let mut page = String::new();
    let nodes = args.nodes;
    let _ = writeln!(
        page,
        "# Cold pulls on {nodes} nodes: direct, pull-through cache, spegel-node\n\n\
         Generated by `bench-pulls` (`crates/testbed/src/bin/bench-pulls/`) on {date}; raw \
         figures in `pulls.json`, plot in `pulls.svg`. Reproduce from the repository root, as \
         root:\n\n```sh\ncargo build --release -p spegel-node -p spegel-testbed\n{command}\n```\n",
        date = machine.date,
        command = machine.command,
    );
    let _ = writeln!(
        page,
        "| machine | |\n|---|---|\n| CPUs (nproc) | {} |\n| CPU | {} |\n| kernel | {} |\n\
         | memory | {} |\n| load average (1, 5, 15 min) | {} |\n| containerd | {} |\n\
         | docker-registry | {} |\n",
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        machine.memory,
        machine.load,
        machine.containerd,
        machine.registry
    );
    let _ = writeln!(
        page,
        "## Set-up\n\n\
         - One machine; every node, the upstream and the cache is a network namespace on one \
         bridge. Upstream link {up} (`tc tbf` on both ends of its veth, so all nodes share it); \
         node links {node}; the cache's link {node} (same as a node).\n\
         - **direct**: containerd's `hosts.toml` lists only the upstream; no spegel-node runs.\n\
         - **cache**: one `docker-registry` in proxy mode (`proxy.remoteurl` = the upstream), \
         listed first in every node's `hosts.toml`, the upstream as fallback; no spegel-node \
         runs. This is what Gardener's registry-cache does.\n\
         - **spegel**: spegel-node on every node, listed first, the upstream as fallback.\n\
         - Every mode gets a fresh cluster (nothing cached), the same images and the same \
         shaping. Images are random bytes in uncompressed tar layers, built locally; each \
         size × layers × phase is a different image, so every phase starts cold.\n\
         - **create**: every node pulls at once (CRI `PullImage`). **rolling**: batches of \
         {pct}% of the nodes ({batch} at a time) pull one after another; with spegel each batch \
         first waits until it can resolve the image's blobs in the DHT (not counted).\n\
         - *pull*: one node's CRI pull, from the start of its batch (percentiles by nearest \
         rank). *all nodes*: create, until the last pull returned; rolling, the sum of the \
         batches' times. *upstream served*: bytes of blob GETs of this image in the upstream's \
         access log. *limit*: one copy of the image through the upstream link. *RSS*: the \
         highest `VmHWM` of any spegel-node during the phase (reset before it).\n",
        up = rate(args.upstream_mbit),
        node = rate(args.node_mbit),
        pct = args.batch_percent,
        batch = args.batch_size(),
    );
    page.push_str("## Results\n\n");
    page.push_str(
        "| image | limit | phase | mode | pull p50 | pull p90 | pull max | all nodes | vs direct | upstream served | × image | vs direct | spegel-node RSS |\n\
         |---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (index, workload) in workloads.iter().enumerate() {
        let limit =
            physical_limit(args, workload).map_or("–".to_owned(), |s| format!("{s:.2} s"));
        for m in measurements.iter().filter(|m| m.workload == index) {
            let base = direct(measurements, index);
            let rss = m
                .peak_rss
                .map_or("–".to_owned(), |b| format!("{} MB", mb(b)));
            let _ = writeln!(
                page,
                "| {} MB × {} | {limit} | {} | {} | {} s | {} s | {} s | {} s | {} | {} MB | {:.2} | {} | {rss} |",
                workload.size_mb,
                workload.layers,
                workload.phase.name(),
                m.mode.name(),
                secs(percentile(&m.pulls, 0.5)),
                secs(percentile(&m.pulls, 0.9)),
                secs(percentile(&m.pulls, 1.0)),
                secs(m.wall),
                ratio(m.wall.as_secs_f64(), base.map(|b| b.wall.as_secs_f64())),
                mb(m.upstream_bytes),
                m.upstream_bytes as f64 / workload.bytes as f64,
                ratio(
                    m.upstream_bytes as f64,
                    base.map(|b| b.upstream_bytes as f64)
                ),
            );
        }
    }
    page
}

/// Every figure, for scripts and the smoke test.
pub fn json(
    args: &Args,
    machine: &Machine,
    workloads: &[Workload],
    measurements: &[Measurement],
) -> Result<String> {
    let rows: Vec<_> = measurements
        .iter()
        .map(|m| {
            let w = &workloads[m.workload];
            json!({
                "mode": m.mode.name(),
                "phase": w.phase.name(),
                "tag": w.tag,
                "size_mb": w.size_mb,
                "layers": w.layers,
                "image_bytes": w.bytes,
                "pull_seconds": m.pulls.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "all_nodes_seconds": m.wall.as_secs_f64(),
                "advertisement_wait_seconds": m.waited.as_secs_f64(),
                "upstream_blob_bytes": m.upstream_bytes,
                "peak_spegel_rss_bytes": m.peak_rss,
                "limit_seconds": physical_limit(args, w),
            })
        })
        .collect();
    let doc = json!({
        "date": machine.date,
        "command": machine.command,
        "machine": {
            "cpus": machine.cpus,
            "cpu_model": machine.cpu_model,
            "kernel": machine.kernel,
            "memory": machine.memory,
            "load_average": machine.load,
            "containerd": machine.containerd,
            "docker_registry": machine.registry,
        },
        "nodes": args.nodes,
        "upstream_mbit": args.upstream_mbit,
        "node_mbit": args.node_mbit,
        "batch_size": args.batch_size(),
        "results": rows,
    });
    serde_json::to_string_pretty(&doc).context("serializing the results")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let five = ms(&[50, 10, 40, 20, 30]);
        assert_eq!(percentile(&five, 0.5), Duration::from_millis(30));
        assert_eq!(percentile(&five, 0.9), Duration::from_millis(50));
        assert_eq!(percentile(&five, 1.0), Duration::from_millis(50));
        assert_eq!(percentile(&ms(&[7]), 0.5), Duration::from_millis(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn a_ratio_without_a_base_is_a_dash() {
        assert_eq!(ratio(2.0, Some(4.0)), "0.50×");
        assert_eq!(ratio(2.0, None), "–");
        assert_eq!(ratio(2.0, Some(0.0)), "–");
    }
}
