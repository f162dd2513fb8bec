//! The measuring side: one in-process HTTP/1 client for both servers, and a sampler of a
//! process's resident memory.
//!
//! The client is hyper's connection-level HTTP/1 client on a fresh loopback connection per
//! request; it counts the body's bytes and drops them (or hashes them when asked), so both
//! servers are read by exactly the same code.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long one GET, including the whole body, may take.
const GET_TIMEOUT: Duration = Duration::from_secs(300);

/// What one GET delivered.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Body bytes received.
    pub bytes: u64,
    /// From connecting to the last body byte.
    pub elapsed: Duration,
    /// `sha256:<hex>` of the body, when asked for.
    pub digest: Option<String>,
}

/// Bytes per `elapsed` in MB/s (10^6 bytes per second).
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// `GET http://<addr><path>` on a new connection; fails unless the answer is 200 with
/// exactly `expected_bytes` of body.
pub async fn get(addr: SocketAddr, path: &str, expected_bytes: u64, hash: bool) -> Result<Fetched> {
    let fetch = async {
        let start = Instant::now();
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        if response.status() != http::StatusCode::OK {
            bail!("answered {}", response.status());
        }
        let mut body = response.into_body();
        let mut hasher = hash.then(Sha256::new);
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                bytes += data.len() as u64;
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(data);
                }
            }
        }
        let elapsed = start.elapsed();
        drop(sender);
        connection.abort();
        if bytes != expected_bytes {
            bail!("body has {bytes} bytes, expected {expected_bytes}");
        }
        let digest = hasher.map(|hasher| format!("sha256:{}", hex::encode(hasher.finalize())));
        anyhow::Ok(Fetched {
            bytes,
            elapsed,
            digest,
        })
    };
    match tokio::time::timeout(GET_TIMEOUT, fetch).await {
        Ok(fetched) => fetched.with_context(|| format!("GET http://{addr}{path}")),
        Err(_elapsed) => bail!("GET http://{addr}{path} took longer than {GET_TIMEOUT:?}"),
    }
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&status, field)
        .map(|kib| kib * 1024)
        .with_context(|| format!("{path} has no {field} line in kB"))
}

/// `field`'s value in kB from the text of `/proc/<pid>/status`.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) the processes `pids` have used so far, in seconds.
pub fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    let mut ticks = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        ticks += parse_stat_cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    }
    Ok(ticks as f64 / USER_HZ)
}

/// `utime + stime` (fields 14 and 15) from the text of `/proc/<pid>/stat`. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Samples `VmRSS` of one process until stopped.
pub struct RssSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<RssSamples>>,
}

/// What an [`RssSampler`] saw.
#[derive(Debug, Clone, Copy)]
pub struct RssSamples {
    /// The largest `VmRSS` sampled, in bytes.
    pub peak: u64,
    /// How many samples were taken.
    pub count: u64,
}

impl RssSampler {
    /// Starts reading `/proc/<pid>/status` every `interval`.
    pub fn start(pid: u32, interval: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            let mut samples = RssSamples { peak: 0, count: 0 };
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        let rss = status_bytes(pid, "VmRSS")?;
                        samples.peak = samples.peak.max(rss);
                        samples.count += 1;
                    }
                }
            }
            // One last look, so a short run still has its end state.
            let rss = status_bytes(pid, "VmRSS")?;
            samples.peak = samples.peak.max(rss);
            samples.count += 1;
            Ok(samples)
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the samples.
    pub async fn finish(self) -> Result<RssSamples> {
        let _ = self.stop.send(());
        self.task.await.context("the RSS sampler panicked")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tspegel-node\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads:\t3\n";

    #[test]
    fn status_fields_are_read_in_kib() {
        for (field, expected) in [
            ("VmRSS", Some(40960)),
            ("VmHWM", Some(51200)),
            ("Threads", None),
            ("VmSwap", None),
            ("Vm", None),
        ] {
            assert_eq!(parse_status_kib(STATUS, field), expected, "{field}");
        }
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat =
            "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 500 0 0 0 123 45 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(168));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn our_own_cpu_time_is_read() {
        let spent = cpu_seconds(&[std::process::id()]).unwrap();
        assert!(spent >= 0.0, "{spent}");
    }

    #[test]
    fn throughput_is_in_decimal_megabytes_per_second() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(2)), 1.0);
    }

    #[tokio::test]
    async fn our_own_rss_is_sampled() {
        let sampler = RssSampler::start(std::process::id(), Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(30)).await;

        let samples = sampler.finish().await.unwrap();

        assert!(samples.count >= 2, "{samples:?}");
        assert!(samples.peak > 0, "{samples:?}");
    }
}
