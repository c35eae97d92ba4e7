//! Which namespaces a question needs: for "can SRC reach DST on PORT", the nodes the packet and
//! its reply can touch, so `diagnose --lab` reads those instead of the whole cluster.
//!
//! Deliberately coarse and safe: every namespace of each involved node (its host netns and all
//! its pods), plus every infrastructure namespace (the underlay the nodes talk through). Anything
//! that cannot be placed on a node widens the scope to everything rather than guess.

use std::collections::BTreeSet;
use std::net::IpAddr;

use diagnose::EndpointSpec;
use ipnet::IpNet;
use model::{Inventory, NetnsOwner};

use crate::NetnsFilter;

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
