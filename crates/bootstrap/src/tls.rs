//! PEM files → rustls configurations, shared by the bootstrapper (server) and the node (client).
//!
//! Both sides use ring, TLS 1.3 and 1.2 only, and ALPN `http/1.1`. The server requires a
//! client certificate signed by its client CA; the client trusts only the CA in its cert dir.
//! Files are read whole and parsed with `rustls-pki-types`' PEM support.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// In a node's cert dir: the CA that signed the bootstrapper's server certificate.
pub const CA_FILE: &str = "ca.crt";
/// In a node's cert dir: the node's client certificate (chain).
pub const CERT_FILE: &str = "tls.crt";
/// In a node's cert dir: the node's private key.
pub const KEY_FILE: &str = "tls.key";

const ALPN_HTTP1: &[u8] = b"http/1.1";
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one crypto provider of the workspace (kube uses ring too).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    certificates_from_pem(path, &read(path)?)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    private_key_from_pem(path, &read(path)?)
}

/// A client configuration from a node's cert dir: trusts `ca.crt`, presents `tls.crt` with
/// `tls.key`. Read on every call, so rotated files are used by the next request.
pub fn client_config(cert_dir: &Path) -> Result<ClientConfig> {
    let ca_path = cert_dir.join(CA_FILE);
    let roots = root_store(&ca_path, &read(&ca_path)?)?;
    let cert_path = cert_dir.join(CERT_FILE);
    let chain = read_certificates(&cert_path)?;
    let key = read_private_key(&cert_dir.join(KEY_FILE))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Where the bootstrapper's server certificate, key and client CA bundle live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ServerTlsFiles {
    /// Reads the three files (not yet parsed).
    pub fn read(&self) -> Result<ServerTlsPem> {
        Ok(ServerTlsPem {
            files: self.clone(),
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: read(&self.client_ca)?,
        })
    }

    /// Reads and parses the three files into a server configuration.
    pub fn server_config(&self) -> Result<ServerConfig> {
        self.read()?.server_config()
    }
}

/// The bytes of the server's TLS files; compared to notice rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsPem {
    files: ServerTlsFiles,
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Vec<u8>,
}

impl ServerTlsPem {
    /// A server configuration that requires and verifies client certificates against the
    /// client CA bundle.
    pub fn server_config(&self) -> Result<ServerConfig> {
        let roots = root_store(&self.files.client_ca, &self.client_ca)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
        let chain = certificates_from_pem(&self.files.cert, &self.cert)?;
        let key = private_key_from_pem(&self.files.key, &self.key)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn certificates_from_pem(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key_from_pem(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| Error::Pem {
        path: path.to_owned(),
        source,
    })
}

fn root_store(path: &Path, pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(path, pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spegel_certs::{Authority, Validity, write_cert_dir, write_private, write_public};

    fn server_files(dir: &Path, ca: &Authority) -> ServerTlsFiles {
        let server = ca
            .server(&["localhost".to_owned()], Validity::days(1))
            .unwrap();
        let files = ServerTlsFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: dir.join("ca.crt"),
        };
        write_public(&files.cert, &server.cert_pem).unwrap();
        write_private(&files.key, &server.key_pem).unwrap();
        write_public(&files.client_ca, &ca.cert_pem()).unwrap();
        files
    }

    #[test]
    fn a_cert_dir_makes_a_client_config_offering_http1() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let client = ca.client("node-a", Validity::days(1)).unwrap();
        write_cert_dir(dir.path(), &ca.cert_pem(), &client).unwrap();
        let config = client_config(dir.path()).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn server_files_make_a_server_config() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = server_files(dir.path(), &ca);
        let config = files.server_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_and_malformed_files_name_the_file() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = server_files(dir.path(), &ca);

        let missing = ServerTlsFiles {
            key: dir.path().join("absent.key"),
            ..files.clone()
        };
        let error = missing.server_config().unwrap_err().to_string();
        assert!(error.contains("absent.key"), "{error}");

        std::fs::write(&files.client_ca, "not pem").unwrap();
        let error = files.server_config().unwrap_err().to_string();
        assert!(
            error.contains("ca.crt") && error.contains("no certificate"),
            "{error}"
        );

        std::fs::write(&files.key, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(read_private_key(&files.key).is_err());
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = server_files(dir.path(), &ca);
        let other = ca
            .server(&["localhost".to_owned()], Validity::days(1))
            .unwrap();
        write_private(&files.key, &other.key_pem).unwrap();
        let error = files.server_config().unwrap_err();
        assert!(matches!(error, Error::Tls(_)), "{error}");
    }

    #[test]
    fn rotated_files_read_differently() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = server_files(dir.path(), &ca);
        let before = files.read().unwrap();
        assert_eq!(before, files.read().unwrap());
        server_files(dir.path(), &ca);
        assert_ne!(before, files.read().unwrap());
    }
}
