//! Who is asking: the client's source address and verified certificate, matched to a Node so
//! that a node is not told to bootstrap through itself.

use std::net::IpAddr;

use rustls_pki_types::{CertificateDer, DnsName, ServerName};
use webpki::EndEntityCert;

use crate::nodes::ReadyNode;

/// The peer of one HTTPS connection. The certificate has already been verified against the
/// client CA by the TLS handshake.
#[derive(Debug, Clone)]
pub struct Asker {
    pub addr: IpAddr,
    pub cert: Option<CertificateDer<'static>>,
}

impl Asker {
    /// A predicate: is `node` the asker? True when the connection comes from one of the
    /// node's InternalIPs, or when the client certificate is valid for the node's name as a
    /// DNS subject alternative name (what `spegel-certs` issues, and what survives an Ingress
    /// in TLS passthrough, which hides the source address).
    pub fn matcher(&self) -> impl Fn(&ReadyNode) -> bool + '_ {
        let addr = self.addr.to_canonical();
        let cert = self
            .cert
            .as_ref()
            .and_then(|der| EndEntityCert::try_from(der).ok());
        move |node: &ReadyNode| {
            node.addrs.contains(&addr)
                || cert
                    .as_ref()
                    .is_some_and(|cert| names_node(cert, &node.name))
        }
    }
}

fn names_node(cert: &EndEntityCert<'_>, node_name: &str) -> bool {
    DnsName::try_from(node_name).is_ok_and(|name| {
        cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name))
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use spegel_certs::{Authority, Validity};

    fn node(name: &str, addr: &str) -> ReadyNode {
        ReadyNode {
            name: name.to_owned(),
            addrs: vec![addr.parse().unwrap()],
        }
    }

    fn cert_for(name: &str) -> CertificateDer<'static> {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let client = ca.client(name, Validity::days(1)).unwrap();
        CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap()
    }

    #[test]
    fn the_asker_is_recognised_by_source_address_or_certificate_name() {
        let by_addr = Asker {
            addr: "::ffff:10.0.0.1".parse().unwrap(),
            cert: None,
        };
        let by_name = Asker {
            addr: "192.0.2.9".parse().unwrap(),
            cert: Some(cert_for("node-b")),
        };
        let cases = [
            (&by_addr, node("node-a", "10.0.0.1"), true),
            (&by_addr, node("node-b", "10.0.0.2"), false),
            (&by_name, node("node-b", "10.0.0.2"), true),
            (&by_name, node("node-bb", "10.0.0.3"), false),
            (&by_name, node("Not A DNS Name!", "10.0.0.4"), false),
        ];
        for (asker, node, want) in cases {
            assert_eq!(asker.matcher()(&node), want, "{asker:?} {node:?}");
        }
    }
}
