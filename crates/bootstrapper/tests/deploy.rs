//! deploy/bootstrapper renders with `kubectl kustomize` and keeps its security properties.
//! Skipped (with a message) when kubectl is not installed: `apt-get install -y
//! kubernetes-client`. Set `SPEGEL_REQUIRE_KUBECTL=1` to fail instead of skipping.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn render() -> Option<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/bootstrapper");
    let output = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(output) => output,
        Err(e) => {
            assert!(
                std::env::var_os("SPEGEL_REQUIRE_KUBECTL").is_none(),
                "kubectl is required: {e}"
            );
            eprintln!("skipped: kubectl not found ({e}); apt-get install -y kubernetes-client");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

/// The rendered documents, split on `---`, each with its `kind`.
fn documents(rendered: &str) -> Vec<(String, String)> {
    rendered
        .split("\n---\n")
        .map(|doc| {
            let kind = doc
                .lines()
                .find_map(|line| line.strip_prefix("kind: "))
                .unwrap_or_default()
                .to_owned();
            (kind, doc.to_owned())
        })
        .collect()
}

fn document<'a>(docs: &'a [(String, String)], kind: &str) -> &'a str {
    &docs.iter().find(|(k, _)| k == kind).unwrap().1
}

#[test]
fn the_kustomization_renders_every_resource_the_bootstrapper_needs() {
    let Some(rendered) = render() else { return };
    let docs = documents(&rendered);
    let mut kinds: Vec<&str> = docs.iter().map(|(kind, _)| kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Ingress",
            "Namespace",
            "NetworkPolicy",
            "Service",
            "ServiceAccount"
        ]
    );
}

#[test]
fn the_cluster_role_only_reads_nodes() {
    let Some(rendered) = render() else { return };
    let docs = documents(&rendered);
    let role = document(&docs, "ClusterRole");
    let rules = &role[role.find("rules:").unwrap()..];
    assert_eq!(rules.matches("- apiGroups:").count(), 1, "{rules}");
    assert!(rules.contains("- nodes"), "{rules}");
    let verbs: Vec<&str> = rules
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("verbs:"))
        .skip(1)
        .map_while(|line| line.trim().strip_prefix("- "))
        .collect();
    assert_eq!(verbs, ["get", "list", "watch"], "{rules}");
}

#[test]
fn the_deployment_runs_non_root_read_only_with_limits_and_probes() {
    let Some(rendered) = render() else { return };
    let docs = documents(&rendered);
    let deployment = document(&docs, "Deployment");
    for needed in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "readinessProbe:",
        "path: /readyz",
        "livenessProbe:",
        "path: /healthz",
        "limits:",
        "requests:",
        "secretName: spegel-bootstrapper-tls",
        "image: ghcr.io/example/spegel-bootstrapper:v0.1.0",
    ] {
        assert!(
            deployment.contains(needed),
            "missing {needed:?}:\n{deployment}"
        );
    }
    // Every SPEGEL_BOOTSTRAPPER_ variable names a real flag's environment twin.
    let help = Command::new(env!("CARGO_BIN_EXE_spegel-bootstrapper"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in deployment.lines() {
        if let Some(name) = line.trim().strip_prefix("- name: SPEGEL_BOOTSTRAPPER_") {
            assert!(
                help.contains(&format!("SPEGEL_BOOTSTRAPPER_{name}")),
                "{name}"
            );
        }
    }
}

#[test]
fn the_ingress_passes_tls_through_to_the_bootstrapper() {
    let Some(rendered) = render() else { return };
    let docs = documents(&rendered);
    let ingress = document(&docs, "Ingress");
    assert!(
        ingress.contains(r#"nginx.ingress.kubernetes.io/ssl-passthrough: "true""#),
        "{ingress}"
    );
    assert!(
        !ingress.contains("tls:"),
        "TLS must not terminate at the Ingress"
    );
}
