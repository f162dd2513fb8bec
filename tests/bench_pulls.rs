//! Smoke run of the pull benchmark (`bench-pulls`, see `docs/benchmarks.md`): two nodes,
//! a 1 MB image in 12 layers (more layers than containerd's 3 concurrent downloads), one
//! run, every mode (direct, pull-through cache, spegel-node), both phases and the
//! lone-node pull, so the benchmark's code path (cluster modes, the proxy cache, shaping,
//! medians, the report) keeps working. It checks the shape of the output, never the
//! figures.
//!
//! It runs the `bench-pulls` binary built next to `spegel-node` (`cargo build --workspace
//! --bins`), as root; `#[ignore]`d for quick runs like the other multi-node tests.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

/// The whole smoke run takes well under a minute; give a slow CI machine room.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// `bench-pulls` in the same target directory as `spegel-node`.
fn bench_binary() -> Result<PathBuf> {
    let node = spegel_testbed::spegel_node_binary()?;
    let bench = node.with_file_name("bench-pulls");
    ensure!(
        bench.is_file(),
        "{} not found; build it first: cargo build -p spegel-testbed --bin bench-pulls",
        bench.display()
    );
    Ok(bench)
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn a_tiny_run_measures_every_mode_and_phase_and_writes_the_report() -> Result<()> {
    let out = tempfile::tempdir()?;
    let mut command = Command::new(bench_binary()?);
    command
        .args([
            "--nodes",
            "2",
            "--runs",
            "1",
            "--sizes",
            "1",
            "--layers",
            "12",
            "--modes",
            "direct,cache,spegel",
            "--phases",
            "create,rolling",
            "--upstream-mbit",
            "100",
            "--out",
        ])
        .arg(out.path())
        .env("SPEGEL_NODE_BIN", spegel_testbed::spegel_node_binary()?)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .context("bench-pulls took too long")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "bench-pulls failed with {}:\n{stdout}\n{stderr}",
        output.status
    );

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("pulls.json"))?)?;
    assert!(results["commit"].is_string(), "{results:#}");
    let runs = results["runs"].as_array().context("no runs")?;
    // 3 modes × 2 phases, and the lone node in direct and spegel mode.
    assert_eq!(runs.len(), 8, "{results:#}");
    for run in runs {
        assert_eq!(
            (run["nodes"].as_u64(), run["run"].as_u64()),
            (Some(2), Some(1))
        );
        let lone = run["phase"] == "lone";
        let pulls = run["pull_seconds"].as_array().unwrap();
        assert_eq!(
            pulls.len(),
            if lone { 1 } else { 2 },
            "one time per node: {run}"
        );
        assert!(run["all_nodes_seconds"].as_f64().unwrap() > 0.0, "{run}");
        // Someone fetched the image from the upstream in every mode: all start cold.
        let served = run["upstream_blob_bytes"].as_u64().unwrap();
        assert!(served >= run["image_bytes"].as_u64().unwrap() / 2, "{run}");
        let spegel = run["mode"] == "spegel";
        assert_eq!(run["peak_spegel_rss_bytes"].is_u64(), spegel, "{run}");
    }

    let cells = results["cells"].as_array().context("no cells")?;
    assert_eq!(
        cells.len(),
        8,
        "one cell per run with one run each: {results:#}"
    );
    for cell in cells {
        assert_eq!(cell["runs"], serde_json::json!([1]), "{cell}");
        let figure = |which: &str| cell[which]["all_nodes_seconds"].as_f64().unwrap();
        let (min, median, max) = (figure("min"), figure("median"), figure("max"));
        assert!(0.0 < min && min <= median && median <= max, "{cell}");
        assert!(
            cell["median"]["upstream_multiple"].as_f64().unwrap() > 0.0,
            "{cell}"
        );
        let goals = cell["goals"].as_array().unwrap().len();
        let expected = match (cell["phase"].as_str(), cell["mode"].as_str()) {
            // Upstream bytes and time against the limit.
            (Some("create"), _) => 2,
            // spegel against direct.
            (Some("lone"), Some("spegel")) => 1,
            _ => 0,
        };
        assert_eq!(goals, expected, "{cell}");
        if cell["mode"] != "direct" {
            assert!(cell["all_nodes_vs_direct"].is_f64(), "{cell}");
        }
    }

    let markdown = std::fs::read_to_string(out.path().join("pulls.md"))?;
    for mode in ["| direct |", "| cache |", "| spegel |"] {
        assert_eq!(markdown.matches(mode).count(), 2, "{mode} in:\n{markdown}");
    }
    for section in [
        "## Goals",
        "## Results on 2 nodes",
        "## A lone node",
        "| commit |",
    ] {
        assert!(markdown.contains(section), "{section} in:\n{markdown}");
    }
    let svg = std::fs::read_to_string(out.path().join("pulls.svg"))?;
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("2 nodes"), "{svg}");
    Ok(())
}
