//! The shipped `systemd/spegel.service` and `systemd/spegel.env.example`: the unit passes
//! `systemd-analyze verify`, and the env file, the operator guide and the binary's flags
//! name the same variables.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// Where the unit expects the binary.
const INSTALLED_BINARY: &str = "/opt/bin/spegel-node";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap()
}

/// `SPEGEL_…` names in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| word.starts_with("SPEGEL_") && word.len() > "SPEGEL_".len())
        .map(str::to_owned)
        .collect()
}

fn help(subcommand: &str) -> Result<String> {
    let binary = spegel_testbed::spegel_node_binary()?;
    let out = Command::new(binary).args([subcommand, "--help"]).output()?;
    ensure!(out.status.success());
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() -> Result<()> {
    // verify checks that every Exec binary exists: point the unit at the one just built.
    let binary = spegel_testbed::spegel_node_binary()?;
    let unit = read("systemd/spegel.service");
    assert!(unit.contains(INSTALLED_BINARY));
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("spegel.service");
    std::fs::write(
        &copy,
        unit.replace(INSTALLED_BINARY, binary.to_str().unwrap()),
    )?;

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .context("systemd-analyze is missing: apt-get install systemd")?;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown or unparsable settings are only warnings: none may concern this unit.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("spegel")).collect();
    assert!(ours.is_empty(), "{}", ours.join("\n"));
    Ok(())
}

#[test]
fn the_unit_has_the_shape_the_gardener_proposal_asks_for() {
    let unit = read("systemd/spegel.service");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "After=containerd.service network-online.target",
        "Requires=containerd.service",
        "Before=kubelet.service",
        "Restart=always",
        "RestartSec=5",
        "MemoryHigh=80M",
        "MemoryMax=100M",
        "WatchdogSec=30",
        "ProtectSystem=strict",
        "ReadWritePaths=-/etc/containerd/certs.d -/var/lib/node-exporter/textfile-collector",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ExecStartPre=/opt/bin/spegel-node configuration",
        "ExecStart=/opt/bin/spegel-node registry",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
}

#[test]
fn the_env_example_and_the_operator_guide_name_every_flag_and_nothing_else() -> Result<()> {
    let mut flags = BTreeSet::new();
    for subcommand in ["registry", "configuration", "cleanup"] {
        flags.extend(variables(&help(subcommand)?));
    }
    let example = variables(&read("systemd/spegel.env.example"));
    let guide = variables(&read("docs/operator-guide.md"));

    assert_eq!(example, flags, "systemd/spegel.env.example");
    let missing: Vec<_> = flags.difference(&guide).collect();
    assert!(
        missing.is_empty(),
        "docs/operator-guide.md lacks {missing:?}"
    );
    let unknown: Vec<_> = guide.difference(&flags).collect();
    assert!(
        unknown.is_empty(),
        "docs/operator-guide.md names unknown {unknown:?}"
    );
    Ok(())
}
