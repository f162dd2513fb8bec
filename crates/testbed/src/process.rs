//! A child process owned by the testbed: output goes to log files, SIGTERM asks it to
//! stop, and dropping it kills and reaps it, so a panicking test leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long `Drop` waits for a killed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of a log file quoted in error messages.
const TAIL_LINES: usize = 40;

/// A running child process with its output redirected to files.
pub(crate) struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl Process {
    /// Spawns `command` with stdin closed, stdout appended to `stdout` and stderr appended
    /// to `stderr` (which may be the same file). `log_path` is the file quoted by
    /// [`Process::log_tail`].
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(open_append(stdout)?)
            .stderr(open_append(stderr)?)
            .kill_on_drop(true);
        let child = spawn_retrying_busy(&mut command)
            .with_context(|| format!("spawning {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: stderr.to_owned(),
        })
    }

    /// Returns the exit status if the process has already exited.
    pub(crate) fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking whether {} exited", self.name))
    }

    /// Fails with the log tail if the process has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.exit_status()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited early with {status}; log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail()
            )),
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit. If it does not, it
    /// is killed and an error is returned.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exit_status()? {
            return Ok(status);
        }
        let pid = self.pid()?;
        kill(pid, Signal::SIGTERM).with_context(|| format!("sending SIGTERM to {}", self.name))?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.with_context(|| format!("waiting for {} to exit", self.name)),
            Err(_elapsed) => {
                self.child
                    .kill()
                    .await
                    .with_context(|| format!("killing {}", self.name))?;
                bail!(
                    "{} did not exit within {grace:?} of SIGTERM and was killed; log tail:\n{}",
                    self.name,
                    self.log_tail()
                )
            }
        }
    }

    /// The OS process id, `None` once the process has been reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines of the process's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    fn pid(&self) -> Result<Pid> {
        let id = self
            .child
            .id()
            .with_context(|| format!("{} has no pid (already reaped)", self.name))?;
        let raw = i32::try_from(id).with_context(|| format!("pid {id} out of range"))?;
        Ok(Pid::from_raw(raw))
    }
}

impl Drop for Process {
    /// Kills the process and waits (briefly, synchronously) until it is reaped, so the
    /// temporary directory it writes to can be removed right after.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if self.child.start_kill().is_err() {
            return;
        }
        let deadline = Instant::now() + REAP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Spawns `command`, retrying briefly on ETXTBSY: a binary or script written just
/// before can still be open for writing in a child another thread is forking.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(error)
                if error.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// The last lines of the file at `path`, or a note saying why it could not be read.
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(error) => format!("<cannot read {}: {error}>", path.display()),
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_only_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();

        let tail = log_tail(&path);

        assert!(tail.starts_with("line 60\n"), "{tail}");
        assert!(tail.ends_with("line 99"), "{tail}");
    }

    #[test]
    fn log_tail_of_a_missing_file_says_so() {
        let tail = log_tail(Path::new("/nonexistent/spegel-testbed.log"));
        assert!(tail.contains("cannot read"), "{tail}");
    }

    #[tokio::test]
    async fn terminate_returns_the_exit_status_of_a_process_that_obeys_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut process = Process::spawn("sleep", command, &log, &log).unwrap();

        let status = process.terminate(Duration::from_secs(5)).await.unwrap();

        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
    }

    #[tokio::test]
    async fn ensure_running_reports_an_early_exit_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo boom >&2; exit 3"]);
        let mut process = Process::spawn("sh", command, &log, &log).unwrap();
        process.child.wait().await.unwrap();

        let error = process.ensure_running().unwrap_err().to_string();

        assert!(error.contains("boom"), "{error}");
    }
}
