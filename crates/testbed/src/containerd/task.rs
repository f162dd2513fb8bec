//! Containers run in a testbed containerd with `ctr run`, as the kubelet would run a pod's
//! containers: bind mounts, environment, a read-only root filesystem, and optionally a
//! testbed host's network namespace (a pod with `hostNetwork` on that node).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use super::{Containerd, K8S_NAMESPACE, Snapshotter};
use crate::netns::Host;

/// How a container runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Bind mounts: host path, container path, read-only.
    pub mounts: Vec<(PathBuf, String, bool)>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Join this host's network namespace instead of getting one of its own.
    pub host_network: Option<Host>,
    /// Mount the image's root filesystem read-only.
    pub read_only: bool,
}

impl RunOptions {
    fn ctr_args(&self, snapshotter: Snapshotter) -> Vec<String> {
        let mut args = vec!["--snapshotter".to_owned(), snapshotter.name().to_owned()];
        if self.read_only {
            args.push("--read-only".to_owned());
        }
        if let Some(host) = &self.host_network {
            args.push("--with-ns".to_owned());
            args.push(format!("network:/run/netns/{}", host.ns));
        }
        for (source, target, read_only) in &self.mounts {
            let options = if *read_only { "rbind:ro" } else { "rbind:rw" };
            args.push("--mount".to_owned());
            args.push(format!(
                "type=bind,src={},dst={target},options={options}",
                source.display()
            ));
        }
        for (name, value) in &self.env {
            args.push("--env".to_owned());
            args.push(format!("{name}={value}"));
        }
        args
    }
}

/// A container started with `ctr run --detach`. Dropping it kills and deletes it (its shim
/// outlives containerd otherwise).
pub struct Task {
    ctr: OsString,
    socket: PathBuf,
    id: String,
    log: PathBuf,
}

impl Task {
    /// The container's stdout and stderr so far.
    pub fn log(&self) -> String {
        crate::process::log_tail(&self.log)
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let ctr = |args: &[&str]| {
            let _ = std::process::Command::new(&self.ctr)
                .arg("--address")
                .arg(&self.socket)
                .args(["--namespace", K8S_NAMESPACE])
                .args(args)
                .output();
        };
        ctr(&["task", "kill", "--signal", "SIGKILL", &self.id]);
        // The task must have exited before it can be deleted.
        for _ in 0..50 {
            let deleted = std::process::Command::new(&self.ctr)
                .arg("--address")
                .arg(&self.socket)
                .args(["--namespace", K8S_NAMESPACE, "task", "delete", &self.id])
                .output()
                .is_ok_and(|out| out.status.success());
            if deleted {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ctr(&["container", "delete", &self.id]);
    }
}

/// A container ID no other test process uses: runc keeps its state in one directory per
/// machine (`/run/containerd/runc/<namespace>`), shared by every containerd on it.
fn unique_id(id: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{id}-{}-{n}", std::process::id())
}

impl Containerd {
    /// Imports an OCI or Docker archive (`ctr images import`), unpacked into this
    /// containerd's snapshotter.
    pub async fn import(&self, archive: &Path) -> Result<()> {
        let archive = archive.to_string_lossy();
        let snapshotter = self.snapshotter.name();
        self.ctr(&["images", "import", "--snapshotter", snapshotter, &archive])
            .await?;
        Ok(())
    }

    /// Runs `args` in a container of `image` until it exits (`ctr run --rm`); returns its
    /// output. A non-zero exit is an error quoting it. `id` is made unique on the machine.
    pub async fn run(
        &self,
        image: &str,
        id: &str,
        options: &RunOptions,
        args: &[&str],
    ) -> Result<String> {
        let mut ctr_args = vec!["run".to_owned(), "--rm".to_owned()];
        ctr_args.extend(options.ctr_args(self.snapshotter));
        ctr_args.extend([image.to_owned(), unique_id(id)]);
        ctr_args.extend(args.iter().map(|&arg| arg.to_owned()));
        let ctr_args: Vec<&str> = ctr_args.iter().map(String::as_str).collect();
        self.ctr(&ctr_args).await
    }

    /// Starts `args` in a container of `image` and returns at once (`ctr run --detach`);
    /// its output goes to `log`. `id` is made unique on the machine.
    pub async fn run_detached(
        &self,
        image: &str,
        id: &str,
        options: &RunOptions,
        args: &[&str],
        log: &Path,
    ) -> Result<Task> {
        let mut ctr_args = vec![
            "run".to_owned(),
            "--detach".to_owned(),
            "--log-uri".to_owned(),
            format!("file://{}", log.display()),
        ];
        ctr_args.extend(options.ctr_args(self.snapshotter));
        let id = unique_id(id);
        ctr_args.extend([image.to_owned(), id.clone()]);
        ctr_args.extend(args.iter().map(|&arg| arg.to_owned()));
        let ctr_args: Vec<&str> = ctr_args.iter().map(String::as_str).collect();
        self.ctr(&ctr_args).await?;
        Ok(Task {
            ctr: self.build.program("ctr"),
            socket: self.socket().to_owned(),
            id,
            log: log.to_owned(),
        })
    }
}
