//! nft data types: how a constant in the JSON (`"tcp"`, `"established"`, `"10.0.0.0"`, `80`)
//! becomes the number or name the evaluator compares packet fields with. The type comes from the
//! left side of a match or from a named set's `type`, as in nft itself.

use std::net::IpAddr;

use serde_json::Value;

use super::{Atom, CtKey, Expr, MetaKey, PayloadField};

/// The type of a key, as nft names it (`ipv4_addr`, `inet_service`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    Mark,
    Integer,
    Ifname,
    CtState,
    CtStatus,
    CtDir,
    FibAddrType,
    NfProto,
    IcmpType,
    Icmpv6Type,
    TcpFlag,
    Concat(Vec<DataType>),
    /// A type we do not model (`ether_addr`, `ipsec` …), by name.
    Other(String),
}

/// Bits of `ct state` (`NF_CT_STATE_*_BIT`).
pub(super) const CT_STATE_INVALID: u128 = 1;
pub(super) const CT_STATE_ESTABLISHED: u128 = 2;
pub(super) const CT_STATE_RELATED: u128 = 4;
pub(super) const CT_STATE_NEW: u128 = 8;
pub(super) const CT_STATE_UNTRACKED: u128 = 64;

/// Bits of `ct status` (`IPS_*`).
pub(super) const CT_STATUS_SEEN_REPLY: u128 = 2;
pub(super) const CT_STATUS_CONFIRMED: u128 = 8;
pub(super) const CT_STATUS_SNAT: u128 = 16;
pub(super) const CT_STATUS_DNAT: u128 = 32;

const CT_STATE: &[(&str, u128)] = &[
    ("invalid", CT_STATE_INVALID),
    ("established", CT_STATE_ESTABLISHED),
    ("related", CT_STATE_RELATED),
    ("new", CT_STATE_NEW),
    ("untracked", CT_STATE_UNTRACKED),
];
const CT_STATUS: &[(&str, u128)] = &[
    ("expected", 1),
    ("seen-reply", CT_STATUS_SEEN_REPLY),
    ("assured", 4),
    ("confirmed", CT_STATUS_CONFIRMED),
    ("snat", CT_STATUS_SNAT),
    ("dnat", CT_STATUS_DNAT),
    ("dying", 512),
];
const CT_DIR: &[(&str, u128)] = &[("original", 0), ("reply", 1)];
/// `RTN_*` route types, as `fib … type` yields them.
const FIB_TYPES: &[(&str, u128)] = &[
    ("unspec", 0),
    ("unicast", 1),
    ("local", 2),
    ("broadcast", 3),
    ("anycast", 4),
    ("multicast", 5),
    ("blackhole", 6),
    ("unreachable", 7),
    ("prohibit", 8),
];
const NFPROTO: &[(&str, u128)] = &[("ipv4", 2), ("ipv6", 10)];
const INET_PROTO: &[(&str, u128)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("dccp", 33),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("udplite", 136),
];
const ICMP_TYPE: &[(&str, u128)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
];
const ICMPV6_TYPE: &[(&str, u128)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
];
/// TCP flag bits in header order (FIN 1 … CWR 128).
const TCP_FLAGS: &[(&str, u128)] = &[
    ("fin", 1),
    ("syn", 2),
    ("rst", 4),
    ("psh", 8),
    ("ack", 16),
    ("urg", 32),
    ("ecn", 64),
    ("cwr", 128),
];

impl DataType {
    /// A set's `type`: one name, or a list for a concatenation.
    pub fn from_names(names: &[&str]) -> DataType {
        match names {
            [one] => DataType::from_name(one),
            many => DataType::Concat(many.iter().map(|n| DataType::from_name(n)).collect()),
        }
    }

    pub fn from_name(name: &str) -> DataType {
        match name {
            "ipv4_addr" => DataType::Ipv4Addr,
            "ipv6_addr" => DataType::Ipv6Addr,
            "inet_proto" => DataType::InetProto,
            "inet_service" => DataType::InetService,
            "mark" => DataType::Mark,
            "integer" => DataType::Integer,
            "ifname" | "iface_index" => DataType::Ifname,
            "ct_state" => DataType::CtState,
            "ct_status" => DataType::CtStatus,
            "ct_dir" => DataType::CtDir,
            "fib_addrtype" => DataType::FibAddrType,
            "nf_proto" => DataType::NfProto,
            "icmp_type" => DataType::IcmpType,
            "icmpv6_type" => DataType::Icmpv6Type,
            "tcp_flag" => DataType::TcpFlag,
            other => DataType::Other(other.to_string()),
        }
    }

    /// The type of values an expression yields.
    pub(super) fn of(expr: &Expr) -> DataType {
        match expr {
            Expr::Payload(field) => match field {
                PayloadField::Ip4Saddr | PayloadField::Ip4Daddr => DataType::Ipv4Addr,
                PayloadField::Ip6Saddr | PayloadField::Ip6Daddr => DataType::Ipv6Addr,
                PayloadField::Ip4Protocol | PayloadField::Ip6Nexthdr => DataType::InetProto,
                PayloadField::Sport(_) | PayloadField::Dport(_) => DataType::InetService,
                PayloadField::TcpFlags => DataType::TcpFlag,
                PayloadField::IcmpType => DataType::IcmpType,
                PayloadField::Icmp6Type => DataType::Icmpv6Type,
                PayloadField::Ip4Length
                | PayloadField::Ip4Dscp
                | PayloadField::Ip6Length
                | PayloadField::IcmpCode
                | PayloadField::Icmp6Code => DataType::Integer,
            },
            Expr::Meta(key) => match key {
                MetaKey::L4proto => DataType::InetProto,
                MetaKey::Nfproto => DataType::NfProto,
                MetaKey::Iifname | MetaKey::Oifname => DataType::Ifname,
                MetaKey::Mark => DataType::Mark,
                MetaKey::Length => DataType::Integer,
            },
            Expr::Ct(key) => match key {
                CtKey::State => DataType::CtState,
                CtKey::Status => DataType::CtStatus,
                CtKey::Direction => DataType::CtDir,
                CtKey::Mark => DataType::Mark,
            },
            Expr::FibDaddrType => DataType::FibAddrType,
            Expr::Concat(parts) => DataType::Concat(parts.iter().map(DataType::of).collect()),
            Expr::Bitwise { left, .. } => DataType::of(left),
            Expr::Const(_) | Expr::Spread { .. } => DataType::Integer,
            Expr::Lookup { .. } => DataType::Other("map data".into()),
        }
    }

    /// Bitmask types, where nft's implicit `in` tests for any of the bits.
    pub(super) fn is_bitmask(&self) -> bool {
        matches!(
            self,
            DataType::CtState | DataType::CtStatus | DataType::TcpFlag
        )
    }

    /// The types of each concatenated dimension (one for a plain type).
    pub(super) fn dims(&self) -> &[DataType] {
        match self {
            DataType::Concat(parts) => parts,
            one => std::slice::from_ref(one),
        }
    }

    fn symbols(&self) -> &'static [(&'static str, u128)] {
        match self {
            DataType::InetProto => INET_PROTO,
            DataType::CtState => CT_STATE,
            DataType::CtStatus => CT_STATUS,
            DataType::CtDir => CT_DIR,
            DataType::FibAddrType => FIB_TYPES,
            DataType::NfProto => NFPROTO,
            DataType::IcmpType => ICMP_TYPE,
            DataType::Icmpv6Type => ICMPV6_TYPE,
            DataType::TcpFlag => TCP_FLAGS,
            _ => &[],
        }
    }

    /// A scalar constant of this type: a number, an address, a symbol, or (for bitmask types) a
    /// list of symbols or'ed together.
    pub(super) fn scalar(&self, value: &Value) -> Result<u128, String> {
        match value {
            Value::Number(n) => n
                .as_u64()
                .map(u128::from)
                .ok_or_else(|| format!("{n} is not a non-negative integer")),
            Value::String(s) => self.symbol(s),
            Value::Array(list) if self.is_bitmask() => {
                list.iter().try_fold(0, |acc, v| Ok(acc | self.scalar(v)?))
            }
            other => Err(format!("expected a {} value, found {other}", self.name())),
        }
    }

    fn symbol(&self, s: &str) -> Result<u128, String> {
        match self {
            DataType::Ipv4Addr => s
                .parse::<std::net::Ipv4Addr>()
                .map(|a| u128::from(u32::from(a)))
                .map_err(|_| format!("{s:?} is not an IPv4 address")),
            DataType::Ipv6Addr => s
                .parse::<std::net::Ipv6Addr>()
                .map(u128::from)
                .map_err(|_| format!("{s:?} is not an IPv6 address")),
            _ => {
                if let Some(&(_, v)) = self.symbols().iter().find(|(name, _)| *name == s) {
                    return Ok(v);
                }
                parse_number(s).ok_or_else(|| format!("{s:?} is not a known {} value", self.name()))
            }
        }
    }

    /// One dimension of a constant: value, prefix, range or (for `ifname`) a name pattern.
    pub(super) fn atom(&self, value: &Value) -> Result<Atom, String> {
        if let Some(inner) = value.get("elem").and_then(|e| e.get("val")) {
            return self.atom(inner);
        }
        if *self == DataType::Ifname {
            return match value {
                Value::String(s) => Ok(ifname_pattern(s)),
                other => Err(format!("expected an interface name, found {other}")),
            };
        }
        if let Some(prefix) = value.get("prefix") {
            let addr = prefix.get("addr").ok_or("prefix without \"addr\"")?;
            let len = prefix
                .get("len")
                .and_then(Value::as_u64)
                .ok_or("prefix without a numeric \"len\"")?;
            let bits = match self {
                DataType::Ipv4Addr => 32,
                DataType::Ipv6Addr => 128,
                other => return Err(format!("a prefix is not a {} value", other.name())),
            };
            if len > bits {
                return Err(format!("prefix length {len} is longer than {bits} bits"));
            }
            let base = self.scalar(addr)?;
            let host_bits = (bits - len) as u32;
            let host_mask = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            return Ok(Atom::Interval {
                lo: base & !host_mask,
                hi: base | host_mask,
            });
        }
        if let Some(range) = value.get("range").and_then(Value::as_array) {
            let [lo, hi] = range.as_slice() else {
                return Err("a range needs two bounds".into());
            };
            let (lo, hi) = (self.scalar(lo)?, self.scalar(hi)?);
            if lo > hi {
                return Err(format!("range {lo}-{hi} is empty"));
            }
            return Ok(Atom::Interval { lo, hi });
        }
        self.scalar(value).map(Atom::single)
    }

    /// A whole key: one atom per dimension (a `concat` for concatenated types).
    pub(super) fn key(&self, value: &Value) -> Result<Vec<Atom>, String> {
        if let Some(inner) = value.get("elem").and_then(|e| e.get("val")) {
            return self.key(inner);
        }
        let dims = self.dims();
        match value.get("concat").and_then(Value::as_array) {
            Some(parts) if parts.len() == dims.len() => {
                dims.iter().zip(parts).map(|(t, v)| t.atom(v)).collect()
            }
            Some(parts) => Err(format!(
                "{} values for a key of {} dimensions",
                parts.len(),
                dims.len()
            )),
            None if dims.len() == 1 => Ok(vec![dims[0].atom(value)?]),
            None => Err(format!("expected a concatenation of {} values", dims.len())),
        }
    }

    pub(super) fn name(&self) -> String {
        match self {
            DataType::Ipv4Addr => "ipv4_addr".into(),
            DataType::Ipv6Addr => "ipv6_addr".into(),
            DataType::InetProto => "inet_proto".into(),
            DataType::InetService => "inet_service".into(),
            DataType::Mark => "mark".into(),
            DataType::Integer => "integer".into(),
            DataType::Ifname => "ifname".into(),
            DataType::CtState => "ct_state".into(),
            DataType::CtStatus => "ct_status".into(),
            DataType::CtDir => "ct_dir".into(),
            DataType::FibAddrType => "fib_addrtype".into(),
            DataType::NfProto => "nf_proto".into(),
            DataType::IcmpType => "icmp_type".into(),
            DataType::Icmpv6Type => "icmpv6_type".into(),
            DataType::TcpFlag => "tcp_flag".into(),
            DataType::Concat(parts) => parts
                .iter()
                .map(DataType::name)
                .collect::<Vec<_>>()
                .join(" . "),
            DataType::Other(name) => name.clone(),
        }
    }
}

/// `"veth*"` is a prefix pattern; `"a\*"` a literal star.
fn ifname_pattern(s: &str) -> Atom {
    match s.strip_suffix('*') {
        Some(prefix) if !prefix.ends_with('\\') => Atom::Name {
            name: prefix.to_string(),
            wildcard: true,
        },
        _ => Atom::Name {
            name: s.replace("\\*", "*"),
            wildcard: false,
        },
    }
}

fn parse_number(s: &str) -> Option<u128> {
    match s.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A data value of a map (`ipv4_addr . inet_service` maps for DNAT): numbers or addresses.
pub(super) fn data_scalar(value: &Value) -> Result<u128, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(u128::from)
            .ok_or_else(|| format!("{n} is not a non-negative integer")),
        Value::String(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(u128::from(u32::from(a))),
            Ok(IpAddr::V6(a)) => Ok(u128::from(a)),
            Err(_) => parse_number(s).ok_or_else(|| format!("{s:?} is not an address or number")),
        },
        other => Err(format!("expected an address or number, found {other}")),
    }
}
