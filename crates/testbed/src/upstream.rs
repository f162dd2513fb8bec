//! A real upstream registry: distribution's `docker-registry serve` with filesystem
//! storage in a temporary directory, on a free loopback port, with its access log kept
//! so tests can prove which requests reached it.
//! [`Upstream::start_proxy_in`] runs the same program as a pull-through cache of another
//! registry (distribution's proxy mode), for the benchmarks.

mod access_log;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::http::Method;
use crate::netns::Host;
use crate::process::Process;

pub use access_log::LoggedRequest;

/// How long the registry may take to answer `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the access log must stay unchanged before it is read.
const QUIET_PERIOD: Duration = Duration::from_millis(100);

/// The longest [`Upstream::requests`] waits for the access log to stay unchanged.
const QUIET_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the registry may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running `docker-registry`. Dropping it kills the process and removes its storage.
pub struct Upstream {
    // Declared before `dir` so the process is killed before its files are removed.
    process: Option<Process>,
    addr: SocketAddr,
    /// The network namespace it runs in (`None`: the machine's own, on loopback).
    host: Option<Host>,
    dir: TempDir,
}

impl Upstream {
    /// Starts a registry on a free loopback port and waits until `GET /v2/` answers 200.
    pub async fn start() -> Result<Self> {
        Self::start_in(None).await
    }

    /// Starts a registry inside `host`'s namespace on port 5000 of its address, or on
    /// loopback when `host` is `None`.
    pub async fn start_in(host: Option<&Host>) -> Result<Self> {
        Self::start_serving(host, None).await
    }

    /// Starts a pull-through cache (distribution's proxy mode, `proxy.remoteurl`, as
    /// Gardener's registry-cache runs it) in front of the registry at `remote_url`
    /// (e.g. `http://10.231.0.2:5000`), placed like [`Upstream::start_in`]. It stores
    /// what it fetched and serves later requests from its storage; it refuses pushes.
    pub async fn start_proxy_in(host: Option<&Host>, remote_url: &str) -> Result<Self> {
        Self::start_serving(host, Some(remote_url)).await
    }

    async fn start_serving(host: Option<&Host>, proxy_remote_url: Option<&str>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("upstream-")
            .tempdir()
            .context("creating a temporary directory for docker-registry")?;
        let addr = match host {
            Some(host) => SocketAddr::from((host.ip, 5000)),
            None => crate::port::free_loopback_addr()?,
        };
        let config = render_config(&dir.path().join("storage"), addr, proxy_remote_url);
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut upstream = Self {
            process: None,
            addr,
            host: host.cloned(),
            dir,
        };
        upstream.start_again().await?;
        Ok(upstream)
    }

    /// `127.0.0.1:PORT`, the registry host as it appears in image names.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access log (the registry's stdout).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The application log (the registry's stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stops the registry; storage and logs stay, so [`Upstream::start_again`] serves
    /// the same images.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Starts the registry again on the same port and storage (stopping it first if it
    /// runs), and waits until `GET /v2/` answers 200.
    pub async fn start_again(&mut self) -> Result<()> {
        self.stop().await?;
        let mut command = match &self.host {
            Some(host) => host.command("docker-registry"),
            None => Command::new("docker-registry"),
        };
        command.arg("serve").arg(self.dir.path().join("config.yml"));
        // distribution lets REGISTRY_* variables override the config file.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(name);
            }
        }
        let mut process = Process::spawn(
            "docker-registry",
            command,
            &self.access_log_path(),
            &self.log_path(),
        )?;
        let url = format!("{}/v2/", self.url());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            process.ensure_running()?;
            let status = crate::http::request_in(self.host.as_ref(), Method::GET, &url, &[])
                .await
                .map(|r| r.status);
            if let Ok(200) = status {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "docker-registry did not answer GET {url} with 200 within {START_TIMEOUT:?} (last: {status:?}); log:\n{}",
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process = Some(process);
        Ok(())
    }

    /// Every request in the access log so far, oldest first.
    ///
    /// The registry logs a request after its response is written, so a client can be
    /// done before the line lands; this first waits (up to a second) until the log
    /// stops growing.
    pub async fn requests(&self) -> Result<Vec<LoggedRequest>> {
        let path = self.access_log_path();
        wait_until_quiet(&path).await;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        Ok(access_log::parse(&text))
    }

    /// Bytes of every blob GET so far whose client address (`10.231.0.3`) `from` accepts.
    pub async fn blob_bytes(&self, from: impl Fn(&str) -> bool) -> Result<u64> {
        Ok(self
            .requests()
            .await?
            .iter()
            .filter(|r| r.is_blob_get() && from(&r.client))
            .map(|r| r.bytes)
            .sum())
    }

    /// The paths of every `GET /v2/…/blobs/<digest>` request so far.
    pub async fn blob_requests(&self) -> Result<Vec<String>> {
        Ok(self
            .requests()
            .await?
            .into_iter()
            .filter(LoggedRequest::is_blob_get)
            .map(|request| request.path)
            .collect())
    }
}

/// Waits until the file at `path` has not grown for [`QUIET_PERIOD`], or
/// [`QUIET_TIMEOUT`] passed.
async fn wait_until_quiet(path: &Path) {
    let len = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + QUIET_TIMEOUT;
    let mut last = len();
    while Instant::now() < deadline {
        tokio::time::sleep(QUIET_PERIOD).await;
        let now = len();
        if now == last {
            return;
        }
        last = now;
    }
}

/// distribution's `config.yml`: filesystem storage, loopback only, access log on; with
/// `proxy_remote_url`, a pull-through cache of that registry.
fn render_config(storage: &Path, addr: SocketAddr, proxy_remote_url: Option<&str>) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    let storage = serde_json::Value::from(storage.to_string_lossy()).to_string();
    let proxy = proxy_remote_url
        .map(|url| {
            let url = serde_json::Value::from(url).to_string();
            format!("proxy:\n  remoteurl: {url}\n")
        })
        .unwrap_or_default();
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: spegel-testbed-upload-state-secret
{proxy}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_the_given_loopback_address_and_stores_in_the_given_dir() {
        let addr: SocketAddr = "127.0.0.1:4999".parse().unwrap();
        let config = render_config(Path::new("/tmp/up/storage"), addr, None);
        assert!(config.contains("  addr: 127.0.0.1:4999\n"), "{config}");
        assert!(
            config.contains("rootdirectory: \"/tmp/up/storage\"\n"),
            "{config}"
        );
        assert!(config.contains("disabled: false"), "{config}");
        assert!(!config.contains("proxy:"), "{config}");
    }

    #[test]
    fn a_proxy_config_names_the_remote_registry() {
        let addr: SocketAddr = "10.231.0.9:5000".parse().unwrap();
        let config = render_config(
            Path::new("/tmp/cache/storage"),
            addr,
            Some("http://10.231.0.2:5000"),
        );
        assert!(
            config.ends_with("proxy:\n  remoteurl: \"http://10.231.0.2:5000\"\n"),
            "{config}"
        );
    }
}
