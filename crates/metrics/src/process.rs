//! Process metrics read from `/proc/self` (and `getrusage`) each time metrics are encoded.
//!
//! They are prefixed `spegel_process_` rather than the usual `process_`: node-exporter
//! exports its own `process_*` metrics, and a textfile repeating those names would collide.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What the kernel says about this process right now.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) virtual_bytes: Option<u64>,
    pub(crate) threads: Option<u64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) cpu_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the stats of the calling process; what cannot be read stays `None`.
    pub(crate) fn read() -> ProcessStats {
        let mut stats = std::fs::read_to_string("/proc/self/status")
            .map(|status| parse_status(&status))
            .unwrap_or_default();
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        stats.cpu_seconds = cpu_seconds();
        stats
    }
}

/// `VmRSS`, `VmSize` and `Threads` from the text of `/proc/<pid>/status`.
pub(crate) fn parse_status(status: &str) -> ProcessStats {
    let mut stats = ProcessStats::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let mut words = value.split_whitespace();
        let number = words.next().and_then(|n| n.parse::<u64>().ok());
        let kib = match words.next() {
            Some("kB") => number.map(|n| n.saturating_mul(1024)),
            _ => None,
        };
        match key {
            "VmRSS" => stats.resident_bytes = kib,
            "VmSize" => stats.virtual_bytes = kib,
            "Threads" => stats.threads = number,
            _ => {}
        }
    }
    stats
}

/// User plus system CPU time of the whole process (all threads).
fn cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| {
        #[allow(clippy::cast_precision_loss)] // CPU seconds fit f64 exactly for ages
        let s = t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        s
    };
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Encodes [`ProcessStats`] on every scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = ProcessStats::read();
        let gauges = [
            (
                "spegel_process_resident_memory_bytes",
                "Resident memory of the spegel-node process.",
                stats.resident_bytes,
            ),
            (
                "spegel_process_virtual_memory_bytes",
                "Virtual memory of the spegel-node process.",
                stats.virtual_bytes,
            ),
            (
                "spegel_process_threads",
                "Threads of the spegel-node process.",
                stats.threads,
            ),
            (
                "spegel_process_open_fds",
                "Open file descriptors of the spegel-node process.",
                stats.open_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        if let Some(seconds) = stats.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "spegel_process_cpu_seconds",
                "User and system CPU time of the spegel-node process.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\tspegel-node\nVmSize:\t  20000 kB\nVmRSS:\t   1234 kB\nThreads:\t7\n";

        let stats = parse_status(status);

        assert_eq!(stats.resident_bytes, Some(1234 * 1024));
        assert_eq!(stats.virtual_bytes, Some(20000 * 1024));
        assert_eq!(stats.threads, Some(7));
    }

    #[test]
    fn a_status_without_units_is_not_guessed() {
        let stats = parse_status("VmRSS:\t1234\n");
        assert_eq!(stats.resident_bytes, None);
    }

    #[test]
    fn this_process_has_memory_cpu_and_files() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.threads.unwrap() >= 1);
        assert!(stats.open_fds.unwrap() >= 1);
        assert!(stats.cpu_seconds.unwrap() >= 0.0);
    }
}
