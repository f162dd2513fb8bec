//! The node's client (`spegel_bootstrap::fetch_peers`) against the real bootstrapper server,
//! fed by the scripted fake API server (see tests/reflector.rs for why it is a fake).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Bootstrapper, Pki, eventually};
use spegel_bootstrap::{
    Backoff, BootstrapPeer, Error, HttpBootstrapConfig, fetch_answer, fetch_peers,
};
use spegel_bootstrapper::testing::{FakeApiServer, node};
use tokio::net::TcpListener;

fn peers(addrs: &[&str]) -> Vec<BootstrapPeer> {
    addrs
        .iter()
        .map(|addr| BootstrapPeer {
            id: None,
            addrs: vec![(*addr).to_owned()],
        })
        .collect()
}

async fn two_nodes() -> FakeApiServer {
    FakeApiServer::start([
        node("node-a", "10.0.0.1", true),
        node("node-b", "10.0.0.2", true),
    ])
    .await
    .unwrap()
}

#[tokio::test]
async fn the_client_reads_both_shapes_from_the_bootstrapper() {
    common::init_logging();
    let (pki, api) = (Pki::new(), two_nodes().await);
    let bootstrapper = Bootstrapper::start(&api, &pki, 3).await;
    let cert_dir = pki.node_dir("node-c");
    for path in ["/bootstrap-nodes", "/v1/bootstrap-peers"] {
        let config = HttpBootstrapConfig::new(&bootstrapper.url(path), &cert_dir, 5001).unwrap();
        let got = eventually("an answer", || async { fetch_peers(&config).await.ok() }).await;
        assert_eq!(
            got,
            peers(&["/ip4/10.0.0.1/tcp/5001", "/ip4/10.0.0.2/tcp/5001"]),
            "{path}"
        );
    }
    // IP-only answers take the node's own router port.
    let config =
        HttpBootstrapConfig::new(&bootstrapper.url("/bootstrap-nodes"), &cert_dir, 6001).unwrap();
    assert_eq!(
        fetch_peers(&config).await.unwrap(),
        peers(&["/ip4/10.0.0.1/tcp/6001", "/ip4/10.0.0.2/tcp/6001"])
    );
    bootstrapper.stop().await;
}

/// The asker's zone comes with the answer once its Node exists with the zone label, even
/// before the Node is Ready (spegel-node starts before kubelet registers it).
#[tokio::test]
async fn the_asker_learns_its_zone_once_its_node_carries_the_label() {
    common::init_logging();
    let (pki, api) = (Pki::new(), two_nodes().await);
    let bootstrapper = Bootstrapper::start(&api, &pki, 3).await;
    let cert_dir = pki.node_dir("node-c");
    let config =
        HttpBootstrapConfig::new(&bootstrapper.url("/v1/bootstrap-peers"), &cert_dir, 5001)
            .unwrap();
    let answer = eventually("an answer", || async { fetch_answer(&config).await.ok() }).await;
    assert_eq!(answer.zone, None, "node-c has no Node yet");

    let mut registered = node("node-c", "10.0.0.3", false);
    registered.metadata.labels =
        Some([("topology.kubernetes.io/zone".to_owned(), "eu-1b".to_owned())].into());
    api.apply(registered);
    let zone = eventually("the zone", || async {
        fetch_answer(&config).await.ok().and_then(|a| a.zone)
    })
    .await;
    assert_eq!(zone, "eu-1b");
    // The other path carries it too; the peers are the Ready nodes, never the asker.
    let nodes =
        HttpBootstrapConfig::new(&bootstrapper.url("/bootstrap-nodes"), &cert_dir, 5001).unwrap();
    let answer = fetch_answer(&nodes).await.unwrap();
    assert_eq!(answer.zone.as_deref(), Some("eu-1b"));
    assert_eq!(
        answer.peers,
        peers(&["/ip4/10.0.0.1/tcp/5001", "/ip4/10.0.0.2/tcp/5001"])
    );
    bootstrapper.stop().await;
}

#[tokio::test]
async fn a_bootstrapper_that_is_down_is_an_error_until_it_comes_up() {
    common::init_logging();
    let (pki, api) = (Pki::new(), two_nodes().await);
    let cert_dir = pki.node_dir("node-c");
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("https://127.0.0.1:{}/bootstrap-nodes", addr.port());
    let config = HttpBootstrapConfig::new(&url, &cert_dir, 5001).unwrap();

    let error = fetch_peers(&config).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error}");

    // The node's loop: back off while the bootstrapper is away, succeed once it is up.
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    let fetching = tokio::spawn(async move {
        loop {
            match fetch_peers(&config).await {
                Ok(peers) => return (peers, backoff.attempts()),
                Err(_) => backoff.wait().await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let bootstrapper = Bootstrapper::start_on(listener, &api, &pki, 3).await;
    let (got, attempts) = tokio::time::timeout(Duration::from_secs(20), fetching)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        peers(&["/ip4/10.0.0.1/tcp/5001", "/ip4/10.0.0.2/tcp/5001"])
    );
    assert!(attempts >= 2, "retried {attempts} times");
    bootstrapper.stop().await;
}

#[tokio::test]
async fn a_bootstrapper_without_a_synced_node_list_answers_503_not_an_empty_list() {
    common::init_logging();
    let (pki, api) = (Pki::new(), two_nodes().await);
    api.fail_lists(usize::MAX);
    let bootstrapper = Bootstrapper::start(&api, &pki, 3).await;
    let config = HttpBootstrapConfig::new(
        &bootstrapper.url("/v1/bootstrap-peers"),
        pki.node_dir("node-c"),
        5001,
    )
    .unwrap();
    let error = fetch_peers(&config).await.unwrap_err();
    assert!(
        matches!(error, Error::Status(status) if status == 503),
        "{error}"
    );
    api.fail_lists(0);
    eventually("the first list", || async {
        fetch_peers(&config).await.ok()
    })
    .await;
    bootstrapper.stop().await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let pki = Pki::new();
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let url = format!("https://127.0.0.1:{}/bootstrap-nodes", addr.port());
    let config = HttpBootstrapConfig::new(&url, pki.node_dir("node-c"), 5001)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let error = fetch_peers(&config).await.unwrap_err();
    assert!(matches!(error, Error::Timeout(_)), "{error}");
    hold.abort();
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    common::init_logging();
    let (pki, api) = (Pki::new(), two_nodes().await);
    let bootstrapper = Bootstrapper::start(&api, &pki, 3).await;
    let stranger =
        spegel_certs::Authority::new("stranger", spegel_certs::Validity::days(1)).unwrap();
    let client = pki
        .ca
        .client("node-c", spegel_certs::Validity::days(1))
        .unwrap();
    let cert_dir = pki.cert_dir("trusts-stranger", &stranger, &client);
    let config =
        HttpBootstrapConfig::new(&bootstrapper.url("/bootstrap-nodes"), cert_dir, 5001).unwrap();
    let error = fetch_peers(&config).await.unwrap_err();
    assert!(matches!(error, Error::Handshake { .. }), "{error}");
    bootstrapper.stop().await;
}
