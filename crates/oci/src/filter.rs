//! Which images spegel advertises and mirrors: `--mirrored-registries` and
//! `--registry-filters`.

use regex::Regex;

/// Decides whether an image (by registry and full name) is spegel's business.
#[derive(Debug, Clone, Default)]
pub struct ImageFilter {
    /// Registries to mirror (`host[:port]`); empty means every registry.
    registries: Vec<String>,
    /// Images whose full name (`registry/repository[:tag|@digest]`) matches any of these are
    /// neither advertised nor mirrored.
    excluded: Vec<Regex>,
}

/// A filter pattern that is not a valid regular expression.
#[derive(Debug, thiserror::Error)]
#[error("registry filter {pattern:?} is not a valid regular expression: {reason}")]
pub struct FilterError {
    pub pattern: String,
    pub reason: String,
}

impl ImageFilter {
    /// Builds a filter. Registries may be given as URLs (`https://docker.io`) or hosts.
    pub fn new(registries: &[String], excluded: &[String]) -> Result<ImageFilter, FilterError> {
        let registries = registries
            .iter()
            .map(|r| {
                let host = r
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                host.trim_end_matches('/').to_owned()
            })
            .filter(|r| !r.is_empty())
            .collect();
        let excluded = excluded
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| FilterError {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ImageFilter {
            registries,
            excluded,
        })
    }

    /// The registries to mirror, as hosts (`host[:port]`); empty means every registry.
    pub fn registries(&self) -> &[String] {
        &self.registries
    }

    /// Whether content of `registry` is mirrored at all.
    pub fn allows_registry(&self, registry: &str) -> bool {
        self.registries.is_empty() || self.registries.iter().any(|r| r == registry)
    }

    /// Whether the image `name` (`registry/repository…`) from `registry` is spegel's business.
    pub fn allows(&self, registry: &str, name: &str) -> bool {
        self.allows_registry(registry) && !self.excluded.iter().any(|re| re.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_filter_allows_everything() {
        let f = ImageFilter::default();
        assert!(f.allows("docker.io", "docker.io/library/nginx:1"));
    }

    #[test]
    fn registries_and_exclusions_narrow_what_is_mirrored() {
        let f = ImageFilter::new(
            &["https://docker.io/".into(), "ghcr.io".into()],
            &[":latest$".into(), "^docker.io/private/".into()],
        )
        .unwrap();
        assert!(f.allows("docker.io", "docker.io/library/nginx:1.27"));
        assert!(f.allows("ghcr.io", "ghcr.io/a/b:v1"));
        assert!(!f.allows("quay.io", "quay.io/a/b:v1"));
        assert!(!f.allows("docker.io", "docker.io/library/nginx:latest"));
        assert!(!f.allows("docker.io", "docker.io/private/x:1"));
        assert!(f.allows_registry("docker.io"));
        assert!(!f.allows_registry("quay.io"));
    }

    #[test]
    fn a_bad_pattern_is_named_in_the_error() {
        let e = ImageFilter::new(&[], &["(".into()]).unwrap_err();
        assert!(e.to_string().contains("\"(\""), "{e}");
    }
}
