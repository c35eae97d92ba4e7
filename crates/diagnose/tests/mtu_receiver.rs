//! MTU sizes by the kernel's rules on a synthetic calico-crosssubnet cluster: node-1 and node-3
//! share a subnet, so node-1's packets to node-3's pods are routed unencapsulated at the node's
//! MTU (1500) into a pod veth at the VXLAN MTU (1450), as calico configures every pod. node-3
//! answers an oversized datagram with "fragmentation needed"; TCP never sends one, since the
//! pod's SYN announces an MSS from its own 1450.

use diagnose::synthetic::{cluster, ClusterSize};
use model::diagnosis::{Diagnosis, Verdict};
use model::{CniMode, Finding, FindingCode, Snapshot};
use netstack::packet::Protocol;

fn crosssubnet() -> Snapshot {
    cluster(
        CniMode::CalicoCrosssubnet,
        ClusterSize {
            nodes: 3,
            pods_per_node: 1,
            services: 0,
            endpoints_per_service: 0,
            rules_on_nodes: 0,
        },
    )
}

fn node1_to_pod_on_node3(protocol: Protocol) -> Diagnosis {
    let query = diagnose::Query {
        src: "node/node-1".into(),
        dst: "default/web-3-1".into(),
        protocol,
        dport: 8080,
        sport: 40000,
    };
    diagnose::diagnose(&crosssubnet(), &query).expect("diagnose")
}

fn mtu_findings(d: &Diagnosis) -> Vec<&Finding> {
    d.findings
        .iter()
        .filter(|f| f.code == FindingCode::LinkMtuMismatch)
        .collect()
}

#[test]
fn tcp_from_a_wider_host_into_a_narrower_pod_veth_is_delivered() {
    let d = node1_to_pod_on_node3(Protocol::Tcp);
    assert_eq!(d.verdict, Verdict::Delivered, "{:?}", d.findings);
    assert!(mtu_findings(&d).is_empty(), "{:?}", d.findings);
}

#[test]
fn a_full_size_datagram_from_a_wider_host_is_dropped_at_the_pod_veth() {
    let d = node1_to_pod_on_node3(Protocol::Udp);
    let found = mtu_findings(&d);
    assert_eq!(found.len(), 1, "{found:?}");
    let place = &found[0].place;
    assert_eq!(place.netns.as_deref(), Some("node-3"), "{found:?}");
    let device = place.device.as_deref().unwrap_or_default();
    assert!(device.starts_with("cali"), "{found:?}");
    assert!(found[0].message.contains("(1500 bytes)"), "{found:?}");
}
