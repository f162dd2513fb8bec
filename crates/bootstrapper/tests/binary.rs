//! The `spegel-bootstrapper` binary as an operator runs it: flags, kubeconfig, signals,
//! exit codes. Kubernetes is the scripted fake API server (see tests/reflector.rs).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Pki;
use spegel_bootstrap::{HttpBootstrapConfig, fetch_peers};
use spegel_bootstrapper::testing::{FakeApiServer, node};

const BINARY: &str = env!("CARGO_BIN_EXE_spegel-bootstrapper");

fn tls_args(pki: &Pki) -> Vec<String> {
    vec![
        format!("--tls-cert-file={}", pki.files.cert.display()),
        format!("--tls-key-file={}", pki.files.key.display()),
        format!("--client-ca-file={}", pki.files.client_ca.display()),
    ]
}

#[test]
fn bad_configuration_exits_64_with_a_sentence_naming_the_flag() {
    let pki = Pki::new();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            [tls_args(&pki), vec!["--max-peers=0".to_owned()]].concat(),
            "--max-peers",
        ),
        (
            vec![
                "--tls-cert-file=/nonexistent/tls.crt".to_owned(),
                "--tls-key-file=/nonexistent/tls.key".to_owned(),
                "--client-ca-file=/nonexistent/ca.crt".to_owned(),
            ],
            "/nonexistent/tls.crt",
        ),
        (vec![], "--tls-cert-file"),
        (
            [tls_args(&pki), vec!["--listen-addr=nowhere".to_owned()]].concat(),
            "--listen-addr",
        ),
        (
            [
                tls_args(&pki),
                vec!["--kubeconfig=/nonexistent/config".to_owned()],
            ]
            .concat(),
            "--kubeconfig",
        ),
    ];
    for (args, says) in cases {
        let output = Command::new(BINARY)
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn flags_have_environment_twins() {
    let pki = Pki::new();
    let output = Command::new(BINARY)
        .env("SPEGEL_BOOTSTRAPPER_TLS_CERT_FILE", &pki.files.cert)
        .env("SPEGEL_BOOTSTRAPPER_TLS_KEY_FILE", &pki.files.key)
        .env("SPEGEL_BOOTSTRAPPER_CLIENT_CA_FILE", &pki.files.client_ca)
        .env("SPEGEL_BOOTSTRAPPER_MAX_PEERS", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-peers"));
}

/// Kills the child if a test fails before it stops.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_nodes_from_a_kubeconfig_and_stops_on_sigterm() {
    let pki = Pki::new();
    let api = FakeApiServer::start([
        node("node-a", "10.0.0.1", true),
        node("node-b", "10.0.0.2", true),
    ])
    .await
    .unwrap();
    let kubeconfig = pki.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();

    let mut child = Command::new(BINARY)
        .args(tls_args(&pki))
        .args([
            "--listen-addr=127.0.0.1:0",
            "--metrics-addr=127.0.0.1:0",
            "--log-format=json",
            "--shutdown-grace=2s",
        ])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Running(child);
    let (lines, logged) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("bootstrapper: {line}");
            if let Ok(json) = serde_json::from_str(&line) {
                let _ = lines.send(json);
            }
        }
    });
    let mut https_addr = None;
    while https_addr.is_none() {
        let line = logged.recv_timeout(Duration::from_secs(20)).unwrap();
        if line["message"] == "listening" && line["server"] == "bootstrap (https)" {
            https_addr = line["addr"].as_str().map(str::to_owned);
        }
    }
    let url = format!("https://{}/v1/bootstrap-peers", https_addr.unwrap());
    let config = HttpBootstrapConfig::new(&url, pki.node_dir("node-a"), 5001).unwrap();
    let peers = common::eventually("an answer", || async { fetch_peers(&config).await.ok() }).await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].addrs, ["/ip4/10.0.0.2/tcp/5001"]);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

/// `VmHWM` (peak resident memory) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// An attacker on one address opens 1,100 connections (more than --max-connections' 1024
/// slots) and sends a few bytes of a TLS ClientHello on each, then nothing: before the
/// per-client cap these held every slot for the handshake timeout. A real node from
/// another address is still answered at once.
#[tokio::test]
async fn a_tls_handshake_flood_from_one_address_leaves_real_clients_answered() {
    let pki = Pki::new();
    let api = FakeApiServer::start([
        node("node-a", "10.0.0.1", true),
        node("node-b", "10.0.0.2", true),
    ])
    .await
    .unwrap();
    let kubeconfig = pki.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = Command::new(BINARY)
        .args(tls_args(&pki))
        .args([
            "--listen-addr=127.0.0.1:0",
            "--metrics-addr=127.0.0.1:0",
            "--log-format=json",
        ])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Running(child);
    let (lines, logged) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str(&line) {
                let _ = lines.send(json);
            }
        }
    });
    let mut https_addr: Option<std::net::SocketAddr> = None;
    while https_addr.is_none() {
        let line = logged.recv_timeout(Duration::from_secs(20)).unwrap();
        if line["message"] == "listening" && line["server"] == "bootstrap (https)" {
            https_addr = line["addr"].as_str().and_then(|a| a.parse().ok());
        }
    }
    let addr = https_addr.unwrap();
    let url = format!("https://{addr}/v1/bootstrap-peers");
    let config = HttpBootstrapConfig::new(&url, pki.node_dir("node-a"), 5001).unwrap();
    common::eventually("a first answer", || async {
        fetch_peers(&config).await.ok()
    })
    .await;

    // A TLS 1.2 record header and the start of a ClientHello, never finished.
    let partial_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];
    let mut flood = Vec::new();
    for _ in 0..1100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
        let Ok(mut stream) = socket.connect(addr).await else {
            continue;
        };
        use tokio::io::AsyncWriteExt as _;
        let _ = stream.write_all(&partial_hello).await;
        flood.push(stream);
    }
    let started = std::time::Instant::now();
    let peers = tokio::time::timeout(Duration::from_secs(2), fetch_peers(&config))
        .await
        .expect("a real client was not answered within 2 s during the flood")
        .unwrap();
    let answered_in = started.elapsed();
    let peak = peak_rss(child.0.id());
    eprintln!(
        "handshake flood: {} connections held, real client answered in {answered_in:?}, bootstrapper peak RSS {} MB",
        flood.len(),
        peak / 1_000_000
    );
    assert_eq!(peers.len(), 1);
    assert!(peak < 100_000_000, "peak RSS {peak} bytes");
}
