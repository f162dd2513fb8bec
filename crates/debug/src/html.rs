//! HTML building blocks: escaping, the page frame, and how numbers, durations and times read.
//! Everything that comes from outside (peer addresses, image names, error text) goes
//! through [`escape`] before it is written into a page.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `text` safe to place in HTML text or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline styles: the page loads nothing else.
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:0.9em}th,td{padding:3px 8px;border:1px solid #ddd;text-align:left}\
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:0.95em}.bad{color:#b00}.ok{color:#070}.note{color:#666}\
input[type=text]{width:32em}tr.total td{font-weight:bold}td.t,td.n{white-space:nowrap}";

/// A whole page: `title` (escaped here) and `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>{title}</title><style>{STYLE}</style></head>\n<body>\n<h1>{title}</h1>\n{body}</body></html>\n"
    )
}

/// Bytes as people read them: `512 B`, `3.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in milliseconds with one decimal: `12.3 ms`.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `bytes` over `d` in MB/s (10^6 bytes; kB/s below 1 MB/s), or `-` when nothing was
/// timed.
pub fn throughput(bytes: u64, d: Duration) -> String {
    if bytes == 0 || d.is_zero() {
        return "-".to_owned();
    }
    let per_second = bytes as f64 / d.as_secs_f64();
    if per_second < 1e6 {
        return format!("{:.1} kB/s", per_second / 1e3);
    }
    format!("{:.1} MB/s", per_second / 1e6)
}

/// A duration as `1d 2h 3m 4s`, leading zero units left out.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (n, unit) in [(days, "d"), (hours, "h"), (minutes, "m")] {
        if n > 0 || !out.is_empty() {
            let _ = write!(out, "{n}{unit} ");
        }
    }
    let _ = write!(out, "{seconds}s");
    out
}

/// A wall-clock time in UTC: `2026-12-02 15:04:05Z`.
pub fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// How long ago `t` was, from `now`: `3 s ago`.
pub fn ago(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", uptime(d)),
        Err(_) => "just now".to_owned(),
    }
}

/// Year, month, day of the `days`-th day since 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_outside_text_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("10.0.0.1:5000/a/b:v1"), "10.0.0.1:5000/a/b:v1");
    }

    #[test]
    fn the_title_is_escaped_in_the_frame() {
        let html = page("<b>", "<p>body</p>");
        assert!(html.contains("<h1>&lt;b&gt;</h1>"));
        assert!(html.contains("<p>body</p>"));
        assert!(!html.contains("<script") && !html.contains("src="));
    }

    #[test]
    fn numbers_read_as_people_read_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(millis(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(throughput(10_000_000, Duration::from_secs(2)), "5.0 MB/s");
        assert_eq!(throughput(0, Duration::from_secs(2)), "-");
        assert_eq!(throughput(500, Duration::from_millis(10)), "50.0 kB/s");
        assert_eq!(uptime(Duration::from_secs(93_784)), "1d 2h 3m 4s");
        assert_eq!(uptime(Duration::from_secs(4)), "4s");
        assert_eq!(uptime(Duration::from_secs(3600)), "1h 0m 0s");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_223_845);
        assert_eq!(utc(t), "2026-12-02 15:04:05Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // a leap day
        assert_eq!(utc(t), "2000-02-29 00:00:00Z");
    }
}
