//! NetworkPolicy intent against the datapath, at two moments:
//!
//! - when the walk records a drop in a policy enforcement chain (owner.rs recognised it), it asks
//!   [`explain_enforcement`] before the finding exists: the finding names the Kubernetes
//!   policies that isolate the pod and why none allows the packet, or, when the policies allow
//!   it, says the enforcement rules are stale;
//! - once per forward path, after the walk ([`compare`]), for what only the path's outcome
//!   tells: the datapath delivers what the policies deny (a warning, saying whether the node has
//!   any enforcement rules at all — flannel alone enforces nothing — or has rules that miss it),
//!   or the path stops for another reason and the policies deny too (a warning, so fixing the
//!   first cause is not mistaken for the whole fix). Paths stopped by an enforcement drop were
//!   explained when the drop was recorded and are skipped (by finding code, not text).
//!
//! Reply paths are not checked: NetworkPolicy is stateful, replies of an allowed connection are
//! allowed. Reads the snapshot and the walk's results; never re-walks.

use std::net::IpAddr;

use model::{Evidence, Finding, FindingCode, Level, NetnsRecord, Owner, Place};
use netstack::packet::Packet;

use super::{namespace_of, Flow, Isolation, PolicyDirection, PolicyIndex, PolicyRef};
use crate::endpoint::Index;
use crate::owner::is_policy_chain;
use crate::PathEnd;

/// Whether a finding code is a drop in a NetworkPolicy enforcement chain.
pub fn is_enforcement(code: FindingCode) -> bool {
    matches!(
        code,
        FindingCode::PolicyIngressDenied | FindingCode::PolicyEgressDenied
    )
}

type Verdict = (PolicyDirection, Isolation, Flow);

/// Both directions' verdicts for a connection from `client` whose packet last was `last`.
/// Egress is judged from the client's own address (SNAT happens after the pod's egress),
/// ingress from the address the server's node sees; both against the endpoint, not the Service
/// address.
fn verdicts(policies: &PolicyIndex<'_>, client: IpAddr, last: &Packet) -> [Verdict; 2] {
    let egress_flow = Flow {
        src: client,
        dst: last.dst,
        protocol: last.protocol,
        dport: last.dport,
    };
    let ingress_flow = Flow {
        src: last.src,
        ..egress_flow
    };
    [
        (
            PolicyDirection::Ingress,
            policies.evaluate(PolicyDirection::Ingress, &ingress_flow),
            ingress_flow,
        ),
        (
            PolicyDirection::Egress,
            policies.evaluate(PolicyDirection::Egress, &egress_flow),
            egress_flow,
        ),
    ]
}

/// Compare the policies with each forward path that no enforcement drop stopped; `original` is
/// the packet as the client sent it.
pub fn compare(
    index: &Index<'_>,
    policies: &PolicyIndex<'_>,
    original: &Packet,
    ends: &[PathEnd<'_>],
    findings: &mut Vec<Finding>,
) {
    for end in ends {
        let stopped_by_enforcement = end
            .path
            .stopped_by
            .and_then(|i| findings.get(i))
            .is_some_and(|f| is_enforcement(f.code));
        if stopped_by_enforcement {
            continue;
        }
        let verdicts = verdicts(policies, original.src, end.packet);
        for (direction, isolation, flow) in &verdicts {
            let Isolation::Denied { pod, denials } = isolation else {
                continue;
            };
            let Some(record) = pod_netns(index, pod) else {
                continue;
            };
            let policies_named = join(denials.iter().map(|d| &d.policy));
            let what = format!(
                "NetworkPolicy {policies_named} isolate{} pod {pod} for {direction} and none allows {}",
                if denials.len() == 1 { "s" } else { "" },
                describe_flow(policies, flow)
            );
            let (message, hint) = if end.path.delivered {
                let host = index.host_netns(&record.node);
                let why = match host.filter(|h| has_enforcement_rules(h)) {
                    Some(_) => format!(
                        "node {} has NetworkPolicy enforcement rules, but none stops this packet: they are stale or incomplete",
                        record.node
                    ),
                    None => format!(
                        "node {} has no NetworkPolicy enforcement rules{}",
                        record.node,
                        index
                            .snapshot
                            .cluster
                            .cni
                            .map(|c| format!(
                                ": the CNI ({}) does not enforce NetworkPolicy",
                                c.as_str()
                            ))
                            .unwrap_or_default()
                    ),
                };
                (
                    format!("{what}, yet the datapath delivers it: {why}"),
                    format!(
                        "If it must be blocked, run a NetworkPolicy enforcer on the nodes (calico/canal, cilium or kube-router; flannel enforces none) or restart the one there; if it must be allowed, {}",
                        allow_hint(
                            policies,
                            *direction,
                            flow,
                            denials.first().map(|d| &d.policy)
                        )
                    ),
                )
            } else {
                (
                    format!(
                        "{what}: even once the finding that stops the path is fixed, this traffic stays denied where NetworkPolicy is enforced"
                    ),
                    format!(
                        "If it must be allowed, {}",
                        allow_hint(
                            policies,
                            *direction,
                            flow,
                            denials.first().map(|d| &d.policy)
                        )
                    ),
                )
            };
            let finding = Finding {
                code: direction_code(*direction),
                level: Level::Warning,
                place: Place {
                    node: Some(record.node.clone()),
                    netns: Some(record.id.clone()),
                    device: None,
                },
                message,
                evidence: denials.iter().map(policy_evidence).collect(),
                owner: denials.first().map(|d| policy_owner(&d.policy)),
                hint: Some(hint),
            };
            if !findings.iter().any(|f| {
                f.code == finding.code && f.place == finding.place && f.message == finding.message
            }) {
                findings.push(finding);
            }
        }
    }
}

/// The datapath drops `packet` of `client`'s connection in a policy chain, `finding` says so:
/// add which Kubernetes policies and why, or that the policies allow it and the rules are stale.
pub fn explain_enforcement(
    policies: &PolicyIndex<'_>,
    index: &Index<'_>,
    client: IpAddr,
    packet: &Packet,
    finding: &mut Finding,
) {
    let verdicts = verdicts(policies, client, packet);
    let denied: Vec<&Verdict> = verdicts.iter().filter(|(_, i, _)| i.is_denied()).collect();
    // Ingress is enforced on the server's node, egress on the client's: when both deny, the
    // node that dropped tells which one it was.
    let chosen = match denied.as_slice() {
        [] => None,
        [one] => Some(*one),
        [ingress, egress] => {
            let at_server = match &ingress.1 {
                Isolation::Denied { pod, .. } => pod_netns(index, pod)
                    .is_some_and(|r| Some(&r.node) == finding.place.node.as_ref()),
                _ => false,
            };
            Some(if at_server { *ingress } else { *egress })
        }
        _ => None,
    };
    match chosen {
        Some((direction, Isolation::Denied { pod, denials }, flow)) => {
            finding.code = direction_code(*direction);
            finding.owner = denials.first().map(|d| policy_owner(&d.policy));
            finding.message = format!(
                "{}: NetworkPolicy {} isolate{} pod {pod} for {direction} and none allows {}",
                finding.message,
                join(denials.iter().map(|d| &d.policy)),
                if denials.len() == 1 { "s" } else { "" },
                describe_flow(policies, flow)
            );
            finding.evidence.extend(denials.iter().map(policy_evidence));
            finding.hint = Some(format!(
                "If this traffic is wanted, {}",
                allow_hint(
                    policies,
                    *direction,
                    flow,
                    denials.first().map(|d| &d.policy)
                )
            ));
        }
        _ => {
            let allowed: Vec<String> = verdicts
                .iter()
                .map(|(direction, isolation, _)| match isolation {
                    Isolation::Allowed { allowed_by, .. } => format!(
                        "{direction} allowed by {}",
                        allowed_by
                            .iter()
                            .map(|(p, i)| format!("{p} {direction}[{i}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Isolation::NotIsolated { pod } => {
                        format!("no NetworkPolicy isolates {pod} for {direction}")
                    }
                    _ => format!("{direction}: no pod to isolate"),
                })
                .collect();
            finding.message = format!(
                "{}; yet the NetworkPolicies in the snapshot allow it ({}): the enforcement rules are out of date",
                finding.message,
                allowed.join("; ")
            );
            finding.hint = Some(format!(
                "The policy agent on {} has not applied the current NetworkPolicies: check its logs and restart it (kube-router / calico-node).",
                finding.place.node.as_deref().unwrap_or("this node")
            ));
        }
    }
}

fn direction_code(direction: PolicyDirection) -> FindingCode {
    match direction {
        PolicyDirection::Ingress => FindingCode::PolicyIngressDenied,
        PolicyDirection::Egress => FindingCode::PolicyEgressDenied,
    }
}

fn policy_owner(policy: &PolicyRef) -> Owner {
    Owner::NetworkPolicy {
        namespace: policy.namespace.clone(),
        name: policy.name.clone(),
    }
}

fn policy_evidence(denial: &super::Denial) -> Evidence {
    Evidence::Object {
        kind: "NetworkPolicy".into(),
        namespace: Some(denial.policy.namespace.clone()),
        name: denial.policy.name.clone(),
        detail: Some(denial.reasons()),
    }
}

fn join<'a>(policies: impl Iterator<Item = &'a PolicyRef>) -> String {
    policies
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `tcp 10.244.0.2 (default/client) -> 10.244.1.2:8080 (default/web)`.
fn describe_flow(policies: &PolicyIndex<'_>, flow: &Flow) -> String {
    let name = |ip: IpAddr| {
        policies
            .pod_at(ip)
            .map(|p| {
                format!(
                    " ({}/{})",
                    namespace_of(&p.metadata),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .unwrap_or_default()
    };
    let port = if flow.protocol.has_ports() {
        format!(":{}", flow.dport)
    } else {
        String::new()
    };
    format!(
        "{} {}{} -> {}{port}{}",
        flow.protocol,
        flow.src,
        name(flow.src),
        flow.dst,
        name(flow.dst)
    )
}

/// A concrete rule that would allow the flow, to add to `policy`.
fn allow_hint(
    policies: &PolicyIndex<'_>,
    direction: PolicyDirection,
    flow: &Flow,
    policy: Option<&PolicyRef>,
) -> String {
    let (peer_ip, own_namespace) = match direction {
        PolicyDirection::Ingress => (flow.src, policies.pod_at(flow.dst)),
        PolicyDirection::Egress => (flow.dst, policies.pod_at(flow.src)),
    };
    let own_namespace = own_namespace
        .map(|p| namespace_of(&p.metadata))
        .unwrap_or("default");
    let peer = match policies.pod_at(peer_ip) {
        Some(pod) => {
            let labels = pod
                .metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let namespace = namespace_of(&pod.metadata);
            let ns = if namespace == own_namespace {
                String::new()
            } else {
                format!(
                    "namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}, "
                )
            };
            format!("{{{ns}podSelector: {{matchLabels: {{{labels}}}}}}}")
        }
        None => format!(
            "{{ipBlock: {{cidr: {peer_ip}/{}}}}}",
            if peer_ip.is_ipv4() { 32 } else { 128 }
        ),
    };
    let ports = if flow.protocol.has_ports() {
        format!(
            ", ports: [{{protocol: {}, port: {}}}]",
            super::protocol_name(flow.protocol),
            flow.dport
        )
    } else {
        String::new()
    };
    let field = match direction {
        PolicyDirection::Ingress => "from",
        PolicyDirection::Egress => "to",
    };
    format!(
        "add to {} the {direction} rule {{{field}: [{peer}]{ports}}}.",
        policy.map_or("a policy that selects the pod".to_string(), |p| format!(
            "NetworkPolicy {p}"
        ))
    )
}

fn pod_netns<'a>(index: &Index<'a>, pod: &str) -> Option<&'a NetnsRecord> {
    let (namespace, name) = pod.split_once('/')?;
    index.pod_netns(namespace, name)
}

/// Whether the node's ruleset holds NetworkPolicy enforcement chains (kube-router, calico).
fn has_enforcement_rules(host: &NetnsRecord) -> bool {
    let Some(dump) = &host.state.iptables else {
        return false;
    };
    [&dump.ipv4, &dump.ipv6]
        .into_iter()
        .flatten()
        .flat_map(|text| text.lines())
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|decl| decl.split_whitespace().next())
        .any(is_policy_chain)
}
