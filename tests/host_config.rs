//! `spegel-node configuration`, `cleanup` and the preflight check, run as the real binary
//! against real directories and a real containerd that pulls through what was written.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, Result, ensure};
use spegel_testbed::{Containerd, ImageSpec, SpegelNode, Upstream};
use tokio::process::Command;

const REPO: &str = "test/hostcfg";

async fn spegel_node(args: &[&str]) -> Result<Output> {
    let binary = spegel_testbed::spegel_node_binary()?;
    Ok(Command::new(binary).args(args).output().await?)
}

/// How the key of a CRI image setting is written in the config version the running
/// containerd build gets: `containerd.discard_unpacked_layers` in version 2 becomes
/// `discard_unpacked_layers` of `io.containerd.cri.v1.images` in version 3.
fn cri_key(containerd: &Containerd, setting: &str) -> String {
    if containerd.build().config_version() >= 3 {
        let setting = setting.trim_start_matches("containerd.");
        format!("plugins.\"io.containerd.cri.v1.images\".{setting}")
    } else {
        format!("plugins.\"io.containerd.grpc.v1.cri\".{setting}")
    }
}

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(
                    path.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

#[tokio::test]
async fn a_containerd_configured_by_spegel_node_pulls_through_it_with_the_upstream_down()
-> Result<()> {
    spegel_testbed::require_root_tools()?;
    let mut upstream = Upstream::start().await?;
    let layout = tempfile::tempdir()?;
    let spec = ImageSpec {
        layers: vec![1 << 20, 256 << 10],
        multi_platform: false,
    };
    let image = spegel_testbed::build_oci_layout(layout.path(), &spec, "v1")?;
    spegel_testbed::push(&image, &upstream.host(), REPO).await?;
    let name = format!("{}/{REPO}:v1", upstream.host());
    let source = Containerd::start().await?;
    source.mirror_to(&upstream.host())?;
    source.cri_pull(&name).await?;
    let node = SpegelNode::start(&source, &[]).await?;

    // The puller already has a hosts.toml for the (plain HTTP) upstream: that directory wins
    // over _default, so spegel must be injected into it.
    let puller = Containerd::start().await?;
    puller.mirror_to(&upstream.host())?;
    let hosts_dir = puller.hosts_dir();
    let before = snapshot(&hosts_dir);
    let configure = [
        "configuration",
        "--containerd-registry-config-path",
        hosts_dir.to_str().unwrap(),
        "--mirror-targets",
        &node.url(),
    ];
    let out = spegel_node(&configure).await?;
    ensure!(
        out.status.success(),
        "configuration failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(hosts_dir.join(upstream.host()).join("hosts.toml"))?;
    let mirror = written
        .find(&format!("[host.\"{}\"]", node.url()))
        .context("mirror missing")?;
    let original = written
        .find(&format!("[host.\"http://{}\"]", upstream.host()))
        .context("upstream host lost")?;
    assert!(mirror < original, "{written}");
    let configured = snapshot(&hosts_dir);
    let again = spegel_node(&configure).await?;
    assert!(again.status.success());
    assert_eq!(
        snapshot(&hosts_dir),
        configured,
        "the second run changed files"
    );

    upstream.stop().await?;
    puller
        .cri_pull(&name)
        .await
        .with_context(|| format!("node log:\n{}", node.log().unwrap_or_default()))?;
    let held = puller.content_digests().await?;
    for blob in image.all_blobs() {
        assert!(held.contains(&blob.digest), "{} not pulled", blob.digest);
    }

    let out = spegel_node(&[
        "cleanup",
        "--containerd-registry-config-path",
        hosts_dir.to_str().unwrap(),
    ])
    .await?;
    ensure!(
        out.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        snapshot(&hosts_dir),
        before,
        "cleanup did not restore certs.d"
    );
    Ok(())
}

#[tokio::test]
async fn a_containerd_config_that_discards_layers_stops_the_daemon_with_exit_64() -> Result<()> {
    spegel_testbed::require_root_tools()?;
    // A real config that a real containerd runs with, made wrong in one setting.
    let containerd = Containerd::start().await?;
    let good = std::fs::read_to_string(containerd.config_path())?;
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("config.toml");
    std::fs::write(
        &bad,
        good.replace(
            "discard_unpacked_layers = false",
            "discard_unpacked_layers = true",
        ),
    )?;
    let hosts_dir = containerd.hosts_dir();

    let out = spegel_node(&[
        "registry",
        "--registry-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-textfile",
        "",
        "--containerd-config-path",
        bad.to_str().unwrap(),
        "--containerd-registry-config-path",
        hosts_dir.to_str().unwrap(),
    ])
    .await?;

    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key = cri_key(&containerd, "containerd.discard_unpacked_layers");
    let expected = format!(
        "spegel-node: containerd is not configured for spegel:\n- {}: {key} is true, so containerd deletes image layers after unpacking them and spegel cannot serve them to other nodes. Set {key} = false and restart containerd.\nspegel-node did not start; --skip-preflight starts it anyway.\n",
        bad.display()
    );
    assert!(stderr.ends_with(&expected), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_containerd_config_without_config_path_names_the_key_and_skip_preflight_overrides()
-> Result<()> {
    spegel_testbed::require_root_tools()?;
    let containerd = Containerd::start().await?;
    let good = std::fs::read_to_string(containerd.config_path())?;
    let without: String = good
        .lines()
        .filter(|l| !l.contains("config_path"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("config.toml");
    std::fs::write(&bad, without)?;

    let out = spegel_node(&[
        "registry",
        "--metrics-addr",
        "127.0.0.1:0",
        "--containerd-config-path",
        bad.to_str().unwrap(),
    ])
    .await?;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key = cri_key(&containerd, "registry.config_path");
    assert!(
        stderr.contains(&format!("{key} is not set, so containerd ignores the mirror configuration in /etc/containerd/certs.d. Set {key} = \"/etc/containerd/certs.d\" and restart containerd.")),
        "{stderr}"
    );

    let mut node = SpegelNode::start(
        &containerd,
        &[
            "--containerd-config-path",
            bad.to_str().unwrap(),
            "--skip-preflight",
        ],
    )
    .await?;
    assert!(node.terminate().await?.success());
    Ok(())
}

#[tokio::test]
async fn bad_configuration_flags_exit_64_with_a_sentence() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--mirror-targets", "127.0.0.1:5000"],
            "\"127.0.0.1:5000\" is not a mirror target: it must start with http:// or https://",
        ),
        (
            &["--mirrored-registries", "docker.io,../etc"],
            "\"../etc\" is not a registry",
        ),
        (
            &["--mirror-targets", ""],
            "--mirror-targets names no mirror",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["configuration", "--containerd-registry-config-path", hosts];
        args.extend_from_slice(flags);
        let out = spegel_node(&args).await?;
        assert_eq!(out.status.code(), Some(64), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "nothing may be written on bad flags"
    );
    Ok(())
}
