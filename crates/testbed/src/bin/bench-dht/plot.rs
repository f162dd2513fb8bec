//! `--plot DIR`: the runs' JSON files → `DIR/scale.svg` (figures against N, hand-written
//! SVG, no plotting dependency) and a Markdown table of medians with min–max per N.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

const PANEL_WIDTH: f64 = 300.0;
const PANEL_HEIGHT: f64 = 180.0;
const LEFT: f64 = 56.0;
const GAP_X: f64 = 40.0;
const TOP: f64 = 60.0;
const GAP_Y: f64 = 70.0;

/// One metric drawn against N: the JSON fields of its series and the colours.
struct Panel {
    title: &'static str,
    series: &'static [(&'static str, &'static str, &'static str)],
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "Remote lookup until the first provider, ms",
        series: &[
            ("remote_p50_ms", "p50", "#0072b2"),
            ("remote_p99_ms", "p99", "#e69f00"),
        ],
    },
    Panel {
        title: "Requests per lookup (mean)",
        series: &[
            ("remote_requests_per_lookup", "remote", "#0072b2"),
            ("requests_per_lookup", "all", "#8c8c8c"),
        ],
    },
    Panel {
        title: "Connections per node (peak of any node)",
        series: &[("connections_per_node_max", "max", "#0072b2")],
    },
    Panel {
        title: "Memory per node (process RSS ÷ N), MB",
        series: &[("rss_mb_per_node", "RSS/N", "#0072b2")],
    },
];

/// The figures printed in the table, with their header.
const TABLE: [(&str, &str); 10] = [
    ("lookup_success_rate", "lookup success"),
    ("remote_lookups", "remote lookups"),
    ("remote_p50_ms", "remote p50 ms"),
    ("remote_p99_ms", "remote p99 ms"),
    ("remote_requests_per_lookup", "requests / remote lookup"),
    ("provide_delivery_rate", "ADD_PROVIDER delivery"),
    ("connections_per_node_max", "connections / node, max"),
    ("rss_mb_per_node", "RSS / node MB"),
    (
        "reprovide_bytes_per_node_per_hour",
        "re-provide KB / node / hour",
    ),
    ("announce_bytes_per_key", "bytes / announcement"),
];

/// One series: (N, (median, min, max)) per N.
type Series = Vec<(f64, (f64, f64, f64))>;

/// Runs grouped by (nodes, keys per node).
type Runs = BTreeMap<(u64, u64), Vec<Value>>;

/// Reads the runs, writes `scale.svg`, prints the table.
pub fn from_runs(dir: &Path) -> Result<()> {
    let mut runs = Runs::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let run: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a run's JSON", path.display()))?;
            let (Some(n), Some(d)) = (run["nodes"].as_u64(), run["digests_per_node"].as_u64())
            else {
                continue;
            };
            runs.entry((n, d)).or_default().push(run);
        }
    }
    ensure!(!runs.is_empty(), "no runs (*.json) in {}", dir.display());
    std::fs::write(dir.join("scale.svg"), svg(&runs))?;
    print!("{}", table(&runs));
    Ok(())
}

/// Median, min and max of `field` over runs (`None` when no run has it).
fn spread(runs: &[Value], field: &str) -> Option<(f64, f64, f64)> {
    let mut values: Vec<f64> = runs.iter().filter_map(|r| r[field].as_f64()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    };
    Some((median, values[0], values[values.len() - 1]))
}

fn table(runs: &Runs) -> String {
    let mut out = String::from("| N | keys/node | runs |");
    for (_, header) in TABLE {
        let _ = write!(out, " {header} |");
    }
    out.push_str("\n|--:|--:|--:|");
    out.push_str(&"--:|".repeat(TABLE.len()));
    out.push('\n');
    for ((n, d), runs) in runs {
        let _ = write!(out, "| {n} | {d} | {} |", runs.len());
        for (field, _) in TABLE {
            let scale = if field.ends_with("per_hour") {
                1e-3
            } else {
                1.0
            };
            let format = |v: f64| {
                if field.ends_with("rate") {
                    format!("{v:.4}")
                } else if field.starts_with("connections") || field == "remote_lookups" {
                    format!("{v:.0}")
                } else {
                    short(v * scale)
                }
            };
            let cell = match spread(runs, field) {
                Some((m, lo, hi)) if runs.len() > 1 && (hi - lo).abs() > f64::EPSILON => {
                    format!("{} ({}–{})", format(m), format(lo), format(hi))
                }
                Some((m, _, _)) => format(m),
                None => "–".to_owned(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// Three significant digits, no more decimals than needed.
fn short(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn svg(runs: &Runs) -> String {
    let width = LEFT + 2.0 * (PANEL_WIDTH + GAP_X);
    let height = TOP + 2.0 * (PANEL_HEIGHT + GAP_Y);
    let keys: Vec<String> = runs.keys().map(|(_, d)| d.to_string()).collect();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="14" font-weight="bold">spegel's DHT against cluster size (bench-dht: N routers in one process)</text>
<text x="{LEFT}" y="40">Median of the runs, bars from min to max; N on a log scale; keys per node: {}</text>"#,
        keys.join(", ")
    );
    let ns: Vec<f64> = runs.keys().map(|(n, _)| *n as f64).collect();
    let (lo, hi) = (
        ns.iter().copied().fold(f64::INFINITY, f64::min),
        ns.iter().copied().fold(0.0, f64::max),
    );
    let (log_lo, log_hi) = ((lo / 1.5).log10(), (hi * 1.5).log10());
    for (p, panel) in PANELS.iter().enumerate() {
        let x0 = LEFT + (p % 2) as f64 * (PANEL_WIDTH + GAP_X);
        let y0 = TOP + (p / 2) as f64 * (PANEL_HEIGHT + GAP_Y);
        let points: Vec<Series> = panel
            .series
            .iter()
            .map(|(field, _, _)| {
                runs.iter()
                    .filter_map(|((n, _), r)| spread(r, field).map(|s| (*n as f64, s)))
                    .collect()
            })
            .collect();
        let max = points
            .iter()
            .flatten()
            .map(|(_, (_, _, hi))| *hi)
            .fold(0.0, f64::max);
        let step = spegel_testbed::plot::tick_step(max.max(1e-9), 5.0);
        let top = (max * 1.1 / step).ceil().max(1.0) * step;
        let x = |n: f64| x0 + PANEL_WIDTH * (n.log10() - log_lo) / (log_hi - log_lo);
        let y = |v: f64| y0 + PANEL_HEIGHT * (1.0 - v / top);
        let _ = writeln!(
            svg,
            r#"<text x="{x0}" y="{:.0}" font-size="12">{}</text>"#,
            y0 - 10.0,
            panel.title
        );
        let mut tick = 0.0;
        while tick <= top + step / 2.0 {
            let _ = writeln!(
                svg,
                r##"<line x1="{x0}" x2="{:.0}" y1="{yt:.1}" y2="{yt:.1}" stroke="#e0e0e0"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 + PANEL_WIDTH,
                x0 - 5.0,
                y(tick) + 4.0,
                short(tick),
                yt = y(tick)
            );
            tick += step;
        }
        for n in &ns {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">N={n}</text>"#,
                x(*n),
                y0 + PANEL_HEIGHT + 15.0
            );
        }
        for (s, (_, label, colour)) in panel.series.iter().enumerate() {
            let line: Vec<String> = points[s]
                .iter()
                .map(|(n, (m, _, _))| format!("{:.1},{:.1}", x(*n), y(*m)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
                line.join(" ")
            );
            for (n, (m, lo, hi)) in &points[s] {
                let xn = x(*n);
                let _ = writeln!(
                    svg,
                    r#"<line x1="{xn:.1}" x2="{xn:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}"/><circle cx="{xn:.1}" cy="{:.1}" r="3" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                    y(*lo),
                    y(*hi),
                    y(*m),
                    xn + 5.0,
                    y(*m) - 4.0,
                    short(*m),
                );
            }
            let lx = x0 + PANEL_WIDTH - 90.0;
            let ly = y0 + 12.0 + 14.0 * s as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{lx:.0}" y="{:.0}" width="10" height="10" fill="{colour}"/><text x="{:.0}" y="{ly:.0}">{label}</text>"#,
                ly - 9.0,
                lx + 14.0
            );
        }
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" x2="{:.0}" y1="{b:.0}" y2="{b:.0}" stroke="#333"/>"##,
            x0 + PANEL_WIDTH,
            b = y0 + PANEL_HEIGHT
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_spread_is_the_median_with_min_and_max() {
        let runs = vec![json!({"a": 3.0}), json!({"a": 1.0}), json!({"a": 2.0})];
        assert_eq!(spread(&runs, "a"), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&runs, "b"), None);
    }

    #[test]
    fn the_table_and_plot_cover_every_n() {
        let mut runs = Runs::new();
        for n in [50, 200] {
            runs.insert(
                (n, 20),
                vec![json!({"nodes": n, "remote_p50_ms": 2.0, "rss_mb_per_node": 0.5})],
            );
        }
        let table = table(&runs);
        assert!(table.contains("| 50 | 20 | 1 |") && table.contains("| 200 | 20 | 1 |"));
        let svg = svg(&runs);
        assert!(svg.contains("N=50") && svg.contains("N=200") && svg.ends_with("</svg>\n"));
    }
}
