//! Fault injection: break a running lab the way real incidents do, and say what a diagnosis
//! must find.
//!
//! Every fault works on the same scenario ([`scenario_spec`]): two nodes with one default pod
//! each; traffic goes from `default/pod-1-1` (node-1) to `default/pod-2-1` (node-2) on 8080/TCP,
//! or to a Service the fault creates. [`Fault::inject`] returns an [`Injected`]: the probe that is
//! now blocked and the finding (code + place) the engine must report — so a diagnosis test is one
//! call per fault.

use model::diagnosis::Diagnosis;
use model::finding::Place;
use model::snapshot::CniMode;
use model::{Finding, FindingCode};
use netstack::packet::Protocol;

use crate::lab::{Lab, LabSpec};
use crate::objects::parse_objects;
use crate::plan::{NodePlan, PodPlan};
use crate::probe::ProbeRequest;
use crate::{datapath, sys, LabError};

pub const SOURCE_POD: &str = "default/pod-1-1";
pub const DESTINATION_POD: &str = "default/pod-2-1";
/// The Service faults that need one create (selecting the destination pod).
pub const FAULT_SERVICE: &str = "service/default/fault-web";

/// IPv4 + UDP header bytes: a datagram of `MTU - this` fills a packet exactly.
const UDP_IP_HEADERS: usize = 28;

/// The lab every fault expects: 2 nodes, one default pod each.
pub fn scenario_spec(name: impl Into<String>, cni: CniMode) -> LabSpec {
    LabSpec {
        cni,
        nodes: 2,
        pods_per_node: 1,
        ..LabSpec::new(name)
    }
}

/// The catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The destination pod's eth0 is down.
    PodInterfaceDown,
    /// The destination pod's node-side veth is down.
    HostVethDown,
    /// node-1 blackholes node-2's podCIDR.
    RouteBlackhole,
    /// node-1 lost its route to node-2's podCIDR.
    RouteMissing,
    /// node-1's VXLAN FDB entry for node-2's VTEP is gone.
    VxlanFdbMissing,
    /// An iptables DROP for the port inside the destination pod.
    PodIptablesDrop,
    /// A hand-added DROP in node-2's FORWARD chain.
    NodeForwardDrop,
    /// node-2's FORWARD policy is DROP.
    ForwardPolicyDrop,
    /// node-2 has ip_forward=0.
    IpForwardOff,
    /// node-2 answers node-1's pods over eth0 while their traffic arrives on the VXLAN device,
    /// and rp_filter is strict: the kernel drops the arriving packets.
    RpFilterStrictAsymmetric,
    /// flannel's bridge bypasses iptables (bridge-nf-call-iptables=0): a Service reply from a
    /// same-node endpoint is bridged straight back without its DNAT being undone.
    BridgeNfCallOff,
    /// The destination pod's listener is gone.
    NoListener,
    /// A NetworkPolicy denies all ingress to the destination pod.
    PolicyIngressDeny,
    /// kube-proxy's rules point at an endpoint the EndpointSlice no longer lists.
    KubeProxyOutOfSync,
    /// A Service whose selector matches no pod.
    ServiceNoEndpoints,
    /// The underlay port of node-2 has MTU 1400 while node-2's eth0 has 1500: full-size frames
    /// vanish silently; small packets pass, a full-size UDP datagram does not.
    UnderlayMtuMismatch,
    /// The destination pod's host veth (and with it the pod's eth0) was deleted.
    LinkMissing,
    /// The destination pod's host veth is no longer enslaved to `cni0`.
    LinkWrongMaster,
    /// node-1 has an `unreachable` route for node-2's podCIDR.
    RouteUnreachable,
    /// node-1 has a `prohibit` route for node-2's podCIDR.
    RouteProhibit,
    /// An `ip rule` on node-1 blackholes node-2's podCIDR before the main table.
    PolicyRoutingRule,
    /// The destination pod never answers ARP (`arp_ignore=8`).
    ArpIgnore,
    /// A hand-added DNAT on node-2 rewrites the pod's port to one nothing listens on.
    NatWrong,
    /// A NetworkPolicy denies all egress from the source pod.
    PolicyEgressDeny,
    /// A Service whose targetPort is not the port the pod serves.
    ServiceWrongTargetPort,
    /// A Service whose named targetPort no container declares.
    ServiceNamedPortMissing,
    /// A NodePort Service with externalTrafficPolicy Local, reached on a node without an endpoint.
    ServiceNoLocalEndpoint,
    /// node-1 lost the permanent neighbour entry for node-2's VTEP: nothing answers ARP over
    /// the overlay, so the inner frame never gets a destination MAC.
    VxlanNeighbourMissing,
    /// The source pod's eth0 (and its host veth) were raised to 1500 on a VXLAN overlay whose
    /// tunnel device carries 1450: full-size packets are dropped at the tunnel.
    PodMtuAboveTunnel,
    /// node-1 routes node-2's podCIDR via the underlay router, which knows no pod addresses.
    RouteWrongGateway,
    /// A native nftables table (not iptables) on node-2 drops the flow in its forward hook.
    NftForwardDrop,
    /// calico: proxy_arp is off on the source pod's host veth, so nothing answers the pod's ARP
    /// for its gateway 169.254.1.1.
    CalicoProxyArpOff,
    /// The source pod lost its default route.
    PodDefaultRouteMissing,
}

/// A fault in place: what is blocked now and what must be found.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    pub fault: Fault,
    pub probe: ProbeRequest,
    pub expected_code: FindingCode,
    pub expected_place: Place,
    /// A pod the finding's message must name, for faults whose place cannot: a deleted veth
    /// leaves no device to point at, so the finding sits on the node and names the pod.
    pub expected_pod_named: Option<String>,
}

impl Injected {
    /// Whether `finding` reports this fault: the expected code, at the fault's place (every part
    /// of it the fault names — node, netns, device — is the same), and, when the place cannot
    /// show which pod is broken, a message that names the pod.
    pub fn is_reported_by(&self, finding: &Finding) -> bool {
        finding.code == self.expected_code
            && at_place(&finding.place, &self.expected_place)
            && self
                .expected_pod_named
                .as_deref()
                .is_none_or(|pod| finding.message.contains(pod))
    }

    /// The finding of `diagnosis` that reports this fault, if there is one.
    pub fn reported_in<'a>(&self, diagnosis: &'a Diagnosis) -> Option<&'a Finding> {
        diagnosis.findings.iter().find(|f| self.is_reported_by(f))
    }
}

/// Whether `found` is at `expected`: each part `expected` names is the same in `found`; a part
/// it leaves open (no device for a route fault) matches anything.
fn at_place(found: &Place, expected: &Place) -> bool {
    let same = |want: &Option<String>, got: &Option<String>| want.is_none() || want == got;
    same(&expected.node, &found.node)
        && same(&expected.netns, &found.netns)
        && same(&expected.device, &found.device)
}

impl Fault {
    pub const ALL: [Fault; 33] = [
        Fault::PodInterfaceDown,
        Fault::HostVethDown,
        Fault::RouteBlackhole,
        Fault::RouteMissing,
        Fault::VxlanFdbMissing,
        Fault::PodIptablesDrop,
        Fault::NodeForwardDrop,
        Fault::ForwardPolicyDrop,
        Fault::IpForwardOff,
        Fault::RpFilterStrictAsymmetric,
        Fault::BridgeNfCallOff,
        Fault::NoListener,
        Fault::PolicyIngressDeny,
        Fault::KubeProxyOutOfSync,
        Fault::ServiceNoEndpoints,
        Fault::LinkMissing,
        Fault::LinkWrongMaster,
        Fault::RouteUnreachable,
        Fault::RouteProhibit,
        Fault::PolicyRoutingRule,
        Fault::ArpIgnore,
        Fault::NatWrong,
        Fault::PolicyEgressDeny,
        Fault::ServiceWrongTargetPort,
        Fault::ServiceNamedPortMissing,
        Fault::ServiceNoLocalEndpoint,
        Fault::UnderlayMtuMismatch,
        Fault::VxlanNeighbourMissing,
        Fault::PodMtuAboveTunnel,
        Fault::RouteWrongGateway,
        Fault::NftForwardDrop,
        Fault::CalicoProxyArpOff,
        Fault::PodDefaultRouteMissing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PodInterfaceDown => "pod-interface-down",
            Fault::HostVethDown => "host-veth-down",
            Fault::RouteBlackhole => "route-blackhole",
            Fault::RouteMissing => "route-missing",
            Fault::VxlanFdbMissing => "vxlan-fdb-missing",
            Fault::PodIptablesDrop => "pod-iptables-drop",
            Fault::NodeForwardDrop => "node-forward-drop",
            Fault::ForwardPolicyDrop => "forward-policy-drop",
            Fault::IpForwardOff => "ip-forward-off",
            Fault::RpFilterStrictAsymmetric => "rp-filter-strict-asymmetric",
            Fault::BridgeNfCallOff => "bridge-nf-call-off",
            Fault::NoListener => "no-listener",
            Fault::PolicyIngressDeny => "policy-ingress-deny",
            Fault::KubeProxyOutOfSync => "kube-proxy-out-of-sync",
            Fault::ServiceNoEndpoints => "service-no-endpoints",
            Fault::UnderlayMtuMismatch => "underlay-mtu-mismatch",
            Fault::LinkMissing => "link-missing",
            Fault::LinkWrongMaster => "link-wrong-master",
            Fault::RouteUnreachable => "route-unreachable",
            Fault::RouteProhibit => "route-prohibit",
            Fault::PolicyRoutingRule => "policy-routing-rule",
            Fault::ArpIgnore => "arp-ignore",
            Fault::NatWrong => "nat-wrong",
            Fault::PolicyEgressDeny => "policy-egress-deny",
            Fault::ServiceWrongTargetPort => "service-wrong-target-port",
            Fault::ServiceNamedPortMissing => "service-named-port-missing",
            Fault::ServiceNoLocalEndpoint => "service-no-local-endpoint",
            Fault::VxlanNeighbourMissing => "vxlan-neighbour-missing",
            Fault::PodMtuAboveTunnel => "pod-mtu-above-tunnel",
            Fault::RouteWrongGateway => "route-wrong-gateway",
            Fault::NftForwardDrop => "nft-forward-drop",
            Fault::CalicoProxyArpOff => "calico-proxy-arp-off",
            Fault::PodDefaultRouteMissing => "pod-default-route-missing",
        }
    }

    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the fault means something in `cni` (no VXLAN FDB without VXLAN).
    pub fn applies_to(self, cni: CniMode) -> bool {
        match self {
            Fault::VxlanFdbMissing | Fault::VxlanNeighbourMissing | Fault::PodMtuAboveTunnel => {
                matches!(
                    cni,
                    CniMode::FlannelVxlan | CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet
                )
            }
            // Needs a VXLAN path in and a direct underlay path back (same subnet).
            Fault::RpFilterStrictAsymmetric => {
                matches!(cni, CniMode::FlannelVxlan | CniMode::CalicoVxlan)
            }
            // Only flannel puts pods on a bridge.
            Fault::BridgeNfCallOff => matches!(cni, CniMode::FlannelHostGw | CniMode::FlannelVxlan),
            Fault::LinkWrongMaster => matches!(cni, CniMode::FlannelHostGw | CniMode::FlannelVxlan),
            // Only calico's pods reach their gateway by proxy ARP.
            Fault::CalicoProxyArpOff => datapath::is_calico(cni),
            _ => crate::lab::SUPPORTED_CNI.contains(&cni),
        }
    }

    /// The CNI modes the fault applies to.
    pub fn cni_modes(self) -> Vec<CniMode> {
        crate::lab::SUPPORTED_CNI
            .into_iter()
            .filter(|m| self.applies_to(*m))
            .collect()
    }

    /// Breaks `lab` (built from [`scenario_spec`]).
    pub fn inject(self, lab: &mut Lab) -> Result<Injected, LabError> {
        let state = lab.state().clone();
        let cni = state.cni;
        let pod = |key: &str| -> Result<PodPlan, LabError> {
            let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
            state.pod(namespace, name).cloned().ok_or_else(|| {
                LabError::Invalid(format!(
                    "fault {}: the lab has no pod {key}; build it with faults::scenario_spec",
                    self.name()
                ))
            })
        };
        let node = |name: &str| {
            state.node(name).cloned().ok_or_else(|| {
                LabError::Invalid(format!("fault {}: the lab has no {name}", self.name()))
            })
        };
        let (src, dst) = (pod(SOURCE_POD)?, pod(DESTINATION_POD)?);
        let (node1, node2) = (node(&src.node)?, node(&dst.node)?);
        // The scenario's pods have their own netns and veth; only a hostNetwork pod lacks them,
        // and the faults would then break the node instead of the pod.
        let own = |pod: &PodPlan, value: &Option<String>, what: &str| {
            value.clone().ok_or_else(|| {
                LabError::Invalid(format!(
                    "fault {}: pod {} has no {what} (a hostNetwork pod?); build the lab with faults::scenario_spec",
                    self.name(),
                    pod.key()
                ))
            })
        };
        let dst_netns = own(&dst, &dst.netns, "network namespace")?;
        let src_netns = own(&src, &src.netns, "network namespace")?;
        let dst_netns_id = format!("{}/{}", dst.node, dst.key());
        let host_veth = own(&dst, &dst.host_veth, "host veth")?;
        let src_veth = own(&src, &src.host_veth, "host veth")?;
        let place = |node: &str, netns: &str, device: Option<&str>| Place {
            node: Some(node.into()),
            netns: Some(netns.into()),
            device: device.map(Into::into),
        };
        let mut probe = ProbeRequest {
            src: SOURCE_POD.into(),
            dst: DESTINATION_POD.into(),
            port: 8080,
            protocol: Protocol::Tcp,
            payload: 0,
        };
        let mut expected_pod_named = None;
        let (code, expected_place) = match self {
            Fault::PodInterfaceDown => {
                sys::ip_batch(Some(&dst_netns), &["link set eth0 down".into()])?;
                (
                    FindingCode::LinkDown,
                    place(&node2.name, &dst_netns_id, Some("eth0")),
                )
            }
            Fault::HostVethDown => {
                sys::ip_batch(Some(&node2.netns), &[format!("link set {host_veth} down")])?;
                (
                    FindingCode::LinkDown,
                    place(&node2.name, &node2.name, Some(&host_veth)),
                )
            }
            Fault::RouteBlackhole => {
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("route replace blackhole {}", node2.pod_cidr)],
                )?;
                (
                    FindingCode::RouteBlackhole,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::RouteMissing => {
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("route del {}", node2.pod_cidr)],
                )?;
                (
                    FindingCode::RouteMissing,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::VxlanFdbMissing => {
                let (mac, device, dst_ip) =
                    datapath::vxlan_fdb_entry(cni, &node2).ok_or_else(|| {
                        LabError::Invalid(format!(
                            "fault {} needs a VXLAN CNI, not {cni}",
                            self.name()
                        ))
                    })?;
                sys::run(
                    "bridge",
                    &[
                        "-n",
                        &node1.netns,
                        "fdb",
                        "del",
                        &mac,
                        "dev",
                        device,
                        "dst",
                        &dst_ip.to_string(),
                        "self",
                    ],
                    None,
                )?;
                (
                    FindingCode::VxlanFdbWrong,
                    place(&node1.name, &node1.name, Some(device)),
                )
            }
            Fault::PodIptablesDrop => {
                sys::netns_exec(
                    &dst_netns,
                    &[
                        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP",
                    ],
                    None,
                )?;
                (
                    FindingCode::NetfilterDrop,
                    place(&node2.name, &dst_netns_id, None),
                )
            }
            Fault::NodeForwardDrop => {
                let target = format!("{}/32", dst.ip);
                sys::netns_exec(
                    &node2.netns,
                    &[
                        "iptables", "-I", "FORWARD", "1", "-d", &target, "-j", "DROP",
                    ],
                    None,
                )?;
                (
                    FindingCode::NetfilterDrop,
                    place(&node2.name, &node2.name, None),
                )
            }
            Fault::ForwardPolicyDrop => {
                sys::netns_exec(&node2.netns, &["iptables", "-P", "FORWARD", "DROP"], None)?;
                (
                    FindingCode::NetfilterPolicyDrop,
                    place(&node2.name, &node2.name, None),
                )
            }
            Fault::IpForwardOff => {
                sys::write_sysctls(&node2.netns, &[sys::Sysctl::new("net/ipv4/ip_forward", 0)])?;
                (
                    FindingCode::SysctlIpForward,
                    place(&node2.name, &node2.name, None),
                )
            }
            Fault::RpFilterStrictAsymmetric => {
                let (_, device, _) = datapath::vxlan_fdb_entry(cni, &node1).ok_or_else(|| {
                    LabError::Invalid(format!(
                        "fault {} needs a VXLAN CNI, not {cni}",
                        self.name()
                    ))
                })?;
                sys::ip_batch(
                    Some(&node2.netns),
                    &[format!(
                        "route replace {} via {} dev eth0",
                        node1.pod_cidr, node1.ip
                    )],
                )?;
                sys::write_sysctls(
                    &node2.netns,
                    &[
                        sys::Sysctl::new("net/ipv4/conf/all/rp_filter", 1),
                        sys::Sysctl::new(format!("net/ipv4/conf/{device}/rp_filter"), 1),
                    ],
                )?;
                (
                    FindingCode::SysctlRpFilter,
                    place(&node2.name, &node2.name, Some(device)),
                )
            }
            Fault::BridgeNfCallOff => {
                let yaml = format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: fault-local, namespace: default, labels: {{name: fault-local}}}}\nspec:\n  nodeName: {}\n  containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]\n---\n{}",
                    node1.name,
                    fault_service_yaml("fault-local", "8080", "")
                );
                lab.apply(parse_objects("fault bridge-nf-call-off", &yaml)?)?;
                sys::write_sysctls(
                    &node1.netns,
                    &[sys::Sysctl::new("net/bridge/bridge-nf-call-iptables", 0)],
                )?;
                probe = ProbeRequest {
                    dst: FAULT_SERVICE.into(),
                    port: 80,
                    ..probe
                };
                (
                    FindingCode::SysctlBridgeNfCall,
                    place(&node1.name, &node1.name, Some("cni0")),
                )
            }
            Fault::NoListener => {
                // Only the listener runs in a pod netns, so killing every process there kills it.
                let pids = sys::run("ip", &["netns", "pids", &dst_netns], None)?;
                for pid in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                wait_until_port_closed(&dst_netns, 8080)?;
                (
                    FindingCode::SocketNoListener,
                    place(&node2.name, &dst_netns_id, None),
                )
            }
            Fault::PolicyIngressDeny => {
                let yaml = format!(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-{name}, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{name: {name}}}}}\n  policyTypes: [Ingress]\n",
                    name = dst.name()
                );
                lab.apply(parse_objects("fault policy-ingress-deny", &yaml)?)?;
                (
                    FindingCode::PolicyIngressDenied,
                    place(&node2.name, &node2.name, None),
                )
            }
            Fault::KubeProxyOutOfSync => {
                lab.apply(parse_objects(
                    "fault kube-proxy-out-of-sync",
                    &fault_service_yaml(dst.name(), "8080", ""),
                )?)?;
                // kube-proxy missed the last EndpointSlice update: it still sends traffic to an
                // address no pod has any more.
                let mut stale = lab.state().endpoint_slices();
                let gone = node2
                    .pod_cidr
                    .hosts()
                    .next_back()
                    .ok_or_else(|| {
                        LabError::Invalid(format!(
                            "fault {}: {}'s podCIDR {} has no host address",
                            self.name(),
                            node2.name,
                            node2.pod_cidr
                        ))
                    })?
                    .to_string();
                for endpoint in stale.iter_mut().flat_map(|s| s.endpoints.iter_mut()) {
                    if endpoint.addresses.first() == Some(&dst.ip.to_string()) {
                        endpoint.addresses = vec![gone.clone()];
                    }
                }
                lab.apply_kube_proxy(&stale)?;
                probe = ProbeRequest {
                    dst: FAULT_SERVICE.into(),
                    port: 80,
                    ..probe
                };
                (
                    FindingCode::ServiceProxyOutOfSync,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::LinkMissing => {
                sys::ip_batch(Some(&node2.netns), &[format!("link del {host_veth}")])?;
                // The deleted veth's name is gone from the node's state, so no collected device
                // can carry the finding: what can honestly be known is the node whose route
                // leads nowhere and the pod that lost its interface.
                expected_pod_named = Some(dst.key());
                (
                    FindingCode::LinkMissing,
                    place(&node2.name, &node2.name, None),
                )
            }
            Fault::LinkWrongMaster => {
                sys::ip_batch(
                    Some(&node2.netns),
                    &[format!("link set {host_veth} nomaster")],
                )?;
                (
                    FindingCode::LinkWrongMaster,
                    place(&node2.name, &node2.name, Some(&host_veth)),
                )
            }
            Fault::RouteUnreachable => {
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("route replace unreachable {}", node2.pod_cidr)],
                )?;
                (
                    FindingCode::RouteUnreachable,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::RouteProhibit => {
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("route replace prohibit {}", node2.pod_cidr)],
                )?;
                (
                    FindingCode::RouteProhibit,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::PolicyRoutingRule => {
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("rule add to {} blackhole pref 100", node2.pod_cidr)],
                )?;
                (
                    FindingCode::RoutePolicyRule,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::ArpIgnore => {
                sys::write_sysctls(
                    &dst_netns,
                    &[
                        sys::Sysctl::new("net/ipv4/conf/all/arp_ignore", 8),
                        sys::Sysctl::new("net/ipv4/conf/eth0/arp_ignore", 8),
                    ],
                )?;
                // The node learnt the pod's MAC while the lab was healthy; forget it so the next
                // packet needs an ARP answer.
                sys::ip_batch(Some(&node2.netns), &[format!("neigh flush to {}", dst.ip)])?;
                (
                    FindingCode::SysctlArp,
                    place(&node2.name, &dst_netns_id, Some("eth0")),
                )
            }
            Fault::NatWrong => {
                let (target, to) = (format!("{}/32", dst.ip), format!("{}:9999", dst.ip));
                sys::netns_exec(
                    &node2.netns,
                    &[
                        "iptables",
                        "-t",
                        "nat",
                        "-I",
                        "PREROUTING",
                        "1",
                        "-d",
                        &target,
                        "-p",
                        "tcp",
                        "--dport",
                        "8080",
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &to,
                    ],
                    None,
                )?;
                (FindingCode::NatWrong, place(&node2.name, &node2.name, None))
            }
            Fault::PolicyEgressDeny => {
                let yaml = format!(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-egress-{name}, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{name: {name}}}}}\n  policyTypes: [Egress]\n",
                    name = src.name()
                );
                lab.apply(parse_objects("fault policy-egress-deny", &yaml)?)?;
                (
                    FindingCode::PolicyEgressDenied,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::ServiceWrongTargetPort => {
                lab.apply(parse_objects(
                    "fault service-wrong-target-port",
                    &fault_service_yaml(dst.name(), "9999", ""),
                )?)?;
                probe = ProbeRequest {
                    dst: FAULT_SERVICE.into(),
                    port: 80,
                    ..probe
                };
                (
                    FindingCode::ServiceWrongTargetPort,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::ServiceNamedPortMissing => {
                lab.apply(parse_objects(
                    "fault service-named-port-missing",
                    &fault_service_yaml(dst.name(), "web", ""),
                )?)?;
                probe = ProbeRequest {
                    dst: FAULT_SERVICE.into(),
                    port: 80,
                    ..probe
                };
                (
                    FindingCode::ServiceNamedPortMissing,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::ServiceNoLocalEndpoint => {
                let extra = "  type: NodePort\n  externalTrafficPolicy: Local\n";
                lab.apply(parse_objects(
                    "fault service-no-local-endpoint",
                    &fault_service_yaml(dst.name(), "8080", extra),
                )?)?;
                let node_port = lab.state().node_port("default", "fault-web")?;
                // From another node: neither a pod nor local, so kube-proxy keeps it on node-1.
                probe = ProbeRequest {
                    src: format!("node/{}", node2.name),
                    dst: format!("node/{}", node1.name),
                    port: node_port,
                    protocol: Protocol::Tcp,
                    payload: 0,
                };
                (
                    FindingCode::ServiceNoLocalEndpoint,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::UnderlayMtuMismatch => {
                let port = format!("n{}", node2.name.trim_start_matches("node-"));
                sys::ip_batch(
                    Some(&state.underlay_netns()),
                    &[format!("link set {port} mtu 1400")],
                )?;
                // A full-size UDP datagram: TCP through veths travels as GSO super-packets, which
                // skip the MTU check, so only a non-GSO packet shows the drop a NIC would make.
                probe.protocol = Protocol::Udp;
                probe.payload = datapath::pod_mtu(cni) as usize - UDP_IP_HEADERS;
                (
                    FindingCode::LinkMtuMismatch,
                    place(&node2.name, &node2.name, Some("eth0")),
                )
            }
            Fault::VxlanNeighbourMissing => {
                let device = vxlan_device_name(self, cni, &node2)?;
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("neigh del {} dev {device}", node2.vtep_ip())],
                )?;
                (
                    FindingCode::NeighbourMissing,
                    place(&node1.name, &node1.name, Some(device)),
                )
            }
            Fault::PodMtuAboveTunnel => {
                let device = vxlan_device_name(self, cni, &node2)?;
                // Both ends of the pod's veth, as a CNI configured with the wrong MTU would set them.
                sys::ip_batch(Some(&src_netns), &["link set eth0 mtu 1500".into()])?;
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!("link set {src_veth} mtu 1500")],
                )?;
                // A single full-size datagram: the socket sets DF, so node-1 drops it at the tunnel
                // (answering "fragmentation needed") instead of fragmenting it.
                probe.protocol = Protocol::Udp;
                probe.payload = 1500 - UDP_IP_HEADERS;
                (
                    FindingCode::LinkMtuMismatch,
                    place(&node1.name, &node1.name, Some(device)),
                )
            }
            Fault::RouteWrongGateway => {
                sys::ip_batch(
                    Some(&node1.netns),
                    &[format!(
                        "route replace {} via {} dev eth0",
                        node2.pod_cidr, node1.gateway
                    )],
                )?;
                (
                    FindingCode::RouteWrong,
                    place(&node1.name, &node1.name, None),
                )
            }
            Fault::NftForwardDrop => {
                let ruleset = format!(
                    "table inet hostfw {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip daddr {} tcp dport 8080 drop\n  }}\n}}\n",
                    dst.ip
                );
                sys::netns_exec(&node2.netns, &["nft", "-f", "-"], Some(&ruleset))?;
                (
                    FindingCode::NetfilterDrop,
                    place(&node2.name, &node2.name, None),
                )
            }
            Fault::CalicoProxyArpOff => {
                sys::write_sysctls(
                    &node1.netns,
                    &[sys::Sysctl::new(
                        format!("net/ipv4/conf/{src_veth}/proxy_arp"),
                        0,
                    )],
                )?;
                // The pod learnt the gateway's MAC while the lab was healthy; forget it so the
                // next packet needs an ARP answer.
                sys::ip_batch(Some(&src_netns), &["neigh flush dev eth0".into()])?;
                (
                    FindingCode::SysctlArp,
                    place(&node1.name, &node1.name, Some(&src_veth)),
                )
            }
            Fault::PodDefaultRouteMissing => {
                sys::ip_batch(Some(&src_netns), &["route del default".into()])?;
                (
                    FindingCode::RouteMissing,
                    place(&node1.name, &format!("{}/{}", src.node, src.key()), None),
                )
            }
            Fault::ServiceNoEndpoints => {
                lab.apply(parse_objects(
                    "fault service-no-endpoints",
                    &fault_service_yaml("no-such-pod", "8080", ""),
                )?)?;
                probe = ProbeRequest {
                    dst: FAULT_SERVICE.into(),
                    port: 80,
                    ..probe
                };
                (
                    FindingCode::ServiceNoEndpoints,
                    place(&node1.name, &node1.name, None),
                )
            }
        };
        Ok(Injected {
            fault: self,
            probe,
            expected_code: code,
            expected_place,
            expected_pod_named,
        })
    }
}

/// The VXLAN device a VXLAN-only fault works on; an error naming the fault in other modes.
fn vxlan_device_name(
    fault: Fault,
    cni: CniMode,
    remote: &NodePlan,
) -> Result<&'static str, LabError> {
    datapath::vxlan_fdb_entry(cni, remote)
        .map(|(_, device, _)| device)
        .ok_or_else(|| {
            LabError::Invalid(format!(
                "fault {} needs a VXLAN CNI, not {cni}",
                fault.name()
            ))
        })
}

/// Service `default/fault-web` (port 80 → `target_port`) selecting one pod; `extra_spec` lines
/// are added to its spec.
fn fault_service_yaml(selected_pod: &str, target_port: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: fault-web, namespace: default}}\nspec:\n  selector: {{name: {selected_pod}}}\n  ports: [{{name: http, port: 80, targetPort: {target_port}}}]\n{extra_spec}"
    )
}

/// SIGKILL is asynchronous and the kernel closes a dying process's sockets only after it has
/// left the netns, so poll the netns' TCP table (bounded) instead of sleeping a guessed time.
fn wait_until_port_closed(netns: &str, port: u16) -> Result<(), LabError> {
    // /proc/net/tcp: `sl local_address(hex ip:hex port) rem_address st …`, LISTEN is state 0A.
    let listening = format!(":{port:04X} 00000000:0000 0A");
    for _ in 0..400 {
        // thread-self, not self: /proc/self/net shows the netns of the process's main thread.
        let table = sys::in_netns(netns, || {
            std::fs::read_to_string("/proc/thread-self/net/tcp")
                .map_err(|e| LabError::io("reading /proc/thread-self/net/tcp", e))
        })?;
        if !table.contains(&listening) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(LabError::Invalid(format!(
        "port {port} in {netns} still listening after its process was killed"
    )))
}

#[cfg(test)]
mod tests {
    use model::finding::Level;

    use super::*;

    /// link-missing as injected: the finding sits on node-2 and must name the pod.
    fn link_missing() -> Injected {
        Injected {
            fault: Fault::LinkMissing,
            probe: ProbeRequest {
                src: SOURCE_POD.into(),
                dst: DESTINATION_POD.into(),
                port: 8080,
                protocol: Protocol::Tcp,
                payload: 0,
            },
            expected_code: FindingCode::LinkMissing,
            expected_place: Place {
                node: Some("node-2".into()),
                netns: Some("node-2".into()),
                device: None,
            },
            expected_pod_named: Some(DESTINATION_POD.into()),
        }
    }

    fn finding(code: FindingCode, node: &str, device: Option<&str>, message: &str) -> Finding {
        Finding {
            code,
            level: Level::Error,
            place: Place {
                node: Some(node.into()),
                netns: Some(node.into()),
                device: device.map(Into::into),
            },
            message: message.into(),
            evidence: Vec::new(),
            owner: None,
            hint: None,
        }
    }

    #[test]
    fn reported_means_same_code_at_the_place_naming_the_pod() {
        let injected = link_missing();
        let message = format!("route to {DESTINATION_POD} leads to a deleted veth");
        let reported = |f: &Finding| injected.is_reported_by(f);
        // The place leaves the device open: any device on node-2 matches.
        assert!(reported(&finding(
            FindingCode::LinkMissing,
            "node-2",
            Some("cni0"),
            &message
        )));
        assert!(!reported(&finding(
            FindingCode::LinkMissing,
            "node-1",
            None,
            &message
        )));
        assert!(!reported(&finding(
            FindingCode::LinkDown,
            "node-2",
            None,
            &message
        )));
        assert!(
            !reported(&finding(
                FindingCode::LinkMissing,
                "node-2",
                None,
                "a route leads to a deleted veth"
            )),
            "a node-level finding that does not say which pod is not the fault"
        );
    }

    #[test]
    fn a_named_device_must_match() {
        let injected = Injected {
            expected_place: Place {
                device: Some("eth0".into()),
                ..link_missing().expected_place
            },
            expected_pod_named: None,
            ..link_missing()
        };
        let on = |device| finding(FindingCode::LinkMissing, "node-2", device, "");
        assert!(injected.is_reported_by(&on(Some("eth0"))));
        assert!(!injected.is_reported_by(&on(Some("cni0"))));
        assert!(!injected.is_reported_by(&on(None)));
    }
}
