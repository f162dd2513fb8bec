//! What the figures were measured on and with: the machine, the commit, the load and the
//! command, for the report to name.

use std::path::Path;

use tokio::process::Command;

/// What is recorded before the run starts.
pub struct Start {
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages.
    pub load: String,
    /// `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from it.
    pub commit: String,
}

impl Start {
    /// Reads the load and the commit; `out` (the report directory) does not count as a
    /// change: a previous run's report there leaves the code as committed.
    pub async fn record(out: &Path) -> Start {
        Start {
            load: load_average(),
            commit: commit(out).await,
        }
    }
}

/// What the figures were measured on.
pub struct Machine {
    pub date: String,
    /// Of the working directory (the repository root the command is run from).
    pub commit: String,
    /// What `nproc` prints: the CPUs this process may use.
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory: String,
    pub containerd: String,
    pub registry: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages when the run started and ended: the
    /// machine may be shared.
    pub load_before: String,
    pub load_after: String,
    /// The command line, with any `BENCH_PULLS_*` variables in front.
    pub command: String,
}

impl Machine {
    /// Reads `/proc`, asks `date` and the tools for their versions; `start` was recorded
    /// at the start of the run.
    pub async fn describe(start: Start) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let memory = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches(" kB")
            .parse::<f64>()
            .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|_| "unknown".to_owned());
        let env: Vec<String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("BENCH_PULLS_") || k == "SPEGEL_NODE_BIN")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let argv: Vec<String> = std::env::args().collect();
        Machine {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).await,
            commit: start.commit,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: field(&read("/proc/cpuinfo"), "model name"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory,
            load_before: start.load,
            load_after: load_average(),
            containerd: output("containerd", &["--version"]).await,
            registry: output("docker-registry", &["--version"]).await,
            command: env.into_iter().chain(argv).collect::<Vec<_>>().join(" "),
        }
    }
}

impl Machine {
    /// The markdown table a report names the machine with.
    pub fn table(&self) -> String {
        format!(
            "| machine | |\n|---|---|\n| commit | `{}` |\n| date | {} |\n| CPUs (nproc) | {} |\n\
             | CPU (model name) | {} |\n| kernel | {} |\n| memory | {} |\n\
             | load average (1, 5, 15 min) before | {} |\n| load average after | {} |\n\
             | containerd | {} |\n| docker-registry | {} |\n",
            self.commit,
            self.date,
            self.cpus,
            self.cpu_model,
            self.kernel,
            self.memory,
            self.load_before,
            self.load_after,
            self.containerd,
            self.registry
        )
    }
}

/// The 1, 5 and 15 minute load averages, e.g. `0.52 0.80 1.10`.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The short commit of the working directory, `-dirty` when tracked files outside `out`
/// differ from it; `unknown` outside a git checkout.
async fn commit(out: &Path) -> String {
    let head = output("git", &["rev-parse", "--short", "HEAD"]).await;
    if head == "unknown" || head.is_empty() {
        return "unknown".to_owned();
    }
    let exclude = format!(":(exclude){}", out.display());
    let status = ["status", "--porcelain", "--untracked-files=no", "--"];
    // The exclusion fails when `out` lies outside the repository; then nothing is excluded.
    let changes = match lines("git", &[&status[..], &[".", &exclude]].concat()).await {
        Some(changes) => changes,
        None => lines("git", &status).await.unwrap_or_default(),
    };
    if changes.trim().is_empty() {
        head
    } else {
        format!("{head}-dirty")
    }
}

/// Everything `program args` prints, if it succeeds.
async fn lines(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().await.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line `program args` prints, or `unknown`.
async fn output(program: &str, args: &[&str]) -> String {
    lines(program, args)
        .await
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
