//! The results as JSON, for scripts and the smoke test: every run as measured (`runs`) and
//! every cell's medians, ranges, ratios and goals (`cells`).

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::machine::Machine;
use crate::run::Measurement;
use crate::summary::{Cell, LONE_GOAL, Spread, UPSTREAM_GOAL, WALL_GOAL, physical_limit};
use crate::{Args, Workload};

/// The whole document.
pub fn json(
    args: &Args,
    machine: &Machine,
    workloads: &[Workload],
    measurements: &[Measurement],
    cells: &[Cell],
) -> Result<String> {
    let runs: Vec<Value> = measurements
        .iter()
        .map(|m| {
            let w = &workloads[m.workload];
            json!({
                "nodes": m.nodes,
                "run": m.run,
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
                "containerd_cpu_seconds": m.cpu.containerd_seconds,
                "spegel_cpu_seconds": m.cpu.spegel_seconds,
                "machine_busy_share": m.cpu.machine_busy,
                "limit_seconds": physical_limit(args, w),
            })
        })
        .collect();
    let cells: Vec<Value> = cells.iter().map(|c| cell(args, workloads, c)).collect();
    let doc = json!({
        "date": machine.date,
        "commit": machine.commit,
        "command": machine.command,
        "machine": {
            "cpus": machine.cpus,
            "cpu_model": machine.cpu_model,
            "kernel": machine.kernel,
            "memory": machine.memory,
            "load_average_before": machine.load_before,
            "load_average_after": machine.load_after,
            "containerd": machine.containerd,
            "docker_registry": machine.registry,
        },
        "nodes": args.nodes,
        "runs_per_cell": args.runs,
        "upstream_mbit": args.upstream_mbit,
        "node_mbit": args.node_mbit,
        "batch_percent": args.batch_percent,
        "snapshotter": args.snapshotter.name(),
        "goals": {
            "create_upstream_multiple": UPSTREAM_GOAL,
            "create_all_nodes_vs_limit": WALL_GOAL,
            "lone_spegel_vs_direct": LONE_GOAL,
        },
        "runs": runs,
        "cells": cells,
    });
    serde_json::to_string_pretty(&doc).context("serializing the results")
}

/// One cell: which it is, then `median`, `min` and `max` of each figure, the ratios of
/// the medians and the goals checked.
fn cell(args: &Args, workloads: &[Workload], cell: &Cell) -> Value {
    let w = &workloads[cell.workload];
    let figures = |pick: fn(&Spread) -> f64| {
        json!({
            "all_nodes_seconds": pick(&cell.wall),
            "pull_p50_seconds": pick(&cell.pull_p50),
            "pull_max_seconds": pick(&cell.pull_max),
            "upstream_multiple": pick(&cell.upstream),
            "peak_spegel_rss_bytes": cell.peak_rss.as_ref().map(pick),
            "cpu_floor_seconds": pick(&cell.cpu_floor),
            "machine_busy_share": pick(&cell.machine_busy),
            "spegel_cpu_seconds": pick(&cell.spegel_cpu),
        })
    };
    json!({
        "nodes": cell.nodes,
        "mode": cell.mode.name(),
        "phase": w.phase.name(),
        "tag": w.tag,
        "size_mb": w.size_mb,
        "layers": w.layers,
        "image_bytes": w.bytes,
        "limit_seconds": physical_limit(args, w),
        "runs": cell.runs,
        "median": figures(|s| s.median),
        "min": figures(|s| s.min),
        "max": figures(|s| s.max),
        "all_nodes_vs_direct": cell.wall_vs_direct,
        "upstream_vs_direct": cell.upstream_vs_direct,
        "all_nodes_vs_limit": cell.wall_vs_limit,
        "goals": cell.checks.iter().map(|c| json!({
            "what": c.what,
            "median": c.value,
            "bound": c.bound,
            "met": c.met(),
        })).collect::<Vec<_>>(),
    })
}
