//! The rtnetlink half of a namespace: links, addresses, routes (all tables, both families),
//! policy-routing rules, neighbours (with proxy entries) and the bridge / vxlan FDB.
//!
//! Runs on the namespace's own thread (see the crate docs) over a netlink socket opened there, so
//! every dump describes that namespace. Converts the kernel's messages into
//! [`netstack::state`] types and nothing more: no filtering by what looks relevant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use futures::stream::TryStreamExt;
use futures::StreamExt;
use ipnet::IpNet;
use netstack::state::{
    Address, Family, FdbEntry, Link, LinkKind, LinkPeer, MissingPart, NeighState, Neighbour,
    NetnsState, NextHop, OperState, Route, RouteType, RoutingRule, RuleAction, Scope, StatePart,
    TunnelInfo, VxlanInfo,
};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoData, InfoIpTunnel, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    State,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteNextHopFlags,
    RouteProtocol, RouteScope, RouteType as NlRouteType, RouteVia,
};
use rtnetlink::packet_route::rule::{
    RuleAction as NlRuleAction, RuleAttribute, RuleFlags, RuleMessage,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, IpVersion};

/// A veth whose other end is in another namespace, named by the kernel's namespace id
/// (`IFLA_LINK_NETNSID`), which is only meaningful inside the namespace that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignPeer {
    pub link_index: u32,
    pub nsid: i32,
}

/// Fills the netlink parts of `state` (each failed dump goes to `missing`) and returns the veths
/// whose peer is in another namespace.
pub async fn read(handle: &Handle, state: &mut NetnsState) -> Vec<ForeignPeer> {
    let mut foreign = Vec::new();
    match dump_links(handle).await {
        Ok(messages) => {
            let names: BTreeMap<u32, String> = messages
                .iter()
                .filter_map(|m| link_name(m).map(|n| (m.header.index, n.to_string())))
                .collect();
            for message in &messages {
                let (link, peer) = convert_link(message, &names);
                foreign.extend(peer);
                state.links.push(link);
            }
        }
        Err(e) => missing(state, StatePart::Links, e),
    }
    let names: BTreeMap<u32, String> = state
        .links
        .iter()
        .map(|l| (l.index, l.name.clone()))
        .collect();
    let dev = |index: u32| {
        names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    };

    match handle
        .address()
        .get()
        .execute()
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(messages) => {
            state.addresses = messages
                .iter()
                .filter_map(|m| convert_address(m, &dev))
                .collect()
        }
        Err(e) => missing(state, StatePart::Addresses, e),
    }

    let mut routes = Vec::new();
    let mut route_error = None;
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        // Without NETLINK_GET_STRICT_CHK the kernel ignores the (zero) table in the request and
        // dumps every table, which is what `ip route show table all` relies on too.
        match handle
            .route()
            .get(request)
            .execute()
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(messages) => routes.extend(messages.iter().filter_map(|m| convert_route(m, &dev))),
            Err(e) => route_error = Some(e),
        }
    }
    match route_error {
        None => state.routes = routes,
        Some(e) => missing(state, StatePart::Routes, e),
    }

    let mut rules = Vec::new();
    let mut rule_error = None;
    for version in [IpVersion::V4, IpVersion::V6] {
        match handle
            .rule()
            .get(version)
            .execute()
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(messages) => rules.extend(messages.iter().filter_map(convert_rule)),
            Err(e) => rule_error = Some(e),
        }
    }
    match rule_error {
        None => state.rules = rules,
        Some(e) => missing(state, StatePart::Rules, e),
    }

    // Ordinary entries and proxy entries are separate dumps: the kernel returns proxy entries
    // only when the request carries exactly NTF_PROXY.
    let ordinary = handle
        .neighbours()
        .get()
        .execute()
        .try_collect::<Vec<_>>()
        .await;
    let proxies = handle
        .neighbours()
        .get()
        .proxies()
        .execute()
        .try_collect::<Vec<_>>()
        .await;
    match (ordinary, proxies) {
        (Ok(ordinary), Ok(proxies)) => {
            state.neighbours = ordinary
                .iter()
                .chain(&proxies)
                .filter_map(|m| convert_neighbour(m, &dev))
                .collect()
        }
        (Err(e), _) | (_, Err(e)) => missing(state, StatePart::Neighbours, e),
    }

    match handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(messages) => {
            state.fdb = messages
                .iter()
                .filter_map(|m| convert_fdb(m, &dev))
                .collect()
        }
        Err(e) => missing(state, StatePart::Fdb, e),
    }
    foreign
}

fn missing(state: &mut NetnsState, part: StatePart, error: rtnetlink::Error) {
    state.missing.push(MissingPart {
        part,
        reason: format!("netlink dump failed: {error}"),
    });
}

async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>, rtnetlink::Error> {
    handle.link().get().execute().try_collect().await
}

/// The namespace ids this namespace has given to each of `candidates` (`(snapshot id, open
/// namespace fd)`), for those it has given one, asking until every id in `wanted` is named.
/// `RTM_GETNSID` by file descriptor is how the kernel relates an `IFLA_LINK_NETNSID` to a
/// namespace we can name.
pub async fn nsids_of<'a>(
    handle: &Handle,
    candidates: impl IntoIterator<Item = &'a (String, RawFd)>,
    wanted: &BTreeSet<i32>,
) -> BTreeMap<i32, String> {
    let mut found = BTreeMap::new();
    for (id, fd) in candidates {
        if wanted.iter().all(|nsid| found.contains_key(nsid)) {
            break;
        }
        let mut message = NsidMessage::default();
        message.attributes = vec![NsidAttribute::Fd(*fd as u32)];
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(message));
        request.header.flags = NLM_F_REQUEST;
        let mut handle = handle.clone();
        let Ok(mut responses) = handle.request(request) else {
            continue;
        };
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(reply)) =
                response.payload
            {
                for attribute in reply.attributes {
                    if let NsidAttribute::Id(nsid) = attribute {
                        if nsid >= 0 {
                            found.insert(nsid, id.clone());
                        }
                    }
                }
            }
        }
    }
    found
}

fn link_name(message: &LinkMessage) -> Option<&str> {
    message.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn convert_link(
    message: &LinkMessage,
    names: &BTreeMap<u32, String>,
) -> (Link, Option<ForeignPeer>) {
    let index = message.header.index;
    let flags = message.header.flags;
    let mut link = Link {
        index,
        name: link_name(message)
            .map(str::to_string)
            .unwrap_or_else(|| format!("if{index}")),
        kind: if flags.contains(LinkFlags::Loopback) {
            LinkKind::Loopback
        } else {
            LinkKind::Device
        },
        admin_up: flags.contains(LinkFlags::Up),
        oper_state: OperState::Unknown,
        mtu: 0,
        mac: None,
        master: None,
        peer: None,
        vxlan: None,
        tunnel: None,
        noarp: flags.contains(LinkFlags::Noarp),
    };
    let mut lower_index = None;
    let mut link_nsid = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(mac) if mac.len() == 6 => link.mac = Some(format_mac(mac)),
            LinkAttribute::Controller(master) => link.master = names.get(master).cloned(),
            LinkAttribute::OperState(state) => link.oper_state = oper_state(*state),
            LinkAttribute::Link(lower) => lower_index = Some(*lower),
            LinkAttribute::LinkNetNsId(nsid) => link_nsid = Some(*nsid),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = link_kind(kind),
                        LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                            link.vxlan = Some(vxlan_info(vxlan, names))
                        }
                        LinkInfo::Data(InfoData::IpTunnel(tunnel)) => {
                            link.tunnel = Some(tunnel_info(tunnel))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut foreign = None;
    match (&link.kind, lower_index) {
        (LinkKind::Veth, Some(peer_index)) => {
            link.peer = Some(LinkPeer {
                ifindex: peer_index,
                netns: None,
                // Known now only when the peer is here; otherwise filled in once the peer's
                // namespace has been read too.
                name: match link_nsid {
                    None => names.get(&peer_index).cloned(),
                    Some(_) => None,
                },
            });
            if let Some(nsid) = link_nsid {
                foreign = Some(ForeignPeer {
                    link_index: index,
                    nsid,
                });
            }
        }
        (LinkKind::Vxlan, _) => {
            // The underlay device of a vxlan is IFLA_VXLAN_LINK, already in `vxlan.device`;
            // mirror it as the peer, as the state type documents.
            let lower = message.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(v)) => v.iter().find_map(|x| match x {
                        InfoVxlan::Link(l) if *l != 0 => Some(*l),
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            });
            link.peer = lower.map(|ifindex| LinkPeer {
                ifindex,
                netns: None,
                name: names.get(&ifindex).cloned(),
            });
        }
        (LinkKind::Ipip, Some(lower)) if lower != 0 && link_nsid.is_none() => {
            link.peer = Some(LinkPeer {
                ifindex: lower,
                netns: None,
                name: names.get(&lower).cloned(),
            });
        }
        _ => {}
    }
    (link, foreign)
}

fn link_kind(kind: &InfoKind) -> LinkKind {
    // The kernel's kind strings are the names LinkKind uses; anything new stays `Other`.
    LinkKind::from(kind.to_string())
}

fn oper_state(state: State) -> OperState {
    match state {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::NotPresent => OperState::NotPresent,
        State::Testing => OperState::Testing,
        _ => OperState::Unknown,
    }
}

fn vxlan_info(attributes: &[InfoVxlan], names: &BTreeMap<u32, String>) -> VxlanInfo {
    let mut info = VxlanInfo {
        vni: 0,
        local: None,
        remote: None,
        // The kernel's default when no dstport is given (the pre-IANA Linux port).
        port: 8472,
        device: None,
        learning: false,
    };
    for attribute in attributes {
        match attribute {
            InfoVxlan::Id(vni) => info.vni = *vni,
            InfoVxlan::Local(ip) => info.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => info.local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Group(ip) if !ip.is_unspecified() => info.remote = Some(IpAddr::V4(*ip)),
            InfoVxlan::Group6(ip) if !ip.is_unspecified() => info.remote = Some(IpAddr::V6(*ip)),
            InfoVxlan::Port(port) => info.port = *port,
            InfoVxlan::Link(index) if *index != 0 => info.device = names.get(index).cloned(),
            InfoVxlan::Learning(learning) => info.learning = *learning,
            _ => {}
        }
    }
    info
}

fn tunnel_info(attributes: &[InfoIpTunnel]) -> TunnelInfo {
    let mut info = TunnelInfo {
        local: None,
        remote: None,
    };
    for attribute in attributes {
        match attribute {
            InfoIpTunnel::Local(ip) if !ip.is_unspecified() => info.local = Some(*ip),
            InfoIpTunnel::Remote(ip) if !ip.is_unspecified() => info.remote = Some(*ip),
            _ => {}
        }
    }
    info
}

fn address_scope(scope: AddressScope) -> Scope {
    match scope {
        AddressScope::Universe => Scope::Universe,
        AddressScope::Site => Scope::Site,
        AddressScope::Link => Scope::Link,
        AddressScope::Host => Scope::Host,
        _ => Scope::Nowhere,
    }
}

fn convert_address(message: &AddressMessage, dev: &impl Fn(u32) -> String) -> Option<Address> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links
    // and equal to IFA_LOCAL elsewhere. IPv6 sends only IFA_ADDRESS.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Address {
        dev: dev(message.header.index),
        address,
        prefix_len: message.header.prefix_len,
        scope: address_scope(message.header.scope),
    })
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn via_address(via: &RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteVia::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn route_type(kind: NlRouteType) -> Option<RouteType> {
    Some(match kind {
        NlRouteType::Unicast => RouteType::Unicast,
        NlRouteType::Local => RouteType::Local,
        NlRouteType::Broadcast => RouteType::Broadcast,
        NlRouteType::Anycast => RouteType::Anycast,
        NlRouteType::Multicast => RouteType::Multicast,
        NlRouteType::BlackHole => RouteType::Blackhole,
        NlRouteType::Unreachable => RouteType::Unreachable,
        NlRouteType::Prohibit => RouteType::Prohibit,
        NlRouteType::Throw => RouteType::Throw,
        NlRouteType::Nat => RouteType::Nat,
        _ => return None,
    })
}

fn route_scope(scope: RouteScope) -> Scope {
    match scope {
        RouteScope::Universe => Scope::Universe,
        RouteScope::Site => Scope::Site,
        RouteScope::Link => Scope::Link,
        RouteScope::Host => Scope::Host,
        _ => Scope::Nowhere,
    }
}

/// The names `ip route` prints for the routing protocols (`/etc/iproute2/rt_protos`).
fn protocol_name(protocol: RouteProtocol) -> String {
    match protocol {
        RouteProtocol::Unspec => "unspec".into(),
        RouteProtocol::IcmpRedirect => "redirect".into(),
        RouteProtocol::Kernel => "kernel".into(),
        RouteProtocol::Boot => "boot".into(),
        RouteProtocol::Static => "static".into(),
        RouteProtocol::Bird => "bird".into(),
        RouteProtocol::Zebra => "zebra".into(),
        RouteProtocol::Dhcp => "dhcp".into(),
        RouteProtocol::Ra => "ra".into(),
        RouteProtocol::KeepAlived => "keepalived".into(),
        RouteProtocol::Babel => "babel".into(),
        RouteProtocol::Bgp => "bgp".into(),
        RouteProtocol::Isis => "isis".into(),
        RouteProtocol::Ospf => "ospf".into(),
        RouteProtocol::Rip => "rip".into(),
        RouteProtocol::Eigrp => "eigrp".into(),
        other => u8::from(other).to_string(),
    }
}

fn convert_route(message: &RouteMessage, dev: &impl Fn(u32) -> String) -> Option<Route> {
    let header = &message.header;
    // Cloned (cache) entries are not configuration; the default dump does not return them.
    if header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let kind = route_type(header.kind)?;
    let mut table = u32::from(header.table);
    let mut destination = None;
    let mut route = Route {
        table: 0,
        dst: default_net(header.address_family)?,
        kind,
        gateway: None,
        dev: None,
        prefsrc: None,
        metric: 0,
        scope: route_scope(header.scope),
        protocol: Some(protocol_name(header.protocol)),
        onlink: header.flags.contains(RouteFlags::Onlink),
        mtu: None,
        nexthops: Vec::new(),
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = route_address(a),
            RouteAttribute::Gateway(a) => route.gateway = route_address(a),
            RouteAttribute::Via(v) => route.gateway = via_address(v),
            RouteAttribute::Oif(index) => route.dev = Some(dev(*index)),
            RouteAttribute::PrefSource(a) => route.prefsrc = route_address(a),
            RouteAttribute::Priority(metric) => route.metric = *metric,
            RouteAttribute::Metrics(metrics) => {
                route.mtu = metrics.iter().find_map(|m| match m {
                    RouteMetric::Mtu(mtu) => Some(*mtu),
                    _ => None,
                })
            }
            RouteAttribute::MultiPath(hops) => {
                route.nexthops = hops
                    .iter()
                    .map(|hop| NextHop {
                        gateway: hop.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => route_address(g),
                            RouteAttribute::Via(v) => via_address(v),
                            _ => None,
                        }),
                        dev: (hop.interface_index != 0).then(|| dev(hop.interface_index)),
                        // rtnh_hops is the weight minus one.
                        weight: u32::from(hop.hops) + 1,
                        onlink: hop.flags.contains(RouteNextHopFlags::Onlink),
                    })
                    .collect()
            }
            _ => {}
        }
    }
    route.table = table;
    if let Some(ip) = destination {
        route.dst = IpNet::new(ip, header.destination_prefix_length).ok()?;
    }
    Some(route)
}

fn default_net(family: AddressFamily) -> Option<IpNet> {
    match family {
        AddressFamily::Inet => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).ok(),
        AddressFamily::Inet6 => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).ok(),
        _ => None,
    }
}

fn convert_rule(message: &RuleMessage) -> Option<RoutingRule> {
    let header = &message.header;
    let family = match header.family {
        AddressFamily::Inet => Family::Inet,
        AddressFamily::Inet6 => Family::Inet6,
        _ => return None,
    };
    let action = match header.action {
        NlRuleAction::ToTable => RuleAction::Lookup,
        NlRuleAction::Goto => RuleAction::Goto,
        NlRuleAction::Nop => RuleAction::Nop,
        NlRuleAction::Blackhole => RuleAction::Blackhole,
        NlRuleAction::Unreachable => RuleAction::Unreachable,
        NlRuleAction::Prohibit => RuleAction::Prohibit,
        _ => return None,
    };
    let mut rule = RoutingRule {
        invert: header.flags.contains(RuleFlags::Invert),
        ..RoutingRule::matching_all(0, family, action, u32::from(header.table))
    };
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Source(ip) => rule.from = IpNet::new(*ip, header.src_len).ok(),
            RuleAttribute::Destination(ip) => rule.to = IpNet::new(*ip, header.dst_len).ok(),
            RuleAttribute::Iifname(n) => rule.iif = Some(n.clone()),
            RuleAttribute::Oifname(n) => rule.oif = Some(n.clone()),
            RuleAttribute::FwMark(m) => rule.fwmark = Some(*m),
            RuleAttribute::FwMask(m) => rule.fwmask = Some(*m),
            RuleAttribute::IpProtocol(p) => rule.ip_proto = Some(u8::from(*p)),
            RuleAttribute::SourcePortRange(r) => rule.sport = Some((r.start, r.end)),
            RuleAttribute::DestinationPortRange(r) => rule.dport = Some((r.start, r.end)),
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Goto(g) => rule.goto = Some(*g),
            // u32::MAX is the kernel's "not set".
            RuleAttribute::SuppressPrefixLen(n) if *n != u32::MAX => {
                rule.suppress_prefixlen = u8::try_from(*n).ok()
            }
            _ => {}
        }
    }
    // The kernel reports a mask of 0 with an unset mark; keep neither then.
    if rule.fwmark.unwrap_or(0) == 0 && rule.fwmask.unwrap_or(0) == 0 {
        rule.fwmark = None;
        rule.fwmask = None;
    }
    Some(rule)
}

fn neigh_state(state: NeighbourState) -> NeighState {
    match state {
        NeighbourState::Permanent => NeighState::Permanent,
        NeighbourState::Noarp => NeighState::Noarp,
        NeighbourState::Reachable => NeighState::Reachable,
        NeighbourState::Stale => NeighState::Stale,
        NeighbourState::Delay => NeighState::Delay,
        NeighbourState::Probe => NeighState::Probe,
        NeighbourState::Incomplete => NeighState::Incomplete,
        NeighbourState::Failed => NeighState::Failed,
        _ => NeighState::None,
    }
}

fn neighbour_address(address: &NeighbourAddress) -> Option<IpAddr> {
    match address {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        // In AF_BRIDGE messages (vxlan FDB remotes) the family does not say which IP version
        // NDA_DST holds, so the parser leaves it raw; its length does.
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(&bytes[..]).ok()?,
            ))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&bytes[..]).ok()?,
            ))),
            _ => None,
        },
        _ => None,
    }
}

fn convert_neighbour(
    message: &NeighbourMessage,
    dev: &impl Fn(u32) -> String,
) -> Option<Neighbour> {
    if !matches!(
        message.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let ip = message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(d) => neighbour_address(d),
        _ => None,
    })?;
    Some(Neighbour {
        dev: dev(message.header.ifindex),
        ip,
        mac: message.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(mac) if mac.len() == 6 => Some(format_mac(mac)),
            _ => None,
        }),
        state: neigh_state(message.header.state),
        proxy: message.header.flags.contains(NeighbourFlags::Proxy),
    })
}

/// `NUD_PERMANENT` from `<linux/neighbour.h>`.
const NUD_PERMANENT: u16 = 0x80;

fn convert_fdb(message: &NeighbourMessage, dev: &impl Fn(u32) -> String) -> Option<FdbEntry> {
    let mac = message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) if mac.len() == 6 => Some(format_mac(mac)),
        _ => None,
    })?;
    let mut entry = FdbEntry {
        dev: dev(message.header.ifindex),
        mac,
        master: None,
        dst: None,
        vni: None,
        vlan: None,
        // A bit mask here (vxlan reports NUD_NOARP | NUD_PERMANENT), as `bridge fdb` reads it.
        permanent: u16::from(message.header.state) & NUD_PERMANENT != 0,
    };
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Controller(index) => entry.master = Some(dev(*index)),
            NeighbourAttribute::Destination(d) => entry.dst = neighbour_address(d),
            NeighbourAttribute::Vni(vni) => entry.vni = Some(*vni),
            NeighbourAttribute::Vlan(vlan) => entry.vlan = Some(*vlan),
            _ => {}
        }
    }
    Some(entry)
}
