//! Golden cases for every CNI mode (flannel vxlan, calico BGP / VXLAN / CrossSubnet / IPIP) and
//! for the path checks on flannel host-gw: each mode healthy, then faults the way they happen on
//! real nodes (a stale VXLAN FDB entry, a pod MTU above the tunnel's, a veth off its bridge,
//! proxy ARP or arp_ignore, a NotReady node, a full conntrack table). Calico IPIP is built in
//! the shape a real calico IPIP node records (the ipip module is absent here, so the lab
//! cannot produce one).

use std::net::IpAddr;

use diagnose::render::{render, Format};
use diagnose::synthetic::{cluster, ClusterSize};
use k8s_openapi::api::core::v1::NodeCondition;
use model::diagnosis::Verdict;
use model::{CniMode, FindingCode, NetnsOwner, NetnsRecord, Snapshot};
use netstack::state::{Address, ConntrackState, Link, LinkKind, LinkPeer, NetnsState, Scope};

use super::{diagnose_tcp, ipv4_rules, netns, Case};

fn three_nodes(cni: CniMode) -> Snapshot {
    cluster(
        cni,
        ClusterSize {
            nodes: 3,
            pods_per_node: 2,
            services: 1,
            endpoints_per_service: 2,
            rules_on_nodes: 3,
        },
    )
}

fn link<'a>(s: &'a mut Snapshot, ns: &str, name: &str) -> &'a mut Link {
    netns(s, ns)
        .links
        .iter_mut()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no {name} in {ns}"))
}

fn set_sysctl(s: &mut Snapshot, ns: &str, key: &str, value: &str) {
    netns(s, ns).sysctls.insert(key.into(), value.into());
}

fn case(
    cni: CniMode,
    name: &'static str,
    snapshot: Snapshot,
    dst: &'static str,
    port: u16,
    cause: Option<(FindingCode, &'static str)>,
) -> Case {
    Case {
        folder: cni.as_str(),
        name,
        snapshot,
        src: "default/web-1-1",
        dst,
        port,
        verdict: if cause.is_some() {
            Verdict::Blocked
        } else {
            Verdict::Delivered
        },
        cause,
    }
}

fn healthy(cni: CniMode, name: &'static str, dst: &'static str, port: u16) -> Case {
    case(cni, name, three_nodes(cni), dst, port, None)
}

/// A fault on the pod → pod path from node-1 to node-2.
fn cross_node(
    cni: CniMode,
    name: &'static str,
    snapshot: Snapshot,
    code: FindingCode,
    netns: &'static str,
) -> Case {
    case(
        cni,
        name,
        snapshot,
        "default/web-2-1",
        8080,
        Some((code, netns)),
    )
}

/// The cluster each mode's faults start from.
fn base(cni: CniMode) -> Snapshot {
    match cni {
        CniMode::FlannelHostGw => super::base(),
        CniMode::Generic => generic_bridge(),
        _ => three_nodes(cni),
    }
}

/// `cross_node` on the mode's [`base`] cluster after `fault` broke it.
fn broken(
    cni: CniMode,
    name: &'static str,
    code: FindingCode,
    netns: &'static str,
    fault: impl FnOnce(&mut Snapshot),
) -> Case {
    let mut snapshot = base(cni);
    fault(&mut snapshot);
    cross_node(cni, name, snapshot, code, netns)
}

/// The two healthy cases of a tunnelled or routed mode: pod to pod across nodes, pod to Service.
fn healthy_pod_and_service(cni: CniMode) -> Vec<Case> {
    vec![
        healthy(
            cni,
            "healthy-pod-to-pod-cross-node",
            "default/web-2-1",
            8080,
        ),
        healthy(cni, "healthy-pod-to-service", "service/default/web-0", 80),
    ]
}

/// node-2's kubelet reports NotReady (the CNI is not ready there).
fn node2_not_ready(cni: CniMode) -> Case {
    broken(
        cni,
        "node-not-ready",
        FindingCode::NodeNotReady,
        "node-2",
        |s| not_ready(s, "node-2"),
    )
}

/// What kubelet reports when the CNI is not ready on the node.
fn not_ready(s: &mut Snapshot, node: &str) {
    let node = s
        .kubernetes
        .nodes
        .iter_mut()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .expect("node");
    let status = node.status.as_mut().expect("status");
    status.conditions = Some(vec![NodeCondition {
        type_: "Ready".into(),
        status: "False".into(),
        reason: Some("KubeletNotReady".into()),
        message: Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized".into()),
        ..NodeCondition::default()
    }]);
}

/// `nf_conntrack_count` at `nf_conntrack_max`, with the drop counters a full table shows.
fn conntrack_full(s: &mut Snapshot, ns: &str) {
    netns(s, ns).conntrack = Some(ConntrackState {
        entries: Vec::new(),
        count: Some(262_144),
        max: Some(262_144),
        stats: [
            ("drop".to_string(), 1834),
            ("early_drop".to_string(), 0),
            ("insert_failed".to_string(), 97),
        ]
        .into(),
    });
}

/// Point the FDB entry for `mac` on `dev` at `dst` (None: delete it).
fn fdb(s: &mut Snapshot, ns: &str, dev: &str, mac: &str, dst: Option<&str>) {
    let state = netns(s, ns);
    match dst {
        Some(dst) => {
            let entry = state
                .fdb
                .iter_mut()
                .find(|e| e.dev == dev && e.mac == mac)
                .expect("fdb entry");
            entry.dst = Some(dst.parse().expect("valid"));
        }
        None => state.fdb.retain(|e| !(e.dev == dev && e.mac == mac)),
    }
}

fn route_of<'a>(s: &'a mut Snapshot, ns: &str, dst: &str) -> &'a mut netstack::state::Route {
    netns(s, ns)
        .routes
        .iter_mut()
        .find(|r| r.dst.to_string() == dst)
        .unwrap_or_else(|| panic!("no route {dst} in {ns}"))
}

/// Every pod and its host veth (and `bridge`) at `mtu`: a CNI config that forgot the tunnel, as
/// every node applies it. Both ends of a TCP connection then announce an MSS above what the
/// tunnel carries (one pod alone would not: the other's MSS keeps TCP below its own MTU).
fn pods_mtu(s: &mut Snapshot, mtu: u32, bridge: Option<&str>) {
    for record in &mut s.netns {
        for l in record.state.links.iter_mut() {
            let resized = match record.owner {
                NetnsOwner::Pod { .. } => l.name == "eth0",
                NetnsOwner::Host => l.kind == LinkKind::Veth || Some(l.name.as_str()) == bridge,
                NetnsOwner::Infrastructure { .. } => false,
            };
            if resized {
                l.mtu = mtu;
            }
        }
    }
}

/// Plug every node's `eth0` into one switch the way the lab's underlay is built: a bridge
/// `br-0` in an infrastructure netns, one veth port `nN` per node (so the ports' own MTUs count).
fn with_underlay_switch(s: &mut Snapshot) {
    let template = netns(s, "node-1").links[1].clone();
    let mut links = vec![Link {
        index: 1,
        name: "br-0".into(),
        kind: LinkKind::Bridge,
        ..template.clone()
    }];
    let nodes: Vec<String> = s
        .kubernetes
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let port = format!("n{}", i + 1);
        let index = 10 + i as u32;
        links.push(Link {
            index,
            name: port.clone(),
            kind: LinkKind::Veth,
            master: Some("br-0".into()),
            peer: Some(LinkPeer {
                ifindex: 2,
                netns: Some(node.clone()),
                name: Some("eth0".into()),
            }),
            ..template.clone()
        });
        let eth0 = link(s, node, "eth0");
        eth0.kind = LinkKind::Veth;
        eth0.peer = Some(LinkPeer {
            ifindex: index,
            netns: Some("underlay".into()),
            name: Some(port),
        });
    }
    s.netns.push(NetnsRecord {
        id: "underlay".into(),
        node: "underlay".into(),
        owner: NetnsOwner::Infrastructure {
            role: "underlay-bridge".into(),
        },
        state: NetnsState {
            links,
            addresses: vec![Address {
                dev: "br-0".into(),
                address: "192.168.0.1".parse().expect("valid"),
                prefix_len: 16,
                scope: Scope::Universe,
            }],
            sysctls: [("net/ipv4/ip_forward".to_string(), "0".to_string())].into(),
            ..NetnsState::default()
        },
    });
}

fn host_gw_path_checks() -> Vec<Case> {
    let cni = CniMode::FlannelHostGw;
    let mut out = Vec::new();

    // Crossing the underlay switch at layer 2: healthy, then node-2's switch port at 1400
    // while node-2's eth0 says 1500 (full-size frames vanish in the switch).
    let mut s = super::base();
    with_underlay_switch(&mut s);
    out.push(case(
        cni,
        "healthy-through-underlay-switch",
        s,
        "default/web-2-1",
        8080,
        None,
    ));
    out.push(broken(
        cni,
        "underlay-port-mtu-below-node",
        FindingCode::LinkMtuMismatch,
        "node-2",
        |s| {
            with_underlay_switch(s);
            link(s, "underlay", "n2").mtu = 1400;
        },
    ));

    // `iptables -t nat -I PREROUTING 1 … -j DNAT` by hand on node-2: the pod's port is rewritten
    // to one nothing listens on.
    out.push(broken(cni, "hand-added-dnat-to-closed-port", FindingCode::NatWrong, "node-2", |s| {
        let rules = ipv4_rules(s, "node-2");
        *rules = rules.replacen(
            "-A PREROUTING ",
            "-A PREROUTING -d 10.244.1.2/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.2:9999\n-A PREROUTING ",
            1,
        ).into();
    }));

    out.push(node2_not_ready(cni));

    out.push(broken(
        cni,
        "conntrack-full",
        FindingCode::ConntrackFull,
        "node-2",
        |s| {
            conntrack_full(s, "node-2");
        },
    ));

    // The Service's endpoints are web-1-1 (the client itself) and web-1-2, both on node-1's
    // bridge: web-1-2's reply is bridged straight back.
    let mut s = super::base();
    set_sysctl(&mut s, "node-1", "net/bridge/bridge-nf-call-iptables", "0");
    out.push(case(
        cni,
        "bridge-nf-call-iptables-off",
        s,
        "service/default/web-0",
        80,
        Some((FindingCode::SysctlBridgeNfCall, "node-1")),
    ));

    out.push(case(
        cni,
        "kube-dns-without-endpoints",
        kube_dns_without_endpoints(),
        "service/kube-system/kube-dns",
        53,
        Some((FindingCode::ServiceNoEndpoints, "")),
    ));
    out
}

/// The cluster's only Service turned into CoreDNS's (`kube-system/kube-dns`, TCP 53) with every
/// CoreDNS pod gone: its EndpointSlice is empty while kube-proxy's rules are not yet synced.
fn kube_dns_without_endpoints() -> Snapshot {
    let mut s = super::base();
    let svc = &mut s.kubernetes.services[0];
    svc.metadata.namespace = Some("kube-system".into());
    svc.metadata.name = Some("kube-dns".into());
    let spec = svc.spec.as_mut().expect("spec");
    spec.ports.as_mut().expect("ports")[0].port = 53;
    s.kubernetes.endpoint_slices.clear();
    for record in s.netns.iter_mut() {
        if let Some(rules) = record.state.iptables.as_mut().and_then(|d| d.ipv4.as_mut()) {
            *rules = rules.replace("--dport 80 ", "--dport 53 ").into();
        }
    }
    s
}

fn flannel_vxlan() -> Vec<Case> {
    let cni = CniMode::FlannelVxlan;
    let node2_vtep = "0e:6e:73:6c:00:02";
    let mut out = healthy_pod_and_service(cni);
    out.push(broken(
        cni,
        "vxlan-fdb-wrong-vtep",
        FindingCode::VxlanFdbWrong,
        "node-1",
        |s| {
            fdb(s, "node-1", "flannel.1", node2_vtep, Some("192.168.0.4"));
        },
    ));

    out.push(broken(
        cni,
        "vxlan-fdb-missing",
        FindingCode::VxlanFdbWrong,
        "node-1",
        |s| {
            fdb(s, "node-1", "flannel.1", node2_vtep, None);
        },
    ));

    out.push(broken(
        cni,
        "vxlan-neighbour-missing",
        FindingCode::NeighbourMissing,
        "node-1",
        |s| {
            let vtep: IpAddr = "10.244.1.0".parse().expect("valid");
            netns(s, "node-1").neighbours.retain(|n| n.ip != vtep);
        },
    ));

    out.push(broken(
        cni,
        "pod-mtu-above-vxlan",
        FindingCode::LinkMtuMismatch,
        "node-1",
        |s| {
            pods_mtu(s, 1500, Some("cni0"));
        },
    ));

    out.push(broken(
        cni,
        "veth-not-on-bridge",
        FindingCode::LinkWrongMaster,
        "node-2",
        |s| {
            link(s, "node-2", "veth1x0").master = None;
        },
    ));
    out
}

fn calico_bgp() -> Vec<Case> {
    let cni = CniMode::CalicoBgp;
    let mut out = healthy_pod_and_service(cni);
    // bird learnt node-2's block from the wrong peer: it now points at node-3.
    out.push(broken(
        cni,
        "route-wrong-gateway",
        FindingCode::RouteWrong,
        "node-1",
        |s| {
            route_of(s, "node-1", "10.244.1.0/24").gateway =
                Some("192.168.0.4".parse().expect("valid"));
        },
    ));

    out.push(broken(
        cni,
        "proxy-arp-off",
        FindingCode::SysctlArp,
        "node-1",
        |s| {
            set_sysctl(s, "node-1", "net/ipv4/conf/cali00000x00000/proxy_arp", "0");
        },
    ));

    out.push(node2_not_ready(cni));

    // `ip link set caliX down`: the kernel flushes the /32 with it; the block's blackhole stays.
    out.push(broken(
        cni,
        "host-veth-down",
        FindingCode::LinkDown,
        "node-2",
        |s| {
            link(s, "node-2", "cali00001x00000").admin_up = false;
            netns(s, "node-2")
                .routes
                .retain(|r| r.dev.as_deref() != Some("cali00001x00000"));
        },
    ));
    out
}

fn calico_vxlan() -> Vec<Case> {
    let cni = CniMode::CalicoVxlan;
    let mut out = healthy_pod_and_service(cni);
    out.push(broken(
        cni,
        "vxlan-fdb-wrong-vtep",
        FindingCode::VxlanFdbWrong,
        "node-1",
        |s| {
            fdb(
                s,
                "node-1",
                "vxlan.calico",
                "0e:6e:73:6c:00:02",
                Some("192.168.0.4"),
            );
        },
    ));

    out.push(broken(
        cni,
        "underlay-mtu-below-vxlan",
        FindingCode::LinkMtuMismatch,
        "node-2",
        |s| {
            link(s, "node-2", "eth0").mtu = 1400;
        },
    ));

    out.push(broken(
        cni,
        "conntrack-full",
        FindingCode::ConntrackFull,
        "node-2",
        |s| {
            conntrack_full(s, "node-2");
        },
    ));
    out
}

fn calico_crosssubnet() -> Vec<Case> {
    let cni = CniMode::CalicoCrosssubnet;
    // node-1 and node-3 share 192.168.0.0/24; node-2 is on 192.168.1.0/24.
    let mut out = vec![
        healthy(cni, "healthy-same-subnet-direct", "default/web-3-1", 8080),
        healthy(cni, "healthy-across-subnets-vxlan", "default/web-2-1", 8080),
    ];
    out.push(broken(
        cni,
        "route-missing-across-subnets",
        FindingCode::RouteMissing,
        "node-1",
        |s| {
            netns(s, "node-1")
                .routes
                .retain(|r| r.dst.to_string() != "10.244.1.0/24");
        },
    ));

    let mut s = three_nodes(cni);
    for key in [
        "net/ipv4/conf/all/arp_ignore",
        "net/ipv4/conf/eth0/arp_ignore",
    ] {
        set_sysctl(&mut s, "node-3/default/web-3-1", key, "8");
    }
    out.push(case(
        cni,
        "arp-ignore-on-destination-pod",
        s,
        "default/web-3-1",
        8080,
        Some((FindingCode::SysctlArp, "node-3/default/web-3-1")),
    ));
    out
}

fn calico_ipip() -> Vec<Case> {
    let cni = CniMode::CalicoIpip;
    let mut out = healthy_pod_and_service(cni);
    out.push(broken(
        cni,
        "pod-mtu-above-ipip",
        FindingCode::LinkMtuMismatch,
        "node-1",
        |s| {
            pods_mtu(s, 1500, None);
        },
    ));

    // Someone "fixed" the route by hand without the tunnel: IPIP pools need tunl0.
    out.push(broken(
        cni,
        "route-bypasses-tunnel",
        FindingCode::RouteWrong,
        "node-1",
        |s| {
            let r = route_of(s, "node-1", "10.244.1.0/24");
            r.dev = Some("eth0".into());
            r.onlink = false;
            r.protocol = None;
        },
    ));
    out
}

/// A bridge CNI netsleuth does not know (flannel host-gw's layout without its annotations): the
/// FIB alone decides, so a broken return route shows where conntrack meets it.
fn generic_bridge() -> Snapshot {
    let mut s = three_nodes(CniMode::FlannelHostGw);
    s.cluster.cni = None;
    for node in &mut s.kubernetes.nodes {
        node.metadata.annotations = None;
    }
    s
}

fn generic() -> Vec<Case> {
    let cni = CniMode::Generic;
    let mut out = vec![case(
        cni,
        "healthy-pod-to-pod-cross-node",
        generic_bridge(),
        "default/web-2-1",
        8080,
        None,
    )];
    // node-2 returns node-1's pods through node-3, whose conntrack never saw the SYN.
    out.push(broken(
        cni,
        "asymmetric-return-conntrack-invalid",
        FindingCode::ConntrackInvalid,
        "node-3",
        |s| {
            route_of(s, "node-2", "10.244.0.0/24").gateway =
                Some("192.168.0.4".parse().expect("valid"));
        },
    ));
    out
}

pub fn cases() -> Vec<Case> {
    let mut out = host_gw_path_checks();
    out.extend(generic());
    out.extend(flannel_vxlan());
    out.extend(calico_bgp());
    out.extend(calico_vxlan());
    out.extend(calico_crosssubnet());
    out.extend(calico_ipip());
    out
}

#[test]
fn a_blocked_cluster_dns_lookup_is_reported_on_top_of_its_cause() {
    let d = diagnose_tcp(
        &kube_dns_without_endpoints(),
        "default/web-1-1",
        "service/kube-system/kube-dns",
        53,
    );
    let codes: Vec<FindingCode> = d.findings.iter().map(|f| f.code).collect();
    assert_eq!(
        codes.first(),
        Some(&FindingCode::ServiceNoEndpoints),
        "{}",
        render(&d, Format::Text)
    );
    assert!(
        codes.contains(&FindingCode::DnsUnreachable),
        "{}",
        render(&d, Format::Text)
    );
}

#[test]
fn healthy_dns_lookups_raise_no_dns_finding() {
    let mut s = kube_dns_without_endpoints();
    s.kubernetes.endpoint_slices = super::base().kubernetes.endpoint_slices;
    for slice in &mut s.kubernetes.endpoint_slices {
        slice.metadata.namespace = Some("kube-system".into());
        slice.metadata.labels = Some(
            [(
                "kubernetes.io/service-name".to_string(),
                "kube-dns".to_string(),
            )]
            .into(),
        );
    }
    let d = diagnose_tcp(&s, "default/web-1-1", "service/kube-system/kube-dns", 53);
    assert_eq!(
        d.verdict,
        Verdict::Delivered,
        "{}",
        render(&d, Format::Text)
    );
}
