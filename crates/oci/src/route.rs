//! The `/v2` route parser: a pure function from a request path to a typed [`Route`].
//!
//! Repository names contain `/`, so the path is split from the right on `manifests|blobs`.
//! The path is taken as sent (still percent-encoded): an encoded slash or dot can never
//! become a path separator, it simply fails the repository grammar.

use crate::{Digest, ErrorCode, Reference, RegistryError, Repository, Tag};

/// A request the registry understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    ApiVersion,
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        repository: Repository,
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        repository: Repository,
        digest: Digest,
    },
    /// `/livez`: the process is up.
    Livez,
    /// `/readyz`: the node can serve.
    Readyz,
    /// `/_spegel/status`: this node's peer ID, peers and advertised keys (JSON).
    Status,
    /// `/_spegel/providers/<digest>`: which peers the DHT says hold a digest (JSON).
    Providers { digest: Digest },
}

/// Parses a request path into a [`Route`], or the OCI error a client should get.
pub fn parse_route(path: &str) -> Result<Route, RegistryError> {
    match path {
        "/v2" | "/v2/" => return Ok(Route::ApiVersion),
        "/livez" => return Ok(Route::Livez),
        "/readyz" => return Ok(Route::Readyz),
        "/_spegel/status" => return Ok(Route::Status),
        _ => {}
    }
    if let Some(digest) = path.strip_prefix("/_spegel/providers/") {
        let digest = digest.parse().map_err(|e: crate::DigestError| {
            RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
        })?;
        return Ok(Route::Providers { digest });
    }
    let unknown = || RegistryError::new(ErrorCode::UnknownEndpoint, "unknown endpoint");
    let rest = path.strip_prefix("/v2/").ok_or_else(unknown)?;
    let (prefix, target) = rest.rsplit_once('/').ok_or_else(unknown)?;
    let (name, kind) = prefix.rsplit_once('/').ok_or_else(unknown)?;
    if kind != "manifests" && kind != "blobs" {
        return Err(unknown());
    }
    let repository = Repository::parse(name)
        .ok_or_else(|| RegistryError::new(ErrorCode::NameInvalid, "invalid repository name"))?;
    let digest = |s: &str| {
        s.parse::<Digest>()
            .map_err(|e| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))
    };
    if kind == "blobs" {
        return Ok(Route::Blob {
            repository,
            digest: digest(target)?,
        });
    }
    let reference = if target.contains(':') {
        Reference::Digest(digest(target)?)
    } else {
        let tag = Tag::parse(target)
            .ok_or_else(|| RegistryError::new(ErrorCode::TagInvalid, "invalid tag"))?;
        Reference::Tag(tag)
    };
    Ok(Route::Manifest {
        repository,
        reference,
    })
}

/// The upstream registry a mirrored request is for: the `ns` query parameter that
/// containerd adds (`?ns=docker.io`, `?ns=10.0.0.1%3A5000`), percent-decoded.
///
/// Returns `None` when there is no `ns` or it is not a plausible `host[:port]`.
pub fn registry_from_query(query: Option<&str>) -> Option<String> {
    let raw = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ns="))?;
    let decoded = percent_decode(raw)?;
    let plausible = !decoded.is_empty()
        && decoded.len() <= 255
        && decoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plausible.then_some(decoded)
}

/// Decodes `%XX` escapes; `None` on a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn code(path: &str) -> Result<&'static str, ErrorCode> {
        match parse_route(path) {
            Ok(Route::ApiVersion) => Ok("version"),
            Ok(Route::Livez) => Ok("livez"),
            Ok(Route::Readyz) => Ok("readyz"),
            Ok(Route::Manifest {
                reference: Reference::Tag(_),
                ..
            }) => Ok("manifest-tag"),
            Ok(Route::Manifest {
                reference: Reference::Digest(_),
                ..
            }) => Ok("manifest-digest"),
            Ok(Route::Blob { .. }) => Ok("blob"),
            Ok(Route::Status) => Ok("status"),
            Ok(Route::Providers { .. }) => Ok("providers"),
            Err(e) => Err(e.code),
        }
    }

    #[test]
    fn paths_map_to_routes_or_oci_errors() {
        use ErrorCode::*;
        let cases: Vec<(String, Result<&str, ErrorCode>)> = vec![
            ("/v2/".into(), Ok("version")),
            ("/v2".into(), Ok("version")),
            ("/livez".into(), Ok("livez")),
            ("/readyz".into(), Ok("readyz")),
            ("/_spegel/status".into(), Ok("status")),
            (format!("/_spegel/providers/{D}"), Ok("providers")),
            ("/_spegel/providers/x".into(), Err(DigestInvalid)),
            (
                "/v2/library/nginx/manifests/latest".into(),
                Ok("manifest-tag"),
            ),
            (
                format!("/v2/library/nginx/manifests/{D}"),
                Ok("manifest-digest"),
            ),
            (format!("/v2/a/b/c/blobs/{D}"), Ok("blob")),
            // A repository may itself end in "manifests" or "blobs".
            (format!("/v2/x/blobs/blobs/{D}"), Ok("blob")),
            ("/v2/x/manifests/manifests/v1".into(), Ok("manifest-tag")),
            ("/".into(), Err(UnknownEndpoint)),
            ("/v2/library/nginx/tags/list".into(), Err(UnknownEndpoint)),
            (
                "/v2/library/nginx/blobs/uploads/".into(),
                Err(UnknownEndpoint),
            ),
            ("/v2/_catalog".into(), Err(UnknownEndpoint)),
            ("/v3/x/blobs/y".into(), Err(UnknownEndpoint)),
            ("/v2/manifests/latest".into(), Err(UnknownEndpoint)),
            (format!("/v2//blobs/{D}"), Err(NameInvalid)),
            (format!("/v2/../../etc/blobs/{D}"), Err(NameInvalid)),
            (format!("/v2/a/%2e%2e/blobs/{D}"), Err(NameInvalid)),
            (format!("/v2/a%2Fb/blobs/{D}"), Err(NameInvalid)),
            (format!("/v2/UPPER/blobs/{D}"), Err(NameInvalid)),
            ("/v2/a/blobs/sha256:abc".into(), Err(DigestInvalid)),
            ("/v2/a/blobs/latest".into(), Err(DigestInvalid)),
            (
                "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
                Err(DigestInvalid),
            ),
            (
                "/v2/a/blobs/sha256:..%2F..%2Fetc%2Fpasswd".into(),
                Err(DigestInvalid),
            ),
            ("/v2/a/manifests/sha256:zz".into(), Err(DigestInvalid)),
            ("/v2/a/manifests/.bad".into(), Err(TagInvalid)),
            ("/v2/a/manifests/".into(), Err(TagInvalid)),
            (format!("/v2/a/blobs/{D}/extra"), Err(UnknownEndpoint)),
        ];
        for (path, want) in cases {
            assert_eq!(code(&path), want, "{path}");
        }
    }

    #[test]
    fn ns_is_the_decoded_registry_host() {
        let cases = [
            (Some("ns=docker.io"), Some("docker.io")),
            (Some("ns=10.231.0.2%3A5000"), Some("10.231.0.2:5000")),
            (Some("digest=x&ns=ghcr.io"), Some("ghcr.io")),
            (Some("ns=%5B%3A%3A1%5D%3A5000"), Some("[::1]:5000")),
            (Some("ns="), None),
            (Some("ns=a%2Fb"), None),
            (Some("ns=%zz"), None),
            (Some("ns=%4"), None),
            (Some("other=1"), None),
            (None, None),
        ];
        for (query, want) in cases {
            assert_eq!(
                registry_from_query(query).as_deref(),
                want,
                "query {query:?}"
            );
        }
    }
}
