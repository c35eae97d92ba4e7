//! iproute2-style text for rules and routes, so findings cite them the way an operator reads
//! them in `ip rule` and `ip route show table X` (and can paste them back into `ip`).

use std::fmt;

use ipnet::IpNet;

use crate::state::{table, Route, RouteType, RoutingRule, RuleAction, Scope};

/// A table id as iproute2 names it (`local`, `main`, `default`, else the number).
pub fn table_name(id: u32) -> String {
    match id {
        table::LOCAL => "local".to_string(),
        table::MAIN => "main".to_string(),
        table::DEFAULT => "default".to_string(),
        other => other.to_string(),
    }
}

/// A prefix as iproute2 prints it: `default`, a bare address for a host route, else `a/len`.
struct Prefix<'a>(&'a IpNet);

impl fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = self.0;
        if net.prefix_len() == 0 {
            f.write_str("default")
        } else if net.prefix_len() == net.max_prefix_len() {
            write!(f, "{}", net.addr())
        } else {
            write!(f, "{net}")
        }
    }
}

fn ip_proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        58 => "ipv6-icmp".to_string(),
        132 => "sctp".to_string(),
        other => other.to_string(),
    }
}

fn port_range(f: &mut fmt::Formatter<'_>, keyword: &str, range: (u16, u16)) -> fmt::Result {
    if range.0 == range.1 {
        write!(f, " {keyword} {}", range.0)
    } else {
        write!(f, " {keyword} {}-{}", range.0, range.1)
    }
}

/// `ip rule` line: `100:\tnot from 10.0.0.0/8 fwmark 0x1/0xff iif eth0 lookup 100`.
impl fmt::Display for RoutingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:\t", self.priority)?;
        if self.invert {
            f.write_str("not ")?;
        }
        match &self.from {
            Some(net) => write!(f, "from {net}")?,
            None => f.write_str("from all")?,
        }
        if let Some(net) = &self.to {
            write!(f, " to {net}")?;
        }
        if self.fwmark.is_some() || self.fwmask.is_some() {
            write!(f, " fwmark {:#x}", self.fwmark.unwrap_or(0))?;
            if let Some(mask) = self.fwmask.filter(|m| *m != u32::MAX) {
                write!(f, "/{mask:#x}")?;
            }
        }
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
        }
        if let Some(oif) = &self.oif {
            write!(f, " oif {oif}")?;
        }
        if let Some(proto) = self.ip_proto {
            write!(f, " ipproto {}", ip_proto_name(proto))?;
        }
        if let Some(range) = self.sport {
            port_range(f, "sport", range)?;
        }
        if let Some(range) = self.dport {
            port_range(f, "dport", range)?;
        }
        match self.action {
            RuleAction::Lookup => {
                write!(f, " lookup {}", table_name(self.table))?;
                if let Some(len) = self.suppress_prefixlen {
                    write!(f, " suppress_prefixlength {len}")?;
                }
                Ok(())
            }
            RuleAction::Goto => match self.goto {
                Some(target) => write!(f, " goto {target}"),
                None => f.write_str(" goto [unresolved]"),
            },
            RuleAction::Nop => f.write_str(" nop"),
            RuleAction::Blackhole => f.write_str(" blackhole"),
            RuleAction::Unreachable => f.write_str(" unreachable"),
            RuleAction::Prohibit => f.write_str(" prohibit"),
        }
    }
}

fn route_type_name(kind: RouteType) -> &'static str {
    match kind {
        RouteType::Unicast => "unicast",
        RouteType::Local => "local",
        RouteType::Broadcast => "broadcast",
        RouteType::Anycast => "anycast",
        RouteType::Multicast => "multicast",
        RouteType::Blackhole => "blackhole",
        RouteType::Unreachable => "unreachable",
        RouteType::Prohibit => "prohibit",
        RouteType::Throw => "throw",
        RouteType::Nat => "nat",
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Universe => "global",
        Scope::Site => "site",
        Scope::Link => "link",
        Scope::Host => "host",
        Scope::Nowhere => "nowhere",
    }
}

impl fmt::Display for RouteType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(route_type_name(*self))
    }
}

/// `ip route show table X` line: `blackhole 10.0.0.0/8 table 100 proto static metric 5`,
/// `default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.7 metric 100 onlink mtu 1400`.
/// The table is printed unless it is `main`, as `ip route show table all` does.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteType::Unicast {
            write!(f, "{} ", route_type_name(self.kind))?;
        }
        write!(f, "{}", Prefix(&self.dst))?;
        if let Some(gateway) = &self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.table != table::MAIN {
            write!(f, " table {}", table_name(self.table))?;
        }
        if let Some(protocol) = &self.protocol {
            write!(f, " proto {protocol}")?;
        }
        if self.scope != Scope::Universe {
            write!(f, " scope {}", scope_name(self.scope))?;
        }
        if let Some(src) = &self.prefsrc {
            write!(f, " src {src}")?;
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        for hop in &self.nexthops {
            f.write_str(" nexthop")?;
            if let Some(gateway) = &hop.gateway {
                write!(f, " via {gateway}")?;
            }
            if let Some(dev) = &hop.dev {
                write!(f, " dev {dev}")?;
            }
            write!(f, " weight {}", hop.weight)?;
            if hop.onlink {
                f.write_str(" onlink")?;
            }
        }
        Ok(())
    }
}
