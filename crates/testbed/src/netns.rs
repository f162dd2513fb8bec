//! Several hosts on one machine: network namespaces joined by a bridge.
//!
//! A [`Network`] is a "switch" namespace holding a bridge, and one namespace per [`Host`]
//! with an `eth0` veth into the switch and the address `10.231.0.<n>/24`. Nothing is
//! added to the machine's own network namespace, so traffic stays inside namespaces the
//! test made. Dropping the network deletes every namespace (and with them the veths and
//! the bridge); namespaces left by a test process that was killed are swept on the next
//! [`Network::create`].

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use tokio::process::Command;

/// Prefix of every namespace the testbed creates: `spg-<pid>-<n>-<role>`.
const PREFIX: &str = "spg-";

static NEXT_NETWORK: AtomicU32 = AtomicU32::new(0);

/// One host: a network namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The namespace name (`ip netns exec <ns> …`).
    pub ns: String,
    /// The host's address on the network.
    pub ip: Ipv4Addr,
    /// The interface in the switch namespace that leads to this host (for `tc`).
    switch_port: String,
    switch_ns: String,
}

impl Host {
    /// `program args…` run inside this host's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }

    /// Like [`Host::command`], but entering only the network namespace (`nsenter --net`):
    /// `ip netns exec` also mounts a fresh `/sys`, which hides `/sys/fs/cgroup` from
    /// containerd and the runc it starts ("no cgroup mount found").
    pub fn command_keeping_mounts(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(program);
        command
    }

    /// Opens a TCP connection from inside this host's namespace: a short-lived thread
    /// enters the namespace, connects, and hands the socket back (a socket keeps the
    /// namespace it was made in; the thread ends, so no other work runs in the namespace).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let path = format!("/run/netns/{}", self.ns);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let connected = (|| {
                let ns = File::open(&path)?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                stream.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(stream)
            })();
            let _ = tx.send(connected);
        });
        let stream = rx.await.map_err(std::io::Error::other)??;
        tokio::net::TcpStream::from_std(stream)
    }

    /// Binds a TCP listener inside this host's namespace (same thread trick as
    /// [`Host::connect`]), so an in-process server can be reached from the other hosts.
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let path = format!("/run/netns/{}", self.ns);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let bound = (|| {
                let ns = File::open(&path)?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let listener = std::net::TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(listener)
            })();
            let _ = tx.send(bound);
        });
        let listener = rx.await.map_err(std::io::Error::other)??;
        tokio::net::TcpListener::from_std(listener)
    }

    /// Limits the bandwidth towards this host and from it to `mbit` Mbit/s with `tc tbf`
    /// on both ends of its link.
    pub async fn shape(&self, mbit: u32) -> Result<()> {
        let rate = format!("{mbit}mbit");
        // Burst: enough for one timer tick at this rate, at least 32 KiB.
        let burst = format!("{}kb", (mbit / 8).max(32));
        for (ns, dev) in [
            (&self.ns, "eth0"),
            (&self.switch_ns, self.switch_port.as_str()),
        ] {
            ip(&["-n", ns, "link", "set", dev, "txqueuelen", "1000"]).await?;
            run(
                "tc",
                &[
                    "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate,
                    "burst", &burst, "latency", "50ms",
                ],
            )
            .await?;
        }
        Ok(())
    }
}

/// The HTB class of a host's `eth0` that traffic to [`Host::shape_towards`]'s addresses goes
/// through (everything else leaves unshaped).
const SHAPED_CLASS: &str = "1:20";

impl Host {
    /// Limits what this host sends to `peers` to `mbit` Mbit/s, together, with an HTB class
    /// on its `eth0` (the kernel here has no `prio` or `netem`); other traffic is not
    /// shaped. Models a link between zones: a zone's nodes shaped towards every node of the
    /// other zones. [`Host::shaped_bytes`] counts what went through it.
    pub async fn shape_towards(&self, peers: &[Ipv4Addr], mbit: u32) -> Result<()> {
        let ns = self.ns.as_str();
        let rate = format!("{mbit}mbit");
        // An unknown default class sends unclassified packets directly, unshaped.
        run(
            "tc",
            &[
                "-n", ns, "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb",
                "default", "99",
            ],
        )
        .await?;
        run(
            "tc",
            &[
                "-n",
                ns,
                "class",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "classid",
                SHAPED_CLASS,
                "htb",
                "rate",
                &rate,
                "ceil",
                &rate,
            ],
        )
        .await?;
        for peer in peers {
            let dst = format!("{peer}/32");
            run(
                "tc",
                &[
                    "-n",
                    ns,
                    "filter",
                    "add",
                    "dev",
                    "eth0",
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "dst",
                    &dst,
                    "flowid",
                    SHAPED_CLASS,
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Bytes this host sent through its [`Host::shape_towards`] class (IP packets with
    /// headers), e.g. what crossed a zone boundary from it.
    pub async fn shaped_bytes(&self) -> Result<u64> {
        let out = Command::new("tc")
            .args([
                "-n",
                &self.ns,
                "-s",
                "class",
                "show",
                "dev",
                "eth0",
                "classid",
                SHAPED_CLASS,
            ])
            .output()
            .await
            .context("running tc")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|word| *word != "Sent")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no byte count in `tc -s class show`: {text}"))
    }
}

/// Hosts on one bridge. Dropping it deletes every namespace it made.
pub struct Network {
    switch_ns: String,
    hosts: Vec<Host>,
}

impl Network {
    /// Creates `count` hosts at `10.231.0.2` … `10.231.0.<count+1>`.
    pub async fn create(count: usize) -> Result<Network> {
        if count == 0 || count > 200 {
            bail!("a test network has 1 to 200 hosts, not {count}");
        }
        sweep_stale().await;
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_NETWORK.fetch_add(1, Ordering::Relaxed)
        );
        let switch_ns = format!("{id}-sw");
        let mut network = Network {
            switch_ns: switch_ns.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch_ns]).await?;
        ip(&["-n", &switch_ns, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", &switch_ns, "link", "set", "br0", "up"]).await?;
        for i in 0..count {
            let ns = format!("{id}-h{i}");
            ip(&["netns", "add", &ns]).await?;
            let ip_addr = Ipv4Addr::new(10, 231, 0, u8::try_from(i + 2).unwrap_or(u8::MAX));
            let host = Host {
                ns: ns.clone(),
                ip: ip_addr,
                switch_port: format!("h{i}"),
                switch_ns: switch_ns.clone(),
            };
            network.hosts.push(host.clone());
            let port = host.switch_port.as_str();
            ip(&[
                "-n", &switch_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])
            .await?;
            ip(&["-n", &switch_ns, "link", "set", port, "master", "br0", "up"]).await?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip_addr}/24"),
                "dev",
                "eth0",
            ])
            .await?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"]).await?;
            ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
        }
        Ok(network)
    }

    /// Host `i` (0-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.hosts.iter().map(|h| &h.ns).chain([&self.switch_ns]) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

async fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).await
}

async fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program} (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes namespaces of earlier test processes that no longer run.
async fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = ip(&["netns", "del", &name]).await;
        }
    }
}
