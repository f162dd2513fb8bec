//! `bench-start`: how long `spegel-node registry` takes from being started to `READY=1`
//! (sd_notify) and to handing its first keys to the DHT, over a containerd holding many
//! images. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release -p spegel-node -p spegel-testbed && target/release/bench-start
//! ```
//!
//! 1. A testbed containerd; `--images` images (each a manifest, a config and `--layers`
//!    small layers of its own) imported from one OCI archive with
//!    `ctr images import --no-unpack` (no registry involved).
//! 2. `--runs` times: start spegel-node with `NOTIFY_SOCKET` pointing at a datagram socket
//!    of this process, and time (from just before the spawn) the `READY=1` datagram and
//!    the advertiser's first `advertising` log line (the keys handed to the router); then
//!    stop the node.

mod archive;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use spegel_testbed::{Containerd, SpegelNode};
use tokio::net::UnixDatagram;

/// The goal for `READY=1` with 500 images.
const READY_GOAL: Duration = Duration::from_secs(1);

/// How long one start may take before the run is given up.
const PATIENCE: Duration = Duration::from_secs(60);

/// How often the node's log is read for the advertiser's line.
const LOG_POLL: Duration = Duration::from_millis(2);

/// Times spegel-node's start over a containerd with many images.
#[derive(Debug, Parser)]
#[command(name = "bench-start")]
struct Args {
    /// Images in containerd.
    #[arg(long, env = "BENCH_IMAGES", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    images: u32,
    /// Layers per image (each image also has a manifest and a config).
    #[arg(long, env = "BENCH_LAYERS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    layers: u32,
    /// Starts measured.
    #[arg(long, env = "BENCH_RUNS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

/// One start.
struct Start {
    ready: Duration,
    advertised: Duration,
    keys: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        result = run(&args) => result,
        interrupted = tokio::signal::ctrl_c() => {
            interrupted.context("waiting for Ctrl-C")?;
            bail!("interrupted")
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let binary = spegel_testbed::spegel_node_binary()?;
    println!("spegel-node binary: {}", binary.display());
    let containerd = Containerd::start().await?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("images.tar");
    let started = Instant::now();
    let (images, layers) = (args.images as usize, args.layers as usize);
    let written = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || archive::write(&path, images, layers))
            .await
            .context("the archive writer panicked")??
    };
    containerd
        .ctr(&[
            "images",
            "import",
            "--no-unpack",
            "--all-platforms",
            &path.to_string_lossy(),
        ])
        .await?;
    let held = containerd.content_digests().await?.len();
    println!(
        "imported {} images ({} blobs; containerd holds {held}) in {:.1?}",
        written.images,
        written.blobs,
        started.elapsed()
    );

    let mut starts = Vec::new();
    for run in 1..=args.runs {
        let start = start_once(&containerd).await?;
        println!(
            "run {run}: READY=1 after {:.0} ms, first keys advertised after {:.0} ms ({})",
            ms(start.ready),
            ms(start.advertised),
            start.keys
        );
        starts.push(start);
    }
    let ready: Vec<Duration> = starts.iter().map(|s| s.ready).collect();
    let advertised: Vec<Duration> = starts.iter().map(|s| s.advertised).collect();
    println!();
    println!(
        "| {} images, {} blobs | median | min | max |",
        written.images, held
    );
    println!("|---|---|---|---|");
    for (what, times) in [("READY=1", &ready), ("first keys advertised", &advertised)] {
        let (median, min, max) = summary(times);
        println!(
            "| {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
            ms(median),
            ms(min),
            ms(max)
        );
    }
    let (median, _, _) = summary(&ready);
    let verdict = if median <= READY_GOAL {
        "met"
    } else {
        "missed"
    };
    println!(
        "goal READY <= {:.0} ms: {verdict} (median {:.0} ms)",
        ms(READY_GOAL),
        ms(median)
    );
    Ok(())
}

/// Starts a node, waits for both events, stops it.
async fn start_once(containerd: &Containerd) -> Result<Start> {
    let dir = tempfile::Builder::new()
        .prefix("notify-")
        .tempdir_in("/tmp")
        .context("creating the notify socket's directory")?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).context("binding the notify socket")?;
    let spawned = Instant::now();
    let ready = tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        loop {
            let n = socket.recv(&mut buf).await?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l == "READY=1") {
                return Ok::<_, std::io::Error>(spawned.elapsed());
            }
        }
    });
    let env = [("NOTIFY_SOCKET", socket_path.as_os_str())];
    let mut node = SpegelNode::start_with_env(containerd, &["--log-level", "info"], &env).await?;
    let advertised = tokio::time::timeout(PATIENCE, async {
        loop {
            let log = node.log()?;
            if let Some(line) = log.lines().find(|l| l.contains(" advertising ")) {
                let keys = line.split_once("advertising").map_or("", |(_, k)| k);
                return Ok::<_, anyhow::Error>((spawned.elapsed(), keys.trim().to_owned()));
            }
            tokio::time::sleep(LOG_POLL).await;
        }
    })
    .await
    .context("no advertising line in the node's log")??;
    let ready = tokio::time::timeout(PATIENCE, ready)
        .await
        .context("no READY=1")?
        .context("the notify reader panicked")?
        .context("reading the notify socket")?;
    node.terminate().await?;
    Ok(Start {
        ready,
        advertised: advertised.0,
        keys: advertised.1,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, min and max.
fn summary(times: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let min = sorted.first().copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    (median, min, max)
}
