//! NetworkPolicy intent: which policies isolate a pod, and whether any of them allows one
//! connection, with the exact Kubernetes semantics (`networking.k8s.io/v1`):
//!
//! - a policy selects the pods of its own namespace that match `spec.podSelector` (empty or
//!   absent = every pod); hostNetwork pods are never selected;
//! - `spec.policyTypes` absent or empty defaults to `Ingress`, plus `Egress` when `spec.egress`
//!   has at least one rule (the API server's defaulting, so `egress: []` alone isolates nothing);
//! - a pod selected for a direction is isolated in it; the union of all rules of all selecting
//!   policies is what is allowed (allow-union: policies never deny, isolation does);
//! - a rule with no peers allows every peer, a rule with no ports every port (`ingress: [{}]`
//!   allows all); a policy with no rules of its type allows nothing (`ingress: []` denies all);
//! - a peer with both `namespaceSelector` and `podSelector` means pods matching both (one
//!   element), not either (two elements); `podSelector` alone means the policy's namespace;
//!   `ipBlock` matches addresses in `cidr` and in none of `except`, pods and non-pods alike
//!   (Kubernetes leaves ipBlock over pod IPs to the implementation; calico and cilium match them);
//! - ports: protocol (default TCP), number or `port`..`endPort`, or a named port resolved
//!   against the container ports of the destination pod.
//!
//! Addresses are those the policy enforcer sees: after Service DNAT (policies apply to the
//! endpoint, never to a ClusterIP). Pure: reads the snapshot's Kubernetes objects only, never the
//! datapath; comparing the two with the walk is `check`'s business.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use netstack::packet::Protocol;

use crate::endpoint::Index;

/// Which side of the pod a policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDirection {
    Ingress,
    Egress,
}

impl PolicyDirection {
    fn policy_type(self) -> &'static str {
        match self {
            PolicyDirection::Ingress => "Ingress",
            PolicyDirection::Egress => "Egress",
        }
    }

    fn field(self) -> &'static str {
        match self {
            PolicyDirection::Ingress => "ingress",
            PolicyDirection::Egress => "egress",
        }
    }
}

impl fmt::Display for PolicyDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// One connection attempt as the policy enforcer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Destination port (ignored for ICMP).
    pub dport: u16,
}

/// `namespace/name` of a NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What NetworkPolicy says about one direction of a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum Isolation {
    /// The end the direction is about is not a pod NetworkPolicy can select (a node, a
    /// hostNetwork pod, an address outside the cluster): policies do not apply.
    NotSelectable { address: IpAddr },
    /// A pod no policy of this direction selects: everything is allowed.
    NotIsolated { pod: String },
    /// Isolated, and at least one rule allows the flow.
    Allowed {
        pod: String,
        isolating: Vec<PolicyRef>,
        /// The policies and rule indices (`spec.ingress[i]`) that allow it.
        allowed_by: Vec<(PolicyRef, usize)>,
    },
    /// Isolated, and no rule of any selecting policy allows the flow.
    Denied { pod: String, denials: Vec<Denial> },
}

/// Why one isolating policy does not allow the flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub policy: PolicyRef,
    pub direction: PolicyDirection,
    /// One entry per rule; empty when the policy has no rules of this direction (deny all).
    pub misses: Vec<RuleMiss>,
}

/// Why one rule (`spec.ingress[index]`) does not allow the flow.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMiss {
    pub index: usize,
    pub miss: Miss,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// No peer (`from`/`to` element) matches the other end; one entry per peer.
    Peers(Vec<PeerMiss>),
    /// A peer matches, but no port entry covers the packet; one entry per port.
    Ports(Vec<PortMiss>),
}

/// Why one peer element does not match.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerMiss {
    OutsideIpBlock {
        cidr: String,
    },
    InIpBlockExcept {
        cidr: String,
        except: String,
    },
    /// The peer selects pods, and the other end is not a pod.
    NotAPod {
        address: IpAddr,
    },
    /// `podSelector` alone: only pods of the policy's own namespace.
    OtherNamespace {
        pod: String,
        policy_namespace: String,
    },
    NamespaceLabels {
        selector: String,
        namespace: String,
    },
    PodLabels {
        selector: String,
        pod: String,
    },
    /// The peer is not what the API server accepts (bad CIDR, unknown operator, no field set).
    Invalid {
        reason: String,
    },
}

/// Why one port entry does not cover the packet.
#[derive(Debug, Clone, PartialEq)]
pub enum PortMiss {
    Protocol {
        wanted: String,
    },
    Number {
        wanted: String,
    },
    /// A named port the destination pod does not declare (for that protocol).
    NamedUndeclared {
        name: String,
        protocol: String,
        pod: Option<String>,
        declared: Vec<String>,
    },
    /// A named port that resolves to another number on the destination pod.
    NamedElsewhere {
        name: String,
        resolved: i32,
    },
}

impl fmt::Display for PeerMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMiss::OutsideIpBlock { cidr } => write!(f, "ipBlock {cidr} does not contain it"),
            PeerMiss::InIpBlockExcept { cidr, except } => {
                write!(f, "ipBlock {cidr} excepts {except}, which contains it")
            }
            PeerMiss::NotAPod { address } => write!(
                f,
                "selects pods, and {address} is not a pod (node, hostNetwork pod or outside address)"
            ),
            PeerMiss::OtherNamespace {
                pod,
                policy_namespace,
            } => write!(
                f,
                "podSelector without namespaceSelector selects only namespace {policy_namespace}, and {pod} is elsewhere"
            ),
            PeerMiss::NamespaceLabels {
                selector,
                namespace,
            } => write!(
                f,
                "namespaceSelector {selector} does not match namespace {namespace}"
            ),
            PeerMiss::PodLabels { selector, pod } => {
                write!(f, "podSelector {selector} does not match pod {pod}")
            }
            PeerMiss::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

impl fmt::Display for PortMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortMiss::Protocol { wanted } => write!(f, "allows {wanted} only"),
            PortMiss::Number { wanted } => write!(f, "allows port {wanted} only"),
            PortMiss::NamedUndeclared {
                name,
                protocol,
                pod: Some(pod),
                declared,
            } => write!(
                f,
                "named port {name}/{protocol} is not declared by pod {pod} (it declares {})",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
            PortMiss::NamedUndeclared {
                name,
                protocol,
                pod: None,
                ..
            } => write!(
                f,
                "named port {name}/{protocol} can only match a pod, and the destination is not one"
            ),
            PortMiss::NamedElsewhere { name, resolved } => {
                write!(f, "named port {name} is {resolved} on the destination pod")
            }
        }
    }
}

impl fmt::Display for RuleMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, misses): (&str, Vec<String>) = match &self.miss {
            Miss::Peers(p) => (
                "no peer matches",
                p.iter().map(ToString::to_string).collect(),
            ),
            Miss::Ports(p) => (
                "a peer matches but no port does",
                p.iter().map(ToString::to_string).collect(),
            ),
        };
        write!(f, "rule [{}]: {what} ({})", self.index, misses.join("; "))
    }
}

impl Denial {
    /// Why the policy does not allow the flow, without naming the policy.
    pub fn reasons(&self) -> String {
        if self.misses.is_empty() {
            return format!("has no {} rules: it allows nothing", self.direction);
        }
        let rules: Vec<String> = self.misses.iter().map(ToString::to_string).collect();
        format!("{}: {}", self.direction, rules.join("; "))
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.policy, self.reasons())
    }
}

impl Isolation {
    pub fn is_denied(&self) -> bool {
        matches!(self, Isolation::Denied { .. })
    }
}

/// Lookups over the snapshot's objects for one diagnosis: pods come from the diagnosis'
/// [`Index`], policies are sorted once.
pub struct PolicyIndex<'a> {
    index: &'a Index<'a>,
    policies: Vec<&'a NetworkPolicy>,
    namespace_labels: HashMap<&'a str, &'a BTreeMap<String, String>>,
}

/// A namespaced object's namespace, "default" when the manifest leaves it out.
pub(crate) fn namespace_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// `namespace/name` of a pod, its namespace defaulted as [`namespace_of`] does.
pub(crate) fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        namespace_of(&pod.metadata),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl<'a> PolicyIndex<'a> {
    pub fn new(index: &'a Index<'a>) -> PolicyIndex<'a> {
        let k8s = &index.snapshot.kubernetes;
        let mut policies: Vec<&NetworkPolicy> = k8s.network_policies.iter().collect();
        policies.sort_by_key(|p| (namespace_of(&p.metadata), p.metadata.name.as_deref()));
        let namespace_labels = k8s
            .namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
            .collect();
        PolicyIndex {
            index,
            policies,
            namespace_labels,
        }
    }

    /// Whether the snapshot holds any NetworkPolicy at all (nothing to check otherwise).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The pod (not hostNetwork) that owns `ip`.
    pub fn pod_at(&self, ip: IpAddr) -> Option<&'a Pod> {
        self.index.pod_at(ip)
    }

    /// A namespace's labels. The API server always sets `kubernetes.io/metadata.name`, so it is
    /// added even when the Namespace object is missing from the snapshot.
    fn labels_of_namespace(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespace_labels
            .get(namespace)
            .map(|l| (*l).clone())
            .unwrap_or_default();
        labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| namespace.to_string());
        labels
    }

    /// The verdict for one direction of `flow`.
    pub fn evaluate(&self, direction: PolicyDirection, flow: &Flow) -> Isolation {
        let (end, other) = match direction {
            PolicyDirection::Ingress => (flow.dst, flow.src),
            PolicyDirection::Egress => (flow.src, flow.dst),
        };
        let Some(pod) = self.pod_at(end) else {
            return Isolation::NotSelectable { address: end };
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let namespace = namespace_of(&pod.metadata);
        let selecting: Vec<&NetworkPolicy> = self
            .policies
            .iter()
            .copied()
            .filter(|p| namespace_of(&p.metadata) == namespace)
            .filter(|p| governs(p, direction))
            .filter(|p| {
                let selector = p.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
                // An invalid selector selects nothing: the API server would not have stored it.
                selector.is_none_or(|s| selector_matches(s, &labels).unwrap_or(false))
            })
            .collect();
        let pod_name = pod_key(pod);
        if selecting.is_empty() {
            return Isolation::NotIsolated { pod: pod_name };
        }
        let peer = Peer {
            address: other,
            pod: self.pod_at(other),
        };
        let destination_pod = self.pod_at(flow.dst);
        let mut allowed_by = Vec::new();
        let mut denials = Vec::new();
        for policy in &selecting {
            let reference = PolicyRef {
                namespace: namespace.to_string(),
                name: policy.metadata.name.clone().unwrap_or_default(),
            };
            let mut misses = Vec::new();
            for (index, (peers, ports)) in rules_of(policy, direction).into_iter().enumerate() {
                let policy_namespace = namespace_of(&policy.metadata);
                let outcome = self
                    .match_peers(peers, policy_namespace, &peer)
                    .and_then(|()| match_ports(ports, flow, destination_pod));
                match outcome {
                    Ok(()) => allowed_by.push((reference.clone(), index)),
                    Err(miss) => misses.push(RuleMiss { index, miss }),
                }
            }
            if !allowed_by.iter().any(|(p, _)| *p == reference) {
                denials.push(Denial {
                    policy: reference,
                    direction,
                    misses,
                });
            }
        }
        if allowed_by.is_empty() {
            Isolation::Denied {
                pod: pod_name,
                denials,
            }
        } else {
            Isolation::Allowed {
                pod: pod_name,
                isolating: selecting
                    .iter()
                    .map(|p| PolicyRef {
                        namespace: namespace.to_string(),
                        name: p.metadata.name.clone().unwrap_or_default(),
                    })
                    .collect(),
                allowed_by,
            }
        }
    }

    fn match_peers(
        &self,
        peers: Option<&Vec<NetworkPolicyPeer>>,
        policy_namespace: &str,
        other: &Peer<'_>,
    ) -> Result<(), Miss> {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let mut misses = Vec::new();
        for peer in peers {
            match self.match_peer(peer, policy_namespace, other) {
                Ok(()) => return Ok(()),
                Err(miss) => misses.push(miss),
            }
        }
        Err(Miss::Peers(misses))
    }

    fn match_peer(
        &self,
        peer: &NetworkPolicyPeer,
        policy_namespace: &str,
        other: &Peer<'_>,
    ) -> Result<(), PeerMiss> {
        if let Some(block) = &peer.ip_block {
            if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                return Err(PeerMiss::Invalid {
                    reason: "ipBlock cannot be combined with a selector".into(),
                });
            }
            let cidr = parse_cidr(&block.cidr)?;
            if !cidr.contains(&other.address) {
                return Err(PeerMiss::OutsideIpBlock {
                    cidr: block.cidr.clone(),
                });
            }
            for except in block.except.iter().flatten() {
                if parse_cidr(except)?.contains(&other.address) {
                    return Err(PeerMiss::InIpBlockExcept {
                        cidr: block.cidr.clone(),
                        except: except.clone(),
                    });
                }
            }
            return Ok(());
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return Err(PeerMiss::Invalid {
                reason: "a peer needs podSelector, namespaceSelector or ipBlock".into(),
            });
        }
        let Some(pod) = other.pod else {
            return Err(PeerMiss::NotAPod {
                address: other.address,
            });
        };
        let pod_namespace = namespace_of(&pod.metadata);
        match &peer.namespace_selector {
            Some(selector) => {
                let labels = self.labels_of_namespace(pod_namespace);
                if !selector_matches(selector, &labels).map_err(invalid)? {
                    return Err(PeerMiss::NamespaceLabels {
                        selector: describe_selector(selector),
                        namespace: pod_namespace.to_string(),
                    });
                }
            }
            None if pod_namespace != policy_namespace => {
                return Err(PeerMiss::OtherNamespace {
                    pod: pod_key(pod),
                    policy_namespace: policy_namespace.to_string(),
                });
            }
            None => {}
        }
        if let Some(selector) = &peer.pod_selector {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            if !selector_matches(selector, &labels).map_err(invalid)? {
                return Err(PeerMiss::PodLabels {
                    selector: describe_selector(selector),
                    pod: pod_key(pod),
                });
            }
        }
        Ok(())
    }
}

/// The other end of the flow, as a peer clause sees it.
struct Peer<'a> {
    address: IpAddr,
    pod: Option<&'a Pod>,
}

fn invalid(reason: String) -> PeerMiss {
    PeerMiss::Invalid { reason }
}

fn parse_cidr(text: &str) -> Result<IpNet, PeerMiss> {
    text.parse::<IpNet>().map_err(|_| PeerMiss::Invalid {
        reason: format!("ipBlock {text:?} is not a CIDR"),
    })
}

/// `spec.policyTypes`, or the API server's default for it.
fn governs(policy: &NetworkPolicy, direction: PolicyDirection) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(types) => types.iter().any(|t| t == direction.policy_type()),
        None => {
            direction == PolicyDirection::Ingress
                || spec.egress.as_ref().is_some_and(|e| !e.is_empty())
        }
    }
}

type RuleParts<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// The (peers, ports) of each rule of `direction`: `from` of ingress rules, `to` of egress rules.
fn rules_of(policy: &NetworkPolicy, direction: PolicyDirection) -> Vec<RuleParts<'_>> {
    let Some(spec) = &policy.spec else {
        return Vec::new();
    };
    match direction {
        PolicyDirection::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        PolicyDirection::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        Protocol::Icmp => "ICMP",
    }
}

fn match_ports(
    ports: Option<&Vec<NetworkPolicyPort>>,
    flow: &Flow,
    destination_pod: Option<&Pod>,
) -> Result<(), Miss> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut misses = Vec::new();
    for port in ports {
        match match_port(port, flow, destination_pod) {
            Ok(()) => return Ok(()),
            Err(miss) => misses.push(miss),
        }
    }
    Err(Miss::Ports(misses))
}

fn match_port(
    port: &NetworkPolicyPort,
    flow: &Flow,
    destination_pod: Option<&Pod>,
) -> Result<(), PortMiss> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    // Port entries name TCP, UDP or SCTP; ICMP never matches one.
    if protocol != protocol_name(flow.protocol) {
        return Err(PortMiss::Protocol {
            wanted: protocol.to_string(),
        });
    }
    let dport = i32::from(flow.dport);
    match &port.port {
        None => Ok(()),
        Some(IntOrString::Int(number)) => {
            let end = port.end_port.unwrap_or(*number);
            if (*number..=end).contains(&dport) {
                Ok(())
            } else {
                Err(PortMiss::Number {
                    wanted: if end == *number {
                        format!("{number}/{protocol}")
                    } else {
                        format!("{number}-{end}/{protocol}")
                    },
                })
            }
        }
        Some(IntOrString::String(name)) => {
            let declared: Vec<(String, i32, String)> = destination_pod
                .and_then(|p| p.spec.as_ref())
                .into_iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        p.container_port,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
                .collect();
            match declared
                .iter()
                .find(|(n, _, proto)| n == name && proto == protocol)
            {
                Some((_, number, _)) if *number == dport => Ok(()),
                Some((_, number, _)) => Err(PortMiss::NamedElsewhere {
                    name: name.clone(),
                    resolved: *number,
                }),
                None => Err(PortMiss::NamedUndeclared {
                    name: name.clone(),
                    protocol: protocol.to_string(),
                    pod: destination_pod.map(pod_key),
                    declared: declared
                        .iter()
                        .filter(|(n, _, _)| !n.is_empty())
                        .map(|(n, number, proto)| format!("{n}={number}/{proto}"))
                        .collect(),
                }),
            }
        }
    }
}

/// Label selector semantics (`metav1.LabelSelectorAsSelector`): matchLabels and every
/// matchExpression must hold; an empty selector matches everything. An operator the API server
/// would reject is an error, not a silent match.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expressions = true;
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let holds = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "matchExpressions {} {} needs values",
                    e.key, e.operator
                ));
            }
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            other => {
                return Err(format!(
                    "matchExpressions operator {other:?} on {} is not In, NotIn, Exists or DoesNotExist",
                    e.key
                ));
            }
        };
        by_expressions &= holds;
    }
    Ok(by_labels && by_expressions)
}

/// `{app=web, tier in (a,b), !debug}`; `{}` selects everything.
pub fn describe_selector(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    format!("{{{}}}", parts.join(", "))
}

pub mod check;
#[cfg(test)]
mod tests;
