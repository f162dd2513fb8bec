//! The preflight check of containerd's `config.toml`: would containerd read spegel's mirror
//! configuration, and keep the layers spegel serves?
//!
//! The settings live in the CRI plugin, under names that depend on the config version:
//!
//! | version | containerd | `config_path` | `discard_unpacked_layers` |
//! |---|---|---|---|
//! | 1 (or none) | 1.x | `plugins.cri.registry.config_path` | `plugins.cri.containerd.discard_unpacked_layers` |
//! | 2 | 1.6, 1.7 (2.x migrates `config_path` only: a version 2 `discard_unpacked_layers` is ignored there, so the check errs on the safe side; `tests/containerd_versions.rs`) | `plugins."io.containerd.grpc.v1.cri".registry.config_path` | `plugins."io.containerd.grpc.v1.cri".containerd.discard_unpacked_layers` |
//! | 3 | 2.x | `plugins."io.containerd.cri.v1.images".registry.config_path` | `plugins."io.containerd.cri.v1.images".discard_unpacked_layers` |
//!
//! `imports = [...]` files (globs allowed, relative to the importing file) are read after the
//! file importing them. containerd merges plugin *sections*, not keys: the last file that has
//! the CRI section decides both settings, and that file is the one named in a problem.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item};

use crate::{Error, Result};

/// What the preflight check found, when nothing is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// containerd's configuration suits spegel; `decided_by` holds the CRI settings.
    Passed {
        /// The file whose CRI section containerd uses.
        decided_by: PathBuf,
    },
    /// The config file does not exist (containerd runs on defaults, or elsewhere): nothing
    /// could be checked.
    NoConfigFile,
}

/// A containerd setting that keeps spegel from working, with the file and key to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// containerd does not read a registry hosts directory at all.
    ConfigPathUnset {
        /// The file to change.
        file: PathBuf,
        /// The key, as written in that file's config version.
        key: &'static str,
        /// Where spegel writes its mirror configuration.
        hosts_dir: PathBuf,
    },
    /// containerd reads hosts from somewhere other than where spegel writes them.
    ConfigPathElsewhere {
        /// The file to change.
        file: PathBuf,
        /// The key.
        key: &'static str,
        /// What it is set to.
        value: String,
        /// Where spegel writes its mirror configuration.
        hosts_dir: PathBuf,
    },
    /// containerd deletes layers once unpacked.
    DiscardUnpackedLayers {
        /// The file to change.
        file: PathBuf,
        /// The key.
        key: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ConfigPathUnset {
                file,
                key,
                hosts_dir,
            } => write!(
                f,
                "{}: {key} is not set, so containerd ignores the mirror configuration in {}. Set {key} = \"{}\" and restart containerd.",
                file.display(),
                hosts_dir.display(),
                hosts_dir.display()
            ),
            Problem::ConfigPathElsewhere {
                file,
                key,
                value,
                hosts_dir,
            } => write!(
                f,
                "{}: {key} is \"{value}\", so containerd ignores the mirror configuration spegel writes to {}. Set {key} = \"{}\" and restart containerd, or run spegel-node with --containerd-registry-config-path {}.",
                file.display(),
                hosts_dir.display(),
                hosts_dir.display(),
                value.split(':').next().unwrap_or(value)
            ),
            Problem::DiscardUnpackedLayers { file, key } => write!(
                f,
                "{}: {key} is true, so containerd deletes image layers after unpacking them and spegel cannot serve them to other nodes. Set {key} = false and restart containerd.",
                file.display()
            ),
        }
    }
}

/// The CRI image settings' place in one config version.
struct Keys {
    section: &'static [&'static str],
    config_path: &'static [&'static str],
    config_path_name: &'static str,
    discard: &'static [&'static str],
    discard_name: &'static str,
}

const V1: Keys = Keys {
    section: &["plugins", "cri"],
    config_path: &["registry", "config_path"],
    config_path_name: "plugins.cri.registry.config_path",
    discard: &["containerd", "discard_unpacked_layers"],
    discard_name: "plugins.cri.containerd.discard_unpacked_layers",
};

const V2: Keys = Keys {
    section: &["plugins", "io.containerd.grpc.v1.cri"],
    config_path: &["registry", "config_path"],
    config_path_name: "plugins.\"io.containerd.grpc.v1.cri\".registry.config_path",
    discard: &["containerd", "discard_unpacked_layers"],
    discard_name: "plugins.\"io.containerd.grpc.v1.cri\".containerd.discard_unpacked_layers",
};

const V3: Keys = Keys {
    section: &["plugins", "io.containerd.cri.v1.images"],
    config_path: &["registry", "config_path"],
    config_path_name: "plugins.\"io.containerd.cri.v1.images\".registry.config_path",
    discard: &["discard_unpacked_layers"],
    discard_name: "plugins.\"io.containerd.cri.v1.images\".discard_unpacked_layers",
};

/// A parsed config file.
pub(crate) struct File {
    pub(crate) path: PathBuf,
    pub(crate) doc: DocumentMut,
}

impl File {
    /// The `version` the file declares (1 when it has none).
    pub(crate) fn version(&self) -> i64 {
        self.doc
            .get("version")
            .and_then(Item::as_integer)
            .unwrap_or(1)
    }

    fn keys(&self) -> &'static Keys {
        match self.doc.get("version").and_then(Item::as_integer) {
            Some(3) => &V3,
            Some(2) => &V2,
            _ => &V1,
        }
    }
}

/// Checks containerd's `config` (and its imports): CRI must read mirror configuration from
/// `hosts_dir` and must keep unpacked layers. Every problem found is returned at once.
pub fn preflight(config: &Path, hosts_dir: &Path) -> Result<Preflight> {
    if !config.exists() {
        return Ok(Preflight::NoConfigFile);
    }
    let files = load(config)?;
    // The last file with a CRI section decides; without any, the main file is where to add it.
    let decider = files
        .iter()
        .rev()
        .find(|file| lookup(file.doc.as_item(), file.keys().section).is_some())
        .or(files.first());
    let Some(file) = decider else {
        return Ok(Preflight::NoConfigFile);
    };
    let keys = file.keys();
    let section = lookup(file.doc.as_item(), keys.section);
    let config_path = section
        .and_then(|s| lookup(s, keys.config_path))
        .and_then(Item::as_str)
        .unwrap_or_default();
    let discard = section
        .and_then(|s| lookup(s, keys.discard))
        .and_then(Item::as_bool)
        .unwrap_or(false);
    let mut problems = Vec::new();
    if config_path.is_empty() {
        problems.push(Problem::ConfigPathUnset {
            file: file.path.clone(),
            key: keys.config_path_name,
            hosts_dir: hosts_dir.to_owned(),
        });
    } else if !config_path
        .split(':')
        .any(|dir| same_dir(Path::new(dir), hosts_dir))
    {
        problems.push(Problem::ConfigPathElsewhere {
            file: file.path.clone(),
            key: keys.config_path_name,
            value: config_path.to_owned(),
            hosts_dir: hosts_dir.to_owned(),
        });
    }
    if discard {
        problems.push(Problem::DiscardUnpackedLayers {
            file: file.path.clone(),
            key: keys.discard_name,
        });
    }
    if problems.is_empty() {
        Ok(Preflight::Passed {
            decided_by: file.path.clone(),
        })
    } else {
        Err(Error::Preflight(problems))
    }
}

/// `config` and every file it imports, in containerd's load order (breadth first).
pub(crate) fn load(config: &Path) -> Result<Vec<File>> {
    let mut files = Vec::new();
    let mut pending = vec![config.to_owned()];
    let mut seen = HashSet::new();
    while !pending.is_empty() {
        let path = pending.remove(0);
        if !seen.insert(path.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        let doc = text.parse::<DocumentMut>().map_err(|e| Error::Toml {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("/")).to_owned();
        let imports = doc
            .get("imports")
            .and_then(Item::as_array)
            .into_iter()
            .flatten();
        for import in imports.filter_map(|value| value.as_str()) {
            pending.extend(resolve_import(&base, import));
        }
        files.push(File { path, doc });
    }
    Ok(files)
}

/// The files an `imports` entry names: relative to `base`, `*` and `?` allowed in the file
/// name, sorted; files that do not exist are left out.
fn resolve_import(base: &Path, import: &str) -> Vec<PathBuf> {
    let path = base.join(import);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        };
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut matches: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| wildcard(&name, &entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    matches.sort();
    matches
}

/// Shell-style match of `name` against `pattern` with `*` and `?`.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The item at `path` below `item`, through tables, dotted keys and inline tables alike.
pub(crate) fn lookup<'a>(item: &'a Item, path: &[&str]) -> Option<&'a Item> {
    path.iter()
        .try_fold(item, |item, key| item.as_table_like()?.get(key))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a.components().eq(b.components())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard("*.toml", "10-spegel.toml"));
        assert!(wildcard("*.toml", ".toml"));
        assert!(!wildcard("*.toml", "a.toml.bak"));
        assert!(wildcard("a?c", "abc"));
        assert!(wildcard("*", "x"));
        assert!(!wildcard("a*b*c", "acb"));
    }

    #[test]
    fn keys_are_found_through_tables_dotted_keys_and_inline_tables() {
        for text in [
            "[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/x\"\n",
            "plugins.\"io.containerd.grpc.v1.cri\".registry.config_path = \"/x\"\n",
            "[plugins]\n\"io.containerd.grpc.v1.cri\" = { registry = { config_path = \"/x\" } }\n",
        ] {
            let doc: DocumentMut = text.parse().unwrap();
            let found = lookup(
                doc.as_item(),
                &[
                    "plugins",
                    "io.containerd.grpc.v1.cri",
                    "registry",
                    "config_path",
                ],
            );
            assert_eq!(found.and_then(Item::as_str), Some("/x"), "{text}");
        }
    }

    #[test]
    fn trailing_slashes_do_not_make_another_directory() {
        assert!(same_dir(
            Path::new("/etc/containerd/certs.d/"),
            Path::new("/etc/containerd/certs.d")
        ));
        assert!(!same_dir(
            Path::new("/etc/docker/certs.d"),
            Path::new("/etc/containerd/certs.d")
        ));
    }
}
