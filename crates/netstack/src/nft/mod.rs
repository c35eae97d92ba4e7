//! nftables rulesets as `nft -j list ruleset` prints them: parsing into typed tables, chains,
//! rules, sets and maps, and rule-by-rule evaluation with the same verdict and trace shapes as
//! [`crate::iptables`] (so path building does not care which tool wrote a rule).
//!
//! The subset is what kube-proxy's nftables mode and common host firewalls write:
//! - matches on payload fields (`ip`/`ip6` addresses, protocol, length; `tcp`/`udp`/`sctp`/`th`
//!   ports; `tcp flags`; `icmp`/`icmpv6` type and code), `meta` (`l4proto`, `nfproto`,
//!   `iifname`/`oifname` with `*` wildcards, `iif`/`oif`, `mark`), `ct` (`state`, `status`,
//!   `direction`, `mark`), `fib daddr type`; with `==`, `!=`, `<`, `>`, `<=`, `>=`, implicit
//!   flag tests, prefixes, ranges, bitwise masks, anonymous and named sets incl. concatenations;
//! - statements: `accept`, `drop`, `reject`, `continue`, `return`, `jump`, `goto`, `queue`,
//!   `counter`, `log`, `meta mark set`, `ct mark set`, `notrack`, `dnat`/`snat` (incl.
//!   `dnat to ip daddr . th dport map @m`), `masquerade`, `redirect`, verdict maps
//!   (`… vmap @m`, `… vmap { … }`);
//! - `numgen`/`jhash`/`symhash` … `mod N` keys do not pick one value: like iptables' `statistic`
//!   match, every value is followed as its own branch with probability 1/N, so kube-proxy's
//!   `numgen random mod N vmap { … }` leads to every endpoint.
//!
//! Statements whose outcome depends on state a snapshot cannot hold (`limit`, `quota`,
//! `ct count`, `meter`) are assumed to match and reported. Anything else (an unknown statement
//! or expression, iptables-nft's `xt` compat expressions, a set whose type we do not model) is
//! kept and affects only its own rule: the evaluator assumes a match holds and a statement
//! continues, and reports the assumption per rule (`netfilter.unsupported`). Only JSON that
//! is not an nft ruleset at all (bad syntax, missing fields, a rule in a chain that does not
//! exist) is an error, and the error names the JSON path.
//!
//! Families `ip`, `ip6` and `inet` at the five IP hooks are evaluated; `arp`, `bridge` and
//! `netdev` tables and `ingress`/`egress` hooks are parsed but never run (they are not on the
//! IP forwarding path the simulator walks).
//!
//! Like the rest of the crate this module must not do I/O and must not know about Kubernetes:
//! kube-proxy's `service-…` chains are just chains here.

mod eval;
mod parse;
mod text;
mod types;

pub use eval::BaseChainRef;
pub use parse::{parse, ParseError};
pub use types::DataType;

use std::collections::HashMap;

use crate::netfilter::Hook;

/// A parsed `nft -j list ruleset`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

impl Ruleset {
    pub fn table(&self, family: Family, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.family == family && t.name == name)
    }

    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }
}

/// nftables address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }

    /// Whether base chains of this family see IP packets of the given version at the IP hooks.
    pub fn sees(self, ipv6: bool) -> bool {
        match self {
            Family::Ip => !ipv6,
            Family::Ip6 => ipv6,
            Family::Inet => true,
            Family::Arp | Family::Bridge | Family::Netdev => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
    chain_index: HashMap<String, usize>,
    set_index: HashMap<String, usize>,
}

impl Table {
    fn new(family: Family, name: String) -> Table {
        Table {
            family,
            name,
            chains: Vec::new(),
            sets: Vec::new(),
            chain_index: HashMap::new(),
            set_index: HashMap::new(),
        }
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chain_index.get(name).map(|&i| &self.chains[i])
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.set_index.get(name).map(|&i| &self.sets[i])
    }

    /// `family name`, as evidence names the table (`inet filter`).
    pub fn display_name(&self) -> String {
        format!("{} {}", self.family.as_str(), self.name)
    }

    /// Base chains registered at `hook`, in the order the kernel runs them (priority, then
    /// declaration order).
    pub fn base_chains_at(&self, hook: Hook) -> impl Iterator<Item = (usize, &BaseChain)> {
        self.chains.iter().enumerate().filter_map(move |(i, c)| {
            c.base
                .as_ref()
                .filter(|b| b.hook == Some(hook))
                .map(|b| (i, b))
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: String,
    pub handle: u64,
    /// `Some` for base chains (registered at a hook), `None` for chains only reached by
    /// jump/goto.
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// What makes a chain a base chain: `type filter hook forward priority 0; policy drop;`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseChain {
    pub kind: ChainType,
    /// `None` for hooks the simulator does not walk (`ingress`, `egress`).
    pub hook: Option<Hook>,
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    /// Consulted only for the first packet of a connection, like iptables' nat table.
    Nat,
    Route,
}

impl ChainType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// One rule: its handle (stable across listings, unlike positions) and statements in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub handle: u64,
    pub comment: Option<String>,
    pub stmts: Vec<Stmt>,
    /// The rule in `nft list ruleset` syntax, rendered from the JSON, for evidence.
    pub text: String,
}

/// A statement of a rule. Matches and statements run in order; a failing match ends the rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Match {
        op: CmpOp,
        left: Expr,
        right: Operand,
    },
    Verdict(Verdict),
    /// `LEFT vmap { … }` / `LEFT vmap @map`: the verdict of the element the key falls in; no
    /// element means the rule goes on.
    VerdictMap {
        key: Expr,
        map: SetRef,
    },
    /// `counter`, `log`, …: no effect on the path; kept by name for the trace.
    Passive(String),
    /// `meta mark set VALUE` / `ct mark set VALUE`.
    SetMark {
        target: MarkTarget,
        value: Expr,
    },
    Notrack,
    /// `dnat`/`snat`: `addr` may be a map lookup yielding `address . port`.
    Nat {
        kind: NatKind,
        /// `Some(true)` for `dnat ip6 to …` or an IPv6 address, `Some(false)` for IPv4: in an
        /// `inet` chain the statement then applies to that family only.
        ipv6: Option<bool>,
        addr: Option<Expr>,
        port: Option<Expr>,
    },
    Masquerade {
        port: Option<Expr>,
    },
    Redirect {
        port: Option<Expr>,
    },
    Reject {
        with: String,
    },
    /// Depends on state a snapshot cannot hold (`limit`, `quota`, `ct count`…): assumed to match,
    /// and reported.
    Assumed(String),
    /// Not modelled: assumed to match / continue, reported as unsupported.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    /// Chain index in the same table.
    Jump(usize),
    Goto(usize),
    Queue(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkTarget {
    Meta,
    Ct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Dnat,
    Snat,
}

/// Relational operators of a `match`. nft's implicit `in` becomes [`CmpOp::Flags`] on bitmask
/// types (`ct state established,related`: any of the bits set) and [`CmpOp::Eq`] otherwise
/// (equality, or membership for a set operand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Flags,
}

/// An expression computed from the packet (the left side of a match, a map key, a mark value).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Payload(PayloadField),
    Meta(MetaKey),
    Ct(CtKey),
    /// `fib daddr type`.
    FibDaddrType,
    Concat(Vec<Expr>),
    /// `LEFT & MASK`, `LEFT | BITS`, `LEFT ^ BITS`, `LEFT << N`, `LEFT >> N`.
    Bitwise {
        op: BitOp,
        left: Box<Expr>,
        right: u128,
    },
    Const(u128),
    /// `numgen random|inc mod N offset O`, `jhash … mod N`, `symhash mod N`: spread evenly over
    /// `offset .. offset + modulus`; evaluation follows every value.
    Spread {
        modulus: u32,
        offset: u32,
    },
    /// `KEY map @m` / `KEY map { … }`: the data of the matching element.
    Lookup {
        key: Box<Expr>,
        map: SetRef,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadField {
    Ip4Saddr,
    Ip4Daddr,
    Ip4Protocol,
    Ip4Length,
    Ip4Dscp,
    Ip6Saddr,
    Ip6Daddr,
    Ip6Nexthdr,
    Ip6Length,
    /// `tcp sport` (TCP only), likewise for udp/sctp; `th` for any protocol with ports.
    Sport(Option<crate::packet::Protocol>),
    Dport(Option<crate::packet::Protocol>),
    TcpFlags,
    IcmpType,
    IcmpCode,
    Icmp6Type,
    Icmp6Code,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    L4proto,
    Nfproto,
    /// `iifname` and `iif` alike: the simulator knows devices by name.
    Iifname,
    Oifname,
    Mark,
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Status,
    Direction,
    Mark,
}

/// The right side of a match.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// One value, prefix or range per concatenated dimension.
    Value(Vec<Atom>),
    Set(SetRef),
}

/// A set operand: a named set of the table (index) or an anonymous `{ … }` one.
#[derive(Debug, Clone, PartialEq)]
pub enum SetRef {
    Named(usize),
    Anonymous(Box<Set>),
}

/// A named or anonymous set or map.
#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    pub name: String,
    pub key: DataType,
    elements: Vec<Element>,
    /// Why the set cannot be used (a key type or element we do not model); lookups in it are
    /// then reported as unsupported and assumed to match.
    pub unreadable: Option<String>,
    /// Elements whose every dimension is one number, by key: kube-proxy's maps hold one such
    /// element per Service port, so a lookup must not scan them all.
    exact: HashMap<Vec<u128>, usize>,
    /// The other elements (prefixes, ranges, names), scanned in order.
    ranged: Vec<usize>,
}

impl Set {
    fn new(name: String, key: DataType, elements: Vec<Element>, unreadable: Option<String>) -> Set {
        let mut exact = HashMap::new();
        let mut ranged = Vec::new();
        for (i, e) in elements.iter().enumerate() {
            let values: Option<Vec<u128>> = e
                .key
                .iter()
                .map(|a| match a {
                    Atom::Interval { lo, hi } if lo == hi => Some(*lo),
                    _ => None,
                })
                .collect();
            match values {
                Some(v) => {
                    exact.entry(v).or_insert(i);
                }
                None => ranged.push(i),
            }
        }
        Set {
            name,
            key,
            elements,
            unreadable,
            exact,
            ranged,
        }
    }

    pub fn elements(&self) -> &[Element] {
        &self.elements
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// One atom per concatenated dimension.
    pub key: Vec<Atom>,
    pub data: Option<MapData>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MapData {
    Verdict(Verdict),
    /// For data maps (`ipv4_addr . inet_service`): the first value of each dimension.
    Value(Vec<u128>),
}

/// One dimension of a constant: an inclusive numeric interval (a single value, a prefix or a
/// range, with addresses as integers) or an interface name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    Interval { lo: u128, hi: u128 },
    Name { name: String, wildcard: bool },
}

impl Atom {
    pub fn single(v: u128) -> Atom {
        Atom::Interval { lo: v, hi: v }
    }
}

#[cfg(test)]
mod tests;
