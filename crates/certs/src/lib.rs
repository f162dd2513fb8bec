//! Development and test certificates for the bootstrapper's mutual TLS.
//!
//! Owns: a throw-away certificate authority ([`Authority`]), server certificates with
//! subject alternative names, client certificates naming a node, and writing them in the
//! layouts the two sides read: the bootstrapper's `--tls-cert-file`/`--tls-key-file`/
//! `--client-ca-file`, and the node's cert dir (`ca.crt`, `tls.crt`, `tls.key`).
//!
//! Used by `spegel-certs` (the dev command) and by tests. It must never be used by a
//! production code path: real clusters get their certificates from their own CA (Gardener's
//! secrets manager, cert-manager, …). Private keys are written `0600` and never committed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// File names of a node's cert dir, as upstream Spegel's HTTP bootstrapper reads it.
pub const CA_FILE: &str = "ca.crt";
/// The client certificate in a node's cert dir.
pub const CERT_FILE: &str = "tls.crt";
/// The client key in a node's cert dir.
pub const KEY_FILE: &str = "tls.key";

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from an hour ago (clock skew) for `days` days.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// Expired yesterday: for tests that a stale certificate is refused.
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate authority that issues server and client certificates.
#[derive(Debug)]
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl Authority {
    /// A new CA named `common_name` with a fresh key.
    pub fn new(common_name: &str, validity: Validity) -> Result<Authority> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::new(Vec::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity);
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(Authority { issuer, key_pem })
    }

    /// The CA certificate, PEM: what the other side trusts.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses, e.g. `localhost`,
    /// `127.0.0.1`, the Ingress host).
    pub fn server(&self, names: &[String], validity: Validity) -> Result<Issued> {
        let common_name = names.first().map_or("spegel-bootstrapper", String::as_str);
        self.issue(
            common_name,
            names.to_vec(),
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// A client certificate for the node `node_name`: the name is both the common name and a
    /// DNS subject alternative name, which is how the bootstrapper recognises the asking node.
    pub fn client(&self, node_name: &str, validity: Validity) -> Result<Issued> {
        self.issue(
            node_name,
            vec![node_name.to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys sign; they never encipher.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
}

/// Writes a node's cert dir: `ca.crt` (the CA that signed the bootstrapper's server
/// certificate), `tls.crt` and `tls.key` (the node's client certificate, key `0600`).
pub fn write_cert_dir(dir: &Path, ca_pem: &str, client: &Issued) -> Result<()> {
    create_dir(dir)?;
    write_public(&dir.join(CA_FILE), ca_pem)?;
    write_public(&dir.join(CERT_FILE), &client.cert_pem)?;
    write_private(&dir.join(KEY_FILE), &client.key_pem)
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Writes a certificate (world-readable).
pub fn write_public(path: &Path, pem: &str) -> Result<()> {
    write_with_mode(path, pem, 0o644)
}

/// Writes a private key, readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> Result<()> {
    write_with_mode(path, pem, 0o600)
}

/// Writes through a temporary file and a rename, so a reader never sees half a file (the
/// bootstrapper re-reads its certificate files while running).
fn write_with_mode(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let error = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&temp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_cert_dir_holds_the_three_files_upstream_spegel_reads_with_a_private_key() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let client = ca.client("node-a", Validity::days(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_cert_dir(dir.path(), &ca.cert_pem(), &client).unwrap();
        for name in [CA_FILE, CERT_FILE, KEY_FILE] {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{name}: {text}");
        }
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("tls.key.tmp").exists());
    }

    #[test]
    fn server_certificates_accept_ip_addresses_and_dns_names() {
        let ca = Authority::new("test ca", Validity::days(1)).unwrap();
        let server = ca
            .server(
                &["localhost".to_owned(), "127.0.0.1".to_owned()],
                Validity::days(1),
            )
            .unwrap();
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
    }
}
