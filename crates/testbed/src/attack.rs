//! Attacks for the robustness tests: a connection flood that pipelines requests and never
//! reads, and the peak-memory reading every attack test asserts on. Only ever aimed at
//! loopback or test-namespace addresses.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};

use crate::Host;

/// `VmHWM` (peak resident memory) of process `pid`, in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The resident set size of process `pid` now (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in {path}"))?;
    Ok(kib * 1024)
}

/// How often a [`ConnectionFlood`] replaces a connection once it holds them all.
pub const RECONNECTS_PER_SECOND: u32 = 100;

/// What a [`ConnectionFlood`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    /// Connections opened.
    pub opened: u64,
    /// Connection attempts that failed (refused, timed out).
    pub failed: u64,
}

/// A flood running in a thread of its own (inside `host`'s namespace when given): it opens
/// `open` connections to `target` as fast as it can, each sent `request` and never read,
/// then keeps reconnecting at [`RECONNECTS_PER_SECOND`] (dropping the oldest), until stopped.
pub struct ConnectionFlood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConnectionFlood {
    pub fn start(host: Option<&Host>, target: SocketAddr, open: usize, request: Vec<u8>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let ns = host.map(|h| format!("/run/netns/{}", h.ns));
        let (stop_t, opened_t, failed_t) = (stop.clone(), opened.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            if let Some(ns) = ns {
                let entered =
                    File::open(&ns).is_ok_and(|f| setns(&f, CloneFlags::CLONE_NEWNET).is_ok());
                if !entered {
                    return;
                }
            }
            let mut held: VecDeque<TcpStream> = VecDeque::with_capacity(open);
            while !stop_t.load(Ordering::Relaxed) {
                if held.len() >= open {
                    std::thread::sleep(Duration::from_secs(1) / RECONNECTS_PER_SECOND);
                }
                match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                    Ok(mut stream) => {
                        let _ = stream.set_nonblocking(true);
                        let _ = stream.write(&request);
                        opened_t.fetch_add(1, Ordering::Relaxed);
                        if held.len() >= open {
                            held.pop_front();
                        }
                        held.push_back(stream);
                    }
                    Err(_) => {
                        failed_t.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        });
        ConnectionFlood {
            stop,
            opened,
            failed,
            thread: Some(thread),
        }
    }

    /// What it did so far.
    pub fn report(&self) -> FloodReport {
        FloodReport {
            opened: self.opened.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops the flood and closes its connections.
    pub fn stop(mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.report()
    }
}

impl Drop for ConnectionFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
