//! The preflight check against real containerd configuration files: the one containerd 1.6
//! itself writes (`containerd config default`, version 2) and Garden Linux's version 3 file
//! (from the Gardener proposal), each in the good and the broken variants.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use spegel_hostconfig::{Error, Preflight, Problem, preflight};

const HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// `containerd config default` of the installed containerd (1.6 on Debian 12).
fn containerd_default_config() -> String {
    let output = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .expect("containerd must be installed for this test: apt-get install containerd");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Garden Linux's containerd 2.x config (version 3), as quoted in the Gardener proposal.
const GARDENLINUX_V3: &str = r#"disabled_plugins = []
imports = []
oom_score = 0
version = 3

[plugins]

  [plugins."io.containerd.cri.v1.images"]
    concurrent_layer_fetch_buffer = 0
    disable_snapshot_annotations = true
    discard_unpacked_layers = false
    image_pull_progress_timeout = "5m0s"
    snapshotter = "overlayfs"

    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "registry.k8s.io/pause:3.10"
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn problems(config: &Path) -> Vec<Problem> {
    match preflight(config, Path::new(HOSTS_DIR)) {
        Err(Error::Preflight(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn set_v2_config_path(config: &str, value: &str) -> String {
    let replaced = config.replacen(
        "config_path = \"\"",
        &format!("config_path = \"{value}\""),
        1,
    );
    assert_ne!(
        replaced, config,
        "containerd's default config has no empty config_path"
    );
    replaced
}

fn discard_v2(config: &str) -> String {
    let replaced = config.replacen(
        "discard_unpacked_layers = false",
        "discard_unpacked_layers = true",
        1,
    );
    assert_ne!(replaced, config);
    replaced
}

#[test]
fn containerds_own_default_config_lacks_config_path_and_says_which_key_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", &containerd_default_config());

    let error = preflight(&config, Path::new(HOSTS_DIR)).unwrap_err();

    assert!(error.is_bad_config());
    assert_eq!(
        error.to_string(),
        format!(
            "containerd is not configured for spegel:\n- {}: plugins.\"io.containerd.grpc.v1.cri\".registry.config_path is not set, so containerd ignores the mirror configuration in /etc/containerd/certs.d. Set plugins.\"io.containerd.grpc.v1.cri\".registry.config_path = \"/etc/containerd/certs.d\" and restart containerd.",
            config.display()
        )
    );
}

#[test]
fn the_default_config_with_config_path_set_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &set_v2_config_path(&containerd_default_config(), HOSTS_DIR),
    );

    assert_eq!(
        preflight(&config, Path::new(HOSTS_DIR)).unwrap(),
        Preflight::Passed { decided_by: config }
    );
}

#[test]
fn discarding_unpacked_layers_is_named_with_the_v2_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = discard_v2(&set_v2_config_path(&containerd_default_config(), HOSTS_DIR));
    let config = write(dir.path(), "config.toml", &text);

    let found = problems(&config);

    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string(),
        format!(
            "{}: plugins.\"io.containerd.grpc.v1.cri\".containerd.discard_unpacked_layers is true, so containerd deletes image layers after unpacking them and spegel cannot serve them to other nodes. Set plugins.\"io.containerd.grpc.v1.cri\".containerd.discard_unpacked_layers = false and restart containerd.",
            config.display()
        )
    );
}

#[test]
fn both_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &discard_v2(&containerd_default_config()),
    );

    let found = problems(&config);

    assert!(
        matches!(found[0], Problem::ConfigPathUnset { .. }),
        "{found:?}"
    );
    assert!(
        matches!(found[1], Problem::DiscardUnpackedLayers { .. }),
        "{found:?}"
    );
}

#[test]
fn a_config_path_elsewhere_suggests_either_fix() {
    let dir = tempfile::tempdir().unwrap();
    // Talos keeps its hosts directory elsewhere.
    let config = write(
        dir.path(),
        "config.toml",
        &set_v2_config_path(&containerd_default_config(), "/etc/cri/conf.d/hosts"),
    );

    let found = problems(&config);

    assert_eq!(
        found[0].to_string(),
        format!(
            "{}: plugins.\"io.containerd.grpc.v1.cri\".registry.config_path is \"/etc/cri/conf.d/hosts\", so containerd ignores the mirror configuration spegel writes to /etc/containerd/certs.d. Set plugins.\"io.containerd.grpc.v1.cri\".registry.config_path = \"/etc/containerd/certs.d\" and restart containerd, or run spegel-node with --containerd-registry-config-path /etc/cri/conf.d/hosts.",
            config.display()
        )
    );
}

#[test]
fn a_config_path_list_that_includes_ours_passes() {
    let dir = tempfile::tempdir().unwrap();
    let text = set_v2_config_path(
        &containerd_default_config(),
        "/etc/containerd/certs.d/:/etc/docker/certs.d",
    );
    let config = write(dir.path(), "config.toml", &text);

    assert!(matches!(
        preflight(&config, Path::new(HOSTS_DIR)).unwrap(),
        Preflight::Passed { .. }
    ));
}

#[test]
fn garden_linux_v3_config_needs_config_path_under_the_images_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", GARDENLINUX_V3);

    let found = problems(&config);

    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].to_string(),
        format!(
            "{}: plugins.\"io.containerd.cri.v1.images\".registry.config_path is not set, so containerd ignores the mirror configuration in /etc/containerd/certs.d. Set plugins.\"io.containerd.cri.v1.images\".registry.config_path = \"/etc/containerd/certs.d\" and restart containerd.",
            config.display()
        )
    );
}

#[test]
fn a_good_v3_config_passes_and_a_discarding_one_names_the_v3_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = GARDENLINUX_V3.to_owned()
        + "\n    [plugins.\"io.containerd.cri.v1.images\".registry]\n      config_path = \"/etc/containerd/certs.d\"\n";
    let config = write(dir.path(), "config.toml", &good);
    assert!(matches!(
        preflight(&config, Path::new(HOSTS_DIR)).unwrap(),
        Preflight::Passed { .. }
    ));

    write(
        dir.path(),
        "config.toml",
        &good.replace(
            "discard_unpacked_layers = false",
            "discard_unpacked_layers = true",
        ),
    );
    let found = problems(&config);

    assert_eq!(
        found[0].to_string(),
        format!(
            "{}: plugins.\"io.containerd.cri.v1.images\".discard_unpacked_layers is true, so containerd deletes image layers after unpacking them and spegel cannot serve them to other nodes. Set plugins.\"io.containerd.cri.v1.images\".discard_unpacked_layers = false and restart containerd.",
            config.display()
        )
    );
}

#[test]
fn an_imported_file_with_the_cri_section_decides_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Gardener's shape: the main file imports conf.d/*.toml; containerd merges whole sections.
    let main = set_v2_config_path(&containerd_default_config(), HOSTS_DIR).replacen(
        "imports = []",
        "imports = [\"conf.d/*.toml\"]",
        1,
    );
    let config = write(dir.path(), "config.toml", &main);
    write(
        dir.path(),
        "conf.d/00-other.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
    );
    let import = write(
        dir.path(),
        "conf.d/50-cri.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndiscard_unpacked_layers = true\n",
    );
    write(
        dir.path(),
        "conf.d/ignored.bak",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/nowhere\"\n",
    );

    let found = problems(&config);

    // The section in 50-cri.toml replaces the main file's: config_path is gone too.
    assert_eq!(found.len(), 2, "{found:?}");
    for problem in &found {
        assert!(
            problem
                .to_string()
                .starts_with(&format!("{}: ", import.display())),
            "{problem}"
        );
    }
}

#[test]
fn a_missing_config_file_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        preflight(&dir.path().join("config.toml"), Path::new(HOSTS_DIR)).unwrap(),
        Preflight::NoConfigFile
    );
}

#[test]
fn a_config_that_is_not_toml_is_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "version = 2\n[plugins\n");

    let error = preflight(&config, Path::new(HOSTS_DIR)).unwrap_err();

    assert!(error.is_bad_config());
    assert!(
        error
            .to_string()
            .starts_with(&format!("{} is not valid TOML", config.display())),
        "{error}"
    );
}
