//! Mutual TLS over real loopback sockets: who gets an answer, and certificate rotation.
//! The Kubernetes side is the scripted fake API server (see tests/reflector.rs for why).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Bootstrapper, Pki, eventually, http_get, https_get};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use spegel_bootstrap::tls::{client_config, provider};
use spegel_bootstrapper::testing::{FakeApiServer, node};
use spegel_certs::{Authority, Validity};

async fn cluster() -> FakeApiServer {
    FakeApiServer::start([
        node("node-a", "10.0.0.1", true),
        node("node-b", "10.0.0.2", true),
        node("node-c", "10.0.0.3", true),
        node("node-d", "10.0.0.4", true),
        node("node-e", "10.0.0.5", false),
    ])
    .await
    .unwrap()
}

fn roots(ca: &Authority) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    roots
}

fn without_client_cert(server_ca: &Authority) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(server_ca))
        .with_no_client_auth()
}

async fn started(pki: &Pki, api: &FakeApiServer) -> Bootstrapper {
    common::init_logging();
    let bootstrapper = Bootstrapper::start(api, pki, 3).await;
    eventually("readiness", || async {
        let (status, _) = http_get(bootstrapper.ops_addr, "/readyz").await;
        status.is_success().then_some(())
    })
    .await;
    bootstrapper
}

#[tokio::test]
async fn a_valid_client_gets_the_first_ready_peers_but_never_itself() {
    let (pki, api) = (Pki::new(), cluster().await);
    let bootstrapper = started(&pki, &api).await;

    let node_a = client_config(&pki.node_dir("node-a")).unwrap();
    let (status, body) = https_get(bootstrapper.addr, "/bootstrap-nodes", node_a.clone())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, r#"["10.0.0.2","10.0.0.3","10.0.0.4"]"#);

    let (status, body) = https_get(bootstrapper.addr, "/v1/bootstrap-peers", node_a)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"[{"Addrs":["/ip4/10.0.0.2/tcp/5001"]},{"Addrs":["/ip4/10.0.0.3/tcp/5001"]},{"Addrs":["/ip4/10.0.0.4/tcp/5001"]}]"#
    );

    // A client certificate naming no node gets the plain first three.
    let outsider = client_config(&pki.node_dir("monitoring")).unwrap();
    let (_, body) = https_get(bootstrapper.addr, "/bootstrap-nodes", outsider.clone())
        .await
        .unwrap();
    assert_eq!(body, r#"["10.0.0.1","10.0.0.2","10.0.0.3"]"#);

    let (status, _) = https_get(bootstrapper.addr, "/nope", outsider)
        .await
        .unwrap();
    assert_eq!(status, 404);

    let (status, metrics) = http_get(bootstrapper.ops_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"spegel_bootstrapper_requests_total{endpoint="/bootstrap-nodes",code="200"} 2"#
        ),
        "{metrics}"
    );
    bootstrapper.stop().await;
}

#[tokio::test]
async fn a_node_connecting_from_its_own_address_is_left_out() {
    let pki = Pki::new();
    let api = FakeApiServer::start([
        node("loopback-node", "127.0.0.1", true),
        node("node-b", "10.0.0.2", true),
    ])
    .await
    .unwrap();
    let bootstrapper = started(&pki, &api).await;
    let config = client_config(&pki.node_dir("unnamed")).unwrap();
    let (_, body) = https_get(bootstrapper.addr, "/bootstrap-nodes", config)
        .await
        .unwrap();
    assert_eq!(body, r#"["10.0.0.2"]"#);
    bootstrapper.stop().await;
}

#[tokio::test]
async fn clients_without_a_certificate_from_the_client_ca_are_refused() {
    let (pki, api) = (Pki::new(), cluster().await);
    let bootstrapper = started(&pki, &api).await;

    let no_cert = without_client_cert(&pki.ca);
    let error = https_get(bootstrapper.addr, "/bootstrap-nodes", no_cert)
        .await
        .unwrap_err();
    assert!(!error.is_empty());

    let other_ca = Authority::new("another ca", Validity::days(1)).unwrap();
    let foreign = other_ca.client("node-a", Validity::days(1)).unwrap();
    let foreign_dir = pki.cert_dir("foreign", &pki.ca, &foreign);
    let error = https_get(
        bootstrapper.addr,
        "/bootstrap-nodes",
        client_config(&foreign_dir).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(!error.is_empty());

    let expired = pki.ca.client("node-a", Validity::expired()).unwrap();
    let expired_dir = pki.cert_dir("expired", &pki.ca, &expired);
    let error = https_get(
        bootstrapper.addr,
        "/bootstrap-nodes",
        client_config(&expired_dir).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(!error.is_empty());

    let (_, metrics) = http_get(bootstrapper.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("spegel_bootstrapper_tls_handshake_failures_total 3"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("endpoint=\"/bootstrap-nodes\""),
        "{metrics}"
    );
    bootstrapper.stop().await;
}

#[tokio::test]
async fn a_rotated_server_certificate_is_served_without_a_restart() {
    let (pki, api) = (Pki::new(), cluster().await);
    let bootstrapper = started(&pki, &api).await;
    let client = pki.ca.client("node-a", Validity::days(1)).unwrap();
    let trusts_old = client_config(&pki.cert_dir("old", &pki.ca, &client)).unwrap();
    let new_ca = Authority::new("rotated server ca", Validity::days(1)).unwrap();
    let trusts_new = client_config(&pki.cert_dir("new", &new_ca, &client)).unwrap();

    https_get(bootstrapper.addr, "/bootstrap-nodes", trusts_old.clone())
        .await
        .unwrap();
    assert!(
        https_get(bootstrapper.addr, "/bootstrap-nodes", trusts_new.clone())
            .await
            .is_err()
    );

    pki.install_server_cert(&new_ca);
    let addr = bootstrapper.addr;
    eventually("the rotated certificate", || {
        let config = trusts_new.clone();
        async move { https_get(addr, "/bootstrap-nodes", config).await.ok() }
    })
    .await;
    assert!(
        https_get(bootstrapper.addr, "/bootstrap-nodes", trusts_old)
            .await
            .is_err()
    );

    // A broken rotation keeps the last good certificate serving.
    std::fs::write(&pki.files.cert, "half a certificate").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    https_get(bootstrapper.addr, "/bootstrap-nodes", trusts_new)
        .await
        .unwrap();
    // A reload tick may fall between the key's and the certificate's rename (a mismatched
    // pair, refused): count at least one of each outcome.
    let (_, metrics) = http_get(bootstrapper.ops_addr, "/metrics").await;
    for outcome in ["success", "failure"] {
        let series = format!(r#"spegel_bootstrapper_tls_reloads_total{{outcome="{outcome}"}} "#);
        let count: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series}in {metrics}"))
            .parse()
            .unwrap();
        assert!(count >= 1, "{series}{count}");
    }
    bootstrapper.stop().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_served_and_plain_http_is_not() {
    let (pki, api) = (Pki::new(), cluster().await);
    let bootstrapper = started(&pki, &api).await;
    let client = pki.ca.client("node-a", Validity::days(1)).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap()];
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots(&pki.ca))
            .with_client_auth_cert(chain.clone(), key)
            .unwrap();
        let (status, _) = https_get(bootstrapper.addr, "/bootstrap-nodes", config)
            .await
            .unwrap();
        assert_eq!(status, 200, "{version:?}");
    }

    let tcp = tokio::net::TcpStream::connect(bootstrapper.addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/bootstrap-nodes")
        .header(http::header::HOST, "127.0.0.1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert!(sender.send_request(request).await.is_err());
    bootstrapper.stop().await;
}
