//! A real `containerd` process of our own: its own root, state, sockets and `certs.d`
//! in a temporary directory under `/tmp`, so several can run at once beside the host's.
//!
//! Images are pulled through the CRI ImageService exactly as kubelet pulls them, and
//! `ctr` is at hand for looking at the content store. Which containerd runs (Debian 12's
//! 1.6 or another build) and which config version it gets is [`Build`]'s business.

mod build;
mod config;
mod cri;
mod task;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::netns::Host;
use crate::process::Process;

pub use build::{Build, CONTAINERD_ENV, Version};
pub use config::Snapshotter;
pub use k8s_cri::v1::Image as CriImage;
pub use task::{RunOptions, Task};

/// How long containerd may take to serve CRI after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long containerd may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The containerd namespace kubelet uses, and the one `ctr` is pointed at.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// A running containerd with a throwaway root. Dropping it kills the process and
/// removes the directory.
pub struct Containerd {
    // Declared before `dir` so the process is killed before its files are removed.
    process: Option<Process>,
    build: &'static Build,
    layout: config::Layout,
    snapshotter: Snapshotter,
    /// The network namespace it runs in (`None`: the machine's own).
    host: Option<Host>,
    _dir: TempDir,
}

impl Containerd {
    /// Writes a config into a fresh directory, starts containerd and waits until the
    /// CRI ImageService answers. On failure the error quotes containerd's log.
    pub async fn start() -> Result<Self> {
        Self::start_in(None).await
    }

    /// Like [`Containerd::start`], with containerd running inside `host`'s network
    /// namespace (its sockets are files, so they are reachable from anywhere).
    pub async fn start_in(host: Option<&Host>) -> Result<Self> {
        Self::start_in_with(host, Snapshotter::default()).await
    }

    /// Like [`Containerd::start_in`], unpacking images into `snapshotter`.
    pub async fn start_in_with(host: Option<&Host>, snapshotter: Snapshotter) -> Result<Self> {
        let build = Build::current()?;
        Self::start_with(host, build.config_version(), snapshotter).await
    }

    /// [`Containerd::start`] with a config of `config_version` (2 or 3) instead of the
    /// build's own: containerd 2.x migrates a version 2 config when it loads it.
    pub async fn start_with_config_version(config_version: u8) -> Result<Self> {
        Self::start_with(None, config_version, Snapshotter::default()).await
    }

    async fn start_with(
        host: Option<&Host>,
        config_version: u8,
        snapshotter: Snapshotter,
    ) -> Result<Self> {
        let build = Build::current()?;
        // Under /tmp rather than $TMPDIR: socket paths must stay short.
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir_in("/tmp")
            .context("creating a temporary directory for containerd")?;
        let layout = config::Layout::new(dir.path());
        std::fs::create_dir_all(&layout.hosts_dir)
            .with_context(|| format!("creating {}", layout.hosts_dir.display()))?;
        std::fs::write(
            &layout.config,
            config::render(
                &layout,
                config_version,
                build.version().major >= 2,
                snapshotter,
            ),
        )
        .with_context(|| format!("writing {}", layout.config.display()))?;
        let mut containerd = Self {
            process: None,
            build,
            layout,
            snapshotter,
            host: host.cloned(),
            _dir: dir,
        };
        containerd.spawn().await?;
        Ok(containerd)
    }

    /// The containerd process's id, while it runs (for crashing it in tests).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|process| process.id())
    }

    /// The build it runs (its version, its `ctr`).
    pub fn build(&self) -> &'static Build {
        self.build
    }

    /// The gRPC socket (also serves CRI).
    pub fn socket(&self) -> &Path {
        &self.layout.socket
    }

    /// The `--root` directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// The content store directory, `<root>/io.containerd.content.v1.content`.
    pub fn content_path(&self) -> PathBuf {
        self.layout.root.join("io.containerd.content.v1.content")
    }

    /// The path of blob `digest` (`sha256:<hex>`) in the content store.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.content_path().join("blobs").join(algorithm).join(hex)
    }

    /// The registry hosts directory (`certs.d`) containerd reads `hosts.toml` from.
    pub fn hosts_dir(&self) -> PathBuf {
        self.layout.hosts_dir.clone()
    }

    /// containerd's log file (stdout and stderr, across restarts).
    pub fn log_path(&self) -> &Path {
        &self.layout.log
    }

    /// The generated `config.toml`.
    pub fn config_path(&self) -> &Path {
        &self.layout.config
    }

    /// Writes `certs.d/<host_dir_name>/hosts.toml`. `host_dir_name` is a registry host
    /// such as `127.0.0.1:5000`, or `_default` for every registry. containerd reads the
    /// file on each pull, so no restart is needed.
    pub fn write_hosts_toml(&self, host_dir_name: &str, contents: &str) -> Result<()> {
        if host_dir_name.is_empty() || host_dir_name.contains('/') || host_dir_name == ".." {
            bail!("{host_dir_name:?} is not a registry host directory name");
        }
        let dir = self.layout.hosts_dir.join(host_dir_name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("hosts.toml");
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    /// Points pulls of images named `<upstream_host>/…` at the plain-HTTP registry
    /// `http://<upstream_host>` (e.g. an [`Upstream`](crate::Upstream)).
    pub fn mirror_to(&self, upstream_host: &str) -> Result<()> {
        self.write_hosts_toml(upstream_host, &config::plain_http_hosts_toml(upstream_host))
    }

    /// Pulls `image` through CRI `PullImage`, as kubelet does, and returns the image
    /// reference containerd reports (the image id, `sha256:…`).
    pub async fn cri_pull(&self, image: &str) -> Result<String> {
        cri::pull(self.socket(), image)
            .await
            .with_context(|| format!("containerd log tail:\n{}", self.log_tail()))
    }

    /// [`Containerd::cri_pull`] for a large image: gives up after `timeout` instead of
    /// the default two minutes.
    pub async fn cri_pull_within(&self, image: &str, timeout: Duration) -> Result<String> {
        cri::pull_within(self.socket(), image, timeout)
            .await
            .with_context(|| format!("containerd log tail:\n{}", self.log_tail()))
    }

    /// Removes `image` through CRI `RemoveImage`.
    pub async fn cri_remove(&self, image: &str) -> Result<()> {
        cri::remove(self.socket(), image).await
    }

    /// Lists images through CRI `ListImages`.
    pub async fn cri_images(&self) -> Result<Vec<CriImage>> {
        cri::list(self.socket()).await
    }

    /// The repo tags and repo digests of every image CRI knows.
    pub async fn cri_list(&self) -> Result<Vec<String>> {
        let images = self.cri_images().await?;
        Ok(images
            .into_iter()
            .flat_map(|image| image.repo_tags.into_iter().chain(image.repo_digests))
            .collect())
    }

    /// Runs `ctr --address <socket> --namespace k8s.io <args>` and returns its stdout.
    pub async fn ctr(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(self.build.program("ctr"))
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", K8S_NAMESPACE])
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .context("running ctr")?;
        if !output.status.success() {
            bail!(
                "ctr {} failed with {}: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout).context("ctr printed non-UTF-8 output")
    }

    /// The digests `ctr content ls` lists.
    pub async fn content_digests(&self) -> Result<Vec<String>> {
        let listing = self.ctr(&["content", "ls", "--quiet"]).await?;
        Ok(listing.lines().map(|line| line.trim().to_owned()).collect())
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stops containerd with SIGTERM (killing it if it lingers). Its files stay.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Stops containerd if it runs, then starts it again with the same root, state and
    /// config, and waits until CRI answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<()> {
        let layout = &self.layout;
        let program = self.build.program("containerd");
        let mut command = match &self.host {
            // Containers it starts need the machine's cgroup mounts.
            Some(host) => host.command_keeping_mounts(&program.to_string_lossy()),
            None => Command::new(&program),
        };
        if let Some(path) = self.build.path_env() {
            command.env("PATH", path);
        }
        command
            .arg("--config")
            .arg(&layout.config)
            .arg("--root")
            .arg(&layout.root)
            .arg("--state")
            .arg(&layout.state)
            .arg("--address")
            .arg(&layout.socket);
        let mut process = Process::spawn("containerd", command, &layout.log, &layout.log)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            process.ensure_running()?;
            match cri::list(&layout.socket).await {
                Ok(_) => break,
                Err(error) if Instant::now() >= deadline => {
                    bail!(
                        "containerd did not serve CRI within {START_TIMEOUT:?} ({error:#}); log {}:\n{}",
                        layout.log.display(),
                        process.log_tail()
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        tracing::debug!(socket = %layout.socket.display(), "containerd is serving CRI");
        self.process = Some(process);
        Ok(())
    }

    fn log_tail(&self) -> String {
        crate::process::log_tail(&self.layout.log)
    }
}
