//! `configure` and `cleanup` over real directories: what containerd would read afterwards,
//! and that `cleanup` puts back exactly what was there (bytes and modes).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use spegel_hostconfig::{Action, BACKUP, MirrorConfig, cleanup, configure};

const MIRROR: &str = "http://127.0.0.1:5000";

/// Everything under a directory: relative path → `None` for a directory, or bytes and mode.
type Tree = BTreeMap<PathBuf, Option<(Vec<u8>, u32)>>;

fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            if path.is_dir() {
                tree.insert(relative, None);
                pending.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
                tree.insert(relative, Some((std::fs::read(&path).unwrap(), mode)));
            }
        }
    }
    tree
}

fn write(root: &Path, relative: &str, text: &str, mode: u32) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn read(root: &Path, relative: &str) -> String {
    std::fs::read_to_string(root.join(relative)).unwrap()
}

fn config(hosts_dir: &Path, registries: &[&str], mirrors: &[&str]) -> MirrorConfig {
    MirrorConfig {
        hosts_dir: hosts_dir.to_owned(),
        registries: registries.iter().map(|r| r.parse().unwrap()).collect(),
        mirrors: mirrors.iter().map(|m| m.parse().unwrap()).collect(),
        resolve_tags: true,
    }
}

/// The `[host."…"]` keys of a hosts.toml, in file order.
fn hosts_in_order(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("[host."))
        .filter(|rest| !rest.contains("].") && !rest.contains(".header"))
        .map(|rest| {
            rest.trim_end_matches(']')
                .trim_matches(['"', '\''])
                .to_owned()
        })
        .collect()
}

const CACHE_HOSTS: &str = r#"# Written by the registry-cache extension.
server = "https://registry-1.docker.io"

[host."https://10.4.0.12:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/containerd/certs.d/docker.io/cache-ca.crt"

  [host."https://10.4.0.12:5000".header]
    x-custom = ["a", "b"]

[host.'https://mirror.gcr.io']
  capabilities = ["pull"]
  skip_verify = false
"#;

/// One scenario: files before, the flags, and what containerd must see afterwards.
struct Case {
    name: &'static str,
    before: &'static [(&'static str, &'static str)],
    registries: &'static [&'static str],
    /// registry directory → the hosts containerd tries, in order.
    expect: &'static [(&'static str, &'static [&'static str])],
    /// registry directories with a byte-exact backup of their original.
    backups: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "a fresh certs.d gets _default only",
        before: &[],
        registries: &[],
        expect: &[("_default", &[MIRROR])],
        backups: &[],
    },
    Case {
        name: "an existing _default gets the mirror first",
        before: &[(
            "_default/hosts.toml",
            "[host.\"https://proxy.corp\"]\n  capabilities = [\"pull\"]\n",
        )],
        registries: &[],
        expect: &[("_default", &[MIRROR, "https://proxy.corp"])],
        backups: &["_default"],
    },
    Case {
        name: "a registry with its own hosts.toml keeps its hosts after the mirror",
        before: &[("docker.io/hosts.toml", CACHE_HOSTS)],
        registries: &[],
        expect: &[
            ("_default", &[MIRROR]),
            (
                "docker.io",
                &[MIRROR, "https://10.4.0.12:5000", "https://mirror.gcr.io"],
            ),
        ],
        backups: &["docker.io"],
    },
    Case {
        name: "mirrored registries get their own directories and no _default",
        before: &[("ghcr.io/hosts.toml", "server = \"https://ghcr.io\"\n")],
        registries: &["docker.io", "https://ghcr.io", "http://10.0.0.1:5000"],
        expect: &[
            ("docker.io", &[MIRROR]),
            ("ghcr.io", &[MIRROR]),
            ("10.0.0.1:5000", &[MIRROR]),
        ],
        backups: &["ghcr.io"],
    },
];

#[test]
fn each_scenario_configures_idempotently_and_cleans_up_byte_for_byte() {
    for case in CASES {
        let root = tempfile::tempdir().unwrap();
        for (relative, text) in case.before {
            write(root.path(), relative, text, 0o640);
        }
        let before = snapshot(root.path());
        let config = config(root.path(), case.registries, &[MIRROR]);

        configure(&config).unwrap();

        for (dir, hosts) in case.expect {
            let text = read(root.path(), &format!("{dir}/hosts.toml"));
            assert_eq!(
                hosts_in_order(&text),
                *hosts,
                "{}: {dir}:\n{text}",
                case.name
            );
        }
        for dir in case.backups {
            let original = case
                .before
                .iter()
                .find(|(p, _)| p.starts_with(dir))
                .unwrap()
                .1;
            assert_eq!(
                read(root.path(), &format!("{dir}/{BACKUP}")),
                original,
                "{}",
                case.name
            );
        }
        let configured = snapshot(root.path());
        let again = configure(&config).unwrap();
        assert!(
            again.iter().all(|c| c.action == Action::Unchanged),
            "{}: {again:?}",
            case.name
        );
        assert_eq!(
            snapshot(root.path()),
            configured,
            "{}: second run changed files",
            case.name
        );

        cleanup(root.path()).unwrap();

        assert_eq!(
            snapshot(root.path()),
            before,
            "{}: cleanup left a difference",
            case.name
        );
    }
}

#[test]
fn injected_files_keep_every_other_line_of_the_original() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "docker.io/hosts.toml", CACHE_HOSTS, 0o644);

    configure(&config(root.path(), &[], &[MIRROR])).unwrap();

    let text = read(root.path(), "docker.io/hosts.toml");
    let mirror = format!(
        "[host.\"{MIRROR}\"]\ncapabilities = [\"pull\", \"resolve\"]\ndial_timeout = \"200ms\"\n\n"
    );
    let (head, tail) = CACHE_HOSTS.split_at(CACHE_HOSTS.find("[host.").unwrap());
    assert_eq!(
        text,
        format!(
            "# Managed by spegel-node; the original is in hosts.toml.spegel-backup: `spegel-node cleanup` restores it.\n{head}{mirror}{tail}"
        )
    );
}

#[test]
fn changed_flags_rewrite_from_the_original_without_duplicates() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "docker.io/hosts.toml", CACHE_HOSTS, 0o644);
    let before = snapshot(root.path());
    configure(&config(root.path(), &[], &[MIRROR])).unwrap();

    let changes = configure(&config(
        root.path(),
        &[],
        &["http://127.0.0.1:6000", MIRROR],
    ))
    .unwrap();

    assert!(
        changes.iter().any(|c| c.action == Action::Updated),
        "{changes:?}"
    );
    let text = read(root.path(), "docker.io/hosts.toml");
    assert_eq!(
        hosts_in_order(&text),
        [
            "http://127.0.0.1:6000",
            MIRROR,
            "https://10.4.0.12:5000",
            "https://mirror.gcr.io"
        ]
    );
    assert_eq!(
        read(root.path(), &format!("docker.io/{BACKUP}")),
        CACHE_HOSTS
    );
    cleanup(root.path()).unwrap();
    assert_eq!(snapshot(root.path()), before);
}

#[test]
fn resolve_tags_false_leaves_only_pull() {
    let root = tempfile::tempdir().unwrap();
    let mut config = config(root.path(), &[], &[MIRROR]);
    config.resolve_tags = false;

    configure(&config).unwrap();

    let text = read(root.path(), "_default/hosts.toml");
    assert!(text.contains("capabilities = [\"pull\"]\n"), "{text}");
}

#[test]
fn a_file_another_tool_rewrote_becomes_the_new_original() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "_default/hosts.toml",
        "[host.\"https://a\"]\n",
        0o644,
    );
    configure(&config(root.path(), &[], &[MIRROR])).unwrap();
    // e.g. the OS configuration is reconciled and rewrites the file.
    write(
        root.path(),
        "_default/hosts.toml",
        "[host.\"https://b\"]\n",
        0o644,
    );
    let rewritten = snapshot(root.path());

    let changes = configure(&config(root.path(), &[], &[MIRROR])).unwrap();

    assert_eq!(changes[0].action, Action::Injected);
    assert_eq!(
        hosts_in_order(&read(root.path(), "_default/hosts.toml")),
        [MIRROR, "https://b"]
    );
    cleanup(root.path()).unwrap();
    let mut expected = rewritten;
    expected.remove(&PathBuf::from(format!("_default/{BACKUP}")));
    assert_eq!(snapshot(root.path()), expected);
}

#[test]
fn directories_no_longer_named_are_put_back() {
    let root = tempfile::tempdir().unwrap();
    configure(&config(root.path(), &["docker.io", "quay.io"], &[MIRROR])).unwrap();
    assert!(root.path().join("quay.io/hosts.toml").is_file());

    let changes = configure(&config(root.path(), &["docker.io"], &[MIRROR])).unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.dir.ends_with("quay.io") && c.action == Action::Removed),
        "{changes:?}"
    );
    assert!(!root.path().join("quay.io").exists());

    configure(&config(root.path(), &[], &[MIRROR])).unwrap();
    assert!(
        !root.path().join("docker.io").exists(),
        "_default serves docker.io now"
    );
    assert!(root.path().join("_default/hosts.toml").is_file());
}

#[test]
fn a_registry_directory_with_certificates_but_no_hosts_toml_is_left_alone_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "registry.corp:5000/ca.crt",
        "-----BEGIN CERTIFICATE-----\n",
        0o644,
    );
    let before = snapshot(root.path().join("registry.corp:5000").as_path());

    let changes = configure(&config(root.path(), &[], &[MIRROR])).unwrap();

    let skipped = changes
        .iter()
        .find(|c| c.dir.ends_with("registry.corp:5000"))
        .unwrap();
    assert!(
        matches!(&skipped.action, Action::Skipped(reason) if reason.contains("bypasses spegel")),
        "{skipped:?}"
    );
    assert_eq!(
        snapshot(root.path().join("registry.corp:5000").as_path()),
        before
    );
}

#[test]
fn a_hosts_toml_spegel_cannot_read_or_order_is_skipped_with_a_reason_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let unorderable = "[host]\n\"https://a\" = { capabilities = [\"pull\"] }\n";
    write(root.path(), "_default/hosts.toml", unorderable, 0o644);
    write(
        root.path(),
        "broken.io/hosts.toml",
        "[host.\"https://b\"\n",
        0o644,
    );
    write(
        root.path(),
        "fine.io/hosts.toml",
        "server = \"https://fine.io\"\n",
        0o644,
    );
    let before = snapshot(root.path());

    let changes = configure(&config(root.path(), &[], &[MIRROR])).unwrap();

    let reason = |dir: &str| {
        changes
            .iter()
            .find(|c| c.dir.ends_with(dir))
            .map(|c| c.action.clone())
            .unwrap()
    };
    let Action::Skipped(why) = reason("_default") else {
        panic!("{changes:?}")
    };
    assert!(
        why.contains("_default/hosts.toml: hosts are not written as [host.\"<url>\"] tables"),
        "{why}"
    );
    let Action::Skipped(why) = reason("broken.io") else {
        panic!("{changes:?}")
    };
    assert!(
        why.contains("broken.io/hosts.toml is not valid TOML"),
        "{why}"
    );
    assert_eq!(reason("fine.io"), Action::Injected);
    // The broken files are left byte for byte.
    let after = snapshot(root.path());
    for file in ["_default/hosts.toml", "broken.io/hosts.toml"] {
        let find = |tree: &Tree| tree.get(Path::new(file)).cloned();
        assert_eq!(find(&before), find(&after), "{file}");
    }
}

#[test]
fn cleanup_of_a_certs_d_spegel_never_touched_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "docker.io/hosts.toml", CACHE_HOSTS, 0o600);
    let before = snapshot(root.path());

    assert!(cleanup(root.path()).unwrap().is_empty());
    assert!(cleanup(&root.path().join("missing")).unwrap().is_empty());

    assert_eq!(snapshot(root.path()), before);
}
