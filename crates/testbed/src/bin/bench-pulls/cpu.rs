//! Where the CPU went during a phase: the machine's busy share (every process, ours and
//! anyone else's) and the CPU seconds of the cluster's own containerd and spegel-node
//! processes. On a small machine running many nodes, CPU rather than the upstream link can
//! bound a phase; these two figures say whether it did.

use std::time::Duration;

/// Clock ticks per second of `/proc` times (`USER_HZ`; 100 on every Linux we run).
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading taken at the start of a phase.
pub struct CpuClock {
    machine: Option<(u64, u64)>,
    containerd: Group,
    spegel: Group,
}

/// Processes counted together, and their ticks at the start.
struct Group {
    pids: Vec<u32>,
    start: u64,
}

impl Group {
    fn start(pids: Vec<u32>) -> Self {
        let start = ticks_of(&pids);
        Self { pids, start }
    }

    /// Seconds used since the start.
    fn seconds(&self) -> f64 {
        ticks_of(&self.pids).saturating_sub(self.start) as f64 / TICKS_PER_SECOND
    }
}

/// Summed `utime + stime` of `pids` (processes gone count nothing).
fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&pid| process_ticks(pid)).sum()
}

/// What a phase used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// CPU seconds (user + system) of the nodes' containerd processes.
    pub containerd_seconds: f64,
    /// CPU seconds of the nodes' spegel-node processes.
    pub spegel_seconds: f64,
    /// Share of all cores busy, 0–1 (every process on the machine).
    pub machine_busy: f64,
}

impl CpuClock {
    /// Starts counting for the processes `containerd` and `spegel`.
    pub fn start(containerd: Vec<u32>, spegel: Vec<u32>) -> Self {
        Self {
            machine: machine_ticks(),
            containerd: Group::start(containerd),
            spegel: Group::start(spegel),
        }
    }

    /// CPU used since [`CpuClock::start`].
    pub fn stop(&self) -> CpuUse {
        let machine_busy = match (self.machine, machine_ticks()) {
            (Some((busy0, all0)), Some((busy1, all1))) if all1 > all0 => {
                (busy1.saturating_sub(busy0)) as f64 / (all1 - all0) as f64
            }
            _ => 0.0,
        };
        CpuUse {
            containerd_seconds: self.containerd.seconds(),
            spegel_seconds: self.spegel.seconds(),
            machine_busy,
        }
    }
}

impl CpuUse {
    /// Adds a rolling batch that took `took` to the batches before it, which took
    /// `before`: seconds add up, the busy share is weighted by time.
    pub fn add(&mut self, batch: &CpuUse, took: Duration, before: Duration) {
        let (took, before) = (took.as_secs_f64(), before.as_secs_f64());
        self.containerd_seconds += batch.containerd_seconds;
        self.spegel_seconds += batch.spegel_seconds;
        if took + before > 0.0 {
            self.machine_busy =
                (self.machine_busy * before + batch.machine_busy * took) / (took + before);
        }
    }

    /// The phase's CPU seconds spread over `cores`: how long the phase would take if the
    /// cluster's CPU work were the only limit.
    pub fn floor(&self, cores: usize) -> Duration {
        Duration::from_secs_f64(
            (self.containerd_seconds + self.spegel_seconds) / cores.max(1) as f64,
        )
    }
}

/// The machine's cores (what the CPU floor divides by).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Busy and total ticks over all CPUs, from `/proc/stat`'s `cpu` line.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal …` → (busy, total).
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// `utime + stime` of `pid`, from `/proc/<pid>/stat`.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line; the command name in
/// parentheses may hold spaces, so fields are counted after its closing parenthesis.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_counts_idle_and_iowait_as_not_busy() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 40 1 2 2 0 0"),
            Some((160, 1000))
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5"), None);
    }

    #[test]
    fn process_times_are_read_after_the_command_name() {
        let stat = "42 (containerd (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0";
        assert_eq!(parse_process_ticks(stat), Some(325));
        assert_eq!(parse_process_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_readable() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(machine_ticks().is_some());
    }
}
