//! The two JSON shapes the bootstrapper answers, and turning either into peers.
//!
//! | path | body | consumers |
//! |---|---|---|
//! | [`BOOTSTRAP_NODES_PATH`] | `["10.0.0.1","10.0.0.2"]` | the Gardener PoC, IP-only clients |
//! | [`BOOTSTRAP_PEERS_PATH`] | `[{"Addrs":["/ip4/10.0.0.1/tcp/5001"]}]`, `"ID"` where known | upstream Spegel's HTTP bootstrapper |

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Result;

/// Answers a JSON array of IP address strings.
pub const BOOTSTRAP_NODES_PATH: &str = "/bootstrap-nodes";
/// Answers a JSON array of [`BootstrapPeer`] objects.
pub const BOOTSTRAP_PEERS_PATH: &str = "/v1/bootstrap-peers";

/// The response header the bootstrapper names the asking node's zone in (either path),
/// when the node's Node exists and carries `topology.kubernetes.io/zone`. A header keeps
/// both body shapes as Spegel's clients expect them.
pub const ZONE_HEADER: &str = "x-spegel-zone";

/// A peer to join the DHT through: libp2p's `AddrInfo` JSON (`{"ID": …, "Addrs": […]}`).
///
/// `id` is absent when the peer ID is unknown (the bootstrapper only knows node addresses):
/// the node dials without an expected ID and learns it on connect. An empty `"ID"` (what Go
/// marshals for an unset ID) reads as absent too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapPeer {
    #[serde(
        rename = "ID",
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// Multiaddrs such as `/ip4/10.0.0.1/tcp/5001`.
    #[serde(rename = "Addrs", default)]
    pub addrs: Vec<String>,
}

impl BootstrapPeer {
    /// A peer known only by its address: `/ip4/<ip>/tcp/<port>` (or `/ip6/…`), no ID.
    pub fn from_ip(ip: IpAddr, router_port: u16) -> BootstrapPeer {
        BootstrapPeer {
            id: None,
            addrs: vec![multiaddr(ip, router_port)],
        }
    }
}

/// The TCP multiaddr of `ip:port`: `/ip4/10.0.0.1/tcp/5001`, `/ip6/fd00::1/tcp/5001`.
pub fn multiaddr(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("/ip4/{ip}/tcp/{port}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}/tcp/{port}"),
    }
}

/// Either answer the bootstrapper may give. An empty array reads as an empty IP list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Answer {
    Ips(Vec<IpAddr>),
    Peers(Vec<BootstrapPeer>),
}

/// Reads either JSON shape into peers. IPs become `/ip4/<ip>/tcp/<router_port>` with no ID;
/// peers without any address are dropped (nothing to dial).
pub fn parse_peers(body: &[u8], router_port: u16) -> Result<Vec<BootstrapPeer>> {
    let peers = match serde_json::from_slice(body)? {
        Answer::Ips(ips) => ips
            .into_iter()
            .map(|ip| BootstrapPeer::from_ip(ip, router_port))
            .collect(),
        Answer::Peers(peers) => peers
            .into_iter()
            .filter(|peer| !peer.addrs.is_empty())
            .collect(),
    };
    Ok(peers)
}

fn empty_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let id = Option::<String>::deserialize(deserializer)?;
    Ok(id.filter(|id| !id.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: Option<&str>, addrs: &[&str]) -> BootstrapPeer {
        BootstrapPeer {
            id: id.map(str::to_owned),
            addrs: addrs.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn either_shape_reads_into_peers() {
        let cases: &[(&str, Vec<BootstrapPeer>)] = &[
            (
                r#"["10.0.0.1","fd00::2"]"#,
                vec![
                    peer(None, &["/ip4/10.0.0.1/tcp/5001"]),
                    peer(None, &["/ip6/fd00::2/tcp/5001"]),
                ],
            ),
            ("[]", vec![]),
            (
                r#"[{"ID":"12D3KooWabc","Addrs":["/ip4/10.0.0.1/tcp/4001"]}]"#,
                vec![peer(Some("12D3KooWabc"), &["/ip4/10.0.0.1/tcp/4001"])],
            ),
            (
                r#"[{"Addrs":["/ip4/10.0.0.1/tcp/5001","/ip6/fd00::1/tcp/5001"]}]"#,
                vec![peer(
                    None,
                    &["/ip4/10.0.0.1/tcp/5001", "/ip6/fd00::1/tcp/5001"],
                )],
            ),
            (
                r#"[{"ID":"","Addrs":["/ip4/10.0.0.1/tcp/5001"]},{"ID":null,"Addrs":["/ip4/10.0.0.2/tcp/5001"]}]"#,
                vec![
                    peer(None, &["/ip4/10.0.0.1/tcp/5001"]),
                    peer(None, &["/ip4/10.0.0.2/tcp/5001"]),
                ],
            ),
            (r#"[{"ID":"12D3KooWabc","Addrs":[]}]"#, vec![]),
        ];
        for (body, want) in cases {
            assert_eq!(&parse_peers(body.as_bytes(), 5001).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn answers_that_are_neither_shape_are_errors() {
        for body in [
            r#"["not-an-ip"]"#,
            r#"{"Addrs":[]}"#,
            r#"[1,2]"#,
            "",
            "<html>",
        ] {
            assert!(parse_peers(body.as_bytes(), 5001).is_err(), "{body}");
        }
    }

    #[test]
    fn peers_without_an_id_serialize_without_the_id_field() {
        let json = serde_json::to_string(&[
            BootstrapPeer::from_ip("10.0.0.1".parse().unwrap(), 5001),
            peer(Some("12D3KooWabc"), &["/ip4/10.0.0.2/tcp/5001"]),
        ])
        .unwrap();
        assert_eq!(
            json,
            r#"[{"Addrs":["/ip4/10.0.0.1/tcp/5001"]},{"ID":"12D3KooWabc","Addrs":["/ip4/10.0.0.2/tcp/5001"]}]"#
        );
    }
}
