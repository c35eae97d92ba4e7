//! Findings: what a diagnosis concluded, each with a stable code, a level, a place, evidence,
//! the owner of what is at fault, and a hint.
//!
//! Finding codes are part of the public JSON schema (`docs/diagnosis.md`): add codes freely, never
//! rename or remove one.

use std::fmt;

use netstack::netfilter::RuleRef;
use serde::{Deserialize, Serialize};

/// Severity, from least to most severe. `Error` and `Fatal` make `diagnose` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
    Fatal,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! finding_codes {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal ),* $(,)?) => {
        /// Stable finding codes. The string form (`route.missing`) is what JSON and text carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FindingCode {
            $( $(#[$doc])* $variant, )*
        }

        impl FindingCode {
            pub const ALL: &'static [FindingCode] = &[ $( FindingCode::$variant, )* ];

            pub fn as_str(self) -> &'static str {
                match self { $( FindingCode::$variant => $code, )* }
            }
        }

        impl std::str::FromStr for FindingCode {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $code => Ok(FindingCode::$variant), )*
                    other => Err(format!("unknown finding code {other:?}")),
                }
            }
        }
    };
}

finding_codes! {
    /// No route to the destination in the netns where the packet is.
    RouteMissing => "route.missing",
    /// A blackhole route swallows the packet.
    RouteBlackhole => "route.blackhole",
    /// An unreachable route rejects the packet.
    RouteUnreachable => "route.unreachable",
    /// A prohibit route rejects the packet.
    RouteProhibit => "route.prohibit",
    /// The route goes somewhere other than where the CNI/Kubernetes says it should.
    RouteWrong => "route.wrong",
    /// A policy-routing rule sends the packet to a table that does not deliver it.
    RoutePolicyRule => "route.policy_rule",
    /// The device on the path is administratively or operationally down.
    LinkDown => "link.down",
    /// A device the path needs does not exist.
    LinkMissing => "link.missing",
    /// A device is enslaved to the wrong bridge (or to none).
    LinkWrongMaster => "link.wrong_master",
    /// MTU along the path (with encapsulation overhead) is smaller than what is sent.
    LinkMtuMismatch => "link.mtu_mismatch",
    /// The next hop's neighbour entry is missing, failed or wrong.
    NeighbourMissing => "neighbour.missing",
    /// A vxlan FDB entry is missing or points at the wrong VTEP.
    VxlanFdbWrong => "vxlan.fdb_wrong",
    /// A netfilter rule drops the packet.
    NetfilterDrop => "netfilter.drop",
    /// A netfilter rule rejects the packet.
    NetfilterReject => "netfilter.reject",
    /// A chain policy (e.g. FORWARD DROP) drops the packet.
    NetfilterPolicyDrop => "netfilter.policy_drop",
    /// A rule uses a match or target the engine does not model; its effect was assumed.
    NetfilterUnsupported => "netfilter.unsupported",
    /// NAT rewrote the packet somewhere it should not go.
    NatWrong => "nat.wrong",
    /// `net.ipv4.ip_forward` (or per-device forwarding) is off on a forwarding hop.
    SysctlIpForward => "sysctl.ip_forward",
    /// Strict reverse-path filtering drops the packet because the reverse route leaves elsewhere.
    SysctlRpFilter => "sysctl.rp_filter",
    /// `bridge-nf-call-iptables` is off, so bridged pod traffic bypasses kube-proxy/policy rules.
    SysctlBridgeNfCall => "sysctl.bridge_nf_call_iptables",
    /// `arp_ignore`/`arp_filter` keep the target from answering ARP.
    SysctlArp => "sysctl.arp",
    /// The conntrack table is full.
    ConntrackFull => "conntrack.full",
    /// Conntrack marks the packet INVALID and it is dropped.
    ConntrackInvalid => "conntrack.invalid",
    /// The Service has no ready endpoints.
    ServiceNoEndpoints => "service.no_endpoints",
    /// The Service's targetPort does not match any port the endpoints serve.
    ServiceWrongTargetPort => "service.wrong_target_port",
    /// A named targetPort is not declared by the backend pods.
    ServiceNamedPortMissing => "service.named_port_missing",
    /// externalTrafficPolicy=Local and no endpoint on the receiving node.
    ServiceNoLocalEndpoint => "service.no_local_endpoint",
    /// kube-proxy's rules disagree with the EndpointSlices.
    ServiceProxyOutOfSync => "service.proxy_out_of_sync",
    /// IPVS real servers disagree with the EndpointSlices.
    ServiceIpvsOutOfSync => "service.ipvs_out_of_sync",
    /// The destination port has no Service port.
    ServicePortMissing => "service.port_missing",
    /// Informational: a headless Service's name resolves to its pods' addresses, each diagnosed.
    ServiceHeadless => "service.headless",
    /// A NetworkPolicy isolates the pod and none allows the packet (ingress).
    PolicyIngressDenied => "policy.ingress_denied",
    /// A NetworkPolicy isolates the pod and none allows the packet (egress).
    PolicyEgressDenied => "policy.egress_denied",
    /// Nothing listens on the destination port.
    SocketNoListener => "socket.no_listener",
    /// The node is not Ready.
    NodeNotReady => "node.not_ready",
    /// Cluster DNS (CoreDNS Service) is not reachable.
    DnsUnreachable => "dns.unreachable",
    /// The engine could not decide because state is missing or unreadable.
    StateIncomplete => "state.incomplete",
    /// The source or destination could not be resolved to anything in the snapshot.
    EndpointUnknown => "endpoint.unknown",
    /// The packet loops (TTL would run out).
    PathLoop => "path.loop",
    /// Informational: NAT applied on the way (Service DNAT, masquerade).
    NatApplied => "nat.applied",
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FindingCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FindingCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a finding is: as precise as known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Snapshot netns id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A piece of evidence backing a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Evidence {
    /// A netfilter rule or policy.
    Rule { rule: RuleRef },
    /// A route, as `ip route` would print it, with its table.
    Route { table: u32, text: String },
    /// A policy-routing rule, as `ip rule` would print it.
    RoutingRule { text: String },
    /// A sysctl and its value.
    Sysctl { key: String, value: String },
    /// A device and the property that matters.
    Link { name: String, detail: String },
    /// A Kubernetes object.
    Object {
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A counter or table size.
    Counter { name: String, value: u64 },
    /// Anything else, in words.
    Text { text: String },
}

/// Who put the offending state there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    NetworkPolicy {
        namespace: String,
        name: String,
    },
    Service {
        namespace: String,
        name: String,
    },
    KubeProxy,
    Cni {
        name: String,
    },
    Docker,
    Istio,
    Kernel,
    /// Nobody we know: a hand-added rule or route.
    Unknown,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::NetworkPolicy { namespace, name } => {
                write!(f, "NetworkPolicy {namespace}/{name}")
            }
            Owner::Service { namespace, name } => write!(f, "Service {namespace}/{name}"),
            Owner::KubeProxy => f.write_str("kube-proxy"),
            Owner::Cni { name } => write!(f, "CNI ({name})"),
            Owner::Docker => f.write_str("Docker"),
            Owner::Istio => f.write_str("Istio"),
            Owner::Kernel => f.write_str("kernel"),
            Owner::Unknown => f.write_str("unknown (hand-added)"),
        }
    }
}

/// One conclusion of a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub code: FindingCode,
    pub level: Level,
    pub place: Place,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// How to fix it, in one or two sentences, with a command where one helps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
