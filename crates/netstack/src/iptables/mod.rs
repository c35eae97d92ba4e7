//! `iptables-save` rulesets: parsing, printing and rule-by-rule evaluation.
//!
//! Our own parser, because no maintained Rust crate parses `iptables-save` text (the `iptables`
//! crate shells out; the others are abandoned). It is written for speed (a kube-proxy node has
//! 100k+ rules): a first pass only indexes the dump (tables, chain declarations, and which lines
//! hold each chain's rules); a chain's rules are read from its lines when first asked for.
//! [`parse`] then reads every chain (on all cores) and fails on the first bad line;
//! [`parse_lazy`] leaves them to be read when evaluation enters the chain, which is what a
//! diagnosis wants (a packet meets a few dozen of a node's 40,000 chains).
//!
//! Every rule keeps its table, chain, position and source line so that evidence can cite it.
//! A match or target we do not model is kept as [`MatchKind::Unknown`] / [`Target::Unknown`] and
//! affects only its own rule: the evaluator assumes the match holds (or the target continues) and
//! reports the assumption, instead of giving up on the whole namespace.
//!
//! Must not know about Kubernetes: kube-proxy's chains are just chains here.

mod eval;
mod index;
mod parse;
mod print;

pub use eval::{Branch, EvalContext, StateContext, TableOutcome, MAX_BRANCHES};
pub use parse::{parse, parse_lazy, parse_lazy_shared, ParseError};

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use ipnet::IpNet;

use crate::netfilter::Hook;

/// The five iptables tables, in the order the kernel registers them at a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableName {
    Raw,
    Mangle,
    Nat,
    Filter,
    Security,
}

impl TableName {
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Raw => "raw",
            TableName::Mangle => "mangle",
            TableName::Nat => "nat",
            TableName::Filter => "filter",
            TableName::Security => "security",
        }
    }

    fn from_name(name: &str) -> Option<TableName> {
        Some(match name {
            "raw" => TableName::Raw,
            "mangle" => TableName::Mangle,
            "nat" => TableName::Nat,
            "filter" => TableName::Filter,
            "security" => TableName::Security,
            _ => return None,
        })
    }

    /// Tables consulted at a hook, in kernel priority order (raw -300, mangle -150, nat/DNAT
    /// -100, filter 0, security 50, nat/SNAT 100).
    pub fn at_hook(hook: Hook) -> &'static [TableName] {
        use TableName::*;
        match hook {
            Hook::Prerouting => &[Raw, Mangle, Nat],
            Hook::Input => &[Mangle, Filter, Security, Nat],
            Hook::Forward => &[Mangle, Filter, Security],
            Hook::Output => &[Raw, Mangle, Nat, Filter, Security],
            Hook::Postrouting => &[Mangle, Nat],
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `iptables-save` dump (one address family).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
    /// Parsed from `ip6tables-save` (evidence then cites `ip6tables`).
    pub ipv6: bool,
    /// The dump the rules were parsed from; rules keep spans into it rather than a copy each.
    source: Arc<str>,
}

impl Ruleset {
    pub fn table(&self, name: TableName) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// A rule as it appeared in the dump (without a leading `[pkts:bytes]` counter).
    pub fn rule_text(&self, rule: &Rule) -> &str {
        span_text(&self.source, rule.span)
    }

    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules().len())
            .sum()
    }
}

#[derive(Clone)]
pub struct Table {
    pub name: TableName,
    pub chains: Vec<Chain>,
    text: Arc<TableText>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chain_index(name).map(|i| &self.chains[i])
    }

    fn chain_index(&self, name: &str) -> Option<usize> {
        self.text.find(name)
    }
}

impl PartialEq for Table {
    fn eq(&self, other: &Table) -> bool {
        self.name == other.name && self.chains == other.chains
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("chains", &self.chains)
            .finish()
    }
}

/// What the chains of one table share: the dump, the chains' names, and where each chain's rules
/// are in the dump.
struct TableText {
    source: Arc<str>,
    names: ChainNames,
    /// Per chain (in `chains` order), consecutive ranges of this.
    segments: Vec<Segment>,
    /// Per chain, its name as jump targets hold it, made on the first jump read.
    shared_names: Box<[OnceLock<Arc<str>>]>,
}

impl TableText {
    fn shared_name(&self, chain: usize) -> Arc<str> {
        Arc::clone(self.shared_names[chain].get_or_init(|| Arc::from(self.name(chain))))
    }

    fn name(&self, chain: usize) -> &str {
        self.names.name(&self.source, chain)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.names.find(&self.source, name)
    }
}

/// A table's chain names, as spans of the dump (a node's dump declares tens of thousands of
/// chains: copying each name out would cost more than reading the rest), and the index from name
/// to position. The hash is fast and non-cryptographic since no untrusted party chooses chain
/// names; it is kept beside the position so that growing the index reads no names.
#[derive(Default)]
struct ChainNames {
    spans: Vec<TextSpan>,
    index: HashTable<(u64, u32)>,
}

impl ChainNames {
    fn name<'s>(&self, source: &'s str, chain: usize) -> &'s str {
        span_text(source, self.spans[chain])
    }

    fn find(&self, source: &str, name: &str) -> Option<usize> {
        let hash = name_hash(name);
        self.index
            .find(hash, |&(h, i)| {
                h == hash && span_text(source, self.spans[i as usize]) == name
            })
            .map(|&(_, i)| i as usize)
    }

    /// Add `name`, a slice of `source`, as the next chain; false if the table has it already.
    fn insert(&mut self, source: &str, name: &str) -> bool {
        let hash = name_hash(name);
        let ChainNames { spans, index } = self;
        match index.entry(
            hash,
            |&(h, i)| h == hash && span_text(source, spans[i as usize]) == name,
            |&(h, _)| h,
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert((hash, spans.len() as u32));
                spans.push(span_of(source, name));
                true
            }
        }
    }
}

fn name_hash(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

fn span_text(source: &str, span: TextSpan) -> &str {
    let start = span.start as usize;
    source.get(start..start + span.len as usize).unwrap_or("")
}

/// The span of `part`, which must be a slice of `source` (the index checks dumps fit in u32).
fn span_of(source: &str, part: &str) -> TextSpan {
    TextSpan {
        start: (part.as_ptr() as usize - source.as_ptr() as usize) as u32,
        len: part.len() as u32,
    }
}

/// Policy of a built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Clone)]
pub struct Chain {
    /// `Some` for built-in chains (`:INPUT ACCEPT [0:0]`), `None` for user chains (`:X - [0:0]`).
    pub policy: Option<Policy>,
    /// Line of the `:CHAIN` declaration.
    pub line: usize,
    /// Position in the table (where its name and segments are in `text`).
    position: u32,
    text: Arc<TableText>,
    /// Range of `text.segments` holding this chain's rules.
    segments: Range<u32>,
    rules: OnceLock<Vec<Rule>>,
}

impl Chain {
    pub fn name(&self) -> &str {
        self.text.name(self.position as usize)
    }

    /// The chain's rules in order, read from the dump on first use (see [`parse_lazy`]).
    pub fn rules(&self) -> &[Rule] {
        self.rules.get_or_init(|| {
            let segments =
                &self.text.segments[self.segments.start as usize..self.segments.end as usize];
            parse::read_rules(&self.text, segments)
        })
    }

    /// Bytes of rule text, for splitting the reading of a dump between threads.
    fn rule_bytes(&self) -> usize {
        self.text.segments[self.segments.start as usize..self.segments.end as usize]
            .iter()
            .map(|s| (s.end - s.start) as usize)
            .sum()
    }
}

impl PartialEq for Chain {
    fn eq(&self, other: &Chain) -> bool {
        self.name() == other.name()
            && self.policy == other.policy
            && self.line == other.line
            && self.rules() == other.rules()
    }
}

impl fmt::Debug for Chain {
    // Not the shared table text: every chain's debug output would print the whole dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Chain");
        s.field("name", &self.name())
            .field("policy", &self.policy)
            .field("line", &self.line);
        match self.rules.get() {
            Some(rules) => s.field("rules", rules),
            None => s.field("rules", &"<not read yet>"),
        };
        s.finish()
    }
}

/// Consecutive lines of the dump holding rules of one chain (blank and `#` lines may be among
/// them): bytes `start..end`, the first of which is on line `line`, holding `rules` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    start: u32,
    end: u32,
    line: u32,
    rules: u32,
}

/// One `-A` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// 1-based line in the dump.
    pub line: usize,
    /// Where the rule's text is in the dump: see [`Ruleset::rule_text`].
    pub span: TextSpan,
    pub matches: Vec<Match>,
    pub target: Target,
}

impl Rule {
    /// The `--comment` text, if any (kube-proxy and CNIs name their objects there).
    pub fn comment(&self) -> Option<&str> {
        self.matches.iter().find_map(|m| match &m.kind {
            MatchKind::Comment(c) => Some(c.as_str()),
            _ => None,
        })
    }
}

/// A byte range of the dump a ruleset was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextSpan {
    pub start: u32,
    pub len: u32,
}

/// A match option, possibly inverted with `!`.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub invert: bool,
    pub kind: MatchKind,
}

/// An inclusive port range; a single port has `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// An interface name pattern: exact, or a prefix when written with a trailing `+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfacePattern {
    pub name: String,
    pub wildcard: bool,
}

impl IfacePattern {
    pub fn matches(&self, dev: &str) -> bool {
        if self.wildcard {
            dev.starts_with(&self.name)
        } else {
            dev == self.name
        }
    }
}

/// Which direction of a conntrack connection (`--ctdir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDirMatch {
    Original,
    Reply,
}

/// Address types of the `addrtype` match (`RTN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrType {
    Unspec,
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

/// Conntrack states a rule may test (`--ctstate`, `--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtStateBit {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
    Snat,
    Dnat,
}

/// `statistic` match modes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Random { probability: f64 },
    Nth { every: u32, packet: u32 },
}

/// Which packet field an ipset dimension looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetDirection {
    Src,
    Dst,
}

/// The matches we model. The printed form (see `print.rs`) is `iptables-save`'s.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchKind {
    Source(IpNet),
    Destination(IpNet),
    /// `-p`: IP protocol number (0 = `all`).
    Protocol(u8),
    InInterface(IfacePattern),
    OutInterface(IfacePattern),
    /// `-f`: non-first fragments.
    Fragment,
    /// `--sport` of `-m tcp`/`udp`/`sctp`.
    SourcePort(PortRange),
    DestinationPort(PortRange),
    /// `-m tcp --tcp-flags MASK COMP` (bit set: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32).
    TcpFlags {
        mask: u8,
        comp: u8,
    },
    /// `-m multiport --sports/--dports/--ports`.
    Multiport {
        source: bool,
        destination: bool,
        ports: Vec<PortRange>,
    },
    /// `--icmp-type T[/C]` (or `--icmpv6-type`); `None` type means `any`.
    IcmpType {
        icmp_type: Option<u8>,
        code: Option<u8>,
    },
    /// `-m mark --mark V[/M]`.
    Mark {
        value: u32,
        mask: u32,
    },
    /// `-m connmark --mark V[/M]`.
    Connmark {
        value: u32,
        mask: u32,
    },
    /// `-m conntrack --ctstate …` or `-m state --state …`.
    CtState(Vec<CtStateBit>),
    CtDirection(CtDirMatch),
    /// `-m comment --comment …`.
    Comment(String),
    Statistic(Statistic),
    /// `-m addrtype --src-type` (when `source`) or `--dst-type`, with `--limit-iface-in/out`.
    AddrType {
        source: bool,
        types: Vec<AddrType>,
        limit_iface_in: bool,
        limit_iface_out: bool,
    },
    /// `-m set --match-set NAME src,dst…`.
    Set {
        name: String,
        directions: Vec<SetDirection>,
    },
    /// `-m physdev --physdev-in/--physdev-out/--physdev-is-bridged/-is-in/-is-out`.
    PhysdevIn(IfacePattern),
    PhysdevOut(IfacePattern),
    PhysdevIsBridged,
    PhysdevIsIn,
    PhysdevIsOut,
    /// `-m length --length LO[:HI]` (IP total length).
    Length {
        lo: u32,
        hi: u32,
    },
    /// `-m iprange --src-range A-B` / `--dst-range A-B`.
    IpRange {
        source: bool,
        from: IpAddr,
        to: IpAddr,
    },
    /// `-m rpfilter [--loose] [--validmark] [--accept-local] [--invert]`.
    RpFilter {
        loose: bool,
        validmark: bool,
        accept_local: bool,
        invert: bool,
    },
    /// A module whose outcome depends on things a snapshot cannot know (rate limits, socket
    /// owners, …). Assumed to match; the assumption is reported.
    Assumed {
        module: String,
        args: String,
    },
    /// A module or option we do not model at all. Assumed to match; reported as unsupported.
    Unknown {
        module: String,
        args: String,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// No `-j`: the rule only counts packets.
    None,
    Accept,
    Drop,
    Return,
    Reject {
        with: String,
    },
    /// `-j CHAIN` (`goto: false`) or `-g CHAIN` (`goto: true`). The name is shared by every
    /// rule that jumps there (kube-proxy has 100k+ jumps).
    Chain {
        name: Arc<str>,
        goto: bool,
    },
    Dnat {
        addr: Option<IpAddr>,
        port: Option<PortRange>,
    },
    Snat {
        addr: Option<IpAddr>,
        port: Option<PortRange>,
    },
    Masquerade {
        port: Option<PortRange>,
    },
    Redirect {
        port: Option<PortRange>,
    },
    /// `-j MARK`: new = (old & !mask) ^ value for xmark; set/or/and are printed as iptables does.
    Mark(MarkOp),
    Connmark(ConnmarkOp),
    Notrack,
    Tproxy {
        port: u16,
        mark: Option<(u32, u32)>,
    },
    Queue {
        num: u16,
    },
    /// Non-terminating targets with no effect on the path: LOG, NFLOG, TRACE, CHECKSUM,
    /// TCPMSS, CLASSIFY…, kept by name with their options.
    Passive {
        name: String,
        args: String,
    },
    /// A target we do not model; assumed to continue, reported as unsupported.
    Unknown {
        name: String,
        args: String,
    },
    /// A rule that could not be read (`message` says why). Only a ruleset from [`parse_lazy`]
    /// holds these ([`parse`] fails instead); the evaluator skips the rule and reports it.
    Unreadable {
        message: String,
    },
}

/// `MARK` operations as the kernel applies them: `mark = (mark & !mask) ^ value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkOp {
    pub value: u32,
    pub mask: u32,
}

impl MarkOp {
    pub fn apply(self, mark: u32) -> u32 {
        (mark & !self.mask) ^ self.value
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnmarkOp {
    /// `--set-xmark value/mask` on the connection mark.
    SetXmark(MarkOp),
    /// `--save-mark`: ctmark = (ctmark & !ctmask) | (mark & nfmask).
    Save { nfmask: u32, ctmask: u32 },
    /// `--restore-mark`: mark = (mark & !nfmask) | (ctmark & ctmask).
    Restore { nfmask: u32, ctmask: u32 },
}

#[cfg(test)]
mod tests;
