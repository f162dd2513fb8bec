//! The plot: two grouped bar charts written as SVG by hand (no plotting dependency to
//! build). One group per image × phase, one bar per mode: time until every node has the
//! image, in units of the physical limit, and bytes the upstream served, in images.

use std::fmt::Write as _;

use crate::report::{physical_limit, rate};
use crate::run::Measurement;
use crate::{Args, Mode, Workload};

const GROUP_WIDTH: f64 = 120.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const PANEL_HEIGHT: f64 = 220.0;
/// Space above a panel (its title) and below it (group labels).
const PANEL_TOP: f64 = 34.0;
const PANEL_BOTTOM: f64 = 44.0;
const HEADER: f64 = 56.0;
/// Room for the title and the legend.
const MIN_WIDTH: f64 = 600.0;

/// The colour of each mode's bars (colour-blind safe).
fn colour(mode: Mode) -> &'static str {
    match mode {
        Mode::Direct => "#8c8c8c",
        Mode::Cache => "#e69f00",
        Mode::Spegel => "#0072b2",
    }
}

/// One chart: values per group (workload) and mode, and a dashed reference line at 1.
struct Panel {
    title: String,
    values: Vec<Vec<Option<f64>>>,
}

/// Renders both charts for the measured workloads and modes.
pub fn svg(args: &Args, workloads: &[Workload], measurements: &[Measurement]) -> String {
    let modes = &args.modes;
    let value = |index: usize, mode: Mode, f: &dyn Fn(&Measurement, &Workload) -> Option<f64>| {
        measurements
            .iter()
            .find(|m| m.workload == index && m.mode == mode)
            .and_then(|m| f(m, &workloads[index]))
    };
    let limited = args.upstream_mbit > 0;
    let time = |m: &Measurement, w: &Workload| {
        let secs = m.wall.as_secs_f64();
        match physical_limit(args, w) {
            Some(limit) => Some(secs / limit),
            None => Some(secs),
        }
    };
    let bytes = |m: &Measurement, w: &Workload| Some(m.upstream_bytes as f64 / w.bytes as f64);
    let panel = |title: String, f: &dyn Fn(&Measurement, &Workload) -> Option<f64>| Panel {
        title,
        values: (0..workloads.len())
            .map(|i| modes.iter().map(|&mode| value(i, mode, f)).collect())
            .collect(),
    };
    let panels = [
        panel(
            if limited {
                "Time until all nodes have the image ÷ limit (lower is better)".to_owned()
            } else {
                "Time until all nodes have the image, s (lower is better)".to_owned()
            },
            &time,
        ),
        panel(
            "Bytes the upstream served ÷ image size (lower is better)".to_owned(),
            &bytes,
        ),
    ];

    let width = (LEFT + RIGHT + GROUP_WIDTH * workloads.len() as f64).max(MIN_WIDTH);
    let height = HEADER + 2.0 * (PANEL_TOP + PANEL_HEIGHT + PANEL_BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Cold pulls on {} nodes, upstream {}, nodes {}</text>"#,
        args.nodes,
        rate(args.upstream_mbit),
        rate(args.node_mbit)
    );
    for (i, &mode) in modes.iter().enumerate() {
        let x = LEFT + 80.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="32" width="12" height="12" fill="{}"/><text x="{}" y="42">{}</text>"#,
            colour(mode),
            x + 16.0,
            mode.name()
        );
    }
    let x = LEFT + 80.0 * modes.len() as f64;
    let _ = writeln!(
        svg,
        r##"<line x1="{x}" x2="{}" y1="38" y2="38" stroke="#333" stroke-dasharray="4 3"/><text x="{}" y="42">1 = one image through the upstream link</text>"##,
        x + 24.0,
        x + 28.0
    );
    for (p, panel) in panels.iter().enumerate() {
        let top = HEADER + p as f64 * (PANEL_TOP + PANEL_HEIGHT + PANEL_BOTTOM) + PANEL_TOP;
        draw_panel(
            &mut svg,
            panel,
            modes,
            workloads,
            top,
            width,
            limited || p == 1,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Draws one panel whose plot area starts at `top`.
fn draw_panel(
    svg: &mut String,
    panel: &Panel,
    modes: &[Mode],
    workloads: &[Workload],
    top: f64,
    width: f64,
    reference_line: bool,
) {
    let max = panel
        .values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .fold(1.0_f64, f64::max);
    let step = tick_step(max);
    // Headroom above the highest bar for its label.
    let top_value = (max * 1.08 / step).ceil() * step;
    let y = |v: f64| top + PANEL_HEIGHT * (1.0 - v / top_value);
    let bottom = top + PANEL_HEIGHT;
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
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - RIGHT,
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
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
            width - RIGHT,
            y = y(1.0),
        );
    }
    let bar = (GROUP_WIDTH - 24.0) / modes.len().max(1) as f64;
    for (g, workload) in workloads.iter().enumerate() {
        let left = LEFT + GROUP_WIDTH * g as f64 + 12.0;
        for (m, &mode) in modes.iter().enumerate() {
            let Some(value) = panel.values[g][m] else {
                continue;
            };
            let x = left + bar * m as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                y(value),
                bar - 2.0,
                bottom - y(value),
                colour(mode),
                x + (bar - 2.0) / 2.0,
                y(value) - 3.0,
                format_value(value)
            );
        }
        let centre = LEFT + GROUP_WIDTH * (g as f64 + 0.5);
        let _ = writeln!(
            svg,
            r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle">{} MB × {}</text><text x="{centre:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 15.0,
            workload.size_mb,
            workload.layers,
            bottom + 29.0,
            workload.phase.name()
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{}" y1="{bottom:.1}" y2="{bottom:.1}" stroke="#333"/>"##,
        width - RIGHT
    );
}

/// A round tick step (1, 2 or 5 × 10^k) giving at most six ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude)
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
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round_and_cover_the_maximum_in_six_ticks() {
        for (max, step) in [
            (1.0, 0.2),
            (5.5, 1.0),
            (6.2, 2.0),
            (30.0, 5.0),
            (70.0, 20.0),
        ] {
            assert!(
                (tick_step(max) - step).abs() < 1e-9,
                "{max}: {}",
                tick_step(max)
            );
        }
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
