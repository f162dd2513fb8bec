//! Operator input, parsed before any file is touched: where the mirror listens
//! ([`MirrorTarget`]) and which registries it mirrors ([`UpstreamRegistry`]).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The registry directory containerd uses for registries without one of their own.
pub const DEFAULT_DIR: &str = "_default";

/// A mirror containerd should ask first: `http(s)://host[:port][/path]`, e.g.
/// `http://127.0.0.1:5000`. Written as the key of a `[host."…"]` table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MirrorTarget(String);

impl MirrorTarget {
    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MirrorTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for MirrorTarget {
    type Err = Error;

    fn from_str(value: &str) -> Result<MirrorTarget, Error> {
        let invalid = |reason| Error::InvalidMirrorTarget {
            value: value.to_owned(),
            reason,
        };
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| invalid("it must start with http:// or https://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(invalid("it names no host"));
        }
        if !value.chars().all(|c| c.is_ascii_graphic()) || value.contains(['"', '\\']) {
            return Err(invalid(
                "it contains spaces, quotes or other characters a URL cannot",
            ));
        }
        Ok(MirrorTarget(value.trim_end_matches('/').to_owned()))
    }
}

/// An upstream registry given to `--mirrored-registries`: `docker.io`, `ghcr.io`,
/// `https://quay.io`, `http://10.0.0.1:5000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamRegistry {
    /// `host[:port]`: the name of its directory under `certs.d` and the `ns` containerd sends.
    host: String,
    /// `http` or `https`.
    scheme: &'static str,
}

impl UpstreamRegistry {
    /// The directory name under `certs.d` (`host[:port]`).
    pub fn dir_name(&self) -> &str {
        &self.host
    }

    /// The `server` containerd falls back to when no mirror has the content. Docker Hub's
    /// API lives at `registry-1.docker.io`, as containerd itself knows.
    pub fn server(&self) -> String {
        match self.host.as_str() {
            "docker.io" => "https://registry-1.docker.io".to_owned(),
            host => format!("{}://{host}", self.scheme),
        }
    }
}

impl fmt::Display for UpstreamRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

impl FromStr for UpstreamRegistry {
    type Err = Error;

    fn from_str(value: &str) -> Result<UpstreamRegistry, Error> {
        let invalid = |reason| Error::InvalidRegistry {
            value: value.to_owned(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = value.strip_prefix("https://") {
            ("https", rest)
        } else if let Some(rest) = value.strip_prefix("http://") {
            ("http", rest)
        } else if value.contains("://") {
            return Err(invalid("only http:// and https:// registries exist"));
        } else {
            ("https", value)
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() {
            return Err(invalid("it names no host"));
        }
        if host.contains('/') {
            return Err(invalid("a registry is a host[:port], without a path"));
        }
        if host.starts_with('.') || host.starts_with('_') {
            return Err(invalid("a registry host cannot start with '.' or '_'"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if !host.chars().all(allowed) {
            return Err(invalid(
                "a registry host holds only letters, digits, '.', '-', ':' and []",
            ));
        }
        Ok(UpstreamRegistry {
            host: host.to_ascii_lowercase(),
            scheme,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_targets_are_http_urls_without_a_trailing_slash() {
        let cases = [
            ("http://127.0.0.1:5000", Some("http://127.0.0.1:5000")),
            ("http://127.0.0.1:5000/", Some("http://127.0.0.1:5000")),
            ("https://[::1]:5000", Some("https://[::1]:5000")),
            ("127.0.0.1:5000", None),
            ("ftp://x", None),
            ("http://", None),
            ("http:///v2", None),
            ("http://a b", None),
            ("http://a\"]", None),
        ];
        for (input, expected) in cases {
            let parsed = input.parse::<MirrorTarget>().ok();
            assert_eq!(
                parsed.as_ref().map(MirrorTarget::as_str),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn registries_name_their_directory_and_server() {
        let cases = [
            ("docker.io", "docker.io", "https://registry-1.docker.io"),
            ("https://ghcr.io", "ghcr.io", "https://ghcr.io"),
            (
                "http://10.0.0.1:5000",
                "10.0.0.1:5000",
                "http://10.0.0.1:5000",
            ),
            ("Quay.IO/", "quay.io", "https://quay.io"),
            ("[::1]:5000", "[::1]:5000", "https://[::1]:5000"),
        ];
        for (input, dir, server) in cases {
            let registry: UpstreamRegistry = input.parse().unwrap();
            assert_eq!(registry.dir_name(), dir, "{input}");
            assert_eq!(registry.server(), server, "{input}");
        }
    }

    #[test]
    fn registries_that_would_escape_certs_d_are_refused() {
        for input in [
            "", "..", "../etc", "a/b", "_default", ".hidden", "ftp://x", "a b", "x\"y",
        ] {
            let error = input.parse::<UpstreamRegistry>().unwrap_err();
            assert!(
                error.to_string().contains("is not a registry"),
                "{input}: {error}"
            );
        }
    }
}
