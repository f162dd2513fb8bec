//! systemd integration over `NOTIFY_SOCKET` (sd_notify(3)): `READY=1` once the registry
//! answers its own `/livez` over loopback and containerd answers; `STATUS=` lines for
//! `systemctl status`; `WATCHDOG=1` at half of `WATCHDOG_USEC`, sent only while both checks
//! pass and no essential task has died (so a wedged or half-dead daemon is restarted); `STOPPING=1` as soon as shutdown begins.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) nothing runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use sd_notify::NotifyState;
use spegel_containerd::ContentStore;
use spegel_registry::Faults;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often readiness is re-checked while starting.
const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// How often `STATUS=` is refreshed when systemd runs no watchdog.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Longest a single health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

type StatusPart = Box<dyn Fn() -> String + Send + Sync>;

/// Tells systemd how the daemon is doing. Build it with [`Supervisor::new`], add status parts
/// (e.g. peer counts) with [`Supervisor::with_status`], then [`Supervisor::run`] it.
pub struct Supervisor<S> {
    registry: SocketAddr,
    store: S,
    faults: Faults,
    parts: Vec<StatusPart>,
}

/// The result of one health check: `Err` holds why a part is unhealthy.
struct Health {
    registry: Result<(), String>,
    containerd: Result<(), String>,
    tasks: Result<(), String>,
}

impl Health {
    fn ok(&self) -> bool {
        self.registry.is_ok() && self.containerd.is_ok() && self.tasks.is_ok()
    }

    fn problems(&self) -> String {
        let mut problems = Vec::new();
        if let Err(e) = &self.registry {
            problems.push(format!("registry not answering ({e})"));
        }
        if let Err(e) = &self.containerd {
            problems.push(format!("containerd unreachable ({e})"));
        }
        if let Err(e) = &self.tasks {
            problems.push(format!("a task died ({e})"));
        }
        problems.join("; ")
    }
}

impl<S: ContentStore> Supervisor<S> {
    /// A supervisor for the registry listening on `registry` (probed over loopback when it
    /// listens on every address) and the containerd behind `store`.
    pub fn new(registry: SocketAddr, store: S) -> Supervisor<S> {
        Supervisor {
            registry: loopback(registry),
            store,
            faults: Faults::default(),
            parts: Vec::new(),
        }
    }

    /// Unhealthy (no watchdog ping) once anything is reported to `faults`.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Adds `part()` to every healthy `STATUS=` line, e.g. `|| format!("{n} peers")`.
    pub fn with_status(mut self, part: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.parts.push(Box::new(part));
        self
    }

    /// Notifies systemd until `shutdown` is cancelled, then sends `STOPPING=1`. Returns at once
    /// when there is no `NOTIFY_SOCKET`.
    pub async fn run(self, shutdown: CancellationToken) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            debug!("no NOTIFY_SOCKET: not telling systemd anything");
            return;
        }
        let watchdog = sd_notify::watchdog_enabled();
        let tick = watchdog.map_or(STATUS_INTERVAL, |interval| interval / 2);
        let probe_timeout = tick.min(PROBE_TIMEOUT);
        if self.wait_until_ready(probe_timeout, &shutdown).await {
            info!(watchdog = ?watchdog, "told systemd the node is ready");
            self.watch(tick, probe_timeout, watchdog.is_some(), &shutdown)
                .await;
        }
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("Stopping: finishing open requests"),
        ]);
    }

    /// Sends `READY=1` once healthy; `false` if shutdown came first.
    async fn wait_until_ready(
        &self,
        probe_timeout: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut reported = String::new();
        loop {
            let health = self.health(probe_timeout).await;
            if health.ok() {
                notify(&[NotifyState::Ready, NotifyState::Status(&self.status_line())]);
                return true;
            }
            let status = format!("Starting: {}", health.problems());
            if status != reported {
                info!(status = %status, "not ready yet");
                notify(&[NotifyState::Status(&status)]);
                reported = status;
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(STARTUP_RETRY) => {}
            }
        }
    }

    /// Pings the watchdog (if any) while healthy and keeps `STATUS=` current.
    async fn watch(
        &self,
        tick: Duration,
        probe_timeout: Duration,
        watchdog: bool,
        shutdown: &CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut degraded = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let health = tokio::select! {
                () = shutdown.cancelled() => return,
                health = self.health(probe_timeout) => health,
            };
            if health.ok() {
                let status = self.status_line();
                if watchdog {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    notify(&[NotifyState::Status(&status)]);
                }
                if degraded {
                    info!("healthy again");
                }
                degraded = false;
            } else {
                let problems = health.problems();
                warn!(problems = %problems, watchdog, "unhealthy: not pinging the systemd watchdog");
                notify(&[NotifyState::Status(&format!("Degraded: {problems}"))]);
                degraded = true;
            }
        }
    }

    async fn health(&self, timeout: Duration) -> Health {
        let registry = async {
            match tokio::time::timeout(timeout, probe_livez(self.registry)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        };
        let containerd = async {
            match tokio::time::timeout(timeout, self.store.check()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        };
        let (registry, containerd) = tokio::join!(registry, containerd);
        Health {
            registry,
            containerd,
            tasks: self.faults.first().map_or(Ok(()), Err),
        }
    }

    fn status_line(&self) -> String {
        let mut line = format!("Serving on {}; containerd ok", self.registry);
        for part in &self.parts {
            line.push_str("; ");
            line.push_str(&part());
        }
        line
    }
}

/// `GET /livez` on `addr` must answer 200.
async fn probe_livez(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("/livez")
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    match response.status() {
        StatusCode::OK => Ok(()),
        status => Err(format!("/livez answered {status}")),
    }
}

/// Where to reach a listener bound to `addr` from this host.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_probed_over_loopback() {
        let cases = [
            ("0.0.0.0:5000", "127.0.0.1:5000"),
            ("[::]:5000", "[::1]:5000"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("10.0.0.1:5000", "10.0.0.1:5000"),
        ];
        for (listen, probe) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(loopback(listen), probe.parse().unwrap(), "{listen}");
        }
    }

    #[test]
    fn health_problems_read_as_a_sentence() {
        let health = Health {
            registry: Ok(()),
            containerd: Err("connection refused".to_owned()),
            tasks: Ok(()),
        };
        assert!(!health.ok());
        assert_eq!(
            health.problems(),
            "containerd unreachable (connection refused)"
        );
    }
}
