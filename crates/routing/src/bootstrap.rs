//! Where the first peers come from: a [`Bootstrap`] source the router asks whenever it
//! needs peers (at start, while it knows none, and periodically).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::{Error, Result};

/// A peer to dial: its addresses, and its ID when the source knows it (peers given as bare
/// addresses are dialled anyway and their ID is learnt on connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPeer {
    pub id: Option<PeerId>,
    pub addrs: Vec<Multiaddr>,
}

/// The boxed future a [`Bootstrap`] source returns.
pub type PeersFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<BootstrapPeer>>> + Send + 'a>>;

/// A source of bootstrap peers.
pub trait Bootstrap: Send + Sync + 'static {
    /// The peers to join through right now. May be empty; errors are retried with backoff.
    fn peers(&self) -> PeersFuture<'_>;

    /// How soon to ask again, when the source wants to be asked sooner than the router's
    /// refresh interval (e.g. it still waits to learn something from the answers).
    fn ask_again_within(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A fixed list of peers (`--bootstrap-kind static`).
pub struct StaticBootstrap {
    peers: Vec<BootstrapPeer>,
}

impl StaticBootstrap {
    /// Parses each of `addrs` with [`parse_peer_addr`].
    pub fn new(addrs: &[String], default_port: u16) -> Result<StaticBootstrap> {
        let peers = addrs
            .iter()
            .map(|a| parse_peer_addr(a, default_port))
            .collect::<Result<_>>()?;
        Ok(StaticBootstrap { peers })
    }
}

impl Bootstrap for StaticBootstrap {
    fn peers(&self) -> PeersFuture<'_> {
        Box::pin(async move { Ok(self.peers.clone()) })
    }
}

/// Every address a DNS name resolves to (`--bootstrap-kind dns`), e.g. a headless Service.
pub struct DnsBootstrap {
    host: String,
    port: u16,
}

impl DnsBootstrap {
    /// Resolves `name` (`HOST` or `HOST:PORT`; the port defaults to `default_port`).
    pub fn new(name: &str, default_port: u16) -> Result<DnsBootstrap> {
        let (host, port) = match name.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (
                host,
                port.parse()
                    .map_err(|_| Error::BadPeerAddress(name.to_owned()))?,
            ),
            _ => (name, default_port),
        };
        if host.is_empty() {
            return Err(Error::BadPeerAddress(name.to_owned()));
        }
        Ok(DnsBootstrap {
            host: host.to_owned(),
            port,
        })
    }
}

impl Bootstrap for DnsBootstrap {
    fn peers(&self) -> PeersFuture<'_> {
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| Error::Bootstrap(format!("resolving {}: {e}", self.host)))?;
            Ok(resolved
                .map(|addr| BootstrapPeer {
                    id: None,
                    addrs: vec![socket_multiaddr(addr)],
                })
                .collect())
        })
    }
}

/// The multiaddr `/ip4|ip6/<ip>/tcp/<port>` of a socket address.
pub(crate) fn socket_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

/// Parses a bootstrap peer: a multiaddr (`/ip4/10.0.0.1/tcp/5001[/p2p/<id>]`), `IP:PORT`,
/// `[IPv6]:PORT`, or a bare IP (port `default_port`).
pub fn parse_peer_addr(s: &str, default_port: u16) -> Result<BootstrapPeer> {
    let bad = || Error::BadPeerAddress(s.to_owned());
    if s.starts_with('/') {
        let mut addr: Multiaddr = s.parse().map_err(|_| bad())?;
        let id = match addr.iter().last() {
            Some(Protocol::P2p(id)) => {
                addr.pop();
                Some(id)
            }
            _ => None,
        };
        if !addr.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
            return Err(bad());
        }
        return Ok(BootstrapPeer {
            id,
            addrs: vec![addr],
        });
    }
    let socket = match s.parse::<SocketAddr>() {
        Ok(socket) => socket,
        Err(_) => SocketAddr::new(s.parse::<IpAddr>().map_err(|_| bad())?, default_port),
    };
    Ok(BootstrapPeer {
        id: None,
        addrs: vec![socket_multiaddr(socket)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_take_several_forms() {
        let id = PeerId::random();
        type Want<'a> = Option<(Option<PeerId>, &'a str)>;
        let cases: Vec<(String, Want)> = vec![
            (
                "10.0.0.1:5001".into(),
                Some((None, "/ip4/10.0.0.1/tcp/5001")),
            ),
            ("10.0.0.1".into(), Some((None, "/ip4/10.0.0.1/tcp/4000"))),
            ("[::1]:7".into(), Some((None, "/ip6/::1/tcp/7"))),
            (
                "/ip4/10.0.0.2/tcp/5001".into(),
                Some((None, "/ip4/10.0.0.2/tcp/5001")),
            ),
            (
                format!("/ip4/10.0.0.2/tcp/5001/p2p/{id}"),
                Some((Some(id), "/ip4/10.0.0.2/tcp/5001")),
            ),
            ("/ip4/10.0.0.2".into(), None),
            ("node-1".into(), None),
            ("".into(), None),
            ("/garbage".into(), None),
        ];
        for (input, want) in cases {
            let got = parse_peer_addr(&input, 4000).ok();
            let got = got.as_ref().map(|p| (p.id, p.addrs[0].to_string()));
            let want = want.map(|(id, a)| (id, a.to_owned()));
            assert_eq!(got, want, "{input}");
        }
    }

    #[tokio::test]
    async fn dns_names_resolve_to_every_address() {
        let dns = DnsBootstrap::new("localhost:5001", 1).unwrap();
        let peers = dns.peers().await.unwrap();
        assert!(
            peers
                .iter()
                .any(|p| p.addrs[0].to_string() == "/ip4/127.0.0.1/tcp/5001"),
            "{peers:?}"
        );
        assert!(DnsBootstrap::new(":5001", 1).is_err());
    }
}
