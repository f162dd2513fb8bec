//! The node's Ed25519 identity, persisted so the peer ID survives restarts.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;
use tracing::info;

use crate::{Error, Result};

const IDENTITY_FILE: &str = "identity.key";

/// Loads `<data_dir>/identity.key`, or creates it (mode 0600) with a new Ed25519 key.
/// Without a data dir the identity is random and lives as long as the process.
pub fn load_or_create_identity(data_dir: Option<&Path>) -> Result<Keypair> {
    let Some(dir) = data_dir else {
        return Ok(Keypair::generate_ed25519());
    };
    let path = dir.join(IDENTITY_FILE);
    let error = |reason: String| Error::Identity {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(error(format!(
                    "mode {mode:o} lets others read the private key; chmod 600 it"
                )));
            }
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| error(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| error(format!("creating the data dir: {e}")))?;
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| error(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| error(e.to_string()))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| error(e.to_string()))?;
            info!(path = %path.display(), peer = %keypair.public().to_peer_id(), "created node identity");
            Ok(keypair)
        }
        Err(e) => Err(error(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_survives_a_restart_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_identity(Some(dir.path())).unwrap();
        let second = load_or_create_identity(Some(dir.path())).unwrap();
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_world_readable_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_identity(Some(dir.path())).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_identity(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn without_a_data_dir_each_identity_is_new() {
        let a = load_or_create_identity(None).unwrap();
        let b = load_or_create_identity(None).unwrap();
        assert_ne!(a.public().to_peer_id(), b.public().to_peer_id());
    }
}
