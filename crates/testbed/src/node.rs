//! A `spegel-node registry` process next to a testbed [`Containerd`], on a free
//! loopback port, with its output in a log file.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spegel_secret::ClusterSecret;
use tempfile::TempDir;
use tokio::process::Command;

use crate::containerd::{Containerd, K8S_NAMESPACE};
use crate::netns::Host;
use crate::process::Process;

/// Environment variable naming the `spegel-node` binary to run instead of the one next
/// to the test binary.
pub const BINARY_ENV: &str = "SPEGEL_NODE_BIN";

/// How long the node may take to answer `GET /livez` with 200.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The metrics textfile's name in the node's directory.
const TEXTFILE: &str = "spegel.prom";

/// The secret file's name in the node's directory (when the test gave none).
const SECRET_FILE: &str = "cluster-secret";

/// How long [`SpegelNode::terminate`] waits after SIGTERM.
const TERMINATE_GRACE: Duration = Duration::from_secs(15);

/// Finds the `spegel-node` binary: `$SPEGEL_NODE_BIN` if set, else the binary in the
/// cargo target directory of the running test (`target/<profile>/spegel-node`).
pub fn spegel_node_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running test binary")?;
    locate_binary(std::env::var_os(BINARY_ENV), &exe)
}

/// [`spegel_node_binary`] given the override and the running executable.
fn locate_binary(env_override: Option<OsString>, exe: &Path) -> Result<PathBuf> {
    if let Some(path) = env_override {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{BINARY_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    // Tests run as target/<profile>/deps/<name>-<hash>; examples and the demo as
    // target/<profile>/examples/<name> or target/<profile>/<name>.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("spegel-node"))
        .collect();
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "spegel-node not found at {candidates:?}; build it first: cargo build -p spegel-node (or set {BINARY_ENV})"
            )
        })
}

/// A running `spegel-node registry`. Dropping it kills the process and removes its log.
pub struct SpegelNode {
    // Declared before `dir` so the process is killed before its files are removed.
    process: Option<Process>,
    addr: SocketAddr,
    host: Option<Host>,
    dir: TempDir,
}

impl SpegelNode {
    /// Starts `spegel-node registry` against `containerd` with
    /// `--registry-addr 127.0.0.1:<free port> --containerd-sock <socket>
    /// --containerd-namespace k8s.io --containerd-content-path <content>
    /// --log-level debug --cluster-secret-file <this process's secret>` followed by
    /// `extra_args`, and waits until `GET /livez` answers 200. The binary is found by
    /// [`spegel_node_binary`]. Give `--cluster-secret-file` or `--insecure-open-dht` in
    /// `extra_args` to choose another membership (see [`process_secret`]).
    pub async fn start(containerd: &Containerd, extra_args: &[&str]) -> Result<Self> {
        Self::spawn(&spegel_node_binary()?, None, containerd, extra_args, &[]).await
    }

    /// [`SpegelNode::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub async fn start_with_env(
        containerd: &Containerd,
        extra_args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        Self::spawn(&spegel_node_binary()?, None, containerd, extra_args, env).await
    }

    /// Starts `spegel-node registry` inside `host`'s namespace with its registry on
    /// `<host ip>:5000` and its router on `<host ip>:5001` (the defaults of a real node).
    pub async fn start_in(
        host: &Host,
        containerd: &Containerd,
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::spawn(
            &spegel_node_binary()?,
            Some(host),
            containerd,
            extra_args,
            &[],
        )
        .await
    }

    /// [`SpegelNode::start`] with an explicit binary.
    pub async fn start_binary(
        binary: &Path,
        containerd: &Containerd,
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::spawn(binary, None, containerd, extra_args, &[]).await
    }

    async fn spawn(
        binary: &Path,
        host: Option<&Host>,
        containerd: &Containerd,
        extra_args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("spegel-node-")
            .tempdir()
            .context("creating a temporary directory for spegel-node")?;
        let (addr, router) = match host {
            Some(host) => (
                SocketAddr::from((host.ip, 5000)),
                SocketAddr::from((host.ip, 5001)),
            ),
            None => (
                crate::port::free_loopback_addr()?,
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ),
        };
        let mut command = match host {
            Some(host) => host.command(&binary.to_string_lossy()),
            None => Command::new(binary),
        };
        command
            .arg("registry")
            .arg("--registry-addr")
            .arg(addr.to_string())
            .arg("--containerd-sock")
            .arg(containerd.socket())
            .args(["--containerd-namespace", K8S_NAMESPACE]);
        // Several nodes share loopback: let the router pick a free port unless told otherwise.
        if !extra_args.iter().any(|a| a.starts_with("--router-addr")) {
            command.args(["--router-addr", &router.to_string()]);
        }
        // Metrics on a free port, the textfile in the node's own directory, and the preflight
        // check against this containerd's config, unless the test says otherwise.
        let given = |flag: &str| {
            extra_args
                .iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !given("--containerd-content-path") {
            command
                .arg("--containerd-content-path")
                .arg(containerd.content_path());
        }
        if !given("--log-level") {
            command.args(["--log-level", "debug"]);
        }
        if !given("--metrics-addr") {
            command.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        if !given("--metrics-textfile") {
            command
                .arg("--metrics-textfile")
                .arg(dir.path().join(TEXTFILE));
        }
        // Nodes are members unless the test says otherwise: those started without a secret
        // share this test process's one, so nodes on loopback find each other as before.
        if !given("--cluster-secret-file") && !given("--insecure-open-dht") {
            let path = dir.path().join(SECRET_FILE);
            process_secret()?.write_new(&path)?;
            command.arg("--cluster-secret-file").arg(path);
        }
        if !given("--containerd-config-path") {
            command
                .arg("--containerd-config-path")
                .arg(containerd.config_path());
        }
        if !given("--containerd-registry-config-path") {
            command
                .arg("--containerd-registry-config-path")
                .arg(containerd.hosts_dir());
        }
        command.args(extra_args);
        command.envs(env.iter().copied());
        let log = dir.path().join("spegel-node.log");
        let mut process = Process::spawn("spegel-node", command, &log, &log)?;
        wait_until_live(&mut process, host, addr).await?;
        Ok(Self {
            process: Some(process),
            addr,
            host: host.cloned(),
            dir,
        })
    }

    /// The network namespace it runs in (`None`: the machine's own).
    pub fn netns(&self) -> Option<&Host> {
        self.host.as_ref()
    }

    /// The registry address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as written in a `hosts.toml` mirror entry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id of the running node (for reading `/proc/<pid>/status`); `None`
    /// once it has been terminated.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|process| process.id())
    }

    /// The node's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        crate::attack::peak_rss(self.pid().context("spegel-node is not running")?)
    }

    /// Where the node writes its metrics textfile (unless `--metrics-textfile` was given).
    pub fn textfile_path(&self) -> PathBuf {
        self.dir.path().join(TEXTFILE)
    }

    /// The value of one series in the metrics textfile as last written (0 when absent),
    /// e.g. `spegel_peer_bytes_total{zone="same"}`. The caller waits for the next write
    /// (`--metrics-textfile-interval`) after what it wants counted.
    pub fn textfile_metric(&self, series: &str) -> Result<f64> {
        let path = self.textfile_path();
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let prefix = format!("{series} ");
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("spegel-node.log")
    }

    /// The log so far.
    pub fn log(&self) -> Result<String> {
        let path = self.log_path();
        read_lossy(&path)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its status.
    /// Errors if it had already been terminated or had to be killed.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let mut process = self
            .process
            .take()
            .context("spegel-node was already terminated")?;
        process.terminate(TERMINATE_GRACE).await
    }
}

/// The cluster secret of every node this test process starts without one (random per process).
pub fn process_secret() -> Result<&'static ClusterSecret> {
    static SECRET: OnceLock<Option<ClusterSecret>> = OnceLock::new();
    SECRET
        .get_or_init(|| ClusterSecret::generate().ok())
        .as_ref()
        .context("cannot generate a cluster secret: no randomness")
}

async fn wait_until_live(
    process: &mut Process,
    host: Option<&Host>,
    addr: SocketAddr,
) -> Result<()> {
    let url = format!("http://{addr}/livez");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        process.ensure_running()?;
        let status = crate::http::request_in(host, crate::http::Method::GET, &url, &[])
            .await
            .map(|r| r.status);
        if let Ok(200) = status {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "spegel-node did not answer GET {url} with 200 within {START_TIMEOUT:?} (last: {status:?}); log tail:\n{}",
                process.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_lossy(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_override_must_name_a_file() {
        let missing = "/nonexistent/spegel-node";
        let error = locate_binary(Some(missing.into()), Path::new("/x/deps/t")).unwrap_err();
        assert!(error.to_string().contains(missing), "{error}");
    }

    #[test]
    fn the_binary_override_wins_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("my-node");
        std::fs::write(&binary, b"").unwrap();

        let found = locate_binary(Some(binary.clone().into()), Path::new("/x/deps/t")).unwrap();

        assert_eq!(found, binary);
    }

    #[test]
    fn the_binary_is_found_in_the_profile_dir_above_deps() {
        let profile = tempfile::tempdir().unwrap();
        std::fs::create_dir(profile.path().join("deps")).unwrap();
        std::fs::write(profile.path().join("spegel-node"), b"").unwrap();
        let exe = profile.path().join("deps").join("e2e-0123abcd");

        let found = locate_binary(None, &exe).unwrap();

        assert_eq!(found, profile.path().join("spegel-node"));
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let profile = tempfile::tempdir().unwrap();
        let exe = profile.path().join("deps").join("e2e-0123abcd");

        let error = locate_binary(None, &exe).unwrap_err().to_string();

        assert!(error.contains("cargo build -p spegel-node"), "{error}");
    }
}
