//! Advice on containerd 2.x's download slots, which decide how well the cold-pull single
//! flight works there.
//!
//! containerd 2.x takes one of `max_concurrent_downloads` slots (default 3) per HTTP request,
//! after it opened the download: when spegel answers the node fetching a blob for the cluster
//! with a 404, containerd gives the slot back and its upstream request queues behind the
//! node's other waiting layers, some of which wait for other nodes. Measured with a 7-layer
//! image on 3 nodes (`tests/cold_pull.rs`, containerd 2.1.9): 3 slots, 1.71× the image from
//! the upstream in 11 s; 10 slots, 1.00–1.14× in 3–4 s. containerd 1.6 and 1.7 hold the slot
//! across the fallback and are not affected.

use std::path::Path;

use toml_edit::Item;

use crate::preflight::{load, lookup};

/// Slots below this get the advice.
pub const RECOMMENDED_SLOTS: i64 = 10;

/// containerd's default when the key is absent.
const DEFAULT_SLOTS: i64 = 3;

/// Where a version 3 config (containerd 2.x) sets the slots: CRI's images plugin and the
/// transfer service CRI pulls through.
const KEYS: [(&[&str], &str); 2] = [
    (
        &[
            "plugins",
            "io.containerd.cri.v1.images",
            "max_concurrent_downloads",
        ],
        "plugins.\"io.containerd.cri.v1.images\".max_concurrent_downloads",
    ),
    (
        &[
            "plugins",
            "io.containerd.transfer.v1.local",
            "max_concurrent_downloads",
        ],
        "plugins.\"io.containerd.transfer.v1.local\".max_concurrent_downloads",
    ),
];

/// A sentence for the log when `config` is a containerd 2.x config (version 3) with fewer
/// than [`RECOMMENDED_SLOTS`] download slots; `None` otherwise, or when it cannot be read
/// (the preflight check reports that).
pub fn download_slot_advice(config: &Path) -> Option<String> {
    let files = load(config).ok()?;
    if files.first()?.version() < 3 {
        return None;
    }
    let mut low = Vec::new();
    for (path, name) in KEYS {
        // The last file that sets the key decides.
        let slots = files
            .iter()
            .rev()
            .find_map(|f| lookup(f.doc.as_item(), path).and_then(Item::as_integer))
            .unwrap_or(DEFAULT_SLOTS);
        if slots < RECOMMENDED_SLOTS {
            low.push(format!("{name} = {slots}"));
        }
    }
    (!low.is_empty()).then(|| {
        format!(
            "{}: {} (containerd 2.x). Images with more layers than that may be fetched from the upstream more than once when many nodes pull them at the same moment; set both to {RECOMMENDED_SLOTS} or more (docs/operator-guide.md, containerd 2.x).",
            config.display(),
            low.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advice_for(text: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        download_slot_advice(&config)
    }

    #[test]
    fn a_version_3_config_on_defaults_gets_advice_naming_both_keys() {
        let advice = advice_for("version = 3\n").unwrap();
        assert!(advice.contains("io.containerd.cri.v1.images\".max_concurrent_downloads = 3"));
        assert!(advice.contains("io.containerd.transfer.v1.local\".max_concurrent_downloads = 3"));
    }

    #[test]
    fn enough_slots_or_an_older_config_version_get_none() {
        let enough = "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\nmax_concurrent_downloads = 16\n[plugins.\"io.containerd.transfer.v1.local\"]\nmax_concurrent_downloads = 10\n";
        assert_eq!(advice_for(enough), None);
        assert_eq!(advice_for("version = 2\n"), None);
    }

    #[test]
    fn one_key_short_is_named_alone() {
        let half = "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\nmax_concurrent_downloads = 16\n";
        let advice = advice_for(half).unwrap();
        assert!(!advice.contains("cri.v1.images"), "{advice}");
        assert!(advice.contains("transfer.v1.local"), "{advice}");
    }
}
