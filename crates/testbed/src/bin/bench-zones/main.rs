//! `bench-zones`: a rolling update over zones, zone-aware against zone-blind.
//!
//! Z zones × K nodes on one machine (network namespaces, one containerd and spegel-node
//! each), every node's traffic to the nodes of other zones shaped to `--cross-zone-mbit`
//! with `tc` (HTB) and counted there; the upstream's link shaped to `--upstream-mbit`. One
//! image is rolled out node by node, taking the zones in turn (a, b, c, a, b, …), each node
//! first waiting until it resolves the image's blobs to every node that pulled before it (a
//! rolling update's next node finds them minutes later; not counted). **zone-aware**: every
//! spegel-node is told its zone (`--zone`); **zone-blind**: the same placement and shaping,
//! no zones told (peers ranked by load alone, as Spegel does). Each run starts fresh
//! clusters; the modes take turns within a run.
//!
//! Prints, and writes to `<out>/zones.md` and `zones.json` (`zones-create.*` for
//! `--phase create`): per mode the bytes that crossed
//! zones (÷ the image), the upstream's blob bytes (÷ the image), and the rollout time (sum
//! of the pulls), each the median of the runs with min–max, and the ratio aware ÷ blind.

#[path = "../bench-pulls/machine.rs"]
mod machine;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::json;
use spegel_testbed::stats::Spread;
use spegel_testbed::{Cluster, ClusterOptions, ImageSpec, MirrorMode, TestImage};

#[derive(Parser, Debug)]
#[command(
    about = "Rolls one image out over zones with spegel-node, zone-aware and zone-blind, and prints the bytes that crossed zones and the time"
)]
struct Args {
    /// Zones.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Nodes per zone.
    #[arg(long, default_value_t = 3)]
    nodes_per_zone: usize,
    /// Image size in MB (10^6 bytes), split into `--layers` equal layers.
    #[arg(long, default_value_t = 64)]
    mb: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// What each node may send to the nodes of other zones, Mbit/s.
    #[arg(long, default_value_t = 100)]
    cross_zone_mbit: u32,
    /// The upstream registry's link, Mbit/s.
    #[arg(long, default_value_t = 200)]
    upstream_mbit: u32,
    /// Fresh clusters per mode.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// rolling: node by node; create: every node at once (a cold pull: the single flight
    /// elects one node to fetch each blob upstream; the others follow a download, in their
    /// zone when they know it).
    #[arg(long, value_enum, default_value_t = Phase::Rolling)]
    phase: Phase,
    /// An argument for every spegel-node (repeat it), e.g. `--node-arg=--inflight-claim-window=500ms`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Where zones.md and zones.json (zones-create.* for `--phase create`) go (not written
    /// when absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Rolling,
    Create,
}

/// A node waits this long at most for the previous nodes' advertisements.
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(30);

/// One rollout's figures.
struct Rollout {
    crossed: u64,
    upstream: u64,
    took: Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.zones >= 2 && args.nodes_per_zone >= 1,
        "need at least 2 zones of 1 node"
    );
    ensure!(
        args.layers >= 1 && args.mb >= args.layers,
        "need at least 1 MB per layer"
    );
    let start =
        machine::Start::record(args.out.as_deref().unwrap_or(std::path::Path::new("."))).await;
    let mut results: [Vec<Rollout>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=args.runs {
        for (mode, aware) in [true, false].into_iter().enumerate() {
            eprintln!("run {run}/{}: {}", args.runs, label(aware));
            let rollout = roll_out(&args, aware, run).await?;
            eprintln!(
                "  crossed zones {:.1} MB, upstream {:.1} MB, {:.2} s",
                rollout.crossed as f64 / 1e6,
                rollout.upstream as f64 / 1e6,
                rollout.took.as_secs_f64()
            );
            results[mode].push(rollout);
        }
    }
    let machine = machine::Machine::describe(start).await;
    let (report, figures) = report(&args, &results, &machine);
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        let stem = match args.phase {
            Phase::Rolling => "zones",
            Phase::Create => "zones-create",
        };
        std::fs::write(out.join(format!("{stem}.md")), &report)?;
        let json = serde_json::to_string_pretty(&figures)?;
        std::fs::write(out.join(format!("{stem}.json")), json)?;
    }
    Ok(())
}

fn label(aware: bool) -> &'static str {
    if aware { "zone-aware" } else { "zone-blind" }
}

/// The zone of the node at `index`: nodes take the zones in turn.
fn zone_of(index: usize, zones: usize) -> String {
    let letter = b'a' + u8::try_from(index % zones).unwrap_or(0);
    format!("zone-{}", char::from(letter))
}

/// One fresh cluster, the image rolled out node by node.
async fn roll_out(args: &Args, aware: bool, run: usize) -> Result<Rollout> {
    let nodes = args.zones * args.nodes_per_zone;
    let mut options = ClusterOptions::new(nodes, MirrorMode::Spegel);
    options.node_args = args.node_args.clone();
    options.zones = (0..nodes).map(|i| zone_of(i, args.zones)).collect();
    options.tell_zones = aware;
    options.cross_zone_mbit = Some(args.cross_zone_mbit);
    let mut cluster = Cluster::start_with(&options).await?;
    let layer = args.mb * 1_000_000 / args.layers;
    let spec = ImageSpec {
        layers: vec![layer; args.layers],
        multi_platform: false,
    };
    let tag = format!("r{run}");
    let image = cluster.push(&spec, "bench/zones", &tag).await?;
    let name = cluster.image_name("bench/zones", &tag);
    cluster.wait_until_joined().await?;
    cluster.network.host(0).shape(args.upstream_mbit).await?;
    let crossed_before = cluster.cross_zone_bytes().await?;
    let mut took = Duration::ZERO;
    if args.phase == Phase::Create {
        let started = Instant::now();
        let pulls = cluster.nodes.iter().enumerate().map(|(node, n)| {
            let name = &name;
            async move {
                n.containerd
                    .cri_pull_within(name, Duration::from_secs(300))
                    .await
                    .with_context(|| format!("node {node} pulling {name}"))
            }
        });
        futures_util::future::try_join_all(pulls).await?;
        took = started.elapsed();
    }
    let rolling = if args.phase == Phase::Rolling {
        nodes
    } else {
        0
    };
    for node in 0..rolling {
        wait_for_holders(&cluster, node, &image, node.min(8)).await?;
        let started = Instant::now();
        cluster.nodes[node]
            .containerd
            .cri_pull_within(&name, Duration::from_secs(300))
            .await
            .with_context(|| format!("node {node} pulling {name}"))?;
        took += started.elapsed();
        let crossed = cluster.cross_zone_bytes().await? - crossed_before;
        eprintln!(
            "  node {node} ({}) pulled in {:.2} s; crossed zones so far {:.1} MB",
            zone_of(node, args.zones),
            started.elapsed().as_secs_f64(),
            crossed as f64 / 1e6
        );
    }
    let crossed = cluster.cross_zone_bytes().await? - crossed_before;
    let upstream = cluster.upstream.blob_bytes(|_| true).await?;
    Ok(Rollout {
        crossed,
        upstream,
        took,
    })
}

/// Waits (bounded) until `node` resolves every blob of `image` to `holders` providers.
async fn wait_for_holders(
    cluster: &Cluster,
    node: usize,
    image: &TestImage,
    holders: usize,
) -> Result<()> {
    if holders == 0 {
        return Ok(());
    }
    let digests: Vec<String> = image.all_blobs().into_iter().map(|b| b.digest).collect();
    let held = cluster.nodes[node]
        .until_providers(&digests, holders, ADVERTISE_TIMEOUT)
        .await?;
    if !held {
        eprintln!("  warning: node {node} sees fewer than {holders} holders of the image's blobs");
    }
    Ok(())
}

/// One figure of a rollout.
type Pick<'a> = &'a dyn Fn(&Rollout) -> f64;

/// The markdown report and the JSON figures.
fn report(
    args: &Args,
    results: &[Vec<Rollout>; 2],
    machine: &machine::Machine,
) -> (String, serde_json::Value) {
    let image = (args.mb * 1_000_000 / args.layers * args.layers) as f64;
    let spread = |mode: usize, pick: Pick<'_>| {
        let values: Vec<f64> = results[mode].iter().map(pick).collect();
        Spread::of(&values)
    };
    let crossed = |r: &Rollout| r.crossed as f64 / image;
    let upstream = |r: &Rollout| r.upstream as f64 / image;
    let took = |r: &Rollout| r.took.as_secs_f64();
    let nodes = args.zones * args.nodes_per_zone;
    let mut md = format!(
        "# {} over {} zones × {} nodes: zone-aware vs zone-blind\n\n\
         Generated by `bench-zones` (`crates/testbed/src/bin/bench-zones/`) at commit `{}` on {}. \
         Each figure is the **median of {} runs** with the smallest and largest in brackets when they differ; \
         the ratio is of the medians. Reproduce from the repository root, as root:\n\n\
         ```sh\ncargo build --release -p spegel-node -p spegel-testbed\n{}\n```\n\n",
        match args.phase {
            Phase::Rolling => "Rolling update",
            Phase::Create => "Cold create (every node at once)",
        },
        args.zones,
        args.nodes_per_zone,
        machine.commit,
        machine.date,
        args.runs,
        machine.command
    );
    md += &machine.table();
    md += "\n";
    md += &format!(
        "Set-up: {nodes} nodes, node i in zone i mod {}; an image of {} MB in {} uncompressed layers; \
         each node's traffic to the nodes of other zones shaped to {} Mbit/s and counted by `tc` \
         (IP packets, so request and DHT traffic between zones count too); the upstream's link {} Mbit/s. \
         {} *crossed zones*: bytes sent between \
         zones during the rollout ÷ the image. *upstream*: blob bytes the upstream sent ÷ the image. \
         *rollout*: {}.\n\n",
        args.zones,
        args.mb,
        args.layers,
        args.cross_zone_mbit,
        args.upstream_mbit,
        match args.phase {
            Phase::Rolling =>
                "Nodes pull one after another (a, b, c, a, …), each after it resolves every blob to all nodes that pulled before it (at most 8; not counted).",
            Phase::Create =>
                "Every node pulls at the same moment (CRI `PullImage`), none holding the image.",
        },
        match args.phase {
            Phase::Rolling => "the sum of the pulls",
            Phase::Create => "until the last pull returned",
        }
    );
    md += "| figure | zone-aware | zone-blind | aware ÷ blind |\n|---|--:|--:|--:|\n";
    let mut json_rows = Vec::new();
    let rows: [(&str, Pick<'_>, usize); 3] = [
        ("crossed zones ÷ image", &crossed, 2),
        ("upstream ÷ image", &upstream, 2),
        ("rollout s", &took, 2),
    ];
    for (what, pick, decimals) in rows {
        let (aware, blind) = (spread(0, pick), spread(1, pick));
        let ratio = match (aware, blind) {
            (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}×", a.median / b.median),
            _ => "–".to_owned(),
        };
        let show = |s: Option<Spread>| s.map_or("–".to_owned(), |s| s.show(decimals));
        md += &format!("| {what} | {} | {} | {ratio} |\n", show(aware), show(blind));
        json_rows.push(json!({
            "figure": what,
            "aware": aware.map(|s| json!({"median": s.median, "min": s.min, "max": s.max})),
            "blind": blind.map(|s| json!({"median": s.median, "min": s.min, "max": s.max})),
        }));
    }
    let runs: Vec<_> = [true, false]
        .iter()
        .zip(results)
        .flat_map(|(aware, rollouts)| {
            rollouts.iter().map(move |r| {
                json!({"mode": label(*aware), "crossed_bytes": r.crossed, "upstream_bytes": r.upstream, "rollout_s": r.took.as_secs_f64()})
            })
        })
        .collect();
    let figures = json!({
        "phase": format!("{:?}", args.phase).to_lowercase(),
        "node_args": args.node_args,
        "commit": machine.commit,
        "date": machine.date,
        "zones": args.zones,
        "nodes_per_zone": args.nodes_per_zone,
        "image_bytes": image,
        "cross_zone_mbit": args.cross_zone_mbit,
        "upstream_mbit": args.upstream_mbit,
        "summary": json_rows,
        "runs": runs,
    });
    (md, figures)
}
