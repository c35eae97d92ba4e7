//! The state of one Linux network namespace, as a collector reads it and the simulator consumes it.
//!
//! These types are the netns half of the snapshot format (documented in `docs/snapshot.md`); change
//! them only together with that document and the snapshot version. Text the kernel's own tools
//! print (iptables-save, `nft -j list ruleset`, `ipset save`, `/proc/net/ip_vs`) is kept verbatim so
//! that evidence can cite the exact line and the parsers can be checked against real dumps.
//!
//! Every optional part is `Option`: `None` means "not collected" (the reason is in
//! [`NetnsState::missing`]), `Some(empty)` means "collected, and there is nothing".

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Everything known about one network namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsState {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    /// Routes of every table (main, local, and policy-routing tables).
    pub routes: Vec<Route>,
    /// Policy-routing rules (`ip rule`), both families.
    pub rules: Vec<RoutingRule>,
    #[serde(default)]
    pub neighbours: Vec<Neighbour>,
    #[serde(default)]
    pub fdb: Vec<FdbEntry>,
    /// Sysctls under `/proc/sys/net`, keyed by their path below `/proc/sys` with `/` separators
    /// (`net/ipv4/ip_forward`, `net/ipv4/conf/eth0/rp_filter`), which keeps device names with dots
    /// unambiguous. Values as the kernel prints them, trimmed.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables: Option<IptablesDump>,
    /// `nft -j list ruleset` output, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables: Option<String>,
    /// `ipset save` output, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsets: Option<String>,
    /// `/proc/net/ip_vs` text, verbatim (`None` where the IPVS module is not loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Vec<ListeningSocket>>,
    /// Parts the collector could not read, with why. The engine reports a diagnosis as
    /// incomplete where it needed one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingPart>,
}

/// A part of [`NetnsState`] that could not be collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingPart {
    pub part: StatePart,
    pub reason: String,
}

/// The named parts of a netns state, for [`MissingPart`] and for "incomplete" findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatePart {
    Links,
    Addresses,
    Routes,
    Rules,
    Neighbours,
    Fdb,
    Sysctls,
    Iptables,
    Nftables,
    Ipsets,
    Ipvs,
    Conntrack,
    Sockets,
}

impl StatePart {
    pub fn as_str(self) -> &'static str {
        match self {
            StatePart::Links => "links",
            StatePart::Addresses => "addresses",
            StatePart::Routes => "routes",
            StatePart::Rules => "rules",
            StatePart::Neighbours => "neighbours",
            StatePart::Fdb => "fdb",
            StatePart::Sysctls => "sysctls",
            StatePart::Iptables => "iptables",
            StatePart::Nftables => "nftables",
            StatePart::Ipsets => "ipsets",
            StatePart::Ipvs => "ipvs",
            StatePart::Conntrack => "conntrack",
            StatePart::Sockets => "sockets",
        }
    }
}

impl fmt::Display for StatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// `IFF_UP`: administratively up.
    pub admin_up: bool,
    /// Operational state as the kernel reports it (`IFLA_OPERSTATE`).
    pub oper_state: OperState,
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Name of the master device (bridge, bond, VRF) in the same netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// For veth: the other end. For vxlan/ipip: the underlay device's ifindex, if bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<LinkPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelInfo>,
    /// `IFF_NOARP`.
    #[serde(default)]
    pub noarp: bool,
}

/// Device type (`IFLA_INFO_KIND`, or loopback / physical when the kernel gives none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum LinkKind {
    Loopback,
    /// A device without `IFLA_INFO_KIND`: a physical NIC or similar.
    Device,
    Veth,
    Bridge,
    Vxlan,
    Ipip,
    Dummy,
    Tun,
    Bond,
    Vlan,
    Macvlan,
    Ipvlan,
    Wireguard,
    Other(String),
}

impl LinkKind {
    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Loopback => "loopback",
            LinkKind::Device => "device",
            LinkKind::Veth => "veth",
            LinkKind::Bridge => "bridge",
            LinkKind::Vxlan => "vxlan",
            LinkKind::Ipip => "ipip",
            LinkKind::Dummy => "dummy",
            LinkKind::Tun => "tun",
            LinkKind::Bond => "bond",
            LinkKind::Vlan => "vlan",
            LinkKind::Macvlan => "macvlan",
            LinkKind::Ipvlan => "ipvlan",
            LinkKind::Wireguard => "wireguard",
            LinkKind::Other(s) => s,
        }
    }

    /// Bytes of outer headers this device adds to every packet it sends (IPv4 underlay).
    pub fn encapsulation_overhead(&self) -> u32 {
        match self {
            // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
            LinkKind::Vxlan => 50,
            LinkKind::Ipip => 20,
            // outer IPv4 20 + UDP 8 + WireGuard 32
            LinkKind::Wireguard => 60,
            _ => 0,
        }
    }
}

impl From<String> for LinkKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "loopback" => LinkKind::Loopback,
            "device" => LinkKind::Device,
            "veth" => LinkKind::Veth,
            "bridge" => LinkKind::Bridge,
            "vxlan" => LinkKind::Vxlan,
            "ipip" => LinkKind::Ipip,
            "dummy" => LinkKind::Dummy,
            "tun" => LinkKind::Tun,
            "bond" => LinkKind::Bond,
            "vlan" => LinkKind::Vlan,
            "macvlan" => LinkKind::Macvlan,
            "ipvlan" => LinkKind::Ipvlan,
            "wireguard" => LinkKind::Wireguard,
            _ => LinkKind::Other(s),
        }
    }
}

impl From<LinkKind> for String {
    fn from(k: LinkKind) -> String {
        k.as_str().to_string()
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 2863 operational state, as `IFLA_OPERSTATE` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperState {
    Up,
    Down,
    LowerLayerDown,
    Dormant,
    NotPresent,
    Testing,
    /// Virtual devices without carrier semantics (loopback, some tunnels) report this while working.
    Unknown,
}

/// The other end of a veth, or the lower device of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPeer {
    /// Interface index in the peer's netns.
    pub ifindex: u32,
    /// Snapshot id of the netns the peer lives in, when the collector could resolve it; `None`
    /// means the same netns as this link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Peer name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanInfo {
    pub vni: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    /// Default remote (`remote`/`group`), if any; per-destination remotes are FDB entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
    /// UDP destination port (8472 for flannel, 4789 for calico/IANA).
    pub port: u16,
    /// Name of the underlay device it is bound to (`dev`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default)]
    pub learning: bool,
}

/// ipip / gre style point-to-point tunnel parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
}

/// An address on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub dev: String,
    pub address: IpAddr,
    pub prefix_len: u8,
    #[serde(default = "Scope::universe_default")]
    pub scope: Scope,
}

/// Route / address scope (`rtm_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Universe,
    Site,
    Link,
    Host,
    Nowhere,
}

impl Scope {
    fn universe_default() -> Scope {
        Scope::Universe
    }
}

/// Well-known routing table ids.
pub mod table {
    pub const LOCAL: u32 = 255;
    pub const MAIN: u32 = 254;
    pub const DEFAULT: u32 = 253;
}

/// One route, in any table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub table: u32,
    /// Destination prefix; the default route is `0.0.0.0/0` (or `::/0`).
    pub dst: IpNet,
    #[serde(rename = "type")]
    pub kind: RouteType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefsrc: Option<IpAddr>,
    #[serde(default)]
    pub metric: u32,
    #[serde(default = "Scope::universe_default")]
    pub scope: Scope,
    /// Routing protocol that installed it (`kernel`, `boot`, `static`, `bird`, a number…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub onlink: bool,
    /// Route-level MTU (`mtu` metric), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Multipath next hops (ECMP); empty for a single-path route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nexthops: Vec<NextHop>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHop {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default = "NextHop::default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub onlink: bool,
}

impl NextHop {
    fn default_weight() -> u32 {
        1
    }
}

/// `rtm_type` of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteType {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Nat,
}

/// A policy-routing rule (`ip rule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub priority: u32,
    pub family: Family,
    /// `not` inverts the whole selector.
    #[serde(default)]
    pub invert: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    /// Mask for `fwmark`; the kernel default is `0xffffffff` when a mark is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmask: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<(u16, u16)>,
    pub action: RuleAction,
    /// Table for [`RuleAction::Lookup`].
    #[serde(default)]
    pub table: u32,
    /// Target priority for [`RuleAction::Goto`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goto: Option<u32>,
    /// `suppress_prefixlength N`: ignore lookup results with a prefix length ≤ N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_prefixlen: Option<u8>,
}

impl RoutingRule {
    /// A rule with no selector (it matches every packet of `family`) doing `action`, with
    /// `table` for [`RuleAction::Lookup`]; callers narrow it by setting the selector fields.
    pub fn matching_all(priority: u32, family: Family, action: RuleAction, table: u32) -> Self {
        RoutingRule {
            priority,
            family,
            invert: false,
            from: None,
            to: None,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            ip_proto: None,
            sport: None,
            dport: None,
            action,
            table,
            goto: None,
            suppress_prefixlen: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Inet,
    Inet6,
}

/// What a matching rule does (`FR_ACT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Lookup,
    Goto,
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
}

/// A neighbour (ARP / NDP) entry, including proxy entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    pub dev: String,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub state: NeighState,
    /// A proxy entry (`ip neigh add proxy`).
    #[serde(default)]
    pub proxy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighState {
    Permanent,
    Noarp,
    Reachable,
    Stale,
    Delay,
    Probe,
    Incomplete,
    Failed,
    None,
}

/// A bridge or vxlan forwarding database entry (`bridge fdb`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbEntry {
    /// The port (bridge member) or vxlan device the entry belongs to.
    pub dev: String,
    /// MAC address; `00:00:00:00:00:00` is the vxlan default (flood) entry.
    pub mac: String,
    /// The bridge this port is enslaved to, for bridge entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// vxlan: the remote VTEP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub permanent: bool,
}

/// Raw `iptables-save` output for one netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IptablesDump {
    pub backend: IptablesBackend,
    /// Shared: a large node's dump is megabytes, and the parsed ruleset reads its rules from
    /// this very text instead of a copy.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_text")]
    pub ipv4: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_text")]
    pub ipv6: Option<Arc<str>>,
}

/// Serde for optional shared text, as a plain JSON string (without serde's `rc` feature, which
/// would let every other `Arc` in the workspace serialize too).
mod shared_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
        match text {
            Some(text) => s.serialize_some(&**text),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Arc::from))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IptablesBackend {
    Legacy,
    Nft,
}

/// Connection-tracking table and counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackState {
    pub entries: Vec<ConntrackEntry>,
    /// `net/netfilter/nf_conntrack_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `net/netfilter/nf_conntrack_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Sum over CPUs of `/proc/net/stat/nf_conntrack` columns, keyed by column name
    /// (`insert_failed`, `drop`, `early_drop`, `invalid`, …).
    #[serde(default)]
    pub stats: BTreeMap<String, u64>,
}

/// One conntrack entry, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackEntry {
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, 132 sctp).
    pub protocol: u8,
    pub original: ConntrackTuple,
    pub reply: ConntrackTuple,
    /// TCP state (`ESTABLISHED`, `SYN_SENT`, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<String>,
    #[serde(default)]
    pub mark: u32,
    #[serde(default)]
    pub zone: u16,
    /// Status flags (`ASSURED`, `SEEN_REPLY`, `SRC_NAT`, `DST_NAT`, `CONFIRMED`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports for TCP/UDP/SCTP; ICMP id in `sport`, type/code not kept.
    #[serde(default)]
    pub sport: u16,
    #[serde(default)]
    pub dport: u16,
}

/// A listening (or bound, for UDP) socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListeningSocket {
    /// IP protocol number (6 tcp, 17 udp, 132 sctp).
    pub protocol: u8,
    /// Bound address; the unspecified address means all.
    pub address: IpAddr,
    pub port: u16,
    /// Bound to a device (`SO_BINDTODEVICE`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Process name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

impl NetnsState {
    /// The link with this name, if any.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The link with this interface index, if any.
    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// A sysctl value by its `/proc/sys`-relative path (`net/ipv4/ip_forward`).
    pub fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctls.get(key).map(String::as_str)
    }

    /// Why a part is missing, if it is.
    pub fn missing_reason(&self, part: StatePart) -> Option<&str> {
        self.missing
            .iter()
            .find(|m| m.part == part)
            .map(|m| m.reason.as_str())
    }

    /// Why the iptables rules of one family are unknown, if they are: the part is missing and
    /// that family's dump was not read. `ip6tables-save` can fail alone, which leaves the IPv4
    /// rules known.
    pub fn iptables_missing_reason(&self, ipv6: bool) -> Option<&str> {
        let read = self.iptables.as_ref().is_some_and(|dump| {
            if ipv6 {
                dump.ipv6.is_some()
            } else {
                dump.ipv4.is_some()
            }
        });
        if read {
            None
        } else {
            self.missing_reason(StatePart::Iptables)
        }
    }

    /// Addresses assigned to a device.
    pub fn addresses_of<'a>(&'a self, dev: &'a str) -> impl Iterator<Item = &'a Address> + 'a {
        self.addresses.iter().filter(move |a| a.dev == dev)
    }
}
