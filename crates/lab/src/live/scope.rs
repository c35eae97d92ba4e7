//! Which namespaces a question needs: for "can SRC reach DST on PORT", the nodes the packet and
//! its reply can touch, so `diagnose --lab` reads those instead of the whole cluster.
//!
//! It lives with the live orchestration rather than in `collect`, because placing a question's
//! endpoints is interpreting them (`diagnose::EndpointSpec`), and the collector decides nothing.
//! It only reads the inventory; it must not read namespaces itself.
//!
//! Deliberately coarse and safe: every namespace of each involved node (its host netns and all
//! its pods), plus every infrastructure namespace (the underlay the nodes talk through). Anything
//! that cannot be placed on a node widens the scope to everything rather than guess.

use std::collections::BTreeSet;
use std::net::IpAddr;

use collect::NetnsFilter;
use diagnose::EndpointSpec;
use ipnet::IpNet;
use model::{Inventory, NetnsOwner};

/// The namespaces to read to answer `src → dst:port`.
pub fn netns_for_query(
    inventory: &Inventory,
    src: &EndpointSpec,
    dst: &EndpointSpec,
    port: u16,
) -> NetnsFilter {
    let mut nodes = BTreeSet::new();
    for (endpoint, is_destination) in [(src, false), (dst, true)] {
        match nodes_of(inventory, endpoint, is_destination.then_some(port)) {
            Some(found) => nodes.extend(found),
            None => return NetnsFilter::All,
        }
    }
    nodes.extend(
        inventory
            .netns
            .iter()
            .filter(|l| matches!(l.owner, NetnsOwner::Infrastructure { .. }))
            .map(|l| l.node.clone()),
    );
    NetnsFilter::Nodes(nodes)
}

/// The nodes an endpoint involves; `None` when it cannot be placed. `node_port` is the query's
/// port when the endpoint is the destination: traffic to a node may be a NodePort, which leads
/// on to the Service's endpoints.
fn nodes_of(
    inventory: &Inventory,
    endpoint: &EndpointSpec,
    node_port: Option<u16>,
) -> Option<BTreeSet<String>> {
    let kube = &inventory.kubernetes;
    match endpoint {
        EndpointSpec::Pod { namespace, name } => {
            let pod = kube.pods.iter().find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })?;
            let node = pod.spec.as_ref()?.node_name.clone()?;
            Some(BTreeSet::from([node]))
        }
        EndpointSpec::Node(name) => {
            let mut nodes = BTreeSet::from([name.clone()]);
            if let Some(port) = node_port {
                nodes.extend(node_port_endpoints(inventory, port));
            }
            Some(nodes)
        }
        EndpointSpec::Service { namespace, name } => {
            Some(service_endpoint_nodes(inventory, namespace, name))
        }
        EndpointSpec::Ip(ip) => nodes_of_ip(inventory, *ip, node_port),
    }
}

fn nodes_of_ip(
    inventory: &Inventory,
    ip: IpAddr,
    node_port: Option<u16>,
) -> Option<BTreeSet<String>> {
    let kube = &inventory.kubernetes;
    let text = ip.to_string();
    if let Some(pod) = kube.pods.iter().find(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|pod_ip| pod_ip == text)
    }) {
        let node = pod.spec.as_ref()?.node_name.clone()?;
        return Some(BTreeSet::from([node]));
    }
    for node in &kube.nodes {
        let name = node.metadata.name.clone()?;
        let has_address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .is_some_and(|addresses| addresses.iter().any(|a| a.address == text));
        if has_address {
            return nodes_of(inventory, &EndpointSpec::Node(name), node_port);
        }
    }
    if let Some(service) = kube.services.iter().find(|s| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref())
            .is_some_and(|cluster_ip| cluster_ip == text)
    }) {
        return Some(service_endpoint_nodes(
            inventory,
            service.metadata.namespace.as_deref().unwrap_or("default"),
            service.metadata.name.as_deref()?,
        ));
    }
    // An address no object has, inside a node's pod range: that node would route it.
    kube.nodes.iter().find_map(|node| {
        let cidr: IpNet = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
        if !cidr.contains(&ip) {
            return None;
        }
        Some(BTreeSet::from([node.metadata.name.clone()?]))
    })
}

/// Nodes that hold an endpoint of the Service (from its EndpointSlices).
fn service_endpoint_nodes(inventory: &Inventory, namespace: &str, name: &str) -> BTreeSet<String> {
    inventory
        .kubernetes
        .endpoint_slices
        .iter()
        .filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|service| service == name)
        })
        .flat_map(|slice| slice.endpoints.iter())
        .filter_map(|endpoint| endpoint.node_name.clone())
        .collect()
}

/// Nodes holding endpoints of every Service that exposes `port` as a NodePort.
fn node_port_endpoints(inventory: &Inventory, port: u16) -> BTreeSet<String> {
    inventory
        .kubernetes
        .services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.ports.as_ref())
                .is_some_and(|ports| ports.iter().any(|p| p.node_port == Some(i32::from(port))))
        })
        .flat_map(|s| {
            service_endpoint_nodes(
                inventory,
                s.metadata.namespace.as_deref().unwrap_or("default"),
                s.metadata.name.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three nodes, a pod on node-1 and node-2, a NodePort Service with its endpoint on node-3,
    /// and the lab's underlay — in the shape the lab writes (`inventory.json`).
    fn inventory() -> Inventory {
        let nodes: Vec<serde_json::Value> = (1..=3)
            .map(|n| {
                serde_json::json!({
                    "metadata": {"name": format!("node-{n}")},
                    "spec": {"podCIDR": format!("10.244.{}.0/24", n - 1)},
                    "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", 10 + n)}]}
                })
            })
            .collect();
        let pods: Vec<serde_json::Value> = (1..=2)
            .map(|n| {
                serde_json::json!({
                    "metadata": {"namespace": "default", "name": format!("pod-{n}")},
                    "spec": {"nodeName": format!("node-{n}"), "containers": []},
                    "status": {"podIP": format!("10.244.{}.2", n - 1)}
                })
            })
            .collect();
        let json = serde_json::json!({
            "source": {"kind": "lab", "name": "t"},
            "kubernetes": {
                "nodes": nodes,
                "pods": pods,
                "services": [{
                    "metadata": {"namespace": "default", "name": "web"},
                    "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80, "nodePort": 30000}]}
                }],
                "endpoint_slices": [{
                    "metadata": {"namespace": "default", "name": "web-x",
                                 "labels": {"kubernetes.io/service-name": "web"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": ["10.244.2.2"], "nodeName": "node-3"}]
                }]
            },
            "netns": [{"id": "underlay", "node": "underlay",
                       "owner": {"kind": "infrastructure", "role": "underlay-bridge"},
                       "path": "/run/netns/x"}]
        });
        serde_json::from_value(json).unwrap()
    }

    fn scope(src: &str, dst: &str, port: u16) -> NetnsFilter {
        netns_for_query(
            &inventory(),
            &src.parse().unwrap(),
            &dst.parse().unwrap(),
            port,
        )
    }

    fn nodes(names: &[&str]) -> NetnsFilter {
        NetnsFilter::Nodes(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn pods_services_and_node_ports_lead_to_their_nodes_plus_the_underlay() {
        let expected = nodes(&["node-1", "node-2", "underlay"]);
        assert_eq!(scope("default/pod-1", "default/pod-2", 8080), expected);
        assert_eq!(scope("10.244.0.2", "10.244.1.2", 8080), expected, "pod IPs");
        assert_eq!(
            scope("default/pod-1", "10.244.1.9", 8080),
            expected,
            "an address in node-2's pod range"
        );
        let to_service = nodes(&["node-1", "node-3", "underlay"]);
        assert_eq!(
            scope("default/pod-1", "service/default/web", 80),
            to_service
        );
        assert_eq!(
            scope("default/pod-1", "10.96.0.11", 80),
            to_service,
            "a ClusterIP"
        );
        assert_eq!(
            scope("node/node-2", "node/node-1", 30000),
            nodes(&["node-1", "node-2", "node-3", "underlay"]),
            "a NodePort leads on to the Service's endpoints"
        );
        assert_eq!(
            scope("node/node-2", "192.168.0.11", 8080),
            nodes(&["node-1", "node-2", "underlay"]),
            "a node IP, no NodePort on that port"
        );
    }

    #[test]
    fn anything_that_cannot_be_placed_means_every_namespace() {
        assert_eq!(scope("default/nope", "default/pod-2", 80), NetnsFilter::All);
        assert_eq!(scope("default/pod-1", "8.8.8.8", 53), NetnsFilter::All);
    }
}
