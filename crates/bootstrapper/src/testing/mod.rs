//! Test support: a scripted fake Kubernetes API server for Nodes, and Node builders.
//!
//! No kube-apiserver can be installed on the machines these tests run on, so the Node
//! reflector is tested against [`FakeApiServer`]: a small hyper server on `127.0.0.1:0` that
//! speaks the real list/watch JSON of `GET /api/v1/nodes` (a `NodeList` with a
//! `resourceVersion`; `?watch=true&resourceVersion=N` streams newline-delimited
//! `ADDED`/`MODIFIED`/`DELETED`/`ERROR` events). It stands in for the API server's Node
//! endpoint only: no other resources, no auth, no field or label selectors, no bookmarks,
//! no pagination (one page holds everything).
//!
//! It is scripted from the test: [`FakeApiServer::apply`] and [`FakeApiServer::delete`]
//! change Nodes and notify open watches; [`FakeApiServer::replace_quietly`] changes them
//! without events (as if events were lost); [`FakeApiServer::end_watches`] closes open
//! watches cleanly (as `timeoutSeconds` does); [`FakeApiServer::expire_watches`] ends open
//! watches with `410 Gone` ("too old resource version") so the client must LIST again;
//! [`FakeApiServer::fail_lists`] makes the next LISTs answer 500.
//!
//! To run the real bootstrapper against it from another test: start it, then either write a
//! kubeconfig with [`FakeApiServer::write_kubeconfig`] and start the `spegel-bootstrapper`
//! binary with `--kubeconfig <file>`, or call [`crate::run()`] in-process with
//! [`FakeApiServer::client`].
//!
//! Test support only: production code must never call it.

mod fake_api;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use fake_api::FakeApiServer;

/// A Node named `name` with one InternalIP, `Ready=True` when `ready` (else `False`).
pub fn node(name: &str, internal_ip: &str, ready: bool) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: internal_ip.to_owned(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: name.to_owned(),
                },
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                reason: Some(
                    if ready {
                        "KubeletReady"
                    } else {
                        "KubeletNotReady"
                    }
                    .to_owned(),
                ),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}
