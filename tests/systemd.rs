//! sd-notify from the real `spegel-node` binary against a real containerd, with
//! `NOTIFY_SOCKET` pointing at a unix datagram socket of the test standing in for systemd.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spegel_testbed::{Containerd, SpegelNode, http};
use tokio::net::UnixDatagram;

/// How long any expected notification may take to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

/// The test's end of `NOTIFY_SOCKET`: every datagram, as its lines.
struct Systemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Systemd {
    fn listen() -> Result<Systemd> {
        let dir = tempfile::Builder::new()
            .prefix("notify-")
            .tempdir_in("/tmp")?;
        let socket = UnixDatagram::bind(dir.path().join("notify.sock"))?;
        Ok(Systemd { socket, _dir: dir })
    }

    fn path(&self) -> &Path {
        self._dir.path()
    }

    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![(
            "NOTIFY_SOCKET",
            self.path().join("notify.sock").into_os_string(),
        )]
    }

    /// The next datagram's lines, or `None` after `wait`.
    async fn next(&self, wait: Duration) -> Option<Vec<String>> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(wait, self.socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Reads datagrams until one has a line starting with `prefix`; returns every line seen.
    async fn expect(&self, prefix: &str) -> Result<Vec<String>> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(lines) = self.next(left).await else {
                bail!("no {prefix:?} within {PATIENCE:?}; got {seen:?}");
            };
            let found = lines.iter().any(|line| line.starts_with(prefix));
            seen.extend(lines);
            if found {
                return Ok(seen);
            }
        }
    }

    /// Every line received during `window`.
    async fn during(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut seen = Vec::new();
        while let Some(lines) = self
            .next(end.saturating_duration_since(Instant::now()))
            .await
        {
            seen.extend(lines);
        }
        seen
    }
}

fn env_refs<'a>(
    env: &'a [(&'static str, std::ffi::OsString)],
) -> Vec<(&'static str, &'a std::ffi::OsStr)> {
    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
}

fn count(lines: &[String], wanted: &str) -> usize {
    lines.iter().filter(|line| *line == wanted).count()
}

#[tokio::test]
async fn ready_follows_a_registry_that_answers_and_sigterm_sends_stopping() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let containerd = Containerd::start().await?;
    let systemd = Systemd::listen()?;
    let env = systemd.env();
    let mut node = SpegelNode::start_with_env(&containerd, &[], &env_refs(&env)).await?;

    let lines = systemd.expect("READY=1").await?;
    // The node probed itself before READY: the registry answers at once.
    assert_eq!(
        http::get(&format!("{}/livez", node.url()), &[])
            .await?
            .status,
        200
    );
    let status = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("STATUS="))
        .context("no STATUS with READY")?;
    assert!(
        status.starts_with("STATUS=Serving on 127.0.0.1:"),
        "{status}"
    );
    assert!(
        status.contains("containerd ok") && status.contains("peers"),
        "{status}"
    );

    let exit = node.terminate().await?;

    assert!(exit.success(), "{exit}");
    let lines = systemd.expect("STOPPING=1").await?;
    assert!(
        lines.iter().any(|l| l.starts_with("STATUS=Stopping")),
        "{lines:?}"
    );
    Ok(())
}

#[tokio::test]
async fn ready_waits_until_containerd_answers() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let mut containerd = Containerd::start().await?;
    containerd.stop().await?;
    let systemd = Systemd::listen()?;
    let env = systemd.env();
    let node = SpegelNode::start_with_env(&containerd, &[], &env_refs(&env)).await?;

    // The registry already answers /livez, but containerd does not: no READY.
    let lines = systemd
        .expect("STATUS=Starting: containerd unreachable")
        .await?;
    assert_eq!(count(&lines, "READY=1"), 0, "{lines:?}");
    let later = systemd.during(Duration::from_secs(3)).await;
    assert_eq!(count(&later, "READY=1"), 0, "{later:?}");

    containerd.restart().await?;

    systemd
        .expect("READY=1")
        .await
        .with_context(|| format!("node log:\n{}", node.log().unwrap_or_default()))?;
    Ok(())
}

#[tokio::test]
async fn watchdog_pings_follow_the_health_check() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let mut containerd = Containerd::start().await?;
    let systemd = Systemd::listen()?;
    let mut env = systemd.env();
    // WatchdogSec=2s: a ping every second while healthy (each check may take up to 1 s).
    env.push(("WATCHDOG_USEC", "2000000".into()));
    let _node = SpegelNode::start_with_env(&containerd, &[], &env_refs(&env)).await?;
    systemd.expect("READY=1").await?;

    let healthy = systemd.during(Duration::from_secs(5)).await;
    assert!(count(&healthy, "WATCHDOG=1") >= 3, "{healthy:?}");

    containerd.stop().await?;
    systemd
        .expect("STATUS=Degraded: containerd unreachable")
        .await?;
    let degraded = systemd.during(Duration::from_secs(3)).await;
    assert_eq!(
        count(&degraded, "WATCHDOG=1"),
        0,
        "pinged while containerd was down: {degraded:?}"
    );

    containerd.restart().await?;
    systemd.expect("WATCHDOG=1").await?;
    Ok(())
}

#[tokio::test]
async fn without_notify_socket_the_node_runs_as_before() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    let containerd = Containerd::start().await?;
    let mut node = SpegelNode::start(&containerd, &[]).await?;
    assert_eq!(
        http::get(&format!("{}/livez", node.url()), &[])
            .await?
            .status,
        200
    );
    assert!(node.log()?.contains("no NOTIFY_SOCKET"), "{}", node.log()?);
    assert!(node.terminate().await?.success());
    Ok(())
}
