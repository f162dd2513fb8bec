//! Nodes that bootstrap over mTLS from `spegel-bootstrapper` (`--bootstrap-kind http`) form
//! one DHT and mirror an image; nodes started while the bootstrapper is down keep serving
//! their own content and join once it is up.
//!
//! The bootstrapper runs in-process with its HTTPS listener inside the upstream's network
//! namespace, fed by the scripted fake Kubernetes API server from
//! `spegel_bootstrapper::testing` (no kube-apiserver can be installed here): it lists the
//! cluster's nodes with their real InternalIPs.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spegel_bootstrap::tls::ServerTlsFiles;
use spegel_bootstrapper::config::{Config, LogFormat, PeerPolicy};
use spegel_bootstrapper::testing::{FakeApiServer, node};
use spegel_bootstrapper::{Listeners, run};
use spegel_certs::{Authority, Validity, write_cert_dir, write_private, write_public};
use spegel_testbed::{Cluster, ImageSpec};
use tokio_util::sync::CancellationToken;

/// Certificates: a CA, the bootstrapper's server cert for `10.231.0.2`, one client cert dir.
struct Pki {
    dir: tempfile::TempDir,
    files: ServerTlsFiles,
    client_dir: std::path::PathBuf,
}

fn pki(server_ip: &str) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("spegel test ca", Validity::days(1)).unwrap();
    let server = ca
        .server(&[server_ip.to_owned()], Validity::days(1))
        .unwrap();
    let files = ServerTlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: dir.path().join("client-ca.crt"),
    };
    write_public(&files.cert, &server.cert_pem).unwrap();
    write_private(&files.key, &server.key_pem).unwrap();
    write_public(&files.client_ca, &ca.cert_pem()).unwrap();
    let client_dir = dir.path().join("node-certs");
    let client = ca.client("spegel-node", Validity::days(1)).unwrap();
    write_cert_dir(&client_dir, &ca.cert_pem(), &client).unwrap();
    Pki {
        dir,
        files,
        client_dir,
    }
}

/// Starts the bootstrapper with its HTTPS side on `10.231.0.2:8443` in the upstream's namespace.
async fn start_bootstrapper(
    cluster: &Cluster,
    api: &FakeApiServer,
    pki: &Pki,
) -> Result<CancellationToken> {
    let addr = SocketAddr::from((cluster.network.host(0).ip, 8443));
    let bootstrap = cluster.network.host(0).listen(addr).await?;
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = Config {
        listen_addr: addr,
        metrics_addr: ops.local_addr()?,
        tls: pki.files.clone(),
        tls_reload_interval: Duration::from_secs(10),
        kubeconfig: None,
        peers: PeerPolicy {
            max_peers: 3,
            router_port: 5001,
        },
        max_connections_per_ip: 32,
        tls_handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        log_level: "info".to_owned(),
        log_format: LogFormat::Text,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(run(
        config,
        api.client()?,
        Listeners { bootstrap, ops },
        shutdown.clone(),
    ));
    Ok(shutdown)
}

#[tokio::test]
#[ignore = "multi-node: network namespaces, several containerds; run with --include-ignored"]
async fn nodes_join_through_the_bootstrapper_even_when_it_comes_up_late() -> Result<()> {
    // The upstream's namespace (10.231.0.2) also hosts the bootstrapper; nodes are .3 to .5.
    let server_ip = "10.231.0.2";
    let pki = pki(server_ip);
    let url = format!("https://{server_ip}:8443/bootstrap-nodes");
    let cert_dir = pki.client_dir.to_string_lossy().into_owned();
    let args = [
        "--bootstrap-kind",
        "http",
        "--http-bootstrap-url",
        url.as_str(),
        "--http-bootstrap-cert-dir",
        cert_dir.as_str(),
        "--reconcile-interval",
        "1s",
    ];
    // The bootstrapper is not running yet: the nodes start anyway.
    let mut cluster = Cluster::start(3, &args).await?;
    let image = cluster
        .push(
            &ImageSpec {
                layers: vec![2 << 20],
                multi_platform: false,
            },
            "boot/img",
            "v1",
        )
        .await?;
    let name = cluster.image_name("boot/img", "v1");
    cluster.nodes[0].containerd.cri_pull(&name).await?;
    // While alone, a node serves what it holds.
    let layer = &image.layer_digests[0];
    let local = cluster.nodes[0]
        .get(&format!("/v2/boot/img/blobs/{layer}"))
        .await?;
    assert_eq!(local.status, 200);
    let status = cluster.nodes[1].get_json("/_spegel/status").await?;
    assert_eq!(status["routing_table_peers"], 0, "{status}");

    let api = FakeApiServer::start(
        cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| node(&format!("node-{i}"), &n.host.ip.to_string(), true)),
    )
    .await?;
    let stop = start_bootstrapper(&cluster, &api, &pki).await?;
    // Nodes retry with capped backoff (up to 30 s between tries).
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &cluster.nodes {
        loop {
            let status = node.get_json("/_spegel/status").await?;
            if status["routing_table_peers"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "node {} never joined: {status}",
                node.host.ip
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // One DHT: node 3 mirrors the image from node 1 without the upstream. The watcher
    // advertises blob by blob: wait for every one, not only the first layer.
    cluster.nodes[2].until_image_resolvable(&image).await?;
    // The tag's record can arrive after the layer's (whose download claim is listed from the
    // start): wait until node 3 resolves the tag through a peer, as its containerd will.
    let tag = format!("/v2/boot/img/manifests/v1?ns={}", cluster.upstream.host());
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes[2].get(&tag).await.map(|r| r.status).ok() != Some(200) {
        ensure!(Instant::now() < deadline, "node 3 never resolved the tag");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.upstream.stop().await?;
    cluster.nodes[2].containerd.cri_pull(&name).await?;
    stop.cancel();
    drop(pki.dir);
    Ok(())
}
