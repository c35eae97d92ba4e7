//! The CNI datapaths, as `ip` batch commands the way each plugin programs a node: pure functions
//! from the plan to command lines; [`crate::Lab`] runs them.
//!
//! - flannel host-gw: `cni0` bridge (gateway `.1`), pod veths enslaved, remote podCIDRs via the
//!   remote node IP on `eth0`;
//! - flannel vxlan: `flannel.1` (VNI 1, port 8472, MTU 1450, nolearning), permanent neighbour +
//!   FDB entry per remote node, `podCIDR via X.0 dev flannel.1 onlink`;
//! - calico BGP: `cali*` host veths without a bridge, `/32` per local pod, proxy ARP answering for
//!   `169.254.1.1`, blackhole for the local block, remote blocks via node IPs (proto bird);
//! - calico VXLAN: as BGP but remote blocks over `vxlan.calico` (VNI 4096, port 4789);
//! - calico CrossSubnet: direct routes inside a subnet, `vxlan.calico` across the router.

use model::snapshot::CniMode;

use crate::plan::{LabState, NodePlan, PodPlan, CALICO_GATEWAY, EXTERNAL_ADDRESS};
use crate::sys::Sysctl;

/// How a node reaches another node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlay {
    /// Routed over the underlay to the node IP.
    Direct,
    /// Encapsulated on the CNI's VXLAN device.
    Vxlan,
}

struct VxlanDevice {
    name: &'static str,
    vni: u32,
    port: u16,
}

const FLANNEL_VXLAN: VxlanDevice = VxlanDevice {
    name: "flannel.1",
    vni: 1,
    port: 8472,
};
const CALICO_VXLAN: VxlanDevice = VxlanDevice {
    name: "vxlan.calico",
    vni: 4096,
    port: 4789,
};
/// 1500 minus the 50 bytes of VXLAN-over-IPv4 overhead, as both plugins configure.
pub const VXLAN_MTU: u32 = 1450;
/// The fixed MAC calico gives every host-side veth.
const CALICO_HOST_VETH_MAC: &str = "ee:ee:ee:ee:ee:ee";

pub fn is_calico(cni: CniMode) -> bool {
    matches!(
        cni,
        CniMode::CalicoBgp
            | CniMode::CalicoIpip
            | CniMode::CalicoVxlan
            | CniMode::CalicoCrosssubnet
    )
}

fn vxlan_device(cni: CniMode) -> Option<&'static VxlanDevice> {
    match cni {
        CniMode::FlannelVxlan => Some(&FLANNEL_VXLAN),
        CniMode::CalicoVxlan | CniMode::CalicoCrosssubnet => Some(&CALICO_VXLAN),
        _ => None,
    }
}

fn overlay_between(cni: CniMode, local: &NodePlan, remote: &NodePlan) -> Overlay {
    match cni {
        CniMode::FlannelVxlan | CniMode::CalicoVxlan => Overlay::Vxlan,
        CniMode::CalicoCrosssubnet if local.underlay != remote.underlay => Overlay::Vxlan,
        _ => Overlay::Direct,
    }
}

/// Pod interface MTU: the overlay's when the CNI encapsulates, the underlay's otherwise.
pub fn pod_mtu(cni: CniMode) -> u32 {
    if vxlan_device(cni).is_some() {
        VXLAN_MTU
    } else {
        1500
    }
}

/// Underlay netns: one bridge `br0` (gateway `192.168.0.1`, no forwarding) for a single subnet;
/// for two subnets a router with `br-a`/`br-b` and forwarding on. Creates each node's `eth0`
/// directly in the node netns (peer `nN` in the underlay), so nothing passes the root netns.
pub fn underlay_commands(state: &LabState) -> Vec<String> {
    let mut commands = Vec::new();
    let mut bridges: Vec<(String, String)> = Vec::new();
    for node in &state.nodes {
        let bridge = format!("br-{}", node.underlay.network().octets()[2]);
        if !bridges.iter().any(|(b, _)| *b == bridge) {
            commands.push(format!("link add {bridge} type bridge"));
            commands.push(format!(
                "addr add {}/{} dev {bridge}",
                node.gateway,
                node.underlay.prefix_len()
            ));
            commands.push(format!("link set {bridge} up"));
            bridges.push((bridge.clone(), node.gateway.to_string()));
        }
        let index = node.name.trim_start_matches("node-");
        commands.push(format!(
            "link add n{index} type veth peer name eth0 netns {}",
            node.netns
        ));
        commands.push(format!("link set n{index} master {bridge} up"));
    }
    commands
}

/// The host outside the cluster: `eth0` in its own netns, peer `ext` on the first underlay
/// bridge. The lab masquerades no pod traffic, so (like a router peering with calico's BGP, or
/// static routes on the gateway) it routes each podCIDR of its subnet via that node; replies
/// from pods reach it directly. Returns (underlay commands, external netns commands).
pub fn external_commands(state: &LabState) -> (Vec<String>, Vec<String>) {
    let subnet = |n: &&NodePlan| n.underlay.contains(&EXTERNAL_ADDRESS);
    let prefix = state
        .nodes
        .iter()
        .find(subnet)
        .map_or(24, |n| n.underlay.prefix_len());
    let underlay = vec![
        format!(
            "link add ext type veth peer name eth0 netns {}",
            state.external_netns()
        ),
        "link set ext master br-0 up".to_string(),
    ];
    let mut external = vec![
        "link set lo up".to_string(),
        format!("addr add {EXTERNAL_ADDRESS}/{prefix} dev eth0"),
        "link set eth0 up".to_string(),
    ];
    external.extend(
        state
            .nodes
            .iter()
            .filter(subnet)
            .map(|n| format!("route add {} via {}", n.pod_cidr, n.ip)),
    );
    (underlay, external)
}

/// Commands for one netns: `ip` lines, then `bridge` lines (VXLAN FDB entries live in the
/// `bridge` tool, and must come after the device exists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batches {
    pub ip: Vec<String>,
    pub bridge: Vec<String>,
}

/// The node's own datapath: eth0 address, default route to the underlay gateway, CNI devices and
/// routes to every other node's pods.
pub fn node_commands(state: &LabState, node: &NodePlan) -> Batches {
    let cni = state.cni;
    let mut commands = vec![
        "link set lo up".to_string(),
        format!(
            "addr add {}/{} dev eth0",
            node.ip,
            node.underlay.prefix_len()
        ),
        "link set eth0 up".to_string(),
        format!("route add default via {} dev eth0", node.gateway),
    ];
    if !is_calico(cni) {
        commands.push("link add cni0 type bridge".into());
        commands.push(format!("link set cni0 mtu {}", pod_mtu(cni)));
        commands.push(format!(
            "addr add {}/{} dev cni0",
            node.bridge_ip(),
            node.pod_cidr.prefix_len()
        ));
        commands.push("link set cni0 up".into());
    } else {
        commands.push(format!("route add blackhole {} proto bird", node.pod_cidr));
    }
    if let Some(vxlan) = vxlan_device(cni) {
        commands.push(format!(
            "link add {} address {} type vxlan id {} local {} dev eth0 dstport {} nolearning",
            vxlan.name, node.vtep_mac, vxlan.vni, node.ip, vxlan.port
        ));
        commands.push(format!("link set {} mtu {VXLAN_MTU} up", vxlan.name));
        commands.push(format!("addr add {}/32 dev {}", node.vtep_ip(), vxlan.name));
    }
    let mut batches = Batches {
        ip: commands,
        bridge: Vec::new(),
    };
    for remote in state.nodes.iter().filter(|n| n.name != node.name) {
        let remote_batches = remote_route_commands(cni, node, remote);
        batches.ip.extend(remote_batches.ip);
        batches.bridge.extend(remote_batches.bridge);
    }
    batches
}

/// How `node` reaches `remote`'s podCIDR (also what faults delete to break it).
pub fn remote_route_commands(cni: CniMode, node: &NodePlan, remote: &NodePlan) -> Batches {
    let proto = if is_calico(cni) { " proto bird" } else { "" };
    match (overlay_between(cni, node, remote), vxlan_device(cni)) {
        (Overlay::Vxlan, Some(vxlan)) => Batches {
            ip: vec![
                format!(
                    "neigh add {} lladdr {} dev {} nud permanent",
                    remote.vtep_ip(),
                    remote.vtep_mac,
                    vxlan.name
                ),
                format!(
                    "route add {} via {} dev {} onlink",
                    remote.pod_cidr,
                    remote.vtep_ip(),
                    vxlan.name
                ),
            ],
            bridge: vec![format!(
                "fdb append {} dev {} dst {} self permanent",
                remote.vtep_mac, vxlan.name, remote.ip
            )],
        },
        _ => Batches {
            ip: vec![format!(
                "route add {} via {} dev eth0{proto}",
                remote.pod_cidr, remote.ip
            )],
            bridge: Vec::new(),
        },
    }
}

/// The VXLAN FDB entry `node` has for `remote`, as `(mac, device, dst)` — for faults and checks.
pub fn vxlan_fdb_entry(
    cni: CniMode,
    remote: &NodePlan,
) -> Option<(String, &'static str, std::net::Ipv4Addr)> {
    vxlan_device(cni).map(|v| (remote.vtep_mac.clone(), v.name, remote.ip))
}

/// Node-side commands for one pod: create the veth pair (pod end straight into the pod netns),
/// attach it the CNI's way.
pub fn pod_host_commands(cni: CniMode, pod: &PodPlan) -> Vec<String> {
    let (Some(netns), Some(veth)) = (&pod.netns, &pod.host_veth) else {
        return Vec::new();
    };
    let mtu = pod_mtu(cni);
    if is_calico(cni) {
        vec![
            format!("link add {veth} mtu {mtu} address {CALICO_HOST_VETH_MAC} type veth peer name eth0 mtu {mtu} netns {netns}"),
            format!("link set {veth} up"),
            format!("route add {}/32 dev {veth} scope link", pod.ip),
        ]
    } else {
        vec![
            format!("link add {veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {netns}"),
            format!("link set {veth} master cni0 up"),
            // The bridge plugin's hairpinMode (flannel's default): a pod reaching itself through
            // its own Service leaves and re-enters the same bridge port.
            format!("link set {veth} type bridge_slave hairpin on"),
        ]
    }
}

/// Pod-side commands: address and default route as the CNI's IPAM hands them out.
pub fn pod_commands(cni: CniMode, node: &NodePlan, pod: &PodPlan) -> Vec<String> {
    let mut commands = vec!["link set lo up".to_string(), "link set eth0 up".to_string()];
    if is_calico(cni) {
        commands.push(format!("addr add {}/32 dev eth0", pod.ip));
        commands.push(format!("route add {CALICO_GATEWAY} dev eth0 scope link"));
        commands.push(format!("route add default via {CALICO_GATEWAY} dev eth0"));
    } else {
        commands.push(format!(
            "addr add {}/{} dev eth0",
            pod.ip,
            node.pod_cidr.prefix_len()
        ));
        commands.push(format!(
            "route add default via {} dev eth0",
            node.bridge_ip()
        ));
    }
    commands
}

/// What a node's kernel is set to: forwarding on, rp_filter loose as Ubuntu/Debian's systemd sets
/// it, bridge-nf-call-iptables on where br_netfilter exists (flannel needs it for Services).
pub fn node_sysctls() -> Vec<Sysctl> {
    vec![
        Sysctl::new("net/ipv4/ip_forward", 1),
        Sysctl::new("net/ipv4/conf/all/rp_filter", 2),
        Sysctl::new("net/ipv4/conf/default/rp_filter", 2),
        Sysctl::optional("net/bridge/bridge-nf-call-iptables", 1),
        Sysctl::optional("net/bridge/bridge-nf-call-ip6tables", 1),
    ]
}

/// Per-pod node sysctls: calico answers ARP for its gateway on the host veth.
pub fn pod_host_sysctls(cni: CniMode, pod: &PodPlan) -> Vec<Sysctl> {
    match (&pod.host_veth, is_calico(cni)) {
        (Some(veth), true) => vec![
            Sysctl::new(format!("net/ipv4/conf/{veth}/proxy_arp"), 1),
            Sysctl::new(format!("net/ipv4/neigh/{veth}/proxy_delay"), 0),
        ],
        _ => Vec::new(),
    }
}

/// The underlay routes between subnets only when it is a router (calico-crosssubnet).
pub fn underlay_sysctls(state: &LabState) -> Vec<Sysctl> {
    let subnets = state
        .nodes
        .iter()
        .map(|n| n.underlay)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    vec![Sysctl::new("net/ipv4/ip_forward", u8::from(subnets > 1))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan_nodes;

    fn state(cni: CniMode, nodes: u8) -> LabState {
        LabState {
            name: "t".into(),
            cni,
            nodes: plan_nodes("t", cni, nodes),
            pods: Vec::new(),
            services: Vec::new(),
            network_policies: Vec::new(),
            listener: Vec::new(),
        }
    }

    #[test]
    fn external_host_routes_the_pods_of_its_subnet_via_their_nodes() {
        let (underlay, external) = external_commands(&state(CniMode::FlannelVxlan, 2));
        assert_eq!(
            underlay,
            [
                "link add ext type veth peer name eth0 netns nsl-t-external",
                "link set ext master br-0 up",
            ]
        );
        assert!(external.contains(&"addr add 192.168.0.254/24 dev eth0".to_string()));
        assert!(external.contains(&"route add 10.244.0.0/24 via 192.168.0.11".to_string()));
        assert!(external.contains(&"route add 10.244.1.0/24 via 192.168.0.12".to_string()));
    }

    #[test]
    fn crosssubnet_external_host_routes_only_the_nodes_beside_it() {
        // node-2 sits behind the underlay router on 192.168.1.0/24: no route via it.
        let (_, external) = external_commands(&state(CniMode::CalicoCrosssubnet, 3));
        let routes: Vec<&String> = external.iter().filter(|c| c.starts_with("route")).collect();
        assert_eq!(
            routes,
            [
                "route add 10.244.0.0/24 via 192.168.0.11",
                "route add 10.244.2.0/24 via 192.168.0.13",
            ]
        );
    }
}
