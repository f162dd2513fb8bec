//! Bounded `registry` label values: a request's `ns` is whatever a client wrote, and every
//! new label value is a new series (and textfile line) kept for the life of the process.
//!
//! With `--mirrored-registries`, the label is one of those registries, anything else
//! `other`. Without (every registry is mirrored), the first [`MAX_UNLISTED`] registries
//! seen keep their name and the rest are `other`.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Registry label values kept when no registry list is given.
pub const MAX_UNLISTED: usize = 16;

/// The label of every registry past the bound.
pub const OTHER: &str = "other";

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct RegistryLabels {
    listed: Vec<String>,
    seen: Mutex<HashSet<String>>,
}

impl RegistryLabels {
    pub(crate) fn new(listed: &[String]) -> RegistryLabels {
        RegistryLabels {
            listed: listed.to_vec(),
            seen: Mutex::default(),
        }
    }

    /// The label value for `registry`.
    pub(crate) fn label(&self, registry: &str) -> String {
        if !self.listed.is_empty() {
            let listed = self.listed.iter().any(|r| r == registry);
            return if listed { registry } else { OTHER }.to_owned();
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(registry) {
            return registry.to_owned();
        }
        if seen.len() < MAX_UNLISTED && registry != OTHER {
            seen.insert(registry.to_owned());
            return registry.to_owned();
        }
        OTHER.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_registries_have_their_own_label() {
        let labels = RegistryLabels::new(&["docker.io".to_owned()]);
        assert_eq!(labels.label("docker.io"), "docker.io");
        assert_eq!(labels.label("evil.example"), OTHER);
    }

    #[test]
    fn without_a_list_the_label_set_is_bounded() {
        let labels = RegistryLabels::new(&[]);
        let distinct: HashSet<String> = (0..1000)
            .map(|i| labels.label(&format!("r{i}.example")))
            .collect();
        assert_eq!(distinct.len(), MAX_UNLISTED + 1);
        assert_eq!(labels.label("r0.example"), "r0.example");
    }
}
