//! Request proofs: how a peer shows, on the registry port, that it holds the cluster secret.
//!
//! A proof is `v1:<unix seconds>:<hex HMAC-SHA256>` in the [`PROOF_HEADER`] header, the MAC
//! taken under the derived key over the method, the path and query, and the time. It is
//! accepted for [`REPLAY_WINDOW_SECS`] either side of the verifier's clock, so a captured
//! request can be replayed only for that long and only for the same method, path and query
//! (which names content by digest or a tag: the replay gets what the original got).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ClusterSecret;

/// The header a peer's request carries its proof in.
pub const PROOF_HEADER: &str = "x-spegel-proof";

/// How far a proof's time may be from the verifier's clock, either way.
pub const REPLAY_WINDOW_SECS: u64 = 30;

/// The label the MAC key is derived under, so the pre-shared key itself is never a MAC key.
const MAC_KEY_LABEL: &[u8] = b"spegel-rs registry request proof key v1";
const VERSION: &str = "v1";
/// Longer header values are not proofs (`v1:` + 20 digits + `:` + 64 hex digits fit well).
const MAX_PROOF_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is malformed")]
    Malformed,
    #[error(
        "the proof is {skew_secs} s away from this node's clock (at most {REPLAY_WINDOW_SECS} s)"
    )]
    Stale { skew_secs: u64 },
    #[error("the proof does not match (another cluster secret, or the request was changed)")]
    Mismatch,
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn derive_mac_key(psk: &[u8; 32]) -> [u8; 32] {
    let mut key = [0u8; 32];
    // HMAC accepts keys of any length: this cannot fail.
    if let Ok(mut mac) = HmacSha256::new_from_slice(psk) {
        mac.update(MAC_KEY_LABEL);
        key.copy_from_slice(&mac.finalize().into_bytes());
    }
    key
}

impl ClusterSecret {
    fn mac(&self, method: &str, path_and_query: &str, unix_secs: u64) -> HmacSha256 {
        let mut mac = match HmacSha256::new_from_slice(&self.mac_key) {
            Ok(mac) => mac,
            // 32 bytes is a valid HMAC key: unreachable, but no panic on the request path.
            Err(_) => return <HmacSha256 as Mac>::new(&Default::default()),
        };
        for part in [
            VERSION.as_bytes(),
            method.as_bytes(),
            path_and_query.as_bytes(),
            unix_secs.to_string().as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac
    }

    /// The proof for a request made at `unix_secs` (see [`unix_now`]).
    pub fn sign(&self, method: &str, path_and_query: &str, unix_secs: u64) -> String {
        let tag = self.mac(method, path_and_query, unix_secs).finalize();
        format!("{VERSION}:{unix_secs}:{}", hex::encode(tag.into_bytes()))
    }

    /// Checks `proof` for a request received at `now` (unix seconds): the MAC (compared in
    /// constant time), then the time.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        proof: &str,
        now: u64,
    ) -> Result<(), ProofError> {
        if proof.len() > MAX_PROOF_LEN {
            return Err(ProofError::Malformed);
        }
        let mut parts = proof.splitn(3, ':');
        let (Some(VERSION), Some(secs), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        let secs: u64 = secs.parse().map_err(|_| ProofError::Malformed)?;
        let tag = hex::decode(tag).map_err(|_| ProofError::Malformed)?;
        // The MAC first: a stale proof is then known to come from a member (a clock that is
        // off, or a replay), which is worth telling the operator; a forgery is not.
        self.mac(method, path_and_query, secs)
            .verify_slice(&tag)
            .map_err(|_| ProofError::Mismatch)?;
        let skew_secs = now.abs_diff(secs);
        if skew_secs > REPLAY_WINDOW_SECS {
            return Err(ProofError::Stale { skew_secs });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/v2/library/nginx/blobs/sha256:abc?ns=docker.io";
    const NOW: u64 = 1_800_000_000;

    fn secret(byte: u8) -> ClusterSecret {
        ClusterSecret::from_bytes([byte; 32])
    }

    #[test]
    fn a_fresh_proof_verifies() {
        let proof = secret(1).sign("GET", PATH, NOW);
        assert_eq!(secret(1).verify("GET", PATH, &proof, NOW), Ok(()));
    }

    #[test]
    fn proofs_are_accepted_within_the_window_either_way() {
        let s = secret(1);
        for (signed, now) in [
            (NOW, NOW + REPLAY_WINDOW_SECS),
            (NOW + REPLAY_WINDOW_SECS, NOW),
            (NOW - 29, NOW),
        ] {
            let proof = s.sign("GET", PATH, signed);
            assert_eq!(
                s.verify("GET", PATH, &proof, now),
                Ok(()),
                "{signed} at {now}"
            );
        }
    }

    #[test]
    fn proofs_outside_the_window_are_stale() {
        let s = secret(1);
        for (signed, now, skew) in [
            (NOW, NOW + 31, 31),
            (NOW + 31, NOW, 31),
            (NOW - 3600, NOW, 3600),
            (0, NOW, NOW),
        ] {
            let proof = s.sign("GET", PATH, signed);
            assert_eq!(
                s.verify("GET", PATH, &proof, now),
                Err(ProofError::Stale { skew_secs: skew })
            );
        }
    }

    #[test]
    fn another_secret_method_or_path_does_not_match() {
        let proof = secret(1).sign("GET", PATH, NOW);
        let mismatch = Err(ProofError::Mismatch);
        assert_eq!(secret(2).verify("GET", PATH, &proof, NOW), mismatch);
        assert_eq!(secret(1).verify("HEAD", PATH, &proof, NOW), mismatch);
        let other = "/v2/library/nginx/blobs/sha256:abd?ns=docker.io";
        assert_eq!(secret(1).verify("GET", other, &proof, NOW), mismatch);
        let no_query = "/v2/library/nginx/blobs/sha256:abc";
        assert_eq!(secret(1).verify("GET", no_query, &proof, NOW), mismatch);
    }

    #[test]
    fn a_changed_timestamp_does_not_match() {
        let proof = secret(1).sign("GET", PATH, NOW);
        let moved = proof.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(
            secret(1).verify("GET", PATH, &moved, NOW),
            Err(ProofError::Mismatch)
        );
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let good = secret(1).sign("GET", PATH, NOW);
        let long = format!("{good}{}", "0".repeat(MAX_PROOF_LEN));
        for proof in [
            "",
            "true",
            "v1",
            "v1:",
            "v1:123",
            "v2:1800000000:00",
            "v1:soon:00",
            "v1:-5:00",
            "v1:1800000000:zz",
            long.as_str(),
        ] {
            assert_eq!(
                secret(1).verify("GET", PATH, proof, NOW),
                Err(ProofError::Malformed),
                "{proof:?}"
            );
        }
    }
}
