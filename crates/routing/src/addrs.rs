//! Which addresses a peer may make this node dial. Peers announce listen addresses (identify)
//! and addresses in their provider records; unfiltered, a peer could make every node dial
//! 169.254.169.254 (cloud metadata), loopback services, or any port.
//!
//! An address is accepted only when it is exactly `/ip4|ip6/<ip>/tcp/<port>[/p2p/<id>]` and:
//! - the IP is unicast and routable: not unspecified, multicast, broadcast, link-local
//!   (169.254/16, fe80::/10), nor loopback unless this node itself listens on loopback
//!   (tests and single-host demos);
//! - the port is this node's own router port (every node uses the same one in a cluster) or
//!   an unprivileged port (≥ 1024; tests pick random ports), never 0.
//!
//! Identify listen addresses must in addition carry the IP the peer is connected from (see
//! `swarm.rs`): a node is dialled where it was seen, not where it says.
//!
//! A router on the in-process memory transport (benchmarks, [`crate::RouterConfig::in_memory`])
//! accepts `/memory/<port>[/p2p/<id>]` instead, and nothing else; every other router refuses
//! memory addresses.

use std::net::IpAddr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Ports below this are accepted only when they are the node's own router port.
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// See the module doc.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddressPolicy {
    allow_loopback: bool,
    router_port: u16,
    memory: bool,
}

impl AddressPolicy {
    /// For a node whose router listens on an address that `is_loopback`, at `router_port`.
    pub(crate) fn new(is_loopback: bool, router_port: u16) -> AddressPolicy {
        AddressPolicy {
            allow_loopback: is_loopback,
            router_port,
            memory: false,
        }
    }

    /// For a router on the in-process memory transport: memory addresses only.
    pub(crate) fn in_memory() -> AddressPolicy {
        AddressPolicy {
            allow_loopback: false,
            router_port: 0,
            memory: true,
        }
    }

    /// Whether a peer may make this node dial `addr`.
    pub(crate) fn allows(&self, addr: &Multiaddr) -> bool {
        let mut parts = addr.iter();
        let ip = match parts.next() {
            Some(Protocol::Ip4(ip)) if !self.memory => IpAddr::V4(ip),
            Some(Protocol::Ip6(ip)) if !self.memory => IpAddr::V6(ip),
            Some(Protocol::Memory(port)) if self.memory => {
                return port != 0 && matches!(parts.next(), None | Some(Protocol::P2p(_)));
            }
            _ => return false,
        };
        let Some(Protocol::Tcp(port)) = parts.next() else {
            return false;
        };
        match parts.next() {
            None | Some(Protocol::P2p(_)) => {}
            Some(_) => return false,
        }
        if parts.next().is_some() {
            return false;
        }
        let port_ok = port != 0 && (port == self.router_port || port >= FIRST_UNPRIVILEGED_PORT);
        port_ok && self.routable(ip)
    }

    fn routable(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        match ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
            // fe80::/10
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        }
    }
}

/// The IP of `addr`, if it has one. A memory address is this host's loopback: only a router
/// on the memory transport has such connections, and its peers share its process.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        Protocol::Memory(_) => Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routable_node_addresses_are_dialled() {
        let node = AddressPolicy::new(false, 5001);
        let cases = [
            ("/ip4/10.0.0.2/tcp/5001", true),
            ("/ip4/10.0.0.2/tcp/40000", true),
            ("/ip6/fd00::2/tcp/5001", true),
            (
                "/ip4/10.0.0.2/tcp/5001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
                true,
            ),
            ("/ip4/169.254.169.254/tcp/5001", false),
            ("/ip4/127.0.0.1/tcp/5001", false),
            ("/ip6/::1/tcp/5001", false),
            ("/ip6/fe80::1/tcp/5001", false),
            ("/ip4/0.0.0.0/tcp/5001", false),
            ("/ip4/224.0.0.1/tcp/5001", false),
            ("/ip4/255.255.255.255/tcp/5001", false),
            ("/ip4/10.0.0.2/tcp/22", false),
            ("/ip4/10.0.0.2/tcp/0", false),
            ("/ip4/10.0.0.2/udp/5001/quic-v1", false),
            ("/dns4/metadata.google.internal/tcp/5001", false),
            ("/ip4/10.0.0.2/tcp/5001/ws", false),
        ];
        for (addr, allowed) in cases {
            let addr: Multiaddr = addr.parse().unwrap();
            assert_eq!(node.allows(&addr), allowed, "{addr}");
        }
    }

    #[test]
    fn memory_addresses_only_for_a_router_on_the_memory_transport() {
        let memory: Multiaddr = "/memory/1234".parse().unwrap();
        let tcp: Multiaddr = "/ip4/10.0.0.2/tcp/5001".parse().unwrap();
        assert!(AddressPolicy::in_memory().allows(&memory));
        assert!(!AddressPolicy::in_memory().allows(&tcp));
        assert!(!AddressPolicy::in_memory().allows(&"/memory/0".parse().unwrap()));
        assert!(!AddressPolicy::new(true, 0).allows(&memory));
    }

    #[test]
    fn loopback_is_dialled_only_by_a_node_on_loopback() {
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/41234".parse().unwrap();
        assert!(AddressPolicy::new(true, 0).allows(&addr));
        assert!(!AddressPolicy::new(false, 5001).allows(&addr));
    }
}
