//! NetworkPolicy enforcement in the style of kube-router: per-pod firewall chains hooked into
//! FORWARD, INPUT and OUTPUT of the node that hosts the pod, one chain per policy, comments that
//! name the pod and the policy. Pure: returns `iptables-restore --noflush` text.
//!
//! Ingress is enforced on the destination pod's node, egress on the source pod's node. Accepted
//! traffic is marked 0x10000 by a policy chain; traffic a policied pod did not get marked for is
//! REJECTed (as kube-router does), so a probe sees "connection refused" quickly.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::plan::{selector_matches, LabState, PodPlan};
use crate::sha256::kube_proxy_hash;

pub const TOP_CHAIN: &str = "KUBE-ROUTER-FORWARD";
const ACCEPT_MARK: &str = "0x10000/0x10000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn policy_type(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
    /// `-d` matches traffic to the pod (ingress), `-s` traffic from it (egress).
    fn pod_match(self) -> &'static str {
        match self {
            Direction::Ingress => "-d",
            Direction::Egress => "-s",
        }
    }
    fn peer_match(self) -> &'static str {
        match self {
            Direction::Ingress => "-s",
            Direction::Egress => "-d",
        }
    }
}

/// Does `policy` govern `direction` (spec.policyTypes, or the API server's default)?
fn governs(policy: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| t == direction.policy_type()),
        None => direction == Direction::Ingress || spec.egress.is_some(),
    }
}

fn selects(policy: &NetworkPolicy, pod: &PodPlan) -> bool {
    policy.metadata.namespace.as_deref().unwrap_or("default") == pod.namespace()
        && policy.spec.as_ref().is_some_and(|s| {
            s.pod_selector
                .as_ref()
                .is_none_or(|sel| selector_matches(sel, &pod.labels()))
        })
}

/// Renders the policy chains for the non-hostNetwork pods on `node`. Always declares
/// [`TOP_CHAIN`] (flushing stale rules when policies are deleted).
pub fn render_policy_iptables(state: &LabState, node: &str) -> String {
    let namespace_labels: BTreeMap<String, BTreeMap<String, String>> = state
        .namespace_objects()
        .into_iter()
        .filter_map(|ns| Some((ns.metadata.name?, ns.metadata.labels.unwrap_or_default())))
        .collect();
    let mut chains = vec![TOP_CHAIN.to_string()];
    let mut rules = String::new();
    let mut policies: Vec<&NetworkPolicy> = state.network_policies.iter().collect();
    policies.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for pod in state
        .pods
        .iter()
        .filter(|p| p.node == node && p.netns.is_some())
    {
        for direction in [Direction::Ingress, Direction::Egress] {
            let applying: Vec<&&NetworkPolicy> = policies
                .iter()
                .filter(|p| selects(p, pod) && governs(p, direction))
                .collect();
            if applying.is_empty() {
                continue;
            }
            let (pod_key, ip, dir) = (pod.key(), pod.ip, direction.policy_type());
            let pod_chain = format!(
                "KUBE-POD-FW-{}",
                kube_proxy_hash(&format!("{pod_key}{dir}"))
            );
            chains.push(pod_chain.clone());
            let pod_match = direction.pod_match();
            let _ = writeln!(
                rules,
                "-A {TOP_CHAIN} {pod_match} {ip}/32 -m comment --comment \"rule to jump traffic {} POD name:{} namespace: {} to chain {pod_chain}\" -j {pod_chain}",
                if direction == Direction::Ingress { "destined to" } else { "from" },
                pod.name(),
                pod.namespace()
            );
            let _ = writeln!(
                rules,
                "-A {pod_chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            );
            let _ = writeln!(rules, "-A {pod_chain} -j MARK --set-xmark 0x0/0x10000");
            for policy in applying {
                let policy_key = format!(
                    "{}/{}",
                    policy.metadata.namespace.as_deref().unwrap_or("default"),
                    policy.metadata.name.as_deref().unwrap_or_default()
                );
                let policy_chain = format!(
                    "KUBE-NWPLCY-{}",
                    kube_proxy_hash(&format!("{policy_key}{dir}{pod_key}"))
                );
                chains.push(policy_chain.clone());
                let _ = writeln!(
                    rules,
                    "-A {pod_chain} -m comment --comment \"run through nw policy {policy_key}\" -j {policy_chain}"
                );
                render_policy_chain(
                    state,
                    &namespace_labels,
                    &mut rules,
                    &policy_chain,
                    &policy_key,
                    policy,
                    direction,
                );
            }
            let _ = writeln!(
                rules,
                "-A {pod_chain} -m mark ! --mark {ACCEPT_MARK} -m comment --comment \"default rule to REJECT traffic {} POD name:{} namespace: {}\" -j REJECT --reject-with icmp-port-unreachable",
                if direction == Direction::Ingress { "destined for" } else { "from" },
                pod.name(),
                pod.namespace()
            );
        }
    }
    let mut out = String::from("*filter\n");
    for chain in &chains {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for hook in ["INPUT", "FORWARD", "OUTPUT"] {
        let _ = writeln!(
            out,
            "-I {hook} 1 -m comment --comment \"kube-router netpol - 4IA2OSFRMVNDXBVV\" -j {TOP_CHAIN}"
        );
    }
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

fn render_policy_chain(
    state: &LabState,
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
    rules: &mut String,
    chain: &str,
    policy_key: &str,
    policy: &NetworkPolicy,
    direction: Direction,
) {
    let Some(spec) = &policy.spec else { return };
    let policy_namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let accept = |rules: &mut String, peer: Option<String>, port: Option<String>| {
        let peer = peer
            .map(|p| format!("{} {p} ", direction.peer_match()))
            .unwrap_or_default();
        let port = port.map(|p| format!("{p} ")).unwrap_or_default();
        let _ = writeln!(
            rules,
            "-A {chain} {peer}{port}-m comment --comment \"rule to ACCEPT traffic for policy {policy_key}\" -j MARK --set-xmark {ACCEPT_MARK}"
        );
    };
    // (peers, ports) of each rule: `from` for ingress, `to` for egress.
    type RuleParts<'a> = (
        Option<&'a Vec<NetworkPolicyPeer>>,
        Option<&'a Vec<NetworkPolicyPort>>,
    );
    let rule_list: Vec<RuleParts<'_>> = match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    };
    for (peers, ports) in rule_list {
        let port_matches: Vec<Option<String>> = match ports.filter(|p| !p.is_empty()) {
            None => vec![None],
            Some(ports) => ports.iter().map(|p| Some(port_match(p))).collect(),
        };
        let peer_matches: Vec<Option<String>> = match peers.filter(|p| !p.is_empty()) {
            None => vec![None],
            Some(peers) => peers
                .iter()
                .flat_map(|peer| peer_addresses(state, namespace_labels, policy_namespace, peer))
                .map(Some)
                .collect(),
        };
        for peer in &peer_matches {
            for port in &port_matches {
                accept(rules, peer.clone(), port.clone());
            }
        }
    }
    let _ = writeln!(rules, "-A {chain} -m mark --mark {ACCEPT_MARK} -j RETURN");
}

fn port_match(port: &NetworkPolicyPort) -> String {
    let protocol = port
        .protocol
        .as_deref()
        .unwrap_or("TCP")
        .to_ascii_lowercase();
    match &port.port {
        Some(IntOrString::Int(number)) => match port.end_port {
            Some(end) => format!("-p {protocol} -m {protocol} --dport {number}:{end}"),
            None => format!("-p {protocol} -m {protocol} --dport {number}"),
        },
        // Named ports resolve per destination pod; the lab's policy peers are addressed by IP,
        // so a named port matches the protocol only (wider, never narrower, than Kubernetes).
        Some(IntOrString::String(_)) | None => format!("-p {protocol}"),
    }
}

/// The CIDRs/IPs a peer stands for.
fn peer_addresses(
    state: &LabState,
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
    policy_namespace: &str,
    peer: &NetworkPolicyPeer,
) -> Vec<String> {
    if let Some(block) = &peer.ip_block {
        // `except` holes are not rendered; the lab's policies use whole blocks.
        return vec![block.cidr.clone()];
    }
    state
        .pods
        .iter()
        .filter(|pod| {
            let namespace_ok = match &peer.namespace_selector {
                Some(selector) => namespace_labels
                    .get(pod.namespace())
                    .is_some_and(|labels| selector_matches(selector, labels)),
                None => pod.namespace() == policy_namespace,
            };
            let pod_ok = peer
                .pod_selector
                .as_ref()
                .is_none_or(|selector| selector_matches(selector, &pod.labels()));
            namespace_ok && pod_ok
        })
        .map(|pod| format!("{}/32", pod.ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{parse_objects, LabObject};
    use crate::plan::{complete_pod, default_pod, plan_nodes, LabState};
    use model::snapshot::CniMode;

    fn state_with(policy_yaml: &str) -> LabState {
        let nodes = plan_nodes("u", CniMode::CalicoBgp, 2);
        let pods = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let ip = std::net::Ipv4Addr::from(u32::from(node.pod_cidr.network()) + 2);
                let pod = complete_pod(default_pod(node, 1), node, ip);
                PodPlan {
                    pod,
                    node: node.name.clone(),
                    ip,
                    netns: Some(format!("p{i}")),
                    host_veth: Some(format!("cali{i}")),
                }
            })
            .collect();
        let network_policies = parse_objects("p.yaml", policy_yaml)
            .expect("test policy parses")
            .into_iter()
            .filter_map(|o| match o {
                LabObject::NetworkPolicy(p) => Some(*p),
                _ => None,
            })
            .collect();
        LabState {
            name: "u".into(),
            cni: CniMode::CalicoBgp,
            nodes,
            pods,
            services: Vec::new(),
            network_policies,
            listener: Vec::new(),
        }
    }

    const ALLOW_FROM_POD_1_1: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow, namespace: default}\nspec:\n  podSelector: {matchLabels: {name: pod-2-1}}\n  ingress: [{from: [{podSelector: {matchLabels: {name: pod-1-1}}}], ports: [{port: 8080}]}]\n";

    #[test]
    fn ingress_is_enforced_on_the_destination_node_only() {
        let state = state_with(ALLOW_FROM_POD_1_1);
        let node2 = render_policy_iptables(&state, "node-2");
        assert!(
            node2.contains("-s 10.244.0.2/32 -p tcp -m tcp --dport 8080 -m comment --comment \"rule to ACCEPT traffic for policy default/allow\""),
            "{node2}"
        );
        assert!(node2.contains("-d 10.244.1.2/32 -m comment --comment \"rule to jump traffic destined to POD name:pod-2-1"), "{node2}");
        assert!(
            node2.contains("default rule to REJECT traffic destined for POD name:pod-2-1"),
            "{node2}"
        );
        let node1 = render_policy_iptables(&state, "node-1");
        assert!(
            !node1.contains("KUBE-POD-FW-"),
            "node-1 hosts no policied pod: {node1}"
        );
    }

    #[test]
    fn without_policies_only_the_empty_top_chain_is_declared() {
        let rules = render_policy_iptables(&state_with(""), "node-1");
        assert!(rules.contains(":KUBE-ROUTER-FORWARD - [0:0]"));
        assert!(!rules.contains("KUBE-POD-FW-"));
    }
}
