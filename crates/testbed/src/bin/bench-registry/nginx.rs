//! Debian's nginx serving a directory over plain HTTP on a free loopback port: the
//! reference the registry's blob throughput is compared with.
//!
//! The configuration is Debian's own where it matters for one large file (`sendfile on`,
//! `tcp_nopush on`, `worker_processes auto`, default `sendfile_max_chunk`); logs, pid and
//! temp paths live in a temporary prefix directory. Workers run as root because the
//! testbed's containerd root is private to root.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long nginx may take to accept connections after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the master may take to stop its workers and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running nginx master (in the foreground, `daemon off`) and its workers. Dropping it
/// stops them and removes the prefix directory.
pub struct Nginx {
    // Declared before `dir` so nginx is stopped before its files are removed.
    master: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx serving the files under `root` at `http://127.0.0.1:<free port>/`
    /// and waits until it accepts connections.
    pub async fn start(root: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bench-nginx-")
            .tempdir()
            .context("creating a prefix directory for nginx")?;
        let addr = spegel_testbed::port::free_loopback_addr()?;
        let config = dir.path().join("nginx.conf");
        std::fs::write(&config, render_config(dir.path(), addr, root))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.path().join("error.log");
        let output = std::fs::File::create(dir.path().join("nginx.out"))
            .context("creating nginx's output file")?;
        let master = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(output.try_clone().context("duplicating a file handle")?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .context("spawning nginx (Debian package nginx-light or nginx)")?;
        let mut nginx = Self { master, addr, dir };
        nginx.wait_until_accepting().await?;
        Ok(nginx)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The master's pid and its workers' (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        let Some(master) = self.master.id() else {
            return Vec::new();
        };
        let workers = i32::try_from(master).map(children).unwrap_or_default();
        std::iter::once(master)
            .chain(
                workers
                    .into_iter()
                    .filter_map(|pid| u32::try_from(pid).ok()),
            )
            .collect()
    }

    async fn wait_until_accepting(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.master.try_wait().context("checking on nginx")? {
                bail!(
                    "nginx exited early with {status}:\n{}\n{}",
                    read_lossy(&self.dir.path().join("nginx.out")),
                    read_lossy(&self.dir.path().join("error.log"))
                );
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not accept connections on {} within {START_TIMEOUT:?}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM makes the master stop its workers and exit. If it lingers, the master and
    /// the workers it had are killed by pid: a killed master leaves its workers running.
    fn drop(&mut self) {
        if !matches!(self.master.try_wait(), Ok(None)) {
            return;
        }
        let Some(pid) = self.master.id().and_then(|id| i32::try_from(id).ok()) else {
            return;
        };
        let workers = children(pid);
        if kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(self.master.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for worker in workers {
            let _ = kill(Pid::from_raw(worker), Signal::SIGKILL);
        }
        let _ = self.master.start_kill();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && matches!(self.master.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The configuration: Debian's defaults for static files, minus logging to `/var/log`.
fn render_config(prefix: &Path, addr: SocketAddr, root: &Path) -> String {
    let prefix = prefix.display();
    let mut config = String::new();
    let _ = write!(
        config,
        "\
daemon off;
master_process on;
worker_processes auto;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen {addr};
        root {root};
    }}
}}
",
        root = root.display(),
    );
    config
}

/// The pids of the children of `pid`, from `/proc/<pid>/task/<pid>/children`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_serves_the_root_with_sendfile_on_the_given_address() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let config = render_config(Path::new("/tmp/p"), addr, Path::new("/tmp/content"));

        assert!(config.contains("listen 127.0.0.1:8080;"), "{config}");
        assert!(config.contains("root /tmp/content;"), "{config}");
        assert!(config.contains("sendfile on;"), "{config}");
        assert!(config.contains("pid /tmp/p/nginx.pid;"), "{config}");
    }
}
