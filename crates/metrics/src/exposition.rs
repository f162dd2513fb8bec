//! The two text formats metrics leave in: OpenMetrics (what `prometheus-client` writes,
//! served to Prometheus) and the Prometheus text format 0.0.4 (what node-exporter's textfile
//! collector parses).
//!
//! They differ in three ways that matter here: OpenMetrics names a counter family without
//! its `_total` suffix in `# HELP`/`# TYPE`, has `# UNIT` lines, and ends with `# EOF`. A 0.0.4
//! parser would read such a counter as untyped, so [`openmetrics_to_prometheus`] renames the
//! counter families and drops the other two.

/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites an OpenMetrics text exposition into the Prometheus text format 0.0.4.
pub(crate) fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // `# HELP` comes before `# TYPE`: hold it until the type says what the family is called.
    let mut help: Option<(&str, &str)> = None;
    let flush = |out: &mut String, help: &mut Option<(&str, &str)>| {
        if let Some((name, text)) = help.take() {
            push_line(out, &format!("# HELP {name} {text}"));
        }
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush(&mut out, &mut help);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            match help.take() {
                Some((help_name, text)) if help_name == name => {
                    push_line(&mut out, &format!("# HELP {family} {text}"));
                }
                other => {
                    help = other;
                    flush(&mut out, &mut help);
                }
            }
            push_line(&mut out, &format!("# TYPE {family} {kind}"));
            continue;
        }
        flush(&mut out, &mut help);
        push_line(&mut out, line);
    }
    flush(&mut out, &mut help);
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_om_only_lines_go() {
        let om = "# HELP requests Requests served.\n\
                  # TYPE requests counter\n\
                  # UNIT requests requests\n\
                  requests_total{code=\"200\"} 3\n\
                  # HELP temp Temperature.\n\
                  # TYPE temp gauge\n\
                  temp 21.5\n\
                  # EOF\n";

        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP requests_total Requests served.\n\
             # TYPE requests_total counter\n\
             requests_total{code=\"200\"} 3\n\
             # HELP temp Temperature.\n\
             # TYPE temp gauge\n\
             temp 21.5\n"
        );
    }

    #[test]
    fn openmetrics_only_types_become_untyped() {
        let om = "# TYPE build info\nbuild_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# TYPE build untyped\nbuild_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn the_converted_exposition_parses_with_typed_counters_and_histograms() {
        let metrics = crate::Metrics::new();
        metrics.mirror_request("docker.io", true);
        let mut request = metrics.http_request("blob", &http::Method::GET);
        request.set_status(200);
        request.add_bytes(1 << 20);
        drop(request);

        let text = metrics.encode_prometheus().unwrap();
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();

        let mirror = scrape
            .samples
            .iter()
            .find(|s| s.metric == "spegel_mirror_requests_total")
            .unwrap();
        assert!(
            matches!(mirror.value, prometheus_parse::Value::Counter(v) if v == 1.0),
            "{:?}",
            mirror.value
        );
        let size = scrape
            .samples
            .iter()
            .find(|s| s.metric == "http_response_size_bytes")
            .unwrap();
        assert!(
            matches!(size.value, prometheus_parse::Value::Histogram(_)),
            "{:?}",
            size.value
        );
        assert_eq!(size.labels.get("handler"), Some("blob"));
        assert!(scrape.docs.contains_key("spegel_mirror_requests_total"));
    }
}
