//! Repository names and references (`tag` or `digest`), validated against the OCI grammar.

use std::fmt;

use crate::Digest;

/// A repository name such as `library/nginx`, valid per the OCI distribution grammar:
/// lowercase path components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`,
/// separated by `/`. It can never hold `..`, `%`, an empty component or a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository(String);

/// Longest repository name accepted (distribution's limit).
const MAX_REPOSITORY_LEN: usize = 255;

impl Repository {
    /// Validates `name` as a repository name.
    pub fn parse(name: &str) -> Option<Repository> {
        let valid = !name.is_empty()
            && name.len() <= MAX_REPOSITORY_LEN
            && name.split('/').all(is_path_component);
        valid.then(|| Repository(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", always followed by an alphanumeric.
        let run_end = bytes[i..]
            .iter()
            .position(|&c| alnum(c))
            .map_or(bytes.len(), |p| i + p);
        let run = &component[i..run_end];
        let allowed = run == "." || run == "_" || run == "__" || run.bytes().all(|c| c == b'-');
        if !allowed {
            return false;
        }
        i = run_end;
    }
    true
}

/// A tag such as `v1.2.3`: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// Validates `tag`.
    pub fn parse(tag: &str) -> Option<Tag> {
        let bytes = tag.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        (first_ok && rest_ok && bytes.len() <= 128).then(|| Tag(tag.to_owned()))
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest request names: a tag, or the manifest's digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_oci_grammar() {
        let long = "a".repeat(256);
        let cases = [
            ("library/nginx", true),
            ("a", true),
            ("test/img", true),
            ("my-org/my__repo/sub.name", true),
            ("a--b", true),
            ("a/b/c/d/e", true),
            ("", false),
            ("/abs", false),
            ("trailing/", false),
            ("a//b", false),
            ("..", false),
            ("a/../b", false),
            ("a/./b", false),
            ("Upper/case", false),
            ("a___b", false),
            ("a.-b", false),
            ("-a", false),
            ("a%2Fb", false),
            ("a\\b", false),
            ("spa ce", false),
            (long.as_str(), false),
        ];
        for (name, valid) in cases {
            assert_eq!(Repository::parse(name).is_some(), valid, "{name:?}");
        }
    }

    #[test]
    fn tags_follow_the_oci_grammar() {
        let long = "t".repeat(129);
        let cases = [
            ("latest", true),
            ("v1.2.3-rc_1", true),
            ("_x", true),
            ("", false),
            (".hidden", false),
            ("-x", false),
            ("a/b", false),
            ("a:b", false),
            (long.as_str(), false),
        ];
        for (tag, valid) in cases {
            assert_eq!(Tag::parse(tag).is_some(), valid, "{tag:?}");
        }
    }
}

/// A containerd image record's name, split: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub registry: String,
    pub repository: Repository,
    pub tag: Option<Tag>,
}

impl ImageName {
    /// Parses an image name as containerd stores it (`docker.io/library/nginx:1.27`,
    /// `10.0.0.1:5000/a/b@sha256:…`). `None` for names without a registry host (such as the
    /// `sha256:<config>` records CRI creates) or with an invalid repository.
    pub fn parse(name: &str) -> Option<ImageName> {
        let (registry, rest) = name.split_once('/')?;
        let is_host = registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !is_host {
            return None;
        }
        let without_digest = rest.split_once('@').map_or(rest, |(r, _)| r);
        let (repository, tag) = match without_digest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(Tag::parse(tag)?)),
            _ => (without_digest, None),
        };
        Some(ImageName {
            registry: registry.to_owned(),
            repository: Repository::parse(repository)?,
            tag,
        })
    }
}

#[cfg(test)]
mod image_name_tests {
    use super::*;

    #[test]
    fn image_names_split_into_registry_repository_and_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        type Want<'a> = Option<(&'a str, &'a str, Option<&'a str>)>;
        let cases: Vec<(String, Want)> = vec![
            (
                "docker.io/library/nginx:1.27".into(),
                Some(("docker.io", "library/nginx", Some("1.27"))),
            ),
            (
                "127.0.0.1:5000/test/img:v1".into(),
                Some(("127.0.0.1:5000", "test/img", Some("v1"))),
            ),
            (format!("ghcr.io/a/b@{d}"), Some(("ghcr.io", "a/b", None))),
            (
                format!("ghcr.io/a/b:v2@{d}"),
                Some(("ghcr.io", "a/b", Some("v2"))),
            ),
            ("localhost/x".into(), Some(("localhost", "x", None))),
            (d.clone(), None),
            ("library/nginx:1".into(), None),
            ("docker.io/UPPER:1".into(), None),
        ];
        for (name, want) in cases {
            let got = ImageName::parse(&name);
            let got = got.as_ref().map(|n| {
                (
                    n.registry.as_str(),
                    n.repository.as_str(),
                    n.tag.as_ref().map(|t| t.as_str()),
                )
            });
            assert_eq!(got, want, "{name}");
        }
    }
}
