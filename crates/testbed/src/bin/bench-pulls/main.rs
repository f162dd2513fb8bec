//! `bench-pulls`: N nodes pull the same image cold, all at once ("create") and one batch
//! after another ("rolling"), in three set-ups side by side: straight from the upstream,
//! through one central pull-through cache, and through spegel-node on every node; and one
//! node pulling alone. Every figure is measured `--runs` times for each `--nodes` count.
//! Prints figures and writes them; asserts nothing.
//!
//! ```text
//! cargo build --release -p spegel-node -p spegel-testbed && target/release/bench-pulls
//! target/release/bench-pulls --nodes 3,5,10 --layers 1,4,12   # issue 9's figures
//! ```
//!
//! What it does, as root, on network namespaces (see `spegel_testbed::Cluster`):
//!
//! 1. Every image is built once, locally, from random (incompressible) bytes: each size
//!    × layer count × phase gets its own image, so every phase starts cold; with `--lone`
//!    one more image for the lone-node pull.
//! 2. For each node count, each run and each mode a fresh cluster (upstream, nodes, the
//!    cache if any): the same images are pushed, then the upstream's link is limited with
//!    `tc tbf`.
//! 3. Each phase pulls its image through CRI on every node; per-node times, the time until
//!    all nodes have it, and the blob bytes the upstream's access log says it served. The
//!    lone-node image is pulled by the first node only (direct and spegel modes).
//! 4. Medians with min–max over the runs in a Markdown page (`pulls.md`), every run in
//!    `pulls.json` and a plot (`pulls.svg`), written to `--out`.

mod cpu;
mod json;
mod machine;
mod plot;
mod report;
mod run;
mod summary;

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use clap::{ArgAction, Parser, ValueEnum};
use spegel_testbed::containerd::Snapshotter;
use spegel_testbed::{ImageSpec, MirrorMode, TestImage};

/// Compares cold image pulls on N nodes: direct, via a pull-through cache, via spegel-node.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench-pulls")]
pub struct Args {
    /// Nodes in each cluster, comma-separated: every configuration is measured for each.
    #[arg(long, env = "BENCH_PULLS_NODES", value_delimiter = ',', default_values_t = [5], value_parser = clap::value_parser!(u16).range(1..=100))]
    nodes: Vec<u16>,
    /// Runs of every configuration, each on fresh clusters; reports show the median and
    /// the range.
    #[arg(long, env = "BENCH_PULLS_RUNS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    runs: u16,
    /// Also measure one node pulling the 100 MB image (or the largest size, with the most
    /// layers) alone, in direct and spegel mode, once per run: `--lone false` to skip.
    #[arg(long, env = "BENCH_PULLS_LONE", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    lone: bool,
    /// The upstream registry's link rate in Mbit/s (`tc tbf`); 0 leaves it unshaped.
    #[arg(long, env = "BENCH_PULLS_UPSTREAM_MBIT", default_value_t = 200)]
    upstream_mbit: u32,
    /// Each node's (and the cache's) link rate in Mbit/s; 0 leaves them unshaped.
    #[arg(long, env = "BENCH_PULLS_NODE_MBIT", default_value_t = 0)]
    node_mbit: u32,
    /// Image sizes in MB (10^6 bytes), comma-separated.
    #[arg(long, env = "BENCH_PULLS_SIZES", value_delimiter = ',', default_values_t = [10, 100], value_parser = clap::value_parser!(u64).range(1..))]
    sizes: Vec<u64>,
    /// Also pull a 1000 MB image (slow: minutes per mode).
    #[arg(long, env = "BENCH_PULLS_WITH_1G")]
    with_1g: bool,
    /// Layer counts, comma-separated; an image's bytes are split evenly over its layers.
    #[arg(long, env = "BENCH_PULLS_LAYERS", value_delimiter = ',', default_values_t = [1, 4], value_parser = clap::value_parser!(u16).range(1..=64))]
    layers: Vec<u16>,
    /// Modes, comma-separated, run in this order.
    #[arg(long, env = "BENCH_PULLS_MODES", value_enum, value_delimiter = ',', default_values_t = [Mode::Direct, Mode::Cache, Mode::Spegel])]
    modes: Vec<Mode>,
    /// Phases, comma-separated.
    #[arg(long, env = "BENCH_PULLS_PHASES", value_enum, value_delimiter = ',', default_values_t = [Phase::Create, Phase::Rolling])]
    phases: Vec<Phase>,
    /// Rolling phase: each batch is this percentage of the nodes (at least one node).
    #[arg(long, env = "BENCH_PULLS_BATCH_PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=100))]
    batch_percent: u8,
    /// Where each node's containerd unpacks images: overlayfs, as Kubernetes nodes do, or
    /// native (each layer a full copy of its parent: unpacking, not the network, then
    /// dominates many-layer images on a small machine).
    #[arg(long, env = "BENCH_PULLS_SNAPSHOTTER", value_enum, default_value_t = SnapshotterArg::Overlayfs)]
    snapshotter: SnapshotterArg,
    /// Directory for pulls.md, pulls.json and pulls.svg.
    #[arg(long, env = "BENCH_PULLS_OUT", default_value = "docs/benchmarks")]
    out: PathBuf,
}

impl Args {
    /// Nodes per rolling batch in a cluster of `nodes`.
    fn batch_size(&self, nodes: u16) -> usize {
        (usize::from(nodes) * usize::from(self.batch_percent))
            .div_ceil(100)
            .max(1)
    }
}

/// `--snapshotter`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotterArg {
    Native,
    Overlayfs,
}

impl SnapshotterArg {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        self.snapshotter().name()
    }

    fn snapshotter(self) -> Snapshotter {
        match self {
            Self::Native => Snapshotter::Native,
            Self::Overlayfs => Snapshotter::Overlayfs,
        }
    }
}

/// What the nodes' containerd asks before the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Nothing: every node pulls from the upstream.
    Direct,
    /// One `docker-registry` in proxy mode on its own host.
    Cache,
    /// spegel-node on every node.
    Spegel,
}

impl Mode {
    fn mirror(self) -> MirrorMode {
        match self {
            Mode::Direct => MirrorMode::Direct,
            Mode::Cache => MirrorMode::PullThroughCache,
            Mode::Spegel => MirrorMode::Spegel,
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Cache => "cache",
            Mode::Spegel => "spegel",
        }
    }
}

/// How the nodes' pulls are spread in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Every node pulls at once; none has the image.
    Create,
    /// Batches of `--batch-percent` of the nodes, one after another.
    Rolling,
    /// The first node pulls alone, the others idle (`--lone`, not a `--phases` value).
    #[value(skip)]
    Lone,
}

impl Phase {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Rolling => "rolling",
            Phase::Lone => "lone",
        }
    }
}

/// One image pulled in one phase.
pub struct Workload {
    pub size_mb: u64,
    pub layers: u16,
    pub phase: Phase,
    /// The tag, unique per workload: `<size>mb-<layers>l-<phase>`.
    pub tag: String,
    pub image: TestImage,
    /// Bytes of every blob a pull fetches (manifest, config, layers).
    pub bytes: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // On Ctrl-C the run is dropped: clusters (processes, namespaces) and images go with it.
    tokio::select! {
        result = run(args) => result,
        signal = tokio::signal::ctrl_c() => {
            signal.context("listening for Ctrl-C")?;
            bail!("interrupted; the clusters and images were removed")
        }
    }
}

/// Builds the images, runs every node count, run and mode, and writes the report.
async fn run(args: Args) -> Result<()> {
    let mut sizes = args.sizes.clone();
    if args.with_1g && !sizes.contains(&1000) {
        sizes.push(1000);
    }
    ensure!(!args.nodes.is_empty(), "--nodes names no node count");
    ensure!(!args.sizes.is_empty(), "--sizes names no size");
    ensure!(!args.layers.is_empty(), "--layers names no layer count");
    ensure!(!args.modes.is_empty(), "--modes names no mode");
    ensure!(!args.phases.is_empty(), "--phases names no phase");
    spegel_testbed::require_root_tools()?;
    // Before anything is written: the report files themselves would make the tree dirty.
    let start = machine::Start::record(&args.out).await;
    // Check early that spegel-node is built rather than after the first modes ran.
    if args.modes.contains(&Mode::Spegel) {
        spegel_testbed::spegel_node_binary()?;
    }

    let layouts = tempfile::Builder::new()
        .prefix("bench-pulls-")
        .tempdir()
        .context("creating a directory for the images")?;
    let mut workloads = Vec::new();
    for &size_mb in &sizes {
        for &layers in &args.layers {
            for &phase in &args.phases {
                workloads.push(build(layouts.path(), size_mb, layers, phase)?);
            }
        }
    }
    if args.lone {
        let size_mb = if sizes.contains(&100) {
            100
        } else {
            sizes.iter().copied().max().unwrap_or(100)
        };
        let layers = args.layers.iter().copied().max().unwrap_or(1);
        workloads.push(build(layouts.path(), size_mb, layers, Phase::Lone)?);
    }
    let total: u64 = workloads.iter().map(|w| w.bytes).sum();
    println!(
        "Built {} images ({:.0} MB); nodes {:?}, {} runs, upstream {}, nodes {}, modes {:?}",
        workloads.len(),
        total as f64 / 1e6,
        args.nodes,
        args.runs,
        report::rate(args.upstream_mbit),
        report::rate(args.node_mbit),
        args.modes.iter().map(|m| m.name()).collect::<Vec<_>>()
    );

    let mut measurements = Vec::new();
    for &nodes in &args.nodes {
        for run in 1..=args.runs {
            for &mode in &args.modes {
                println!(
                    "== {nodes} nodes, run {run} of {}, mode {}",
                    args.runs,
                    mode.name()
                );
                let config = run::Config {
                    nodes,
                    run,
                    mode,
                    args: &args,
                };
                measurements.extend(run::run_mode(&config, &workloads).await?);
            }
        }
    }

    let machine = machine::Machine::describe(start).await;
    let cells = summary::cells(&args, &workloads, &measurements);
    let markdown = report::markdown(&args, &machine, &workloads, &cells);
    println!("\n{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, contents: String| {
        let path = args.out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    write("pulls.md", markdown)?;
    write(
        "pulls.json",
        json::json(&args, &machine, &workloads, &measurements, &cells)?,
    )?;
    write("pulls.svg", plot::svg(&args, &workloads, &cells))?;
    println!(
        "Wrote pulls.md, pulls.json and pulls.svg to {}",
        args.out.display()
    );
    Ok(())
}

/// Builds the image for one workload in its own layout under `dir`.
fn build(dir: &std::path::Path, size_mb: u64, layers: u16, phase: Phase) -> Result<Workload> {
    let tag = format!("{size_mb}mb-{layers}l-{}", phase.name());
    let layer_bytes = usize::try_from(size_mb * 1_000_000 / u64::from(layers))
        .context("layer size does not fit in memory sizes")?;
    let spec = ImageSpec {
        layers: vec![layer_bytes; usize::from(layers)],
        multi_platform: false,
    };
    let image = spegel_testbed::build_oci_layout(&dir.join(&tag), &spec, &tag)?;
    let bytes = image.all_blobs().iter().map(|b| b.size).sum();
    Ok(Workload {
        size_mb,
        layers,
        phase,
        tag,
        image,
        bytes,
    })
}
