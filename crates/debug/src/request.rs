//! What a request to the debug page asks for, parsed at the edge: the route, and for the
//! measure tool the image reference, validated with `spegel-oci`'s grammar.

use spegel_oci::{Digest, ImageName, Reference};
use spegel_registry::MeasureTarget;

/// Longest `image` value accepted (a registry host, a repository, a tag and a digest fit).
const MAX_IMAGE_CHARS: usize = 700;

/// A page of the debug site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/debug/`: this node, its peers, what it advertises and mirrored.
    Overview,
    /// `/debug/measure[?image=…]`: the measure form, and a measure when `image` is given.
    Measure(Option<String>),
    NotFound,
}

/// The route for `path` and its raw `query`.
pub fn route(path: &str, query: Option<&str>) -> Route {
    match path {
        "/debug" | "/debug/" => Route::Overview,
        "/debug/measure" | "/debug/measure/" => {
            let image = query.and_then(|q| param(q, "image"));
            Route::Measure(image.filter(|i| !i.trim().is_empty()))
        }
        _ => Route::NotFound,
    }
}

/// The decoded value of `name` in a form-encoded query string; `None` when absent or not
/// valid UTF-8 once decoded.
fn param(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    form_decode(raw)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Parses `registry/repository:tag` or `registry/repository@sha256:<hex>` (a tag and a
/// digest: the digest wins, as containerd does) into what the mirror measures. The error
/// is a sentence for the operator.
pub fn parse_image(image: &str) -> Result<MeasureTarget, String> {
    let image = image.trim();
    if image.chars().count() > MAX_IMAGE_CHARS {
        return Err(format!(
            "the image reference is longer than {MAX_IMAGE_CHARS} characters"
        ));
    }
    let usage = "give an image as registry/repository:tag or registry/repository@sha256:<digest>, e.g. docker.io/library/nginx:1.27";
    let name = ImageName::parse(image).ok_or_else(|| format!("not an image reference: {usage}"))?;
    if !is_registry_host(&name.registry) {
        return Err(format!("{:?} is not a registry host name", name.registry));
    }
    let digest = match image.split_once('@') {
        Some((_, digest)) => Some(
            digest
                .parse::<Digest>()
                .map_err(|e| format!("the digest after @ is not valid: {e}"))?,
        ),
        None => None,
    };
    let reference = match (digest, name.tag) {
        (Some(digest), _) => Reference::Digest(digest),
        (None, Some(tag)) => Reference::Tag(tag),
        (None, None) => return Err(format!("no tag or digest: {usage}")),
    };
    Ok(MeasureTarget {
        registry: name.registry,
        repository: name.repository,
        reference,
    })
}

/// A host name or address with an optional port: letters, digits, `.`, `-`, `:` and the
/// brackets of an IPv6 address.
fn is_registry_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_parsed_from_the_path_and_query() {
        let cases = [
            ("/debug", None, Route::Overview),
            ("/debug/", Some("x=1"), Route::Overview),
            ("/debug/measure", None, Route::Measure(None)),
            ("/debug/measure", Some("image="), Route::Measure(None)),
            ("/debug/measure", Some("image=+"), Route::Measure(None)),
            (
                "/debug/measure",
                Some("a=b&image=10.0.0.1%3A5000%2Fteam%2Fapp%3Av1"),
                Route::Measure(Some("10.0.0.1:5000/team/app:v1".into())),
            ),
            ("/debug/measure", Some("image=%ZZ"), Route::Measure(None)),
            ("/debug/other", None, Route::NotFound),
        ];
        for (path, query, want) in cases {
            assert_eq!(route(path, query), want, "{path} {query:?}");
        }
    }

    #[test]
    fn image_references_are_validated() {
        let d = format!("sha256:{}", "a".repeat(64));
        let ok = |s: &str| parse_image(s).unwrap();
        let target = ok("10.0.0.1:5000/team/app:v1");
        assert_eq!(target.registry, "10.0.0.1:5000");
        assert_eq!(target.repository.as_str(), "team/app");
        assert_eq!(target.reference.to_string(), "v1");
        let target = ok(&format!(" docker.io/library/nginx@{d} "));
        assert_eq!(target.reference.to_string(), d);
        let target = ok(&format!("ghcr.io/a/b:v2@{d}"));
        assert!(matches!(target.reference, Reference::Digest(_)));

        let bad = [
            "nginx".to_owned(),
            "library/nginx:1".to_owned(),
            "docker.io/library/nginx".to_owned(),
            "docker.io/UPPER:1".to_owned(),
            "docker.io/a/b@sha256:xyz".to_owned(),
            "<script>.io/a:1".to_owned(),
            "a&b.io/a:1".to_owned(),
            "docker.io/../../etc:1".to_owned(),
            format!("docker.io/{}:1", "a".repeat(800)),
        ];
        for image in bad {
            assert!(parse_image(&image).is_err(), "{image}");
        }
    }
}
