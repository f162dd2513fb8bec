//! Which Nodes can be bootstrap peers, and the deterministic subset one answer holds.
//!
//! Pure functions over `k8s_openapi` Nodes: no I/O, table-tested.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A Node that can serve as a bootstrap peer: `Ready=True`, not being deleted, with at least
/// one InternalIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNode {
    pub name: String,
    /// InternalIP addresses in the order the Node lists them (dual-stack nodes have two).
    pub addrs: Vec<IpAddr>,
}

impl ReadyNode {
    /// The address the IP-string answer uses: the Node's first InternalIP.
    pub fn primary_addr(&self) -> Option<IpAddr> {
        self.addrs.first().copied()
    }
}

/// The label a Node's zone is read from (set by the cloud provider or the kubelet).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// `Some` when `node` can be a bootstrap peer now.
pub fn ready_node(node: &Node) -> Option<ReadyNode> {
    if node.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ready = node
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    named_node(node)
}

/// The name and InternalIPs of `node` whatever its state (a node asking the bootstrapper
/// is usually not Ready yet); `None` without a name or an InternalIP.
pub fn named_node(node: &Node) -> Option<ReadyNode> {
    let name = node.metadata.name.clone()?;
    let addrs: Vec<IpAddr> = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    if addrs.is_empty() {
        return None;
    }
    Some(ReadyNode { name, addrs })
}

/// The zone label of `node`, if it has one.
pub fn zone_of(node: &Node) -> Option<&str> {
    node.metadata
        .labels
        .as_ref()?
        .get(ZONE_LABEL)
        .map(String::as_str)
}

/// The first `max` nodes by (primary address, name), leaving out the asking node.
///
/// Every caller sees the same order, so answers are stable while the cluster is; leaving out
/// the asker means the first nodes get the next ones instead of themselves.
pub fn choose(
    mut nodes: Vec<ReadyNode>,
    is_asker: impl Fn(&ReadyNode) -> bool,
    max: usize,
) -> Vec<ReadyNode> {
    nodes.sort_by(|a, b| (a.primary_addr(), &a.name).cmp(&(b.primary_addr(), &b.name)));
    nodes
        .into_iter()
        .filter(|node| !is_asker(node))
        .take(max)
        .collect()
}

/// Keeps only what [`ready_node`] and [`zone_of`] read (name, resource version, deletion,
/// the zone label, conditions, addresses): Node objects carry image lists, other labels and
/// managed fields that would otherwise fill the bootstrapper's memory in large clusters.
pub fn slim(node: &mut Node) {
    let metadata = std::mem::take(&mut node.metadata);
    let zone = metadata
        .labels
        .and_then(|mut labels| labels.remove_entry(ZONE_LABEL));
    node.metadata = ObjectMeta {
        name: metadata.name,
        uid: metadata.uid,
        resource_version: metadata.resource_version,
        deletion_timestamp: metadata.deletion_timestamp,
        labels: zone.map(|zone| [zone].into()),
        ..ObjectMeta::default()
    };
    node.spec = None;
    node.status = node.status.take().map(|status| NodeStatus {
        conditions: status.conditions,
        addresses: status.addresses,
        ..NodeStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use k8s_openapi::api::core::v1::{ContainerImage, NodeAddress, NodeCondition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ready(name: &str, addrs: &[&str]) -> ReadyNode {
        ReadyNode {
            name: name.to_owned(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn only_ready_nodes_with_an_internal_ip_are_peers() {
        let mut not_ready = node("not-ready", "10.0.0.2", true);
        not_ready.status.as_mut().unwrap().conditions = Some(vec![NodeCondition {
            type_: "Ready".to_owned(),
            status: "Unknown".to_owned(),
            ..NodeCondition::default()
        }]);
        let mut external_only = node("external", "10.0.0.3", true);
        external_only.status.as_mut().unwrap().addresses = Some(vec![NodeAddress {
            type_: "ExternalIP".to_owned(),
            address: "203.0.113.1".to_owned(),
        }]);
        let mut deleting = node("deleting", "10.0.0.4", true);
        deleting.metadata.deletion_timestamp = Some(
            serde_json::from_value::<Time>(serde_json::json!("2024-01-01T00:00:00Z")).unwrap(),
        );
        let mut garbage_ip = node("garbage", "10.0.0.5", true);
        garbage_ip.status.as_mut().unwrap().addresses = Some(vec![NodeAddress {
            type_: "InternalIP".to_owned(),
            address: "not-an-ip".to_owned(),
        }]);
        let mut dual_stack = node("dual", "10.0.0.6", true);
        dual_stack
            .status
            .as_mut()
            .unwrap()
            .addresses
            .as_mut()
            .unwrap()
            .extend([
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: "dual".to_owned(),
                },
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: "fd00::6".to_owned(),
                },
            ]);

        let cases = [
            (node("a", "10.0.0.1", true), Some(ready("a", &["10.0.0.1"]))),
            (node("b", "10.0.0.1", false), None),
            (not_ready, None),
            (external_only, None),
            (deleting, None),
            (garbage_ip, None),
            (Node::default(), None),
            (dual_stack, Some(ready("dual", &["10.0.0.6", "fd00::6"]))),
        ];
        for (node, want) in cases {
            assert_eq!(ready_node(&node), want, "{:?}", node.metadata.name);
        }
    }

    #[test]
    fn the_subset_is_sorted_by_address_capped_and_leaves_out_the_asker() {
        let nodes = vec![
            ready("c", &["10.0.0.30"]),
            ready("a", &["10.0.0.4"]),
            ready("b", &["10.0.0.100"]),
            ready("d", &["10.0.0.4"]),
        ];
        let names = |chosen: Vec<ReadyNode>| -> Vec<String> {
            chosen.into_iter().map(|n| n.name).collect()
        };
        assert_eq!(names(choose(nodes.clone(), |_| false, 3)), ["a", "d", "c"]);
        assert_eq!(
            names(choose(nodes.clone(), |n| n.name == "a", 3)),
            ["d", "c", "b"]
        );
        assert_eq!(
            names(choose(nodes.clone(), |_| false, 10)),
            ["a", "d", "c", "b"]
        );
        assert_eq!(
            names(choose(nodes.clone(), |_| true, 3)),
            Vec::<String>::new()
        );
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        assert_eq!(choose(shuffled, |_| false, 3), choose(nodes, |_| false, 3));
    }

    #[test]
    fn slimming_keeps_what_readiness_reads_and_drops_image_lists() {
        let mut full = node("a", "10.0.0.1", true);
        full.metadata.resource_version = Some("7".to_owned());
        full.metadata.labels = Some(
            [
                ("team".to_owned(), "z1".to_owned()),
                (ZONE_LABEL.to_owned(), "eu-1a".to_owned()),
            ]
            .into(),
        );
        full.status.as_mut().unwrap().images = Some(vec![ContainerImage {
            names: Some(vec!["registry.example/big:1".to_owned()]),
            size_bytes: Some(1),
        }]);
        let before = ready_node(&full);
        slim(&mut full);
        assert_eq!(ready_node(&full), before);
        assert_eq!(full.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(zone_of(&full), Some("eu-1a"));
        assert_eq!(full.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert!(full.status.unwrap().images.is_none());
    }
}
