//! The runs of each cell (node count × mode × image and phase) reduced to medians with
//! their range, the ratios against direct mode and the physical limit (from the medians),
//! and the goals checked against them.

use std::time::Duration;

use crate::run::Measurement;
use crate::{Args, Mode, Phase, Workload};

/// Create phase: the upstream serves at most this many images.
pub const UPSTREAM_GOAL: f64 = 1.3;
/// Create phase: every node has the image within this multiple of the physical limit.
pub const WALL_GOAL: f64 = 1.5;
/// Lone node: spegel's pull takes at most this multiple of direct's.
pub const LONE_GOAL: f64 = 1.05;

pub use spegel_testbed::stats::Spread;

/// One goal of the issue checked against a cell's medians: `value ≤ bound`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    /// What is compared, e.g. `upstream ÷ image`.
    pub what: &'static str,
    pub value: f64,
    pub bound: f64,
}

impl Check {
    pub fn met(&self) -> bool {
        self.value <= self.bound
    }
}

/// Every run of one node count × mode × workload, summarised.
#[derive(Debug, Clone)]
pub struct Cell {
    pub nodes: u16,
    pub mode: Mode,
    /// Index into the workloads.
    pub workload: usize,
    /// The runs' numbers, in order.
    pub runs: Vec<u16>,
    /// Seconds until every node had the image (for the lone node: its pull).
    pub wall: Spread,
    /// Seconds of the median and of the slowest node's pull, per run.
    pub pull_p50: Spread,
    pub pull_max: Spread,
    /// Bytes the upstream served ÷ the image's bytes.
    pub upstream: Spread,
    /// The peak RSS of any spegel-node, bytes (spegel mode only).
    pub peak_rss: Option<Spread>,
    /// The cluster's CPU seconds ÷ the machine's cores: the phase's duration if CPU were
    /// its only limit.
    pub cpu_floor: Spread,
    /// Share of the machine's cores busy during the phase (0–1).
    pub machine_busy: Spread,
    /// CPU seconds of the spegel-node processes during the phase.
    pub spegel_cpu: Spread,
    /// Medians ÷ direct mode's medians of the same node count and workload.
    pub wall_vs_direct: Option<f64>,
    pub upstream_vs_direct: Option<f64>,
    /// Seconds for one image through the upstream link (if it is shaped).
    pub limit: Option<f64>,
    /// The median wall time ÷ the limit.
    pub wall_vs_limit: Option<f64>,
    /// The goals for this cell: create phase, and spegel's lone-node pull.
    pub checks: Vec<Check>,
}

/// Seconds for one copy of the image through the upstream's link, if it is shaped.
pub fn physical_limit(args: &Args, workload: &Workload) -> Option<f64> {
    (args.upstream_mbit > 0)
        .then(|| workload.bytes as f64 * 8.0 / (f64::from(args.upstream_mbit) * 1e6))
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

/// The cells in report order: node count, workload, mode, as given on the command line.
pub fn cells(args: &Args, workloads: &[Workload], measurements: &[Measurement]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &nodes in &args.nodes {
        for (index, workload) in workloads.iter().enumerate() {
            for &mode in &args.modes {
                let runs: Vec<&Measurement> = measurements
                    .iter()
                    .filter(|m| m.nodes == nodes && m.mode == mode && m.workload == index)
                    .collect();
                if let Some(cell) = summarise(nodes, mode, index, workload, &runs) {
                    cells.push(cell);
                }
            }
        }
    }
    let direct: Vec<Cell> = cells
        .iter()
        .filter(|c| c.mode == Mode::Direct)
        .cloned()
        .collect();
    for cell in &mut cells {
        let workload = &workloads[cell.workload];
        let base = direct
            .iter()
            .find(|d| d.nodes == cell.nodes && d.workload == cell.workload);
        cell.wall_vs_direct = base.and_then(|d| ratio(cell.wall.median, d.wall.median));
        cell.upstream_vs_direct = base.and_then(|d| ratio(cell.upstream.median, d.upstream.median));
        cell.limit = physical_limit(args, workload);
        cell.wall_vs_limit = cell.limit.and_then(|limit| ratio(cell.wall.median, limit));
        cell.checks = checks(cell, workload.phase);
    }
    cells
}

/// One cell from its runs, without the ratios; `None` if it was not measured.
fn summarise(
    nodes: u16,
    mode: Mode,
    workload: usize,
    image: &Workload,
    runs: &[&Measurement],
) -> Option<Cell> {
    let spread = |f: &dyn Fn(&Measurement) -> f64| {
        Spread::of(&runs.iter().map(|m| f(m)).collect::<Vec<_>>())
    };
    let rss: Vec<f64> = runs
        .iter()
        .filter_map(|m| m.peak_rss)
        .map(|b| b as f64)
        .collect();
    Some(Cell {
        nodes,
        mode,
        workload,
        runs: runs.iter().map(|m| m.run).collect(),
        wall: spread(&|m| m.wall.as_secs_f64())?,
        pull_p50: spread(&|m| percentile(&m.pulls, 0.5).as_secs_f64())?,
        pull_max: spread(&|m| percentile(&m.pulls, 1.0).as_secs_f64())?,
        upstream: spread(&|m| m.upstream_bytes as f64 / image.bytes.max(1) as f64)?,
        peak_rss: Spread::of(&rss),
        cpu_floor: spread(&|m| m.cpu.floor(crate::cpu::cores()).as_secs_f64())?,
        machine_busy: spread(&|m| m.cpu.machine_busy)?,
        spegel_cpu: spread(&|m| m.cpu.spegel_seconds)?,
        wall_vs_direct: None,
        upstream_vs_direct: None,
        limit: None,
        wall_vs_limit: None,
        checks: Vec::new(),
    })
}

/// The goals that apply to a cell: every create cell (direct shows the gap), spegel's
/// lone-node pull against direct's.
fn checks(cell: &Cell, phase: Phase) -> Vec<Check> {
    match phase {
        Phase::Create => {
            let mut checks = vec![Check {
                what: "upstream ÷ image",
                value: cell.upstream.median,
                bound: UPSTREAM_GOAL,
            }];
            checks.extend(cell.wall_vs_limit.map(|value| Check {
                what: "all nodes ÷ limit",
                value,
                bound: WALL_GOAL,
            }));
            checks
        }
        Phase::Lone if cell.mode == Mode::Spegel => cell
            .wall_vs_direct
            .map(|value| Check {
                what: "spegel ÷ direct",
                value,
                bound: LONE_GOAL,
            })
            .into_iter()
            .collect(),
        Phase::Lone | Phase::Rolling => Vec::new(),
    }
}

/// `value / base`, if `base` is positive.
fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| value / base)
}

/// Cells with made-up figures for the report's and the plot's tests: one 1 MB, 1-layer
/// create image (built in `dir`), every node count and mode of `args`, two runs each.
#[cfg(test)]
pub fn made_up(args: &Args, dir: &std::path::Path) -> anyhow::Result<(Vec<Workload>, Vec<Cell>)> {
    let workloads = vec![crate::build(dir, 1, 1, Phase::Create)?];
    let mut measurements = Vec::new();
    for &nodes in &args.nodes {
        for (m, &mode) in args.modes.iter().enumerate() {
            for run in 1..=2u16 {
                let secs = f64::from(nodes) * (1.0 + m as f64 + f64::from(run) / 10.0);
                measurements.push(Measurement {
                    nodes,
                    run,
                    mode,
                    workload: 0,
                    pulls: vec![Duration::from_secs_f64(secs); usize::from(nodes)],
                    wall: Duration::from_secs_f64(secs),
                    waited: Duration::ZERO,
                    upstream_bytes: workloads[0].bytes * u64::from(run),
                    peak_rss: (mode == Mode::Spegel).then_some(20_000_000),
                    cpu: crate::cpu::CpuUse {
                        containerd_seconds: secs,
                        spegel_seconds: secs / 2.0,
                        machine_busy: 0.9,
                    },
                });
            }
        }
    }
    let cells = cells(args, &workloads, &measurements);
    Ok((workloads, cells))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn cells_take_medians_over_runs_and_ratios_of_medians() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from(["bench-pulls", "--nodes", "2", "--modes", "direct,spegel"]);
        let (_, cells) = made_up(&args, dir.path()).unwrap();
        assert_eq!(cells.len(), 2);
        let spegel = &cells[1];
        assert_eq!(spegel.mode, Mode::Spegel);
        assert_eq!(spegel.runs, [1, 2]);
        // Runs of 2 × 2.1 s and 2 × 2.2 s.
        assert!((spegel.wall.median - 4.3).abs() < 1e-9, "{:?}", spegel.wall);
        assert!((spegel.wall.min - 4.2).abs() < 1e-9);
        // Direct: 2 × 1.1 s and 2 × 1.2 s.
        assert!((spegel.wall_vs_direct.unwrap() - 4.3 / 2.3).abs() < 1e-9);
        assert!((spegel.upstream.median - 1.5).abs() < 0.01);
        assert_eq!(
            spegel.checks.len(),
            2,
            "a create cell checks bytes and time"
        );
    }

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
    fn a_spread_is_the_median_and_the_extremes() {
        let odd = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Spread::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (3.0, 1.0, 10.0));
        let one = Spread::of(&[5.0]).unwrap();
        assert_eq!((one.median, one.min, one.max), (5.0, 5.0, 5.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn a_check_is_met_up_to_its_bound() {
        let check = |value| Check {
            what: "x",
            value,
            bound: 1.3,
        };
        assert!(check(1.3).met());
        assert!(check(1.0).met());
        assert!(!check(1.31).met());
    }

    #[test]
    fn a_ratio_needs_a_positive_base() {
        assert_eq!(ratio(2.0, 4.0), Some(0.5));
        assert_eq!(ratio(2.0, 0.0), None);
    }
}
