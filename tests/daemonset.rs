//! The DaemonSet's containers, run on real nodes the way the kubelet runs that pod: the
//! image `scripts/build-image.sh` builds, imported into each node's own containerd, started
//! with `ctr run` in the node's network namespace (`hostNetwork`), with the environment and
//! the mounts `deploy/daemonset/daemonset.yaml` gives them (containerd's socket, content
//! directory and config read-only; `certs.d` writable for the init container only), on a
//! read-only root filesystem, as root (the pod's `runAsUser: 0`). Node 0 pulls an image
//! through its mirror from the upstream, the upstream stops, node 1 pulls it from node 0.
//!
//! Where a test machine is not a cluster, and only there, the environment differs:
//! - `SPEGEL_BOOTSTRAP_DNS_NAME` is node 0's `IP:5001` (no cluster DNS; still the `dns` kind);
//! - `SPEGEL_SKIP_PREFLIGHT=true`: a testbed containerd's `config_path` is its own directory,
//!   not `/etc/containerd/certs.d` (the preflight is proven in `containerd_versions.rs`);
//! - `SPEGEL_CLUSTER_SECRET_FILE` points at a secret made with `spegel-node generate-secret`
//!   when the binary has that feature, and is left out when it does not yet;
//! - capabilities are not dropped (`ctr run` cannot), and the process runs as root through
//!   an image built with `--user 0:0` (old `ctr` cannot override the user).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spegel_testbed::containerd::{RunOptions, Task};
use spegel_testbed::{Cluster, ClusterNode, ClusterOptions, ImageSpec, MirrorMode, SpegelImage};

/// Environment variables, in the order written.
type Env = Vec<(String, String)>;

/// The `SPEGEL_*` environment of the DaemonSet's init container and main container.
fn daemonset_env() -> (Env, Env) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset/daemonset.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let (init, main) = text.split_once("\n      containers:\n").unwrap();
    let env = |part: &str| {
        let lines: Vec<&str> = part.lines().map(str::trim).collect();
        lines
            .windows(2)
            .filter_map(|pair| {
                let name = pair[0].strip_prefix("- name: SPEGEL_")?;
                let value = pair[1].strip_prefix("value: ")?.trim_matches('"');
                Some((format!("SPEGEL_{name}"), value.to_owned()))
            })
            .collect::<Env>()
    };
    (env(init), env(main))
}

/// The container paths the DaemonSet mounts, init container and main container together.
fn daemonset_mount_paths() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset/daemonset.yaml");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| {
            line.trim()
                .trim_start_matches("- ")
                .strip_prefix("mountPath: ")
        })
        .map(str::to_owned)
        .collect()
}

/// Whether this spegel-node has `generate-secret` (the cluster secret feature).
fn has_cluster_secrets() -> bool {
    let binary = spegel_testbed::spegel_node_binary().unwrap();
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&help.stdout).contains("generate-secret")
}

/// Runs the DaemonSet's pod on `node`: the init container to completion, then the spegel
/// container, detached.
async fn run_pod(
    node: &ClusterNode,
    image: &SpegelImage,
    seed: &str,
    secret_dir: Option<&Path>,
    dir: &Path,
) -> Result<Task> {
    let containerd = &node.containerd;
    let (init_env, main_env) = daemonset_env();
    let init = RunOptions {
        mounts: vec![(
            containerd.hosts_dir(),
            "/etc/containerd/certs.d".to_owned(),
            false,
        )],
        env: init_env,
        host_network: Some(node.host.clone()),
        read_only: true,
    };
    containerd
        .run(
            &image.name,
            "spegel-configuration",
            &init,
            &["/usr/bin/spegel-node", "configuration"],
        )
        .await?;

    let data = dir.join(format!("data-{}", node.host.ip));
    std::fs::create_dir_all(&data)?;
    let config_dir = containerd.config_path().parent().unwrap().to_owned();
    let mut mounts = vec![
        (
            containerd.socket().to_owned(),
            "/run/containerd/containerd.sock".to_owned(),
            true,
        ),
        (
            containerd.content_path(),
            "/var/lib/containerd/io.containerd.content.v1.content".to_owned(),
            true,
        ),
        (config_dir, "/etc/containerd".to_owned(), true),
        (data, "/var/lib/spegel".to_owned(), false),
    ];
    let mut env = Env::new();
    for (name, value) in main_env {
        let value = match name.as_str() {
            "SPEGEL_BOOTSTRAP_DNS_NAME" => seed.to_owned(),
            "SPEGEL_CLUSTER_SECRET_FILE" if secret_dir.is_none() => continue,
            _ => value,
        };
        env.push((name, value));
    }
    env.push(("SPEGEL_SKIP_PREFLIGHT".to_owned(), "true".to_owned()));
    if let Some(secret_dir) = secret_dir {
        mounts.push((secret_dir.to_owned(), "/etc/spegel".to_owned(), true));
    }
    let options = RunOptions {
        mounts,
        env,
        host_network: Some(node.host.clone()),
        read_only: true,
    };
    let log = dir.join(format!("spegel-{}.log", node.host.ip));
    containerd
        .run_detached(
            &image.name,
            "spegel",
            &options,
            &["/usr/bin/spegel-node", "registry"],
            &log,
        )
        .await
}

/// Waits until `node` answers `GET /livez` with 200.
async fn until_live(node: &ClusterNode, task: &Task) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.get("/livez").await.is_ok_and(|r| r.status == 200) {
        ensure!(
            Instant::now() < deadline,
            "the spegel container on {} never answered /livez; log:\n{}",
            node.host.ip,
            task.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn the_daemonset_pods_mirror_between_nodes() -> Result<()> {
    let mut cluster = Cluster::start_with(&ClusterOptions::new(2, MirrorMode::Direct)).await?;
    let spec = ImageSpec {
        layers: vec![1 << 20],
        multi_platform: false,
    };
    let pushed = cluster.push(&spec, "app/web", "v1").await?;
    let name = cluster.image_name("app/web", "v1");

    let dir = tempfile::tempdir()?;
    let image = SpegelImage::build(dir.path(), &["--user", "0:0"]).await?;
    let secret_dir = if has_cluster_secrets() {
        let secret_dir = dir.path().join("secret");
        std::fs::create_dir_all(&secret_dir)?;
        let file = secret_dir.join("cluster-secret");
        let out = std::process::Command::new(spegel_testbed::spegel_node_binary()?)
            .args(["generate-secret", "--cluster-secret-file"])
            .arg(&file)
            .output()?;
        ensure!(out.status.success(), "generate-secret: {out:?}");
        Some(secret_dir)
    } else {
        None
    };
    let mounted: BTreeSet<String> = [
        "/etc/containerd/certs.d",
        "/run/containerd/containerd.sock",
        "/var/lib/containerd/io.containerd.content.v1.content",
        "/etc/containerd",
        "/var/lib/spegel",
        "/etc/spegel",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        daemonset_mount_paths(),
        mounted,
        "the DaemonSet's mounts changed"
    );

    let seed = cluster.nodes[0].router_addr();
    let mut tasks = Vec::new();
    for node in &cluster.nodes {
        node.containerd.import(&image.archive).await?;
        let task = run_pod(node, &image, &seed, secret_dir.as_deref(), dir.path()).await?;
        until_live(node, &task).await?;
        // The init container put the node's own mirror first for the upstream.
        let hosts = std::fs::read_to_string(
            node.containerd
                .hosts_dir()
                .join(cluster.upstream.host())
                .join("hosts.toml"),
        )?;
        let mirror = hosts
            .find("[host.\"http://127.0.0.1:5000\"]")
            .context(hosts.clone())?;
        let upstream = hosts
            .find(&format!("[host.\"http://{}\"]", cluster.upstream.host()))
            .context(hosts.clone())?;
        ensure!(mirror < upstream, "{hosts}");
        tasks.push(task);
    }
    cluster.wait_until_joined().await?;

    cluster.nodes[0].containerd.cri_pull(&name).await?;
    let layer = &pushed.layer_digests[0];
    // The watcher advertises blob by blob: wait until node 1 finds every one.
    let deadline = Instant::now() + Duration::from_secs(30);
    if let Err(e) = cluster.nodes[1].until_image_resolvable(&pushed).await {
        anyhow::bail!("{e}; node 0 log:\n{}", tasks[0].log());
    }
    // The tag's own record can reach node 1 after the layer's: wait until node 1 resolves the
    // tag through its peer (asked from node 1's own address, as its containerd would).
    let tag = format!("/v2/app/web/manifests/v1?ns={}", cluster.upstream.host());
    while cluster.nodes[1].get(&tag).await.map(|r| r.status).ok() != Some(200) {
        ensure!(Instant::now() < deadline, "node 1 never resolved the tag");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.upstream.stop().await?;
    cluster.nodes[1]
        .containerd
        .cri_pull(&name)
        .await
        .with_context(|| format!("node 1 log:\n{}", tasks[1].log()))?;
    let held = cluster.nodes[1].containerd.content_digests().await?;
    ensure!(held.contains(layer), "node 1 does not hold {layer}");
    // Stop the pods before the cluster (and its containerds) goes.
    drop(tasks);
    Ok(())
}
