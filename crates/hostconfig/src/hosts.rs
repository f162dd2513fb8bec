//! One `hosts.toml`, as text: spegel's mirror put first into an original (or into nothing),
//! and the marker line that says spegel wrote it and how to undo it. No I/O here.
//!
//! containerd 1.6 orders hosts by where their `[host."…"]` tables appear in the file, so
//! "first" means first in the text. Every other table, key, comment and blank line of the
//! original is kept as it was.

use toml_edit::{Array, DocumentMut, Item, Table, value};

use crate::MirrorTarget;

/// How long containerd may take to connect to the mirror before trying the next host. The
/// mirror runs on the same node: if it does not answer at once it is not there.
pub(crate) const DIAL_TIMEOUT: &str = "200ms";

/// What was there before spegel wrote a `hosts.toml`, recorded in its first line so that
/// `cleanup` knows what to restore, whatever flags it runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Neither the directory nor the file existed.
    CreatedDir,
    /// The directory existed (empty), the file did not.
    CreatedFile,
    /// The file existed; it is kept in [`crate::BACKUP`].
    Replaced,
}

impl Origin {
    const ALL: [Origin; 3] = [Origin::CreatedDir, Origin::CreatedFile, Origin::Replaced];

    /// The first line of a file spegel wrote.
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Origin::CreatedDir => {
                "# Managed by spegel-node, which created this directory: `spegel-node cleanup` removes it."
            }
            Origin::CreatedFile => {
                "# Managed by spegel-node, which created this file: `spegel-node cleanup` removes it."
            }
            Origin::Replaced => {
                "# Managed by spegel-node; the original is in hosts.toml.spegel-backup: `spegel-node cleanup` restores it."
            }
        }
    }

    /// The origin recorded in `text`, if spegel wrote it.
    pub(crate) fn of(text: &str) -> Option<Origin> {
        let first = text.lines().next()?;
        Origin::ALL
            .into_iter()
            .find(|origin| origin.marker() == first)
    }
}

/// What to put first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mirrors<'a> {
    pub(crate) targets: &'a [MirrorTarget],
    pub(crate) resolve_tags: bool,
}

/// Why a `hosts.toml` could not be rendered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RenderError {
    /// The original is not TOML.
    Toml(String),
    /// The original's hosts are not `[host."…"]` tables.
    UnsupportedHosts,
}

/// The `hosts.toml` spegel writes: `original` (or, without one, `server` if given) with
/// `mirrors` as the first hosts, headed by `origin`'s marker.
pub(crate) fn render(
    original: Option<&str>,
    server: Option<&str>,
    mirrors: Mirrors<'_>,
    origin: Origin,
) -> Result<String, RenderError> {
    let mut doc = match original {
        Some(text) => text
            .parse::<DocumentMut>()
            .map_err(|e| RenderError::Toml(e.to_string()))?,
        None => {
            let mut doc = DocumentMut::new();
            if let Some(server) = server {
                doc.insert("server", value(server));
            }
            doc
        }
    };
    let host = doc.entry("host").or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    let Item::Table(host) = host else {
        return Err(RenderError::UnsupportedHosts);
    };
    if host.is_dotted() || host.iter().any(|(_, item)| !item.is_table()) {
        return Err(RenderError::UnsupportedHosts);
    }
    for target in mirrors.targets {
        host.remove(target.as_str());
    }
    // Our tables take the place of the first existing host table; on ties the renderer keeps
    // map order, and the sort below puts ours first in the map.
    let first = host
        .iter()
        .filter_map(|(_, item)| item.as_table()?.position())
        .min();
    for target in mirrors.targets {
        let mut table = Table::new();
        let capabilities = if mirrors.resolve_tags {
            &["pull", "resolve"][..]
        } else {
            &["pull"][..]
        };
        table.insert(
            "capabilities",
            value(capabilities.iter().copied().collect::<Array>()),
        );
        table.insert("dial_timeout", value(DIAL_TIMEOUT));
        table.set_position(first);
        host.insert(target.as_str(), Item::Table(table));
    }
    let rank = |key: &str| {
        mirrors
            .targets
            .iter()
            .position(|target| target.as_str() == key)
            .unwrap_or(mirrors.targets.len())
    };
    host.sort_values_by(|a, _, b, _| rank(a.get()).cmp(&rank(b.get())));
    let prefix = doc
        .decor()
        .prefix()
        .and_then(|prefix| prefix.as_str())
        .unwrap_or_default()
        .to_owned();
    doc.decor_mut()
        .set_prefix(format!("{}\n{prefix}", origin.marker()));
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(urls: &[&str]) -> Vec<MirrorTarget> {
        urls.iter().map(|url| url.parse().unwrap()).collect()
    }

    fn mirrors(targets: &[MirrorTarget]) -> Mirrors<'_> {
        Mirrors {
            targets,
            resolve_tags: true,
        }
    }

    #[test]
    fn a_fresh_default_file_holds_only_the_mirror() {
        let t = targets(&["http://127.0.0.1:5000"]);

        let text = render(None, None, mirrors(&t), Origin::CreatedDir).unwrap();

        assert_eq!(
            text,
            format!(
                "{}\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\ndial_timeout = \"200ms\"\n",
                Origin::CreatedDir.marker()
            )
        );
    }

    #[test]
    fn a_fresh_registry_file_names_its_server_first() {
        let t = targets(&["http://127.0.0.1:5000"]);
        let fresh = Mirrors {
            targets: &t,
            resolve_tags: false,
        };

        let text = render(
            None,
            Some("https://registry-1.docker.io"),
            fresh,
            Origin::CreatedFile,
        )
        .unwrap();

        assert_eq!(
            text,
            format!(
                "{}\nserver = \"https://registry-1.docker.io\"\n\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\"]\ndial_timeout = \"200ms\"\n",
                Origin::CreatedFile.marker()
            )
        );
    }

    #[test]
    fn the_mirror_goes_before_existing_hosts_which_keep_everything() {
        let original = r#"# registry-cache extension
server = "https://registry-1.docker.io"

# the pull-through cache
[host."https://cache.local:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/certs/cache.crt"
  [host."https://cache.local:5000".header]
    authorization = "Basic abc"

[host.'https://mirror.gcr.io']
  capabilities = ["pull"]
"#;
        let t = targets(&["http://127.0.0.1:5000", "http://127.0.0.1:5001"]);

        let text = render(Some(original), None, mirrors(&t), Origin::Replaced).unwrap();

        let expected_tail = r#"# registry-cache extension
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5000"]
capabilities = ["pull", "resolve"]
dial_timeout = "200ms"

[host."http://127.0.0.1:5001"]
capabilities = ["pull", "resolve"]
dial_timeout = "200ms"

# the pull-through cache
[host."https://cache.local:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/certs/cache.crt"
  [host."https://cache.local:5000".header]
    authorization = "Basic abc"

[host.'https://mirror.gcr.io']
  capabilities = ["pull"]
"#;
        assert_eq!(
            text,
            format!("{}\n{expected_tail}", Origin::Replaced.marker())
        );
    }

    #[test]
    fn a_mirror_already_listed_is_moved_first_with_our_settings() {
        let original = "[host.\"https://other\"]\ncapabilities = [\"pull\"]\n\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\"]\n";
        let t = targets(&["http://127.0.0.1:5000"]);

        let text = render(Some(original), None, mirrors(&t), Origin::Replaced).unwrap();

        let ours = text.find("[host.\"http://127.0.0.1:5000\"]").unwrap();
        let other = text.find("[host.\"https://other\"]").unwrap();
        assert!(ours < other, "{text}");
        assert_eq!(text.matches("127.0.0.1:5000").count(), 1, "{text}");
        assert!(
            text.contains("capabilities = [\"pull\", \"resolve\"]"),
            "{text}"
        );
    }

    #[test]
    fn only_a_server_gets_the_mirror_as_its_host() {
        let original = "server = \"http://10.0.0.1:5000\"\n";
        let t = targets(&["http://127.0.0.1:5000"]);

        let text = render(Some(original), None, mirrors(&t), Origin::Replaced).unwrap();

        assert!(text.ends_with("server = \"http://10.0.0.1:5000\"\n\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\ndial_timeout = \"200ms\"\n"), "{text}");
    }

    #[test]
    fn hosts_that_are_not_tables_are_refused() {
        let t = targets(&["http://127.0.0.1:5000"]);
        for original in [
            "host = 1\n",
            "[host]\n\"https://x\" = { capabilities = [\"pull\"] }\n",
            "host.\"https://x\".capabilities = [\"pull\"]\n",
        ] {
            assert_eq!(
                render(Some(original), None, mirrors(&t), Origin::Replaced),
                Err(RenderError::UnsupportedHosts),
                "{original}"
            );
        }
    }

    #[test]
    fn broken_toml_is_reported() {
        let t = targets(&["http://127.0.0.1:5000"]);
        let result = render(Some("[host"), None, mirrors(&t), Origin::Replaced);
        assert!(matches!(result, Err(RenderError::Toml(_))), "{result:?}");
    }

    #[test]
    fn the_marker_line_tells_the_origin() {
        for origin in Origin::ALL {
            let text = format!("{}\n[host]\n", origin.marker());
            assert_eq!(Origin::of(&text), Some(origin));
        }
        assert_eq!(Origin::of("server = \"x\"\n"), None);
        assert_eq!(Origin::of(""), None);
    }
}
