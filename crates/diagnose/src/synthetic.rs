//! Synthetic clusters: snapshots built in code, shaped like what `netsleuth collect` reads from a
//! cluster with kube-proxy in iptables mode and each CNI mode the engine knows: flannel host-gw
//! and vxlan, calico BGP, VXLAN, CrossSubnet and IPIP. They back the examples under `examples/`,
//! the golden tests and the scale benchmark (any number of nodes, pods and Services), so the
//! engine can be exercised without a lab.
//!
//! Devices, routes, neighbours and FDB entries are what each plugin programs (the same as
//! `lab::datapath` does in real namespaces). Calico IPIP cannot run here (no ipip module), so
//! its shape is taken from what `ip -d link`, `ip route` and sysctl print on a real calico IPIP
//! node: `tunl0` (ipip, NOARP, MTU 1480), `/26`-style blocks `via NODE dev tunl0 proto bird
//! onlink`, pods at MTU 1480.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec,
    PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::{
    CniMode, KubeProxyMode, NetnsOwner, NetnsRecord, Snapshot, SnapshotSource, SourceKind,
};
use netstack::state::*;

/// Size of a synthetic cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSize {
    pub nodes: usize,
    pub pods_per_node: usize,
    /// Services, each selecting `endpoints_per_service` pods round-robin.
    pub services: usize,
    pub endpoints_per_service: usize,
    /// How many nodes (from node-1 on) carry the full kube-proxy ruleset; the rest carry an
    /// empty one. Real nodes all carry it, but a diagnosis only reads the nodes on its path, and
    /// 1,000 copies of a 100k-rule dump would not fit a benchmark machine's memory.
    pub rules_on_nodes: usize,
}

/// Node `n` (0-based): underlay address 192.168.x.y/16 and pod CIDR 10.(244+hi).lo.0/24.
/// CrossSubnet clusters put even nodes on 192.168.0.0/24 and odd ones on 192.168.1.0/24.
fn node_ip(cni: CniMode, n: usize) -> Ipv4Addr {
    if cni == CniMode::CalicoCrosssubnet {
        return Ipv4Addr::new(192, 168, (n % 2) as u8, (n / 2 + 2) as u8);
    }
    Ipv4Addr::new(192, 168, (n / 250) as u8, (n % 250 + 2) as u8)
}

fn underlay_prefix(cni: CniMode) -> u8 {
    if cni == CniMode::CalicoCrosssubnet {
        24
    } else {
        16
    }
}

/// The underlay gateway of node `n` (outside the snapshot: the default route's next hop).
fn underlay_gateway(cni: CniMode, n: usize) -> Ipv4Addr {
    let o = node_ip(cni, n).octets();
    Ipv4Addr::new(
        o[0],
        o[1],
        if underlay_prefix(cni) == 24 { o[2] } else { 0 },
        1,
    )
}

/// Stable, locally administered VTEP MAC of node `n`.
fn vtep_mac(n: usize) -> String {
    format!("0e:6e:73:6c:{:02x}:{:02x}", (n + 1) / 256, (n + 1) % 256)
}

/// The MAC calico gives every host-side veth.
const CALICO_HOST_VETH_MAC: &str = "ee:ee:ee:ee:ee:ee";
const CALICO_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// 1500 minus VXLAN-over-IPv4's 50 bytes; 1500 minus IPIP's 20.
const VXLAN_MTU: u32 = 1450;
const IPIP_MTU: u32 = 1480;

fn is_calico(cni: CniMode) -> bool {
    !matches!(
        cni,
        CniMode::FlannelHostGw | CniMode::FlannelVxlan | CniMode::Generic
    )
}

/// The vxlan device of the mode: (name, VNI, UDP port).
fn vxlan_device(cni: CniMode) -> Option<(&'static str, u32, u16)> {
    match cni {
        CniMode::FlannelVxlan => Some(("flannel.1", 1, 8472)),
        CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet => Some(("vxlan.calico", 4096, 4789)),
        _ => None,
    }
}

fn pod_mtu(cni: CniMode) -> u32 {
    match cni {
        CniMode::CalicoIpip => IPIP_MTU,
        _ if vxlan_device(cni).is_some() => VXLAN_MTU,
        _ => 1500,
    }
}

/// How node `n` reaches node `m`'s pods in this mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    Direct,
    Vxlan,
    Ipip,
}

fn reach(cni: CniMode, n: usize, m: usize) -> Reach {
    match cni {
        CniMode::FlannelVxlan | CniMode::CalicoVxlan => Reach::Vxlan,
        CniMode::CalicoCrosssubnet if n % 2 != m % 2 => Reach::Vxlan,
        CniMode::CalicoIpip => Reach::Ipip,
        _ => Reach::Direct,
    }
}

fn pod_cidr_base(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, (244 + n / 256) as u8, (n % 256) as u8, 0)
}

fn pod_ip(n: usize, p: usize) -> Ipv4Addr {
    let b = pod_cidr_base(n).octets();
    Ipv4Addr::new(b[0], b[1], b[2], (p + 2) as u8)
}

fn service_ip(s: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 10) as u8)
}

pub fn node_name(n: usize) -> String {
    format!("node-{}", n + 1)
}

pub fn pod_name(n: usize, p: usize) -> String {
    format!("web-{}-{}", n + 1, p + 1)
}

fn link(index: u32, name: &str, kind: LinkKind, mtu: u32) -> Link {
    Link {
        index,
        name: name.into(),
        kind,
        admin_up: true,
        oper_state: if name == "lo" {
            OperState::Unknown
        } else {
            OperState::Up
        },
        mtu,
        mac: None,
        master: None,
        peer: None,
        vxlan: None,
        tunnel: None,
        noarp: name == "lo",
    }
}

fn addr(dev: &str, ip: Ipv4Addr, len: u8) -> Address {
    Address {
        dev: dev.into(),
        address: IpAddr::V4(ip),
        prefix_len: len,
        scope: Scope::Universe,
    }
}

fn route(
    dst: &str,
    kind: RouteType,
    gateway: Option<Ipv4Addr>,
    dev: Option<&str>,
    scope: Scope,
    table: u32,
) -> Route {
    Route {
        table,
        dst: dst.parse().expect("synthetic prefixes are valid"),
        kind,
        gateway: gateway.map(IpAddr::V4),
        dev: dev.map(str::to_string),
        prefsrc: None,
        metric: 0,
        scope,
        protocol: None,
        onlink: false,
        mtu: None,
        nexthops: Vec::new(),
    }
}

fn local_routes(addresses: &[Address]) -> Vec<Route> {
    let mut routes = vec![route(
        "127.0.0.0/8",
        RouteType::Local,
        None,
        Some("lo"),
        Scope::Host,
        table::LOCAL,
    )];
    for a in addresses {
        routes.push(route(
            &format!("{}/32", a.address),
            RouteType::Local,
            None,
            Some(&a.dev),
            Scope::Host,
            table::LOCAL,
        ));
    }
    routes
}

/// Sysctls of a netns: forwarding as given, rp_filter off, ARP answered normally, proxy ARP on
/// `proxy_arp_devices` (calico's host veths), and on nodes br_netfilter loaded with
/// bridge-nf-call-iptables on (kubeadm's preflight insists).
fn sysctls(
    forwarding: bool,
    devices: &[String],
    proxy_arp_devices: &[String],
) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let flag = |on: bool| if on { "1" } else { "0" }.to_string();
    s.insert("net/ipv4/ip_forward".into(), flag(forwarding));
    if forwarding {
        s.insert("net/bridge/bridge-nf-call-iptables".into(), "1".into());
    }
    let all = ["all".to_string(), "default".to_string()];
    for dev in devices.iter().chain(all.iter()) {
        s.insert(format!("net/ipv4/conf/{dev}/forwarding"), flag(forwarding));
        s.insert(format!("net/ipv4/conf/{dev}/rp_filter"), "0".into());
        s.insert(format!("net/ipv4/conf/{dev}/arp_ignore"), "0".into());
        s.insert(format!("net/ipv4/conf/{dev}/arp_filter"), "0".into());
        s.insert(
            format!("net/ipv4/conf/{dev}/proxy_arp"),
            flag(proxy_arp_devices.contains(dev)),
        );
    }
    s
}

/// kube-proxy's iptables rules for the given Services (ClusterIP only), as `iptables-save`
/// prints them.
fn kube_proxy_rules(services: &[(usize, Vec<Ipv4Addr>)]) -> String {
    let mut chains = String::from(":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    let mut rules = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    for (s, endpoints) in services {
        let svc = format!("KUBE-SVC-WEB{s:06}");
        let vip = service_ip(*s);
        let comment = format!("default/web-{s}:http");
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(rules, "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{comment} cluster IP\" -m tcp --dport 80 -j {svc}");
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let sep = format!("KUBE-SEP-W{s:06}E{i:03}");
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let remaining = n - i;
            if remaining > 1 {
                let _ = writeln!(rules, "-A {svc} -m comment --comment \"{comment} -> {ep}:8080\" -m statistic --mode random --probability {:.11} -j {sep}", 1.0 / remaining as f64);
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{comment} -> {ep}:8080\" -j {sep}"
                );
            }
            let _ = writeln!(
                rules,
                "-A {sep} -s {ep}/32 -m comment --comment \"{comment}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(rules, "-A {sep} -p tcp -m comment --comment \"{comment}\" -m tcp -j DNAT --to-destination {ep}:8080");
        }
    }
    format!(
        "*nat\n{chains}{rules}COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"
    )
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

/// A healthy flannel host-gw cluster (see [`cluster`]).
pub fn flannel_host_gw(size: ClusterSize) -> Snapshot {
    cluster(CniMode::FlannelHostGw, size)
}

fn neighbour(dev: &str, ip: Ipv4Addr, mac: &str) -> Neighbour {
    Neighbour {
        dev: dev.into(),
        ip: IpAddr::V4(ip),
        mac: Some(mac.into()),
        state: NeighState::Permanent,
        proxy: false,
    }
}

/// The CNI's devices on node `n` besides lo and eth0: flannel's `cni0` bridge, the vxlan
/// device, calico's `tunl0`; with their addresses.
fn cni_devices(cni: CniMode, n: usize) -> (Vec<Link>, Vec<Address>) {
    let mut links = Vec::new();
    let mut addresses = Vec::new();
    let block = pod_cidr_base(n);
    if !is_calico(cni) {
        links.push(link(3, "cni0", LinkKind::Bridge, pod_mtu(cni)));
        addresses.push(addr("cni0", Ipv4Addr::from(u32::from(block) + 1), 24));
    }
    if let Some((name, vni, port)) = vxlan_device(cni) {
        let mut vxlan = link(4, name, LinkKind::Vxlan, VXLAN_MTU);
        vxlan.mac = Some(vtep_mac(n));
        vxlan.vxlan = Some(VxlanInfo {
            vni,
            local: Some(IpAddr::V4(node_ip(cni, n))),
            remote: None,
            port,
            device: Some("eth0".into()),
            learning: false,
        });
        links.push(vxlan);
        addresses.push(addr(name, block, 32));
    }
    if cni == CniMode::CalicoIpip {
        // `ip -d link show tunl0` on a calico node: ipip any remote any local any, NOARP.
        let mut tunl0 = link(5, "tunl0", LinkKind::Ipip, IPIP_MTU);
        tunl0.noarp = true;
        tunl0.oper_state = OperState::Unknown;
        tunl0.tunnel = Some(TunnelInfo {
            local: None,
            remote: None,
        });
        links.push(tunl0);
        addresses.push(addr("tunl0", block, 32));
    }
    (links, addresses)
}

/// Node `n`'s routes (besides local and connected ones) and the neighbour/FDB entries that go
/// with them, to reach node `m`'s pods.
fn remote_routes(cni: CniMode, n: usize, m: usize, state: &mut NetnsState) {
    let cidr = format!("{}/24", pod_cidr_base(m));
    let proto = is_calico(cni).then(|| "bird".to_string());
    let mut r = match reach(cni, n, m) {
        Reach::Direct => route(
            &cidr,
            RouteType::Unicast,
            Some(node_ip(cni, m)),
            Some("eth0"),
            Scope::Universe,
            table::MAIN,
        ),
        Reach::Ipip => {
            let mut r = route(
                &cidr,
                RouteType::Unicast,
                Some(node_ip(cni, m)),
                Some("tunl0"),
                Scope::Universe,
                table::MAIN,
            );
            r.onlink = true;
            r
        }
        Reach::Vxlan => {
            let (dev, ..) = vxlan_device(cni).expect("vxlan modes have a device");
            let vtep = pod_cidr_base(m);
            state.neighbours.push(neighbour(dev, vtep, &vtep_mac(m)));
            state.fdb.push(FdbEntry {
                dev: dev.into(),
                mac: vtep_mac(m),
                master: None,
                dst: Some(IpAddr::V4(node_ip(cni, m))),
                vni: None,
                vlan: None,
                permanent: true,
            });
            let mut r = route(
                &cidr,
                RouteType::Unicast,
                Some(vtep),
                Some(dev),
                Scope::Universe,
                table::MAIN,
            );
            r.onlink = true;
            r
        }
    };
    r.protocol = proto;
    state.routes.push(r);
}

fn node_annotations(cni: CniMode, n: usize) -> BTreeMap<String, String> {
    let ip = node_ip(cni, n).to_string();
    let block = pod_cidr_base(n).to_string();
    let mut a = BTreeMap::new();
    match cni {
        CniMode::FlannelHostGw | CniMode::FlannelVxlan => {
            let vxlan = cni == CniMode::FlannelVxlan;
            a.insert(
                "flannel.alpha.coreos.com/backend-type".into(),
                if vxlan { "vxlan" } else { "host-gw" }.into(),
            );
            if vxlan {
                a.insert(
                    "flannel.alpha.coreos.com/backend-data".into(),
                    format!("{{\"VNI\":1,\"VtepMAC\":\"{}\"}}", vtep_mac(n)),
                );
            }
            a.insert("flannel.alpha.coreos.com/public-ip".into(), ip);
        }
        CniMode::Generic => {}
        _ => {
            a.insert(
                "projectcalico.org/IPv4Address".into(),
                format!("{ip}/{}", underlay_prefix(cni)),
            );
            match cni {
                CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet => {
                    a.insert("projectcalico.org/IPv4VXLANTunnelAddr".into(), block);
                }
                CniMode::CalicoIpip => {
                    a.insert("projectcalico.org/IPv4IPIPTunnelAddr".into(), block);
                }
                _ => {}
            }
        }
    }
    a
}

/// A healthy cluster of `cni`: every pod has a veth to its node (into `cni0` for flannel, a
/// `cali*` veth with a `/32` route and proxy ARP for calico) and a server on 8080; Service
/// `default/web-S` (port 80 → 8080) selects pods round-robin; `default/web-1-1` on node-1 is
/// the usual source. Only flannel host-gw declares its CNI in `cluster.cni`; the other modes
/// leave it to auto-detection, as a collected snapshot does.
pub fn cluster(cni: CniMode, size: ClusterSize) -> Snapshot {
    let mut snap = Snapshot::new(SnapshotSource {
        kind: SourceKind::Synthetic,
        name: cni.to_string(),
        collected_at: None,
    });
    if cni == CniMode::FlannelHostGw {
        snap.cluster.cni = Some(cni);
        snap.cluster.kube_proxy_mode = Some(KubeProxyMode::Iptables);
    }
    snap.cluster.cluster_cidrs = vec!["10.244.0.0/14".parse().expect("valid")];
    snap.cluster.service_cidrs = vec!["10.96.0.0/12".parse().expect("valid")];

    let total_pods = size.nodes * size.pods_per_node;
    let services: Vec<(usize, Vec<Ipv4Addr>)> = (0..size.services)
        .map(|s| {
            let eps = (0..size.endpoints_per_service.min(total_pods))
                .map(|e| {
                    let k = (s * size.endpoints_per_service + e) % total_pods.max(1);
                    pod_ip(k / size.pods_per_node.max(1), k % size.pods_per_node.max(1))
                })
                .collect();
            (s, eps)
        })
        .collect();
    // Shared: the nodes carrying rules all point at one copy of a dump that may be 16 MB.
    let rules: Arc<str> = kube_proxy_rules(&services).into();
    let no_rules: Arc<str> = kube_proxy_rules(&[]).into();
    let mtu = pod_mtu(cni);

    for n in 0..size.nodes {
        let name = node_name(n);
        let cidr = format!("{}/24", pod_cidr_base(n));
        let (cni_links, cni_addresses) = cni_devices(cni, n);
        let mut links = vec![
            link(1, "lo", LinkKind::Loopback, 65536),
            link(2, "eth0", LinkKind::Device, 1500),
        ];
        links.extend(cni_links);
        let mut addresses = vec![
            addr("lo", Ipv4Addr::LOCALHOST, 8),
            addr("eth0", node_ip(cni, n), underlay_prefix(cni)),
        ];
        addresses.extend(cni_addresses);
        let mut state = NetnsState {
            routes: local_routes(&addresses),
            ..NetnsState::default()
        };
        let underlay = IpNet::new(IpAddr::V4(node_ip(cni, n)), underlay_prefix(cni))
            .expect("valid prefix")
            .trunc();
        state.routes.push(route(
            &underlay.to_string(),
            RouteType::Unicast,
            None,
            Some("eth0"),
            Scope::Link,
            table::MAIN,
        ));
        state.routes.push(route(
            "0.0.0.0/0",
            RouteType::Unicast,
            Some(underlay_gateway(cni, n)),
            Some("eth0"),
            Scope::Universe,
            table::MAIN,
        ));
        if is_calico(cni) {
            let mut blackhole = route(
                &cidr,
                RouteType::Blackhole,
                None,
                None,
                Scope::Universe,
                table::MAIN,
            );
            blackhole.protocol = Some("bird".into());
            state.routes.push(blackhole);
        } else {
            state.routes.push(route(
                &cidr,
                RouteType::Unicast,
                None,
                Some("cni0"),
                Scope::Link,
                table::MAIN,
            ));
        }
        // Every other node's pod CIDR the way the plugin routes it. At scale only the first 64
        // nodes are listed: a diagnosis reads only the nodes on its path.
        for m in 0..size.nodes.min(64) {
            if m != n {
                remote_routes(cni, n, m, &mut state);
            }
        }
        let mut pod_records = Vec::new();
        let mut veths = Vec::new();
        for p in 0..size.pods_per_node {
            let pod = pod_name(n, p);
            let pod_id = format!("{name}/default/{pod}");
            let veth = if is_calico(cni) {
                format!("cali{n:05}x{p:05}")
            } else {
                format!("veth{n}x{p}")
            };
            let mut host_end = link(10 + p as u32, &veth, LinkKind::Veth, mtu);
            host_end.peer = Some(LinkPeer {
                ifindex: 2,
                netns: Some(pod_id.clone()),
                name: Some("eth0".into()),
            });
            if is_calico(cni) {
                host_end.mac = Some(CALICO_HOST_VETH_MAC.into());
                state.routes.push(route(
                    &format!("{}/32", pod_ip(n, p)),
                    RouteType::Unicast,
                    None,
                    Some(&veth),
                    Scope::Link,
                    table::MAIN,
                ));
            } else {
                host_end.master = Some("cni0".into());
            }
            links.push(host_end);
            let mut pod_end = link(2, "eth0", LinkKind::Veth, mtu);
            pod_end.peer = Some(LinkPeer {
                ifindex: 10 + p as u32,
                netns: Some(name.clone()),
                name: Some(veth.clone()),
            });
            veths.push(veth);
            let pod_state = pod_netns_state(cni, n, p, pod_end);
            pod_records.push(NetnsRecord {
                id: pod_id,
                node: name.clone(),
                owner: NetnsOwner::Pod {
                    namespace: "default".into(),
                    name: pod.clone(),
                },
                state: pod_state,
            });
            snap.kubernetes
                .pods
                .push(pod_object(&name, &pod, pod_ip(n, p)));
        }
        let mut devices: Vec<String> = links
            .iter()
            .filter(|l| l.kind != LinkKind::Loopback)
            .map(|l| l.name.clone())
            .collect();
        devices.sort();
        let proxy_arp = if is_calico(cni) { veths } else { Vec::new() };
        state.sysctls = sysctls(true, &devices, &proxy_arp);
        state.links = links;
        state.addresses = addresses;
        state.iptables = Some(IptablesDump {
            backend: IptablesBackend::Nft,
            ipv4: Some(if n < size.rules_on_nodes {
                rules.clone()
            } else {
                no_rules.clone()
            }),
            ipv6: None,
        });
        state.sockets = Some(Vec::new());
        snap.netns.push(NetnsRecord {
            id: name.clone(),
            node: name.clone(),
            owner: NetnsOwner::Host,
            state,
        });
        snap.netns.extend(pod_records);
        snap.kubernetes.nodes.push(Node {
            metadata: ObjectMeta {
                annotations: Some(node_annotations(cni, n)),
                ..meta(None, &name)
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.clone()),
                pod_cidrs: Some(vec![cidr]),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: node_ip(cni, n).to_string(),
                }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        });
    }
    for (s, eps) in &services {
        let svc_name = format!("web-{s}");
        snap.kubernetes.services.push(Service {
            metadata: meta(Some("default"), &svc_name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(service_ip(*s).to_string()),
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        });
        snap.kubernetes.endpoint_slices.push(EndpointSlice {
            address_type: "IPv4".into(),
            metadata: ObjectMeta {
                labels: Some([("kubernetes.io/service-name".to_string(), svc_name.clone())].into()),
                ..meta(Some("default"), &format!("{svc_name}-abcde"))
            },
            endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        });
    }
    snap
}

/// A pod's netns: `eth0` with its address and default route the CNI's IPAM hands out (flannel:
/// `/24` via `cni0`'s `.1`; calico: `/32` via the link-local 169.254.1.1 its host veth
/// answers), and a server on 8080.
fn pod_netns_state(cni: CniMode, n: usize, p: usize, eth0: Link) -> NetnsState {
    let ip = pod_ip(n, p);
    let calico = is_calico(cni);
    let addresses = vec![
        addr("lo", Ipv4Addr::LOCALHOST, 8),
        addr("eth0", ip, if calico { 32 } else { 24 }),
    ];
    let mut routes = local_routes(&addresses);
    let gateway = if calico {
        routes.push(route(
            &format!("{CALICO_GATEWAY}/32"),
            RouteType::Unicast,
            None,
            Some("eth0"),
            Scope::Link,
            table::MAIN,
        ));
        CALICO_GATEWAY
    } else {
        routes.push(route(
            &format!("{}/24", pod_cidr_base(n)),
            RouteType::Unicast,
            None,
            Some("eth0"),
            Scope::Link,
            table::MAIN,
        ));
        Ipv4Addr::from(u32::from(pod_cidr_base(n)) + 1)
    };
    routes.push(route(
        "0.0.0.0/0",
        RouteType::Unicast,
        Some(gateway),
        Some("eth0"),
        Scope::Universe,
        table::MAIN,
    ));
    NetnsState {
        links: vec![link(1, "lo", LinkKind::Loopback, 65536), eth0],
        addresses,
        routes,
        sysctls: sysctls(false, &["eth0".to_string()], &[]),
        iptables: Some(IptablesDump {
            backend: IptablesBackend::Nft,
            ipv4: Some("".into()),
            ipv6: None,
        }),
        sockets: Some(vec![ListeningSocket {
            protocol: 6,
            address: "0.0.0.0".parse().expect("valid"),
            port: 8080,
            dev: None,
            process: Some("server".into()),
        }]),
        ..NetnsState::default()
    }
}

fn pod_object(node: &str, pod: &str, ip: Ipv4Addr) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..meta(Some("default"), pod)
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            containers: vec![Container {
                name: "server".into(),
                ports: Some(vec![ContainerPort {
                    container_port: 8080,
                    name: Some("http".into()),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.to_string()),
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    }
}
