//! The node-exporter textfile writer: the exposition in a `*.prom` file, rewritten
//! periodically and atomically, removed on clean shutdown.
//!
//! Every write goes to a temporary file in the target's own directory (named `.<file>.*.tmp`,
//! which the collector ignores because it does not end in `.prom`), is fsynced, renamed over
//! the target, and the directory is fsynced: node-exporter sees the old file or the new one,
//! never half of one.
//!
//! A missing directory is created (mode 0755). When it cannot be (a read-only filesystem, no
//! permission), a warning names the directory once and the writer keeps trying every interval,
//! so metrics appear as soon as the directory does; the daemon itself keeps running.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Error, Metrics, Result};

/// Where and how often the textfile is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Textfile {
    /// The `*.prom` file, e.g. `/var/lib/node-exporter/textfile-collector/spegel.prom`.
    pub path: PathBuf,
    /// Time between writes.
    pub interval: Duration,
}

/// Writes `metrics` to `textfile.path` now and then every `textfile.interval` until
/// `shutdown` is cancelled, then removes the file so node-exporter stops exporting stale values.
pub async fn write_textfile(
    metrics: Arc<Metrics>,
    textfile: Textfile,
    shutdown: CancellationToken,
) {
    info!(path = %textfile.path.display(), interval = ?textfile.interval, "writing metrics for node-exporter");
    let mut ticks = tokio::time::interval(textfile.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let metrics = metrics.clone();
        let path = textfile.path.clone();
        let written = tokio::task::spawn_blocking(move || write_textfile_once(&metrics, &path))
            .await
            .unwrap_or_else(|e| {
                Err(Error::Textfile {
                    path: textfile.path.clone(),
                    source: std::io::Error::other(e),
                })
            });
        match (written, failing.take()) {
            (Ok(()), Some(_)) => {
                info!(path = %textfile.path.display(), "metrics textfile written again")
            }
            (Ok(()), None) => debug!(path = %textfile.path.display(), "metrics textfile written"),
            (Err(e), previous) => {
                let message = e.to_string();
                if previous.as_deref() != Some(message.as_str()) {
                    warn!(error = %message, "node-exporter will not see spegel's metrics until this is fixed; retrying every interval");
                }
                failing = Some(message);
            }
        }
    }
    match std::fs::remove_file(&textfile.path) {
        Ok(()) => info!(path = %textfile.path.display(), "removed the metrics textfile"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(path = %textfile.path.display(), error = %e, "cannot remove the metrics textfile")
        }
    }
}

/// Writes the exposition of `metrics` (Prometheus text format) to `path` atomically,
/// creating its directory if needed.
pub fn write_textfile_once(metrics: &Metrics, path: &Path) -> Result<()> {
    let text = metrics.encode_prometheus()?;
    write_atomically(path, text.as_bytes())
}

/// temp file in `path`'s directory → write → chmod 0644 → fsync → rename → fsync directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |at: &Path| {
        let at = at.to_owned();
        move |source| Error::Textfile { path: at, source }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".to_owned());
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
    }
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail(dir))?;
    temp.write_all(bytes).map_err(fail(temp.path()))?;
    // node-exporter usually runs as another user: the file must be world-readable.
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(fail(temp.path()))?;
    temp.as_file().sync_all().map_err(fail(temp.path()))?;
    temp.persist(path).map_err(|e| fail(path)(e.error))?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(fail(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_textfile_is_world_readable_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spegel.prom");

        write_textfile_once(&Metrics::new(), &path).unwrap();
        write_textfile_once(&Metrics::new(), &path).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("spegel.prom")]);
    }

    #[test]
    fn a_missing_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("node-exporter/textfile-collector/spegel.prom");

        write_textfile_once(&Metrics::new(), &path).unwrap();

        assert!(path.is_file());
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("sub/spegel.prom");

        let error = write_textfile_once(&Metrics::new(), &path).unwrap_err();

        assert!(
            error
                .to_string()
                .contains(&blocker.join("sub").display().to_string()),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_writer_writes_periodically_and_removes_the_file_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spegel.prom");
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(write_textfile(
            metrics.clone(),
            Textfile {
                path: path.clone(),
                interval: Duration::from_millis(20),
            },
            shutdown.clone(),
        ));

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "no textfile written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        metrics.mirror_request("docker.io", true);
        let counted = r#"spegel_mirror_requests_total{registry="docker.io",cache="hit"} 1"#;
        while !std::fs::read_to_string(&path).unwrap().contains(counted) {
            assert!(std::time::Instant::now() < deadline, "textfile not updated");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        writer.await.unwrap();

        assert!(!path.exists());
    }
}
