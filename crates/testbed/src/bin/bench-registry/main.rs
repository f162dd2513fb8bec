//! `bench-registry`: how fast `spegel-node` serves one blob compared with nginx, and how
//! much memory it holds while serving many at once. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release -p spegel-node -p spegel-testbed && target/release/bench-registry
//! ```
//!
//! One run, over loopback, as root (containerd):
//!
//! 1. A testbed containerd; a random blob (`--blob-mib`, 1 GiB) and a smaller one
//!    (`--stream-blob-mib`) ingested with `ctr content ingest`.
//! 2. `spegel-node registry` over that containerd, and Debian's nginx (`sendfile on`)
//!    whose root is the content directory, so both serve the very same file.
//! 3. One warm-up GET of the blob from each, hashed, to check both send the same bytes.
//! 4. `--rounds` rounds of one GET of the whole blob from each server, alternating which
//!    goes first, read by the same in-process hyper client that counts and drops bytes.
//! 5. `--stream-runs` batches of `--streams` concurrent GETs of the smaller blob from
//!    spegel-node, each followed by the same batch against nginx, while spegel-node's
//!    `VmRSS` is sampled; then its `VmHWM`.
//! 6. `--proxied-rounds` GETs of the smaller blob from the node and through a second node
//!    that streams it from the first (see `proxied.rs`).

mod blob;
mod load;
mod nginx;
mod proxied;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use spegel_testbed::{Containerd, SpegelNode};

use crate::blob::StoredBlob;
use crate::load::RssSampler;
use crate::nginx::Nginx;

/// The throughput goal: spegel-node's single-blob throughput over nginx's.
const RATIO_GOAL: f64 = 0.9;

/// The memory goal: spegel-node's peak RSS under `--streams` streams, in bytes (60 MB).
const RSS_GOAL_BYTES: u64 = 60_000_000;

/// The largest blob the flags accept, in MiB (64 GiB).
const MAX_BLOB_MIB: u64 = 64 * 1024;

/// Measures spegel-node's blob serving against nginx over loopback.
#[derive(Debug, Parser)]
#[command(name = "bench-registry")]
struct Args {
    /// Size of the blob fetched whole, one GET at a time, in MiB.
    #[arg(long, env = "BENCH_BLOB_MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=MAX_BLOB_MIB))]
    blob_mib: u64,
    /// Rounds of one GET from each server.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Concurrent GETs in the memory run.
    #[arg(long, env = "BENCH_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    streams: u32,
    /// Batches of concurrent GETs per server (the table gives the median and min–max).
    #[arg(long, env = "BENCH_STREAM_RUNS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    stream_runs: u32,
    /// Size of the blob each concurrent GET fetches, in MiB.
    #[arg(long, env = "BENCH_STREAM_BLOB_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=MAX_BLOB_MIB))]
    stream_blob_mib: u64,
    /// Rounds of one GET of the smaller blob direct from the node and through a second
    /// node (one peer hop); 0 skips this part.
    #[arg(long, env = "BENCH_PROXIED_ROUNDS", default_value_t = 5)]
    proxied_rounds: u32,
    /// How often spegel-node's VmRSS is sampled, in milliseconds.
    #[arg(long, env = "BENCH_RSS_INTERVAL_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    rss_interval_ms: u64,
}

/// Which of the two servers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spegel,
    Nginx,
}

/// One of the two servers under test.
#[derive(Debug, Clone)]
struct Server {
    kind: Kind,
    addr: SocketAddr,
    /// Every process serving (nginx: master and workers), for CPU accounting.
    pids: Vec<u32>,
}

impl Server {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Spegel => "spegel-node",
            Kind::Nginx => "nginx",
        }
    }
}

/// One measured GET (or one batch of concurrent GETs).
#[derive(Debug, Clone, Copy)]
struct Measured {
    bytes: u64,
    elapsed: Duration,
    /// CPU time the server spent meanwhile, in seconds.
    server_cpu: f64,
}

impl Measured {
    fn mb_per_s(&self) -> f64 {
        load::mb_per_s(self.bytes, self.elapsed)
    }

    /// Server CPU seconds per GiB sent.
    fn cpu_per_gib(&self) -> f64 {
        self.server_cpu / (self.bytes as f64 / f64::from(1u32 << 30))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: bench-registry was built without --release; its client is slow");
    }
    // Ctrl-C drops the benchmark future, which stops nginx, spegel-node and containerd
    // and removes their directories.
    tokio::select! {
        result = run(&args) => result,
        interrupted = tokio::signal::ctrl_c() => {
            interrupted.context("waiting for Ctrl-C")?;
            bail!("interrupted")
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let binary = spegel_testbed::spegel_node_binary()
        .context("bench-registry runs the release build of spegel-node: cargo build --release -p spegel-node -p spegel-testbed")?;
    print_machine().await;
    println!("spegel-node binary: {}", binary.display());

    let containerd = Containerd::start().await?;
    let started = Instant::now();
    let blob = blob::ingest_random(&containerd, "bench-blob", args.blob_mib << 20).await?;
    let stream_blob =
        blob::ingest_random(&containerd, "bench-stream-blob", args.stream_blob_mib << 20).await?;
    println!(
        "ingested {} ({} MiB) and {} ({} MiB) in {:.1?}",
        blob.digest,
        args.blob_mib,
        stream_blob.digest,
        args.stream_blob_mib,
        started.elapsed()
    );

    let router = spegel_testbed::port::free_loopback_addr()?.to_string();
    let node = SpegelNode::start_binary(&binary, &containerd, &["--router-addr", &router]).await?;
    let pid = node.pid().context("spegel-node has no pid")?;
    let nginx = Nginx::start(&containerd.content_path()).await?;
    let spegel = Server {
        kind: Kind::Spegel,
        addr: node.addr(),
        pids: vec![pid],
    };
    let reference = Server {
        kind: Kind::Nginx,
        addr: nginx.addr(),
        pids: nginx.pids(),
    };

    for server in [&spegel, &reference] {
        let fetched = load::get(server.addr, &path(server, &blob), blob.size, true).await?;
        if fetched.digest.as_deref() != Some(blob.digest.as_str()) {
            bail!(
                "{} sent a body with digest {:?}",
                server.name(),
                fetched.digest
            );
        }
    }
    println!(
        "warm-up: both servers sent {} bytes with digest {}",
        blob.size, blob.digest
    );

    single_blob(args, &blob, &spegel, &reference).await?;
    concurrent_streams(args, &stream_blob, &spegel, &reference).await?;
    drop(nginx);
    if args.proxied_rounds > 0 {
        let holder = proxied::Holder {
            containerd: &containerd,
            router: &router,
            server: &spegel,
        };
        proxied::run(&binary, &holder, &stream_blob, args.proxied_rounds).await?;
    }
    drop(node);
    Ok(())
}

/// `--rounds` GETs of the whole blob from each server, alternating who goes first.
async fn single_blob(
    args: &Args,
    blob: &StoredBlob,
    spegel: &Server,
    nginx: &Server,
) -> Result<()> {
    let mut spegel_runs = Vec::new();
    let mut nginx_runs = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [spegel, nginx]
        } else {
            [nginx, spegel]
        };
        for server in order {
            let cpu_before = load::cpu_seconds(&server.pids)?;
            let fetched = load::get(server.addr, &path(server, blob), blob.size, false).await?;
            let measured = Measured {
                bytes: fetched.bytes,
                elapsed: fetched.elapsed,
                server_cpu: load::cpu_seconds(&server.pids)? - cpu_before,
            };
            match server.kind {
                Kind::Spegel => spegel_runs.push(measured),
                Kind::Nginx => nginx_runs.push(measured),
            }
        }
    }
    println!();
    println!(
        "## One {} MiB blob, one GET at a time, {} rounds (MB/s = 10^6 B/s)",
        args.blob_mib, args.rounds
    );
    println!(
        "| server | best MB/s | median MB/s | server CPU s/GiB (median) | runs MB/s | CPU s/GiB min–max |"
    );
    println!("|---|---|---|---|---|---|");
    for (server, runs) in [(spegel, &spegel_runs), (nginx, &nginx_runs)] {
        let throughput = median_and_best(runs.iter().map(Measured::mb_per_s));
        let cpu = median_and_best(runs.iter().map(Measured::cpu_per_gib));
        let each: Vec<String> = runs
            .iter()
            .map(|run| format!("{:.0}", run.mb_per_s()))
            .collect();
        let (_, cpu_min, cpu_max) = spread(runs.iter().map(Measured::cpu_per_gib));
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {} | {cpu_min:.2}–{cpu_max:.2} |",
            server.name(),
            throughput.best,
            throughput.median,
            cpu.median,
            each.join(", ")
        );
    }
    let paired = median_and_best(
        spegel_runs
            .iter()
            .zip(&nginx_runs)
            .map(|(spegel, nginx)| spegel.mb_per_s() / nginx.mb_per_s()),
    );
    let spegel = median_and_best(spegel_runs.iter().map(Measured::mb_per_s));
    let nginx = median_and_best(nginx_runs.iter().map(Measured::mb_per_s));
    println!(
        "ratio spegel-node/nginx: median of per-round ratios {:.2}; of medians {:.2}; of bests {:.2} (goal >= {RATIO_GOAL}: {})",
        paired.median,
        spegel.median / nginx.median,
        spegel.best / nginx.best,
        verdict(paired.median >= RATIO_GOAL)
    );
    Ok(())
}

/// `--stream-runs` batches of `--streams` concurrent GETs from spegel-node and from nginx,
/// alternating, while spegel-node's RSS is sampled.
async fn concurrent_streams(
    args: &Args,
    blob: &StoredBlob,
    spegel: &Server,
    nginx: &Server,
) -> Result<()> {
    let pid = spegel
        .pids
        .first()
        .copied()
        .context("spegel-node has no pid")?;
    let idle = load::status_bytes(pid, "VmRSS")?;
    let sampler = RssSampler::start(pid, Duration::from_millis(args.rss_interval_ms));
    // Batches alternate between the servers, so drifts in machine load hit both alike (the
    // RSS sampled during nginx's batches is spegel-node's idle RSS).
    let (mut spegel_runs, mut nginx_runs) = (Vec::new(), Vec::new());
    let mut result = Ok(());
    for _ in 0..args.stream_runs {
        match streams(args, blob, spegel).await {
            Ok(measured) => spegel_runs.push(measured),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        match streams(args, blob, nginx).await {
            Ok(measured) => nginx_runs.push(measured),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let samples = sampler.finish().await?;
    result?;
    let hwm = load::status_bytes(pid, "VmHWM")?;
    println!();
    println!(
        "## {} concurrent GETs of a {} MiB blob, {} runs (median; min–max)",
        args.streams, args.stream_blob_mib, args.stream_runs
    );
    println!(
        "| server | aggregate MB/s | wall time | server CPU s/GiB | aggregate MB/s min–max | CPU s/GiB min–max |"
    );
    println!("|---|---|---|---|---|---|");
    for (server, runs) in [(spegel, &spegel_runs), (nginx, &nginx_runs)] {
        let throughput = spread(runs.iter().map(Measured::mb_per_s));
        let cpu = spread(runs.iter().map(Measured::cpu_per_gib));
        let wall = spread(runs.iter().map(|run| run.elapsed.as_secs_f64()));
        println!(
            "| {} | {:.0} | {:.1}s | {:.2} | {:.0}–{:.0} | {:.2}–{:.2} |",
            server.name(),
            throughput.0,
            wall.0,
            cpu.0,
            throughput.1,
            throughput.2,
            cpu.1,
            cpu.2
        );
    }
    println!(
        "spegel-node VmRSS: idle before {}; peak sampled every {} ms ({} samples, over all batches) {}; VmHWM over the process's life {}",
        megabytes(idle),
        args.rss_interval_ms,
        samples.count,
        megabytes(samples.peak),
        megabytes(hwm)
    );
    println!(
        "goal: peak RSS <= {}: {}",
        megabytes(RSS_GOAL_BYTES),
        verdict(samples.peak.max(hwm) <= RSS_GOAL_BYTES)
    );
    Ok(())
}

/// Median, min and max of a set of figures.
fn spread(figures: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = figures.collect();
    sorted.sort_by(f64::total_cmp);
    let median = median_and_best(sorted.iter().copied()).median;
    let min = sorted.first().copied().unwrap_or(0.0);
    let max = sorted.last().copied().unwrap_or(0.0);
    (median, min, max)
}

/// Runs `--streams` GETs of `blob` from `server` at once.
async fn streams(args: &Args, blob: &StoredBlob, server: &Server) -> Result<Measured> {
    let cpu_before = load::cpu_seconds(&server.pids)?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.streams {
        let path = path(server, blob);
        let (addr, size) = (server.addr, blob.size);
        tasks.spawn(async move { load::get(addr, &path, size, false).await });
    }
    let mut bytes = 0;
    while let Some(joined) = tasks.join_next().await {
        bytes += joined.context("a GET task panicked")??.bytes;
    }
    Ok(Measured {
        bytes,
        elapsed: start.elapsed(),
        server_cpu: load::cpu_seconds(&server.pids)? - cpu_before,
    })
}

/// The URL path of `blob` on `server`: the registry API, or the file under nginx's root.
fn path(server: &Server, blob: &StoredBlob) -> String {
    if server.kind == Kind::Nginx {
        format!("/blobs/sha256/{}", blob.hex())
    } else {
        format!("/v2/bench/blobs/{}", blob.digest)
    }
}

/// The median and the largest of a set of figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    best: f64,
    median: f64,
}

fn median_and_best(figures: impl Iterator<Item = f64>) -> Summary {
    let mut sorted: Vec<f64> = figures.collect();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Summary {
        best: sorted.last().copied().unwrap_or(0.0),
        median,
    }
}

fn megabytes(bytes: u64) -> String {
    format!(
        "{:.1} MB ({:.1} MiB)",
        bytes as f64 / 1e6,
        bytes as f64 / f64::from(1u32 << 20)
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Prints what the figures were measured on.
async fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    let date = tokio::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%MZ"])
        .output()
        .await
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("machine: {cores} cores, {cpu}, Linux {kernel}, {date}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        for (runs, best, median) in [
            (vec![3.0], 3.0, 3.0),
            (vec![5.0, 1.0, 3.0], 5.0, 3.0),
            (vec![4.0, 1.0, 2.0, 3.0], 4.0, 2.5),
        ] {
            let summary = median_and_best(runs.iter().copied());
            assert_eq!((summary.best, summary.median), (best, median), "{runs:?}");
        }
    }

    #[test]
    fn each_server_gets_its_own_path_to_the_same_file() {
        let blob = StoredBlob {
            digest: "sha256:ab12".to_owned(),
            size: 1,
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let nginx = Server {
            kind: Kind::Nginx,
            addr,
            pids: Vec::new(),
        };
        let spegel = Server {
            kind: Kind::Spegel,
            addr,
            pids: Vec::new(),
        };

        assert_eq!(path(&nginx, &blob), "/blobs/sha256/ab12");
        assert_eq!(path(&spegel, &blob), "/v2/bench/blobs/sha256:ab12");
    }
}
