//! The DaemonSet (`deploy/daemonset`) and Gardener (`deploy/gardener`) manifests: they render
//! with `kubectl kustomize`, run spegel-node the way `systemd/spegel.service` does, name only
//! settings spegel-node has, and Gardener's OperatingSystemConfig carries the unit and the
//! env file byte for byte. No cluster runs here: these are checks of the manifests' text.
//!
//! Skipped (with a message) when kubectl is not installed: `apt-get install -y
//! kubernetes-client`. Set `SPEGEL_REQUIRE_KUBECTL=1` to fail instead of skipping.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// `kubectl kustomize <dir>`, or `None` when kubectl is missing and not required.
fn kustomize(dir: &str) -> Option<String> {
    let output = match Command::new("kubectl")
        .arg("kustomize")
        .arg(repo(dir))
        .output()
    {
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
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

/// The rendered documents with their `kind` and `metadata.name`.
fn documents(rendered: &str) -> Vec<(String, String, String)> {
    rendered
        .split("\n---\n")
        .map(|doc| {
            let top = |key: &str| {
                doc.lines()
                    .find_map(|line| line.strip_prefix(key))
                    .unwrap_or_default()
                    .to_owned()
            };
            let name = doc
                .lines()
                .skip_while(|line| *line != "metadata:")
                .find_map(|line| line.strip_prefix("  name: "))
                .unwrap_or_default()
                .to_owned();
            (top("kind: "), name, doc.to_owned())
        })
        .collect()
}

fn document<'a>(docs: &'a [(String, String, String)], kind: &str, name: &str) -> &'a str {
    &docs
        .iter()
        .find(|(k, n, _)| k == kind && n == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .2
}

/// The lines of the YAML block that starts at the line whose trimmed text is `first` (a
/// list item or a key) and holds every more-indented line after it.
fn block(doc: &str, first: &str) -> String {
    let mut lines = doc.lines().skip_while(|line| line.trim() != first);
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("{first:?} not found"));
    let indent = head.len() - head.trim_start().len();
    // A list item's keys are indented by two more than its dash.
    let body_indent = if head.trim_start().starts_with("- ") {
        indent + 2
    } else {
        indent + 1
    };
    let is_key = !head.trim_start().starts_with("- ");
    let mut out = format!("{head}\n");
    for line in lines {
        let line_indent = line.len() - line.trim_start().len();
        // kubectl writes a key's list items at the key's own indentation.
        let own_list_item = is_key && line_indent == indent && line.trim_start().starts_with("- ");
        if !line.trim().is_empty() && line_indent < body_indent && !own_list_item {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The value of environment variable `name` in `doc`'s first container listing it.
fn env<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = doc.lines();
    lines.find(|line| line.trim() == format!("- name: {name}"))?;
    lines.next()?.trim().strip_prefix("value: ")
}

/// The text of a YAML literal block scalar (`key: |`), with its indentation removed.
fn literal(doc: &str, key: &str) -> String {
    let mut lines = doc
        .lines()
        .skip_while(|line| line.trim() != format!("{key}: |"));
    let head = lines.next().unwrap_or_else(|| panic!("no {key}: |"));
    let key_indent = head.len() - head.trim_start().len();
    let mut body: Vec<&str> = Vec::new();
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && indent <= key_indent {
            break;
        }
        body.push(line);
    }
    while body.last().is_some_and(|line| line.trim().is_empty()) {
        body.pop();
    }
    let indent = body
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|line| format!("{}\n", line.get(indent..).unwrap_or("")))
        .collect()
}

/// Every `SPEGEL_…` variable spegel-node's subcommands read (`[env: NAME=` in `--help`).
fn env_twins() -> BTreeSet<String> {
    let binary = spegel_testbed::spegel_node_binary().unwrap();
    let mut names = BTreeSet::new();
    for subcommand in ["registry", "configuration", "cleanup"] {
        let out = Command::new(&binary)
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for piece in help.split("[env: ").skip(1) {
            names.insert(piece.split('=').next().unwrap().to_owned());
        }
    }
    names
}

/// The `SPEGEL_…` names written in `text`.
fn spegel_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
        .filter(|word| {
            word.len() > "SPEGEL_".len()
                && word.starts_with("SPEGEL_")
                && !word.starts_with("SPEGEL_BOOTSTRAPPER_")
        })
        .map(str::to_owned)
        .collect()
}

/// `MemoryHigh=` / `MemoryMax=` of the unit, in MiB (systemd's M is 1024²).
fn unit_memory(key: &str) -> String {
    let unit = read("systemd/spegel.service");
    let value = unit
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap();
    format!("{}Mi", value.trim_end_matches('M'))
}

#[test]
fn the_daemonset_runs_spegel_node_like_the_host_unit() {
    let Some(rendered) = kustomize("deploy/daemonset") else {
        return;
    };
    let docs = documents(&rendered);
    let mut kinds: Vec<&str> = docs.iter().map(|(kind, _, _)| kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["DaemonSet", "Namespace", "Service", "Service"]);
    let ds = document(&docs, "DaemonSet", "spegel");

    assert!(ds.contains("      hostNetwork: true\n"), "{ds}");
    assert!(block(ds, "initContainers:").contains("- configuration\n"));
    assert!(block(ds, "containers:").contains("- registry\n"));
    assert_eq!(
        env(ds, "SPEGEL_MIRROR_TARGETS"),
        Some("http://127.0.0.1:5000")
    );
    // containerd's socket and content store: read-only.
    for path in [
        "/run/containerd/containerd.sock",
        "/var/lib/containerd/io.containerd.content.v1.content",
        "/etc/containerd",
    ] {
        let mount = block(ds, &format!("- mountPath: {path}"));
        assert!(mount.contains("readOnly: true"), "{mount}");
    }
    // Probes on the registry port.
    let liveness = block(ds, "livenessProbe:");
    assert!(
        liveness.contains("path: /livez") && liveness.contains("port: registry"),
        "{liveness}"
    );
    let readiness = block(ds, "readinessProbe:");
    assert!(
        readiness.contains("path: /readyz") && readiness.contains("port: registry"),
        "{readiness}"
    );
    // The unit's memory caps.
    let resources = block(block(ds, "containers:").as_str(), "resources:");
    assert!(
        block(&resources, "limits:").contains(&format!("memory: {}", unit_memory("MemoryMax"))),
        "{resources}"
    );
    assert!(
        block(&resources, "requests:").contains(&format!("memory: {}", unit_memory("MemoryHigh"))),
        "{resources}"
    );
    // Bootstrap through the headless Service's DNS name, on its router port.
    let headless = document(&docs, "Service", "spegel-bootstrap");
    assert!(headless.contains("  clusterIP: None\n"), "{headless}");
    assert!(headless.contains("port: 5001"), "{headless}");
    assert_eq!(env(ds, "SPEGEL_BOOTSTRAP_KIND"), Some("dns"));
    assert_eq!(
        env(ds, "SPEGEL_BOOTSTRAP_DNS_NAME"),
        Some("spegel-bootstrap.spegel.svc.cluster.local:5001")
    );
    // The cluster secret, from a Secret, read-only.
    assert_eq!(
        env(ds, "SPEGEL_CLUSTER_SECRET_FILE"),
        Some("/etc/spegel/cluster-secret")
    );
    let secret_mount = block(ds, "- mountPath: /etc/spegel");
    assert!(
        secret_mount.contains("name: cluster-secret") && secret_mount.contains("readOnly: true"),
        "{secret_mount}"
    );
    let volume = block(ds, "- name: cluster-secret");
    assert!(
        volume.contains("secretName: spegel-cluster-secret")
            && volume.contains("path: cluster-secret"),
        "{volume}"
    );
    // A metrics port a ServiceMonitor can select by name.
    let metrics = document(&docs, "Service", "spegel-metrics");
    assert!(metrics.contains("name: metrics"), "{metrics}");
    assert!(block(ds, "- containerPort: 9090").contains("name: metrics"));
}

#[test]
fn the_cleanup_daemonset_runs_cleanup_on_the_same_hosts_directory() {
    let Some(rendered) = kustomize("deploy/daemonset/cleanup") else {
        return;
    };
    assert!(rendered.contains("- cleanup\n"), "{rendered}");
    assert_eq!(
        env(&rendered, "SPEGEL_CONTAINERD_REGISTRY_CONFIG_PATH"),
        Some("/etc/containerd/certs.d")
    );
}

#[test]
fn every_spegel_variable_in_the_manifests_is_read_by_spegel_node() {
    let twins = env_twins();
    let mut used = spegel_names(&read("deploy/daemonset/daemonset.yaml"));
    used.extend(spegel_names(&read(
        "deploy/daemonset/cleanup/daemonset.yaml",
    )));
    used.extend(spegel_names(&read("systemd/spegel.env.gardener")));
    let unknown: Vec<&String> = used.iter().filter(|name| !twins.contains(*name)).collect();
    assert!(unknown.is_empty(), "not spegel-node settings: {unknown:?}");
}

#[test]
fn gardeners_osc_carries_the_unit_and_the_env_file_byte_for_byte() {
    let osc = read("deploy/gardener/operatingsystemconfig.yaml");
    let unit = block(&osc, "- name: spegel.service");
    assert_eq!(literal(&unit, "content"), read("systemd/spegel.service"));
    let env_file = block(&osc, "- path: /etc/spegel/spegel.env");
    let gardener_env = read("systemd/spegel.env.gardener");
    assert_eq!(literal(&env_file, "data"), gardener_env);
    assert!(unit.contains("enable: true") && unit.contains("command: start"));

    // Every file the unit and the env file name is delivered.
    let setting = |name: &str| {
        gardener_env
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let cert_dir = setting("SPEGEL_HTTP_BOOTSTRAP_CERT_DIR");
    for path in [
        "/opt/bin/spegel-node".to_owned(),
        setting("SPEGEL_CLUSTER_SECRET_FILE"),
        format!("{cert_dir}/ca.crt"),
        format!("{cert_dir}/tls.crt"),
        format!("{cert_dir}/tls.key"),
    ] {
        assert!(osc.contains(&format!("- path: {path}\n")), "{path} missing");
    }
    assert!(read("systemd/spegel.service").contains("ExecStart=/opt/bin/spegel-node registry"));
    // Keys are not world-readable.
    for path in [
        "/etc/spegel/cluster-secret",
        "/etc/spegel/bootstrap/tls.key",
    ] {
        assert!(
            block(&osc, &format!("- path: {path}")).contains("permissions: 384 # 0600"),
            "{path}"
        );
    }
}

#[test]
fn gardeners_control_plane_runs_the_bootstrapper_against_the_shoot() {
    let (Some(seed), Some(shoot)) = (
        kustomize("deploy/gardener/control-plane"),
        kustomize("deploy/gardener/shoot"),
    ) else {
        return;
    };
    let docs = documents(&seed);
    let mut kinds: Vec<&str> = docs.iter().map(|(kind, _, _)| kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "Ingress",
            "NetworkPolicy",
            "Secret",
            "Service"
        ],
        "no Namespace, ServiceAccount or RBAC on the seed"
    );
    let deployment = document(&docs, "Deployment", "spegel-bootstrapper");
    let kubeconfig = env(deployment, "SPEGEL_BOOTSTRAPPER_KUBECONFIG").unwrap();
    let mount_dir = kubeconfig.trim_end_matches("/kubeconfig");
    assert!(deployment.contains(&format!("mountPath: {mount_dir}\n")));
    assert!(deployment.contains("- /usr/bin/spegel-bootstrapper\n"));
    // Nodes ask the host the env file names.
    let url = read("systemd/spegel.env.gardener")
        .lines()
        .find_map(|line| line.strip_prefix("SPEGEL_HTTP_BOOTSTRAP_URL=https://"))
        .unwrap()
        .to_owned();
    let host = url.split('/').next().unwrap();
    let ingress = document(&docs, "Ingress", "spegel-bootstrapper");
    assert!(ingress.contains(&format!("- host: {host}\n")), "{ingress}");

    // In the shoot: the base's Node-reading ClusterRole, bound to the ServiceAccount the
    // token requestor fills the token of.
    let shoot_docs = documents(&shoot);
    let base_docs = documents(&kustomize("deploy/bootstrapper").unwrap());
    let role = |docs: &[(String, String, String)]| {
        block(
            document(docs, "ClusterRole", "spegel-bootstrapper"),
            "rules:",
        )
    };
    assert_eq!(role(&shoot_docs), role(&base_docs));
    let binding = document(&shoot_docs, "ClusterRoleBinding", "spegel-bootstrapper");
    let secret = document(&docs, "Secret", "shoot-access-spegel-bootstrapper");
    assert!(secret.contains("serviceaccount.resources.gardener.cloud/namespace: kube-system"));
    assert!(binding.contains("namespace: kube-system"), "{binding}");
}
