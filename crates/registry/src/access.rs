//! [`Access`]: who may read from this registry, decided before any route is parsed.
//!
//! With a cluster secret a request is served when it comes
//! - from this node's own containerd: a client address in the allowed networks (loopback and
//!   the node's own addresses by default, widened with `--registry-allowed-clients`), or
//! - from a member: it carries a valid proof ([`PROOF_HEADER`], see `spegel-secret`). Only such
//!   a request counts as a peer's ([`Caller::Peer`]): it is served from local content only, and
//!   `X-Spegel-Mirrored` means nothing without it.
//!
//! Everyone else gets `403 DENIED`. Without a secret ([`Access::open`], `--insecure-open-dht`)
//! everyone reads and the `X-Spegel-Mirrored` header is taken as sent, as in Spegel.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::Request;
use http::request::Builder;
use spegel_secret::{ClusterSecret, PROOF_HEADER, ProofError};
use tracing::warn;

use crate::mirror::MIRRORED_HEADER;

/// The client's socket address, put into each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Who a request comes from, once access is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// This node's containerd or another allowed client: may be mirrored from peers.
    Client,
    /// A cluster member: served from local content only.
    Peer,
}

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/64`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network holding exactly `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Cidr {
            network: ip,
            prefix,
        }
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let error =
            || format!("{s:?} is not a network: use e.g. 10.0.0.0/8, 192.0.2.7 or fd00::/64");
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s.trim(), None),
        };
        let network: IpAddr = ip.parse().map_err(|_| error())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(error)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Who may read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Access {
    /// Everyone reads, and `X-Spegel-Mirrored` is taken as sent (no cluster secret).
    open: bool,
    /// What peers prove; `None`: no request counts as a peer's (unless `open`).
    secret: Option<Arc<ClusterSecret>>,
    /// Who reads without a proof.
    allowed: Arc<Vec<Cidr>>,
}

impl Default for Access {
    /// Loopback only, and no peers: what a registry not told otherwise serves.
    fn default() -> Access {
        Access {
            open: false,
            secret: None,
            allowed: Arc::new(loopback()),
        }
    }
}

impl Access {
    /// Everyone reads; `X-Spegel-Mirrored` marks a peer's request (Spegel's behaviour,
    /// `--insecure-open-dht`).
    pub fn open() -> Access {
        Access {
            open: true,
            ..Access::default()
        }
    }

    /// Members proving `secret`, and clients from loopback or `allowed`.
    pub fn members(secret: Arc<ClusterSecret>, allowed: &[Cidr]) -> Access {
        let mut networks = loopback();
        for net in allowed {
            if !networks.contains(net) {
                networks.push(*net);
            }
        }
        Access {
            open: false,
            secret: Some(secret),
            allowed: Arc::new(networks),
        }
    }

    /// The networks clients may read from without a proof (everyone when open).
    pub fn allowed(&self) -> &[Cidr] {
        &self.allowed
    }

    /// Who `request` comes from, or why it is refused. `now` is in unix seconds.
    pub fn check<B>(&self, request: &Request<B>, now: u64) -> Result<Caller, String> {
        if self.open {
            let from_peer = request.headers().contains_key(MIRRORED_HEADER);
            return Ok(if from_peer {
                Caller::Peer
            } else {
                Caller::Client
            });
        }
        let client = request.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        let allowed = client.is_some_and(|ip| self.allowed.iter().any(|net| net.contains(ip)));
        let refused = match (&self.secret, request.headers().get(PROOF_HEADER)) {
            (_, None) => "no cluster proof".to_owned(),
            (None, Some(_)) => "a cluster proof this node cannot check".to_owned(),
            (Some(secret), Some(proof)) => {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or(request.uri().path(), |pq| pq.as_str());
                let method = request.method().as_str();
                match proof.to_str() {
                    Err(_) => "a malformed cluster proof".to_owned(),
                    Ok(proof) => match secret.verify(method, path, proof, now) {
                        Ok(()) => return Ok(Caller::Peer),
                        Err(e @ ProofError::Stale { skew_secs }) => {
                            warn!(client = %show(client), skew_secs, "refused a member's request made too long ago: is a clock off (run NTP), or is it a replay?");
                            e.to_string()
                        }
                        Err(e) => e.to_string(),
                    },
                }
            }
        };
        if allowed {
            Ok(Caller::Client)
        } else {
            Err(format!(
                "{} is not an allowed client and sent {refused}",
                show(client)
            ))
        }
    }
}

fn show(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "an unknown client".to_owned(), |ip| ip.to_string())
}

fn loopback() -> Vec<Cidr> {
    vec![
        Cidr {
            network: Ipv4Addr::new(127, 0, 0, 0).into(),
            prefix: 8,
        },
        Cidr::host(Ipv6Addr::LOCALHOST.into()),
    ]
}

/// Adds the proof of `secret` (if any) for the builder's method, path and query, made now.
pub(crate) fn prove(builder: Builder, secret: Option<&ClusterSecret>) -> Builder {
    let (Some(secret), Some(method), Some(uri)) = (secret, builder.method_ref(), builder.uri_ref())
    else {
        return builder;
    };
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let proof = secret.sign(method.as_str(), path, spegel_secret::unix_now());
    builder.header(PROOF_HEADER, proof)
}

/// This host's interface addresses (each as a single-address network), as seen now.
pub fn own_addresses() -> std::io::Result<Vec<Cidr>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    let mut own = Vec::new();
    for interface in addresses {
        let Some(address) = interface.address else {
            continue;
        };
        let ip: Option<IpAddr> = if let Some(v4) = address.as_sockaddr_in() {
            Some(v4.ip().into())
        } else {
            address.as_sockaddr_in6().map(|v6| v6.ip().into())
        };
        if let Some(ip) = ip
            && !own.contains(&Cidr::host(ip))
        {
            own.push(Cidr::host(ip));
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const PATH: &str = "/v2/test/img/blobs/sha256:00?ns=example.com";

    fn secret(byte: u8) -> Arc<ClusterSecret> {
        Arc::new(ClusterSecret::from_bytes([byte; 32]))
    }

    /// A GET of `PATH` from `client`, with `headers`.
    fn request(client: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(PATH);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        let addr = SocketAddr::new(client.parse().unwrap(), 40000);
        request.extensions_mut().insert(ClientAddr(addr));
        request
    }

    #[test]
    fn networks_parse() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            (" 192.0.2.0/24 ", "192.0.2.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/64", "fd00::/64"),
            ("::1", "::1/128"),
        ] {
            assert_eq!(text.parse::<Cidr>().unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/x",
        ] {
            let error = bad.parse::<Cidr>().unwrap_err();
            assert!(error.contains("is not a network"), "{error}");
        }
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: Cidr = "fd00::/64".parse().unwrap();
        assert!(v6.contains("fd00::abcd".parse().unwrap()));
        assert!(!v6.contains("fd00:0:0:1::1".parse().unwrap()));
    }

    #[test]
    fn members_serve_loopback_and_allowed_networks_without_proof() {
        let access = Access::members(secret(1), &["192.0.2.0/24".parse().unwrap()]);
        for client in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "192.0.2.50",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(
                access.check(&request(client, &[]), NOW),
                Ok(Caller::Client),
                "{client}"
            );
        }
        let denied = access
            .check(&request("198.51.100.1", &[]), NOW)
            .unwrap_err();
        assert!(denied.contains("198.51.100.1"), "{denied}");
        assert!(denied.contains("no cluster proof"), "{denied}");
    }

    #[test]
    fn a_valid_proof_makes_a_peer_from_anywhere() {
        let access = Access::members(secret(1), &[]);
        let proof = secret(1).sign("GET", PATH, NOW - 5);
        for client in ["198.51.100.1", "127.0.0.1"] {
            let request = request(client, &[(PROOF_HEADER, &proof), (MIRRORED_HEADER, "true")]);
            assert_eq!(access.check(&request, NOW), Ok(Caller::Peer), "{client}");
        }
    }

    #[test]
    fn the_mirrored_header_means_nothing_without_a_proof() {
        let access = Access::members(secret(1), &[]);
        let mirrored = [(MIRRORED_HEADER, "true")];
        assert_eq!(
            access.check(&request("127.0.0.1", &mirrored), NOW),
            Ok(Caller::Client)
        );
        assert!(
            access
                .check(&request("198.51.100.1", &mirrored), NOW)
                .is_err()
        );
    }

    #[test]
    fn wrong_stale_or_malformed_proofs_are_refused_from_outside() {
        let access = Access::members(secret(1), &[]);
        let other = secret(2).sign("GET", PATH, NOW);
        let stale = secret(1).sign("GET", PATH, NOW - 31);
        let other_path = secret(1).sign("GET", "/v2/test/img/blobs/sha256:01", NOW);
        for (proof, reason) in [
            (other.as_str(), "does not match"),
            (stale.as_str(), "31 s away"),
            (other_path.as_str(), "does not match"),
            ("true", "malformed"),
        ] {
            let outside = request("198.51.100.1", &[(PROOF_HEADER, proof)]);
            let error = access.check(&outside, NOW).unwrap_err();
            assert!(error.contains(reason), "{proof}: {error}");
            // From loopback the same request is containerd's: served, never as a peer's.
            let inside = request("127.0.0.1", &[(PROOF_HEADER, proof)]);
            assert_eq!(access.check(&inside, NOW), Ok(Caller::Client));
        }
    }

    #[test]
    fn a_request_without_a_client_address_is_refused() {
        let access = Access::members(secret(1), &[]);
        let request = Request::get(PATH).body(()).unwrap();
        assert!(access.check(&request, NOW).is_err());
    }

    #[test]
    fn the_default_serves_loopback_only_and_never_peers() {
        let access = Access::default();
        let mirrored = [(MIRRORED_HEADER, "true")];
        assert_eq!(
            access.check(&request("127.0.0.1", &mirrored), NOW),
            Ok(Caller::Client)
        );
        assert!(
            access
                .check(&request("198.51.100.1", &mirrored), NOW)
                .is_err()
        );
    }

    #[test]
    fn open_access_serves_everyone_and_trusts_the_header() {
        let access = Access::open();
        assert_eq!(
            access.check(&request("198.51.100.1", &[]), NOW),
            Ok(Caller::Client)
        );
        let mirrored = request("198.51.100.1", &[(MIRRORED_HEADER, "true")]);
        assert_eq!(access.check(&mirrored, NOW), Ok(Caller::Peer));
    }

    #[test]
    fn a_proved_request_passes_the_check() {
        let builder = Request::get(format!("http://192.0.2.1:5000{PATH}"));
        let request = prove(builder, Some(&secret(1)));
        let mut request = request.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ClientAddr("198.51.100.1:1".parse().unwrap()));
        let access = Access::members(secret(1), &[]);
        assert_eq!(
            access.check(&request, spegel_secret::unix_now()),
            Ok(Caller::Peer)
        );
    }

    #[test]
    fn own_addresses_include_loopback() {
        let own = own_addresses().unwrap();
        assert!(
            own.contains(&Cidr::host(Ipv4Addr::LOCALHOST.into())),
            "{own:?}"
        );
    }
}
