//! Synthetic clusters: snapshots built in code, shaped like what `netsleuth collect` reads from a
//! flannel host-gw cluster with kube-proxy in iptables mode. They back the examples under
//! `examples/`, the golden tests and the scale benchmark (any number of nodes, pods and
//! Services), so the engine can be exercised without a lab.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

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

/// Node `n` (0-based): underlay address 192.168.x.y and pod CIDR 10.(244+hi).lo.0/24.
fn node_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, (n / 250) as u8, (n % 250 + 2) as u8)
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

fn sysctls(forwarding: bool, devices: &[&str]) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    s.insert(
        "net/ipv4/ip_forward".into(),
        if forwarding { "1" } else { "0" }.into(),
    );
    for dev in devices.iter().chain(["all", "default"].iter()) {
        s.insert(
            format!("net/ipv4/conf/{dev}/forwarding"),
            if forwarding { "1" } else { "0" }.into(),
        );
        s.insert(format!("net/ipv4/conf/{dev}/rp_filter"), "0".into());
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

/// A healthy flannel host-gw cluster: every node has a `cni0` bridge, every pod a veth into it
/// and a server on 8080; Service `default/web-S` (port 80 → 8080) selects pods round-robin;
/// `default/client` on node-1 is the usual source.
pub fn flannel_host_gw(size: ClusterSize) -> Snapshot {
    let mut snap = Snapshot::new(SnapshotSource {
        kind: SourceKind::Synthetic,
        name: "flannel-host-gw".into(),
        collected_at: None,
    });
    snap.cluster.cni = Some(CniMode::FlannelHostGw);
    snap.cluster.kube_proxy_mode = Some(KubeProxyMode::Iptables);
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
    let rules = kube_proxy_rules(&services);

    for n in 0..size.nodes {
        let name = node_name(n);
        let cidr = format!("{}/24", pod_cidr_base(n));
        let gw = Ipv4Addr::from(u32::from(pod_cidr_base(n)) + 1);
        let mut links = vec![
            link(1, "lo", LinkKind::Loopback, 65536),
            link(2, "eth0", LinkKind::Device, 1500),
            link(3, "cni0", LinkKind::Bridge, 1500),
        ];
        let addresses = vec![
            addr("lo", Ipv4Addr::LOCALHOST, 8),
            addr("eth0", node_ip(n), 16),
            addr("cni0", gw, 24),
        ];
        let mut routes = local_routes(&addresses);
        routes.push(route(
            "192.168.0.0/16",
            RouteType::Unicast,
            None,
            Some("eth0"),
            Scope::Link,
            table::MAIN,
        ));
        routes.push(route(
            &cidr,
            RouteType::Unicast,
            None,
            Some("cni0"),
            Scope::Link,
            table::MAIN,
        ));
        // host-gw: every other node's pod CIDR via that node's underlay address. At scale only
        // neighbours are listed; the remaining CIDRs fall back to a summary via node-1.
        for m in 0..size.nodes.min(64) {
            if m != n {
                routes.push(route(
                    &format!("{}/24", pod_cidr_base(m)),
                    RouteType::Unicast,
                    Some(node_ip(m)),
                    Some("eth0"),
                    Scope::Universe,
                    table::MAIN,
                ));
            }
        }
        let mut pod_records = Vec::new();
        for p in 0..size.pods_per_node {
            let pod = pod_name(n, p);
            let veth = format!("veth{n}x{p}");
            let pod_id = format!("{name}/default/{pod}");
            let mut host_end = link(10 + p as u32, &veth, LinkKind::Veth, 1500);
            host_end.master = Some("cni0".into());
            host_end.peer = Some(LinkPeer {
                ifindex: 2,
                netns: Some(pod_id.clone()),
                name: Some("eth0".into()),
            });
            links.push(host_end);
            let mut pod_end = link(2, "eth0", LinkKind::Veth, 1500);
            pod_end.peer = Some(LinkPeer {
                ifindex: 10 + p as u32,
                netns: Some(name.clone()),
                name: Some(veth),
            });
            let pod_addrs = vec![
                addr("lo", Ipv4Addr::LOCALHOST, 8),
                addr("eth0", pod_ip(n, p), 24),
            ];
            let mut pod_routes = local_routes(&pod_addrs);
            pod_routes.push(route(
                &cidr,
                RouteType::Unicast,
                None,
                Some("eth0"),
                Scope::Link,
                table::MAIN,
            ));
            pod_routes.push(route(
                "0.0.0.0/0",
                RouteType::Unicast,
                Some(gw),
                Some("eth0"),
                Scope::Universe,
                table::MAIN,
            ));
            pod_records.push(NetnsRecord {
                id: pod_id,
                node: name.clone(),
                owner: NetnsOwner::Pod {
                    namespace: "default".into(),
                    name: pod.clone(),
                },
                state: NetnsState {
                    links: vec![link(1, "lo", LinkKind::Loopback, 65536), pod_end],
                    addresses: pod_addrs,
                    routes: pod_routes,
                    rules: Vec::new(),
                    sysctls: sysctls(false, &["eth0"]),
                    iptables: Some(IptablesDump {
                        backend: IptablesBackend::Nft,
                        ipv4: Some(String::new()),
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
                },
            });
            snap.kubernetes.pods.push(Pod {
                metadata: ObjectMeta {
                    labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..meta(Some("default"), &pod)
                },
                spec: Some(PodSpec {
                    node_name: Some(name.clone()),
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
                    pod_ip: Some(pod_ip(n, p).to_string()),
                    phase: Some("Running".into()),
                    ..PodStatus::default()
                }),
            });
        }
        snap.netns.push(NetnsRecord {
            id: name.clone(),
            node: name.clone(),
            owner: NetnsOwner::Host,
            state: NetnsState {
                links,
                addresses,
                routes,
                rules: Vec::new(),
                sysctls: sysctls(true, &["eth0", "cni0"]),
                iptables: Some(IptablesDump {
                    backend: IptablesBackend::Nft,
                    ipv4: Some(rules.clone()),
                    ipv6: None,
                }),
                sockets: Some(Vec::new()),
                ..NetnsState::default()
            },
        });
        snap.netns.extend(pod_records);
        snap.kubernetes.nodes.push(Node {
            metadata: ObjectMeta {
                annotations: Some(
                    [
                        (
                            "flannel.alpha.coreos.com/backend-type".to_string(),
                            "host-gw".to_string(),
                        ),
                        (
                            "flannel.alpha.coreos.com/public-ip".to_string(),
                            node_ip(n).to_string(),
                        ),
                    ]
                    .into(),
                ),
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
                    address: node_ip(n).to_string(),
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
