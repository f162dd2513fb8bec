//! Content digests (`sha256:<hex>`), parsed into a type before any handler sees them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm spegel can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of this algorithm's output.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("a digest has the form <algorithm>:<hex>")]
    MissingSeparator,
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    #[error("{algorithm} digests have {expected} lowercase hex characters")]
    BadEncoding {
        algorithm: &'static str,
        expected: usize,
    },
}

/// A validated content digest such as `sha256:e3b0…b855`.
///
/// The encoded part is always lowercase hex of the algorithm's length, so a digest is safe to
/// use as a file name: it can never contain `/` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(sha2::Sha256::digest(bytes)),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::MissingSeparator)?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(DigestError::UnsupportedAlgorithm(shown));
            }
        };
        let well_formed = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(DigestError::BadEncoding {
                algorithm: algorithm.as_str(),
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: encoded.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// Hashes bytes as they stream past and says at the end whether they were the expected content.
pub struct Verifier {
    expected: Digest,
    state: HashState,
}

enum HashState {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Verifier {
    /// Starts verifying content that should hash to `expected`.
    pub fn new(expected: Digest) -> Verifier {
        let state = match expected.algorithm {
            Algorithm::Sha256 => HashState::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => HashState::Sha512(sha2::Sha512::new()),
        };
        Verifier { expected, state }
    }

    /// Feeds the next bytes of the content.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            HashState::Sha256(h) => h.update(bytes),
            HashState::Sha512(h) => h.update(bytes),
        }
    }

    /// True when everything fed so far hashes to the expected digest.
    pub fn finish(self) -> bool {
        let actual = match self.state {
            HashState::Sha256(h) => hex::encode(h.finalize()),
            HashState::Sha512(h) => hex::encode(h.finalize()),
        };
        actual == self.expected.hex
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_parse_or_say_why_not() {
        let sha512 = format!("sha512:{}", "0".repeat(128));
        let cases: &[(&str, Result<(), DigestError>)] = &[
            (EMPTY, Ok(())),
            (&sha512, Ok(())),
            ("sha256", Err(DigestError::MissingSeparator)),
            ("", Err(DigestError::MissingSeparator)),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                Err(DigestError::UnsupportedAlgorithm("md5".into())),
            ),
            (
                "sha256:abc",
                Err(DigestError::BadEncoding {
                    algorithm: "sha256",
                    expected: 64,
                }),
            ),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Err(DigestError::BadEncoding {
                    algorithm: "sha256",
                    expected: 64,
                }),
            ),
            (
                "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Err(DigestError::BadEncoding {
                    algorithm: "sha256",
                    expected: 64,
                }),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<Digest>().map(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn a_digest_prints_as_it_was_parsed() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn the_verifier_accepts_only_the_right_bytes() {
        let want = Digest::sha256_of(b"hello world");
        let mut v = Verifier::new(want.clone());
        v.update(b"hello ");
        v.update(b"world");
        assert!(v.finish());
        let mut v = Verifier::new(want);
        v.update(b"hello there");
        assert!(!v.finish());
    }
}
