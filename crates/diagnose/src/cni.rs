//! What the CNI and kube-proxy are, and what the CNI should have programmed on each node.
//!
//! Detection reads only the snapshot: what it declares (`cluster.cni`), the Node annotations
//! flannel and calico write, the devices they create (`flannel.1`, `cni0`, `vxlan.calico`,
//! `tunl0`, `cali*`), and kube-proxy's ConfigMap or rules. Intent is the per-plugin rule for how
//! a node reaches every pod: flannel host-gw routes a remote podCIDR via the node's address,
//! flannel vxlan via `flannel.1` onlink to the remote VTEP (with a permanent neighbour and FDB
//! entry), calico routes blocks via the node (BGP), `tunl0` (IPIP) or `vxlan.calico`, and its
//! own pods by `/32` to their `cali*` veth. The generic mode has no intent: the FIB alone decides.
//!
//! Pure: nothing here changes the snapshot or walks packets; the walker asks.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use model::diagnosis::DatapathSummary;
use model::{
    CniMode, Evidence, Finding, FindingCode, KubeProxyMode, Level, NetnsOwner, NetnsRecord, Owner,
    Snapshot,
};
use netstack::fib::{RouteDecision, RouteOutcome};
use netstack::packet::Packet;
use netstack::state::{LinkKind, NetnsState, RouteType};

use crate::endpoint::{describe, internal_ip, Index};
use crate::walk::finding;

const FLANNEL_BACKEND: &str = "flannel.alpha.coreos.com/backend-type";
const FLANNEL_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
const FLANNEL_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
const CALICO_ADDRESS: &str = "projectcalico.org/IPv4Address";
const CALICO_VXLAN_ADDR: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
const CALICO_IPIP_ADDR: &str = "projectcalico.org/IPv4IPIPTunnelAddr";

pub const FLANNEL_VXLAN_DEV: &str = "flannel.1";
pub const FLANNEL_BRIDGE: &str = "cni0";
pub const CALICO_VXLAN_DEV: &str = "vxlan.calico";
pub const CALICO_IPIP_DEV: &str = "tunl0";

/// A detected value and the evidence for it, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected<T> {
    pub value: T,
    pub from: String,
}

fn detected<T>(value: T, from: impl Into<String>) -> Detected<T> {
    Detected {
        value,
        from: from.into(),
    }
}

pub fn kube_proxy_name(mode: KubeProxyMode) -> &'static str {
    match mode {
        KubeProxyMode::Iptables => "iptables",
        KubeProxyMode::Ipvs => "ipvs",
        KubeProxyMode::Nftables => "nftables",
        KubeProxyMode::None => "none",
    }
}

fn annotation<'s>(node: &'s Node, key: &str) -> Option<&'s str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn host_netns(snapshot: &Snapshot) -> impl Iterator<Item = &NetnsRecord> {
    snapshot
        .netns
        .iter()
        .filter(|n| n.owner == NetnsOwner::Host)
}

/// Routes to other nodes' pod networks in a host netns, by the device they leave on.
fn pod_route_devices(state: &NetnsState, cluster: &[IpNet]) -> Vec<String> {
    state
        .routes
        .iter()
        .filter(|r| r.kind == RouteType::Unicast && r.gateway.is_some())
        .filter(|r| cluster.iter().any(|c| c.contains(&r.dst)))
        .filter_map(|r| r.dev.clone())
        .collect()
}

/// The CNI and its mode: declared in the snapshot, else from Node annotations, else from the
/// devices the plugins create, else generic.
pub fn detect_cni(snapshot: &Snapshot) -> Detected<CniMode> {
    if let Some(cni) = snapshot.cluster.cni {
        return detected(cni, "declared in the snapshot (cluster.cni)");
    }
    for node in &snapshot.kubernetes.nodes {
        let name = node.metadata.name.as_deref().unwrap_or("?");
        match annotation(node, FLANNEL_BACKEND) {
            Some("host-gw") => {
                return detected(
                    CniMode::FlannelHostGw,
                    format!("node {name} annotation {FLANNEL_BACKEND}=host-gw"),
                );
            }
            Some("vxlan") => {
                return detected(
                    CniMode::FlannelVxlan,
                    format!("node {name} annotation {FLANNEL_BACKEND}=vxlan"),
                );
            }
            _ => {}
        }
        if annotation(node, CALICO_IPIP_ADDR).is_some() {
            return detected(
                CniMode::CalicoIpip,
                format!("node {name} annotation {CALICO_IPIP_ADDR}"),
            );
        }
        if annotation(node, CALICO_VXLAN_ADDR).is_some() {
            // CrossSubnet shows as both kinds of routes: direct inside a subnet, vxlan across.
            let cluster = cluster_cidrs(snapshot);
            let crosses = host_netns(snapshot).any(|r| {
                let devs = pod_route_devices(&r.state, &cluster);
                devs.iter().any(|d| d == CALICO_VXLAN_DEV)
                    && devs.iter().any(|d| d != CALICO_VXLAN_DEV)
            });
            return if crosses {
                detected(
                    CniMode::CalicoCrosssubnet,
                    format!(
                        "node {name} annotation {CALICO_VXLAN_ADDR}, and pod routes both via {CALICO_VXLAN_DEV} and direct"
                    ),
                )
            } else {
                detected(
                    CniMode::CalicoVxlan,
                    format!("node {name} annotation {CALICO_VXLAN_ADDR}"),
                )
            };
        }
        if annotation(node, CALICO_ADDRESS).is_some() {
            return detected(
                CniMode::CalicoBgp,
                format!("node {name} annotation {CALICO_ADDRESS} without a tunnel address"),
            );
        }
    }
    for record in host_netns(snapshot) {
        let has = |name: &str| record.state.link(name).is_some();
        let on = &record.id;
        if has(FLANNEL_VXLAN_DEV) {
            return detected(
                CniMode::FlannelVxlan,
                format!("device {FLANNEL_VXLAN_DEV} on {on}"),
            );
        }
        if has(CALICO_VXLAN_DEV) {
            return detected(
                CniMode::CalicoVxlan,
                format!("device {CALICO_VXLAN_DEV} on {on}"),
            );
        }
        let ipip_routes = record
            .state
            .routes
            .iter()
            .any(|r| r.dev.as_deref() == Some(CALICO_IPIP_DEV) && r.gateway.is_some());
        if ipip_routes {
            return detected(
                CniMode::CalicoIpip,
                format!("routes via {CALICO_IPIP_DEV} on {on}"),
            );
        }
        if record
            .state
            .links
            .iter()
            .any(|l| l.kind == LinkKind::Veth && l.name.starts_with("cali"))
        {
            return detected(CniMode::CalicoBgp, format!("cali* veths on {on}"));
        }
    }
    detected(
        CniMode::Generic,
        "no flannel or calico annotation or device: forwarding follows the FIB only",
    )
}

/// kube-proxy's mode: declared, else its ConfigMap, else what it left in the host netns.
pub fn detect_kube_proxy(snapshot: &Snapshot) -> Detected<KubeProxyMode> {
    if let Some(mode) = snapshot.cluster.kube_proxy_mode {
        return detected(mode, "declared in the snapshot (cluster.kube_proxy_mode)");
    }
    let config = snapshot.kubernetes.config_maps.iter().find(|c| {
        c.metadata.namespace.as_deref() == Some("kube-system")
            && c.metadata.name.as_deref() == Some("kube-proxy")
    });
    if let Some(conf) = config.and_then(|c| c.data.as_ref()?.get("config.conf")) {
        // KubeProxyConfiguration YAML: a top-level `mode:` line; empty means iptables.
        let mode = conf
            .lines()
            .find_map(|l| l.strip_prefix("mode:"))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
            .unwrap_or("");
        let value = match mode {
            "ipvs" => KubeProxyMode::Ipvs,
            "nftables" => KubeProxyMode::Nftables,
            _ => KubeProxyMode::Iptables,
        };
        return detected(
            value,
            format!("ConfigMap kube-system/kube-proxy config.conf mode: {mode:?}"),
        );
    }
    for record in host_netns(snapshot) {
        let on = &record.id;
        let state = &record.state;
        if state.link("kube-ipvs0").is_some()
            || state.ipvs.as_deref().is_some_and(|t| t.contains("->"))
        {
            return detected(
                KubeProxyMode::Ipvs,
                format!("kube-ipvs0 / IPVS services on {on}"),
            );
        }
        if state
            .nftables
            .as_deref()
            .is_some_and(|t| t.contains("\"kube-proxy\""))
        {
            return detected(
                KubeProxyMode::Nftables,
                format!("nft table kube-proxy on {on}"),
            );
        }
        let iptables = state.iptables.as_ref().and_then(|d| d.ipv4.as_deref());
        if iptables.is_some_and(|t| t.contains(":KUBE-SERVICES")) {
            return detected(
                KubeProxyMode::Iptables,
                format!("iptables chain KUBE-SERVICES on {on}"),
            );
        }
    }
    detected(
        KubeProxyMode::None,
        "no kube-proxy ConfigMap, rules or IPVS services in the snapshot",
    )
}

fn cluster_cidrs(snapshot: &Snapshot) -> Vec<IpNet> {
    if !snapshot.cluster.cluster_cidrs.is_empty() {
        return snapshot.cluster.cluster_cidrs.clone();
    }
    // Without --cluster-cidr the union of node podCIDRs stands in for it.
    snapshot
        .kubernetes
        .nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidrs.as_ref())
        .flatten()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// What the CNI tells about one node.
#[derive(Debug, Clone)]
struct NodeIntent {
    name: String,
    ip: Option<IpAddr>,
    pod_cidrs: Vec<IpNet>,
    /// The overlay address peers route to (flannel: podCIDR network address; calico: the
    /// tunnel address annotation).
    vtep_ip: Option<IpAddr>,
    vtep_mac: Option<String>,
}

/// Where a route should send traffic for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHopIntent {
    /// On-link on a local device (own pods).
    Local { dev: String },
    /// Through a gateway on a device.
    Via {
        gateway: IpAddr,
        dev: String,
        onlink: bool,
    },
}

/// The route the CNI should have programmed, ready to paste after `ip route replace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRoute {
    pub prefix: IpNet,
    pub next: NextHopIntent,
}

impl fmt::Display for ExpectedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.next {
            NextHopIntent::Local { dev } => write!(f, "{} dev {dev} scope link", self.prefix),
            NextHopIntent::Via {
                gateway,
                dev,
                onlink,
            } => {
                write!(f, "{} via {gateway} dev {dev}", self.prefix)?;
                if *onlink {
                    f.write_str(" onlink")?;
                }
                Ok(())
            }
        }
    }
}

/// The VTEP a vxlan device must reach for a remote node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepIntent {
    pub node: String,
    pub node_ip: IpAddr,
    pub vtep_ip: Option<IpAddr>,
    pub mac: Option<String>,
}

/// The detected datapath and the intent derived from it. A node's intent is derived the first
/// time the walk asks about that node (a diagnosis meets a handful of a thousand nodes).
pub struct Datapath<'a> {
    index: &'a Index<'a>,
    pub cni: Detected<CniMode>,
    pub kube_proxy: Detected<KubeProxyMode>,
    /// The cluster's pod network, read on first use.
    cluster: OnceCell<Vec<IpNet>>,
    /// What the CNI tells about the nodes asked about so far, by name.
    nodes: RefCell<HashMap<String, Option<Rc<NodeIntent>>>>,
}

fn pod_cidrs_of(node: &Node) -> Vec<IpNet> {
    node.spec
        .as_ref()
        .and_then(|s| {
            s.pod_cidrs
                .clone()
                .or_else(|| s.pod_cidr.clone().map(|c| vec![c]))
        })
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The overlay address peers route to: flannel's podCIDR network address, calico's tunnel
/// address annotation.
fn vtep_ip_of(cni: CniMode, node: &Node, pod_cidrs: &[IpNet]) -> Option<IpAddr> {
    match cni {
        CniMode::FlannelVxlan => pod_cidrs.first().map(IpNet::network),
        CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet => {
            annotation(node, CALICO_VXLAN_ADDR).and_then(|v| v.parse().ok())
        }
        _ => None,
    }
}

impl<'a> Datapath<'a> {
    pub fn new(index: &'a Index<'a>) -> Datapath<'a> {
        let snapshot = index.snapshot;
        Datapath {
            index,
            cni: detect_cni(snapshot),
            kube_proxy: detect_kube_proxy(snapshot),
            cluster: OnceCell::new(),
            nodes: RefCell::default(),
        }
    }

    /// What the CNI tells about `node`.
    fn intent_of(&self, node: &Node) -> NodeIntent {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ip = annotation(node, FLANNEL_PUBLIC_IP)
            .and_then(|v| v.parse().ok())
            .or_else(|| {
                annotation(node, CALICO_ADDRESS).and_then(|v| v.split('/').next()?.parse().ok())
            })
            .or(internal_ip(node));
        let pod_cidrs = pod_cidrs_of(node);
        let vtep_ip = vtep_ip_of(self.cni.value, node, &pod_cidrs);
        // The VTEP MAC: the node's own device in the snapshot is the truth; flannel also
        // publishes it in backend-data.
        let device_mac = vxlan_device(self.cni.value)
            .and_then(|dev| self.index.host_netns(&name)?.state.link(dev)?.mac.clone());
        let annotated_mac = annotation(node, FLANNEL_BACKEND_DATA)
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|v| v.get("VtepMAC")?.as_str().map(str::to_string));
        NodeIntent {
            name,
            ip,
            pod_cidrs,
            vtep_ip,
            vtep_mac: device_mac.or(annotated_mac),
        }
    }

    fn cluster(&self) -> &[IpNet] {
        self.cluster
            .get_or_init(|| cluster_cidrs(self.index.snapshot))
    }

    pub fn summary(&self) -> DatapathSummary {
        DatapathSummary {
            cni: self.cni.value,
            cni_detected_from: self.cni.from.clone(),
            kube_proxy_mode: self.kube_proxy.value,
            kube_proxy_detected_from: self.kube_proxy.from.clone(),
        }
    }

    fn node(&self, name: &str) -> Option<Rc<NodeIntent>> {
        if let Some(found) = self.nodes.borrow().get(name) {
            return found.clone();
        }
        let found = self
            .index
            .snapshot
            .kubernetes
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .map(|n| Rc::new(self.intent_of(n)));
        self.nodes
            .borrow_mut()
            .insert(name.to_string(), found.clone());
        found
    }

    /// The first node (in snapshot order) for which `is_it` holds.
    fn find_node(&self, is_it: impl Fn(&Node) -> bool) -> Option<Rc<NodeIntent>> {
        let node = self
            .index
            .snapshot
            .kubernetes
            .nodes
            .iter()
            .find(|n| is_it(n))?;
        self.node(node.metadata.name.as_deref().unwrap_or_default())
    }

    /// The node whose pod holds `ip`: the pod's nodeName, else the podCIDR containing it.
    fn node_of_pod_ip(&self, ip: IpAddr) -> Option<Rc<NodeIntent>> {
        match self.pod_node_name(ip) {
            Some(name) => self.node(name),
            None => self.find_node(|n| pod_cidrs_of(n).iter().any(|c| c.contains(&ip))),
        }
    }

    /// Whether `ip` is in the pod network.
    pub fn is_pod_ip(&self, ip: IpAddr) -> bool {
        self.pod_node_name(ip).is_some() || self.cluster().iter().any(|c| c.contains(&ip))
    }

    /// The nodeName of the (non-hostNetwork) pod holding `ip`.
    fn pod_node_name(&self, ip: IpAddr) -> Option<&'a str> {
        self.index.pod_at(ip)?.spec.as_ref()?.node_name.as_deref()
    }

    /// The bridge pod veths must be enslaved to, for bridge-based plugins.
    pub fn pod_bridge(&self) -> Option<&'static str> {
        matches!(
            self.cni.value,
            CniMode::FlannelHostGw | CniMode::FlannelVxlan
        )
        .then_some(FLANNEL_BRIDGE)
    }

    /// The device holding `node`'s underlay address (eth0 on most nodes).
    fn underlay_dev(&self, node: &NodeIntent) -> String {
        let ip = node.ip;
        self.index
            .host_netns(&node.name)
            .and_then(|r| r.state.addresses.iter().find(|a| Some(a.address) == ip))
            .map(|a| a.dev.clone())
            .unwrap_or_else(|| "eth0".to_string())
    }

    /// Whether two nodes share an underlay subnet (calico CrossSubnet routes those directly).
    fn same_subnet(&self, local: &NodeIntent, remote: &NodeIntent) -> bool {
        let Some(remote_ip) = remote.ip else {
            return false;
        };
        self.index.host_netns(&local.name).is_some_and(|r| {
            r.state.addresses.iter().any(|a| {
                Some(a.address) == local.ip
                    && IpNet::new(a.address, a.prefix_len).is_ok_and(|n| n.contains(&remote_ip))
            })
        })
    }

    /// The route `node`'s CNI should have for pod address `dst`.
    pub fn expected_route(&self, node: &str, dst: IpAddr) -> Option<ExpectedRoute> {
        let local = &*self.node(node)?;
        let remote = &*self.node_of_pod_ip(dst)?;
        let remote_cidr = remote.pod_cidrs.iter().find(|c| c.contains(&dst)).copied();
        let cni = self.cni.value;
        if remote.name == local.name {
            return match cni {
                CniMode::FlannelHostGw | CniMode::FlannelVxlan => Some(ExpectedRoute {
                    prefix: remote_cidr?,
                    next: NextHopIntent::Local {
                        dev: FLANNEL_BRIDGE.into(),
                    },
                }),
                CniMode::Generic => None,
                _ => Some(ExpectedRoute {
                    prefix: IpNet::from(dst),
                    next: NextHopIntent::Local {
                        dev: self.pod_host_veth(node, dst)?,
                    },
                }),
            };
        }
        let prefix = remote_cidr.unwrap_or_else(|| IpNet::from(dst));
        let direct = || {
            Some(NextHopIntent::Via {
                gateway: remote.ip?,
                dev: self.underlay_dev(local),
                onlink: false,
            })
        };
        let vxlan = |dev: &str| {
            Some(NextHopIntent::Via {
                gateway: remote.vtep_ip?,
                dev: dev.into(),
                onlink: true,
            })
        };
        let next = match cni {
            CniMode::FlannelHostGw | CniMode::CalicoBgp => direct()?,
            CniMode::FlannelVxlan => vxlan(FLANNEL_VXLAN_DEV)?,
            CniMode::CalicoVxlan => vxlan(CALICO_VXLAN_DEV)?,
            CniMode::CalicoIpip => NextHopIntent::Via {
                gateway: remote.ip?,
                dev: CALICO_IPIP_DEV.into(),
                onlink: true,
            },
            CniMode::CalicoCrosssubnet if self.same_subnet(local, remote) => direct()?,
            CniMode::CalicoCrosssubnet => vxlan(CALICO_VXLAN_DEV)?,
            CniMode::Generic => return None,
        };
        Some(ExpectedRoute { prefix, next })
    }

    /// Calico's host-side veth of the pod holding `ip` on `node`.
    fn pod_host_veth(&self, node: &str, ip: IpAddr) -> Option<String> {
        let pod_ns = self
            .index
            .owner_of(ip)
            .filter(|r| matches!(r.owner, NetnsOwner::Pod { .. }) && r.node == node)?;
        let host = self.index.host_netns(node)?;
        host.state
            .links
            .iter()
            .find(|l| {
                l.kind == LinkKind::Veth
                    && l.peer.as_ref().and_then(|p| p.netns.as_deref()) == Some(pod_ns.id.as_str())
            })
            .map(|l| l.name.clone())
    }

    /// The remote VTEP a vxlan device on `node` must send `gateway`'s traffic to.
    pub fn vtep_for_gateway(&self, gateway: IpAddr) -> Option<VtepIntent> {
        let cni = self.cni.value;
        let remote = self.find_node(|n| vtep_ip_of(cni, n, &pod_cidrs_of(n)) == Some(gateway))?;
        Some(VtepIntent {
            node: remote.name.clone(),
            node_ip: remote.ip?,
            vtep_ip: remote.vtep_ip,
            mac: remote.vtep_mac.clone(),
        })
    }

    /// A host netns' routing decision for a pod address, checked against the CNI: a route that
    /// falls through to something broader than the pod network (the default route) means the
    /// CNI's route is missing; one that leaves another way is wrong.
    pub fn check_route(
        &self,
        record: &NetnsRecord,
        packet: &Packet,
        decision: &RouteDecision,
    ) -> Option<Finding> {
        if record.owner != NetnsOwner::Host || !self.is_pod_ip(packet.dst) {
            return None;
        }
        let RouteOutcome::Unicast { nexthops } = &decision.outcome else {
            return None;
        };
        let hop = nexthops.first()?;
        let expected = self.expected_route(&record.node, packet.dst)?;
        let route = decision.route.as_ref()?;
        let cluster = self.cluster();
        let broader = if cluster.is_empty() {
            route.dst.prefix_len() == 0
        } else {
            cluster.iter().any(|c| {
                route.dst.prefix_len() <= c.prefix_len() && route.dst.contains(&c.network())
            })
        };
        let matches = match &expected.next {
            NextHopIntent::Local { dev } => {
                hop.dev.as_deref() == Some(dev) && hop.gateway.is_none()
            }
            NextHopIntent::Via { gateway, dev, .. } => {
                hop.dev.as_deref() == Some(dev) && hop.gateway == Some(*gateway)
            }
        };
        if matches && !broader {
            return None;
        }
        let cni = self.cni.value;
        let (code, message) = if broader {
            (
                FindingCode::RouteMissing,
                format!(
                    "{} has no {cni} route for {}: it falls through to `{route}`, which does not lead to the pod",
                    describe(record),
                    packet.dst
                ),
            )
        } else {
            (
                FindingCode::RouteWrong,
                format!(
                    "{} routes {} by `{route}`, but {cni} should have programmed `{expected}`",
                    describe(record),
                    packet.dst
                ),
            )
        };
        Some(finding(
            code,
            Level::Error,
            record,
            hop.dev.as_deref(),
            message,
            vec![
                Evidence::Route {
                    table: route.table,
                    text: route.to_string(),
                },
                Evidence::Text {
                    text: format!("expected ({cni}): {expected}"),
                },
            ],
            Some(Owner::Cni {
                name: cni.to_string(),
            }),
            Some(&format!(
                "ip route replace {expected} (inside {}); then find out why the {} agent on {} did not program it",
                record.id,
                cni_agent(cni),
                record.node
            )),
        ))
    }

    /// The fix for a missing route, when the CNI says which route it should be.
    pub fn missing_route_hint(&self, record: &NetnsRecord, dst: IpAddr) -> Option<String> {
        if record.owner != NetnsOwner::Host {
            return None;
        }
        let expected = self.expected_route(&record.node, dst)?;
        Some(format!(
            "Add the route {} programs: ip route replace {expected} (inside {}), and check its agent on {}.",
            self.cni.value, record.id, record.node
        ))
    }
}

fn vxlan_device(cni: CniMode) -> Option<&'static str> {
    match cni {
        CniMode::FlannelVxlan => Some(FLANNEL_VXLAN_DEV),
        CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet => Some(CALICO_VXLAN_DEV),
        _ => None,
    }
}

fn cni_agent(cni: CniMode) -> &'static str {
    match cni {
        CniMode::FlannelHostGw | CniMode::FlannelVxlan => "flanneld",
        CniMode::Generic => "CNI",
        _ => "calico-node (bird/felix)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{cluster, ClusterSize};

    fn snapshot(cni: CniMode) -> Snapshot {
        let mut s = cluster(
            cni,
            ClusterSize {
                nodes: 3,
                pods_per_node: 1,
                services: 1,
                endpoints_per_service: 1,
                rules_on_nodes: 3,
            },
        );
        // Detection must work from the cluster's own state, not from a declaration.
        s.cluster.cni = None;
        s.cluster.kube_proxy_mode = None;
        s
    }

    const MODES: [CniMode; 6] = [
        CniMode::FlannelHostGw,
        CniMode::FlannelVxlan,
        CniMode::CalicoBgp,
        CniMode::CalicoVxlan,
        CniMode::CalicoCrosssubnet,
        CniMode::CalicoIpip,
    ];

    #[test]
    fn every_mode_is_detected_from_node_annotations() {
        for cni in MODES {
            let found = detect_cni(&snapshot(cni));
            assert_eq!(found.value, cni, "{}", found.from);
            assert!(found.from.contains("annotation"), "{}", found.from);
        }
    }

    #[test]
    fn without_annotations_the_devices_tell_the_mode() {
        let expected = [
            // A bare cni0 bridge is any bridge plugin: no flannel intent can be assumed.
            (CniMode::FlannelHostGw, CniMode::Generic),
            (CniMode::FlannelVxlan, CniMode::FlannelVxlan),
            (CniMode::CalicoBgp, CniMode::CalicoBgp),
            (CniMode::CalicoVxlan, CniMode::CalicoVxlan),
            (CniMode::CalicoIpip, CniMode::CalicoIpip),
        ];
        for (built, detected) in expected {
            let mut s = snapshot(built);
            for node in &mut s.kubernetes.nodes {
                node.metadata.annotations = None;
            }
            assert_eq!(detect_cni(&s).value, detected, "built as {built}");
        }
    }

    #[test]
    fn a_declared_mode_wins_over_detection() {
        let mut s = snapshot(CniMode::FlannelVxlan);
        s.cluster.cni = Some(CniMode::Generic);
        assert_eq!(detect_cni(&s).value, CniMode::Generic);
    }

    #[test]
    fn kube_proxy_mode_from_its_configmap_else_its_rules() {
        let mut s = snapshot(CniMode::FlannelHostGw);
        let found = detect_kube_proxy(&s);
        assert_eq!(found.value, KubeProxyMode::Iptables);
        assert!(found.from.contains("KUBE-SERVICES"), "{}", found.from);

        // kubeadm's ConfigMap, as `kubectl get cm -n kube-system kube-proxy -o yaml` shows it.
        let conf = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nbindAddress: 0.0.0.0\nclusterCIDR: 10.244.0.0/16\nkind: KubeProxyConfiguration\nmode: \"ipvs\"\n";
        s.kubernetes
            .config_maps
            .push(k8s_openapi::api::core::v1::ConfigMap {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some("kube-proxy".into()),
                    namespace: Some("kube-system".into()),
                    ..Default::default()
                },
                data: Some([("config.conf".to_string(), conf.to_string())].into()),
                ..Default::default()
            });
        assert_eq!(detect_kube_proxy(&s).value, KubeProxyMode::Ipvs);

        let mut bare = snapshot(CniMode::FlannelHostGw);
        for record in &mut bare.netns {
            record.state.iptables = None;
        }
        assert_eq!(detect_kube_proxy(&bare).value, KubeProxyMode::None);

        // nftables mode: `nft -j list ruleset` names kube-proxy's table.
        let mut nft = bare.clone();
        nft.netns[0].state.nftables = Some(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 2}}]}"#.into(),
        );
        assert_eq!(detect_kube_proxy(&nft).value, KubeProxyMode::Nftables);

        // IPVS mode: the dummy device holding every ClusterIP.
        let mut ipvs = bare;
        let mut dummy = ipvs.netns[0].state.links[0].clone();
        dummy.name = "kube-ipvs0".into();
        dummy.kind = LinkKind::Dummy;
        ipvs.netns[0].state.links.push(dummy);
        assert_eq!(detect_kube_proxy(&ipvs).value, KubeProxyMode::Ipvs);
    }

    #[test]
    fn intended_routes_follow_each_plugin() {
        // node-1 towards the pod on node-2 (10.244.1.2) and node-3 (10.244.2.2), and its own.
        let cases = [
            (
                CniMode::FlannelHostGw,
                "10.244.1.2",
                "10.244.1.0/24 via 192.168.0.3 dev eth0",
            ),
            (
                CniMode::FlannelVxlan,
                "10.244.1.2",
                "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",
            ),
            (
                CniMode::CalicoBgp,
                "10.244.1.2",
                "10.244.1.0/24 via 192.168.0.3 dev eth0",
            ),
            (
                CniMode::CalicoVxlan,
                "10.244.1.2",
                "10.244.1.0/24 via 10.244.1.0 dev vxlan.calico onlink",
            ),
            (
                CniMode::CalicoIpip,
                "10.244.1.2",
                "10.244.1.0/24 via 192.168.0.3 dev tunl0 onlink",
            ),
            // CrossSubnet: node-2 is on the other subnet, node-3 on node-1's.
            (
                CniMode::CalicoCrosssubnet,
                "10.244.1.2",
                "10.244.1.0/24 via 10.244.1.0 dev vxlan.calico onlink",
            ),
            (
                CniMode::CalicoCrosssubnet,
                "10.244.2.2",
                "10.244.2.0/24 via 192.168.0.3 dev eth0",
            ),
            (
                CniMode::FlannelVxlan,
                "10.244.0.2",
                "10.244.0.0/24 dev cni0 scope link",
            ),
            (
                CniMode::CalicoBgp,
                "10.244.0.2",
                "10.244.0.2/32 dev cali00000x00000 scope link",
            ),
        ];
        for (cni, dst, want) in cases {
            let s = snapshot(cni);
            let index = Index::new(&s);
            let dp = Datapath::new(&index);
            let got = dp
                .expected_route("node-1", dst.parse().expect("valid"))
                .unwrap_or_else(|| panic!("{cni}: no intent for {dst}"));
            assert_eq!(got.to_string(), want, "{cni} → {dst}");
        }
    }

    #[test]
    fn the_generic_mode_has_no_intent() {
        let mut s = snapshot(CniMode::FlannelHostGw);
        for node in &mut s.kubernetes.nodes {
            node.metadata.annotations = None;
        }
        let index = Index::new(&s);
        let dp = Datapath::new(&index);
        assert_eq!(dp.cni.value, CniMode::Generic);
        assert_eq!(
            dp.expected_route("node-1", "10.244.1.2".parse().expect("valid")),
            None
        );
    }
}
