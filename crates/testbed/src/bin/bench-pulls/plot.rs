//! The plot: two grouped bar charts written as SVG by hand (no plotting dependency to
//! build). One group per node count × create-phase image, one bar per mode (direct and
//! spegel): the median time until every node has the image, in units of the physical
//! limit, and the median bytes the upstream served, in images; whiskers span the runs'
//! minimum to maximum. Dashed: 1 (one image through the link); dotted red: issue 9's goal.

use std::fmt::Write as _;

use crate::report::{node_counts, rate, runs};
use crate::summary::{Cell, Spread, UPSTREAM_GOAL, WALL_GOAL};
use crate::{Args, Mode, Phase, Workload};

const BAR_WIDTH: f64 = 34.0;
/// Space on each side of a group's bars.
const GROUP_PADDING: f64 = 12.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const PANEL_HEIGHT: f64 = 220.0;
/// Space above a panel (its title) and below it (group labels).
const PANEL_TOP: f64 = 34.0;
const PANEL_BOTTOM: f64 = 44.0;
const HEADER: f64 = 76.0;
/// Room for the title and the legend.
const MIN_WIDTH: f64 = 640.0;
const GOAL_COLOUR: &str = "#d55e00";

/// The colour of each mode's bars (colour-blind safe).
fn colour(mode: Mode) -> &'static str {
    match mode {
        Mode::Direct => "#8c8c8c",
        Mode::Cache => "#e69f00",
        Mode::Spegel => "#0072b2",
    }
}

/// One group of bars: a node count and an image.
struct Group {
    nodes: u16,
    label: String,
    /// Per plotted mode: the cell, if measured.
    cells: Vec<Option<Cell>>,
}

/// One chart: a figure of each cell, its reference line at 1 and its goal line.
struct Panel {
    title: String,
    /// A cell's figure in the panel's unit, from one of its spreads.
    value: fn(&Cell) -> Spread,
    goal: Option<f64>,
}

/// Renders both charts for the measured node counts, create-phase images and modes.
pub fn svg(args: &Args, workloads: &[Workload], cells: &[Cell]) -> String {
    let mut modes: Vec<Mode> = args
        .modes
        .iter()
        .copied()
        .filter(|m| matches!(m, Mode::Direct | Mode::Spegel))
        .collect();
    if modes.is_empty() {
        modes = args.modes.clone();
    }
    // The create phase; without it, whatever was measured but the lone pull.
    let plotted = |phase: Phase| {
        phase == Phase::Create || (!args.phases.contains(&Phase::Create) && phase != Phase::Lone)
    };
    let mut groups = Vec::new();
    for &nodes in &args.nodes {
        for (index, workload) in workloads.iter().enumerate() {
            if !plotted(workload.phase) {
                continue;
            }
            let cells = modes
                .iter()
                .map(|&mode| {
                    cells
                        .iter()
                        .find(|c| c.nodes == nodes && c.mode == mode && c.workload == index)
                        .cloned()
                })
                .collect();
            let mut label = format!("{} MB × {}", workload.size_mb, workload.layers);
            if !args.phases.contains(&Phase::Create) {
                label = format!("{label} {}", workload.phase.name());
            }
            groups.push(Group {
                nodes,
                label,
                cells,
            });
        }
    }
    let limited = args.upstream_mbit > 0;
    let panels = [
        Panel {
            title: if limited {
                "Time until all nodes have the image ÷ limit (lower is better)".to_owned()
            } else {
                "Time until all nodes have the image, s (lower is better)".to_owned()
            },
            value: |c| scaled(&c.wall, c.limit.unwrap_or(1.0)),
            goal: limited.then_some(WALL_GOAL),
        },
        Panel {
            title: "Bytes the upstream served ÷ image size (lower is better)".to_owned(),
            value: |c| c.upstream,
            goal: Some(UPSTREAM_GOAL),
        },
    ];

    let group_width = 2.0 * GROUP_PADDING + BAR_WIDTH * modes.len() as f64;
    let width = (LEFT + RIGHT + group_width * groups.len() as f64).max(MIN_WIDTH);
    let height = HEADER + 2.0 * (PANEL_TOP + PANEL_HEIGHT + PANEL_BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Cold pulls on {} nodes, all nodes at once</text>
<text x="{LEFT}" y="38">Upstream {}, nodes {}. Bars: median of {}; whiskers: min–max.</text>"#,
        node_counts(args),
        rate(args.upstream_mbit),
        rate(args.node_mbit),
        runs(args.runs),
    );
    legend(&mut svg, &modes);
    for (p, panel) in panels.iter().enumerate() {
        let top = HEADER + p as f64 * (PANEL_TOP + PANEL_HEIGHT + PANEL_BOTTOM) + PANEL_TOP;
        let frame = Frame {
            top,
            width,
            group_width,
        };
        draw_panel(&mut svg, panel, &modes, &groups, &frame, limited || p == 1);
    }
    svg.push_str("</svg>\n");
    svg
}

/// `spread` divided by `by`.
fn scaled(spread: &Spread, by: f64) -> Spread {
    Spread {
        median: spread.median / by,
        min: spread.min / by,
        max: spread.max / by,
    }
}

/// The modes' colours, the reference line and the goal line.
fn legend(svg: &mut String, modes: &[Mode]) {
    for (i, &mode) in modes.iter().enumerate() {
        let x = LEFT + 80.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="50" width="12" height="12" fill="{}"/><text x="{}" y="60">{}</text>"#,
            colour(mode),
            x + 16.0,
            mode.name()
        );
    }
    let x = LEFT + 80.0 * modes.len() as f64;
    let _ = writeln!(
        svg,
        r##"<line x1="{x}" x2="{}" y1="56" y2="56" stroke="#333" stroke-dasharray="4 3"/><text x="{}" y="60">1 = one image through the upstream link</text>"##,
        x + 24.0,
        x + 28.0
    );
    let x = x + 270.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{x}" x2="{}" y1="56" y2="56" stroke="{GOAL_COLOUR}" stroke-width="1.5" stroke-dasharray="1 3"/><text x="{}" y="60">goal (issue 9)</text>"#,
        x + 24.0,
        x + 28.0
    );
}

/// Where a panel goes.
struct Frame {
    /// The top of the plot area.
    top: f64,
    width: f64,
    group_width: f64,
}

/// Draws one panel.
fn draw_panel(
    svg: &mut String,
    panel: &Panel,
    modes: &[Mode],
    groups: &[Group],
    frame: &Frame,
    reference_line: bool,
) {
    let Frame {
        top,
        width,
        group_width,
    } = *frame;
    let values: Vec<Vec<Option<Spread>>> = groups
        .iter()
        .map(|g| {
            g.cells
                .iter()
                .map(|c| c.as_ref().map(panel.value))
                .collect()
        })
        .collect();
    let max = values
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.max)
        .chain(panel.goal)
        .fold(1.0_f64, f64::max);
    let step = spegel_testbed::plot::tick_step(max, 6.0);
    // Headroom above the highest whisker for its label.
    let top_value = (max * 1.08 / step).ceil() * step;
    let y = |v: f64| top + PANEL_HEIGHT * (1.0 - v / top_value);
    let bottom = top + PANEL_HEIGHT;
    let right = width - RIGHT;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="12">{}</text>"#,
        top - 10.0,
        panel.title
    );
    let mut tick = 0.0;
    while tick <= top_value + step / 2.0 {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y(tick) + 4.0,
            format_tick(tick, step),
            y = y(tick),
        );
        tick += step;
    }
    if reference_line {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
            y = y(1.0),
        );
    }
    if let Some(goal) = panel.goal {
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="{GOAL_COLOUR}" stroke-width="1.5" stroke-dasharray="1 3"/>"#,
            y = y(goal),
        );
    }
    for (g, group) in groups.iter().enumerate() {
        let left = LEFT + group_width * g as f64 + GROUP_PADDING;
        for (m, &mode) in modes.iter().enumerate() {
            let Some(value) = values[g][m] else {
                continue;
            };
            let x = left + BAR_WIDTH * m as f64;
            let centre = x + (BAR_WIDTH - 2.0) / 2.0;
            let _ = writeln!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><path d="M{centre:.1} {:.1}V{:.1}M{:.1} {:.1}h8M{:.1} {:.1}h8" stroke="#222"/><text x="{centre:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"##,
                y(value.median),
                BAR_WIDTH - 2.0,
                bottom - y(value.median),
                colour(mode),
                y(value.max),
                y(value.min),
                centre - 4.0,
                y(value.max),
                centre - 4.0,
                y(value.min),
                y(value.max) - 3.0,
                format_value(value.median)
            );
        }
        let centre = LEFT + group_width * (g as f64 + 0.5);
        let _ = writeln!(
            svg,
            r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{centre:.1}" y="{:.1}" text-anchor="middle">{} nodes</text>"#,
            bottom + 15.0,
            group.label,
            bottom + 29.0,
            group.nodes
        );
        // A thin line where the next node count starts.
        if groups
            .get(g + 1)
            .is_some_and(|next| next.nodes != group.nodes)
        {
            let x = LEFT + group_width * (g as f64 + 1.0);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top:.1}" y2="{:.1}" stroke="#999"/>"##,
                bottom + 32.0
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{right}" y1="{bottom:.1}" y2="{bottom:.1}" stroke="#333"/>"##,
    );
}

/// A tick label with as many decimals as the step needs.
fn format_tick(tick: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{tick:.decimals$}")
}

/// `12`, `3.4` or `0.56`: two significant digits at most.
fn format_value(v: f64) -> String {
    let v = if v >= 1.0 {
        (v * 10.0).round() / 10.0
    } else {
        (v * 100.0).round() / 100.0
    };
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn each_node_count_gets_a_group_with_a_whiskered_bar_per_mode() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from(["bench-pulls", "--nodes", "3,5", "--runs", "2"]);
        let (workloads, cells) = crate::summary::made_up(&args, dir.path()).unwrap();

        let svg = svg(&args, &workloads, &cells);

        // Two panels; direct and spegel only, though the cache was "measured" too.
        assert_eq!(svg.matches(">3 nodes<").count(), 2, "{svg}");
        assert_eq!(svg.matches(">5 nodes<").count(), 2);
        assert_eq!(svg.matches("<path").count(), 2 * 2 * 2, "a whisker per bar");
        assert!(!svg.contains(colour(Mode::Cache)));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn values_keep_two_significant_digits() {
        assert_eq!(format_value(12.34), "12");
        assert_eq!(format_value(3.45), "3.5");
        assert_eq!(format_value(0.456), "0.46");
    }

    #[test]
    fn tick_labels_have_the_decimals_of_the_step() {
        assert_eq!(format_tick(5.0, 5.0), "5");
        assert_eq!(format_tick(0.4, 0.2), "0.4");
        assert_eq!(format_tick(0.05, 0.05), "0.05");
    }
}
