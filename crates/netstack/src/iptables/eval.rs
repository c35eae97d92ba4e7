//! Rule-by-rule evaluation of a parsed ruleset at one hook.
//!
//! Semantics follow `ipt_do_table()`: tables run in hook priority order; in each, the built-in
//! chain's rules are tried in order; `-j CHAIN` pushes a return point, `-g CHAIN` does not (so a
//! RETURN there goes back to the caller's caller, or to the built-in chain's policy); the end of a
//! user chain is an implicit RETURN. ACCEPT ends the table (the next table still runs), DROP and
//! REJECT end the hook. The nat table is consulted only for the first packet of a connection.
//!
//! Probabilistic matches (`statistic`) do not pick one branch: every branch is followed and
//! carries its probability, so kube-proxy's service chains lead to every endpoint.

use std::net::IpAddr;

use crate::fib::{Fib, ReversePath, RpFilterMode};
use crate::ipset::IpSets;
use crate::netfilter::{
    run_stages, Cursor, HookOutcome, NetfilterVerdict, RuleRef, RuleSource, Stage, TraceStep,
    Unsupported,
};
use crate::packet::{CtDirection, CtState, Packet, Protocol};
use crate::state::{NetnsState, Scope};

use super::*;

/// Most branches one hook evaluation may fan out to; past it, probabilistic matches are taken
/// as matching and the cut is reported.
pub const MAX_BRANCHES: usize = 4096;

/// Rule steps one branch may take before it is declared a loop.
const MAX_STEPS: usize = 1_000_000;

/// What the evaluator needs to know about the namespace beyond the ruleset.
pub trait EvalContext {
    /// Address type as the `addrtype` match sees it (`LOCAL` for the netns's own addresses).
    fn addr_type(&self, addr: IpAddr) -> AddrType;
    /// Address MASQUERADE/REDIRECT use on `dev` for traffic towards `towards`.
    fn device_address(&self, dev: &str, towards: IpAddr) -> Option<IpAddr>;
    /// Set membership; `None` when the set is unknown or not modelled.
    fn in_set(&self, name: &str, packet: &Packet, directions: &[SetDirection]) -> Option<bool>;
    /// `rpfilter` match: whether the reverse path check passes.
    fn reverse_path_ok(
        &self,
        packet: &Packet,
        loose: bool,
        validmark: bool,
        accept_local: bool,
    ) -> bool;
}

/// The context of a real netns state: its FIB and its ipsets.
pub struct StateContext<'a> {
    fib: Fib<'a>,
    ipsets: IpSets,
}

impl<'a> StateContext<'a> {
    pub fn new(state: &'a NetnsState, ipsets: IpSets) -> StateContext<'a> {
        StateContext {
            fib: Fib::new(state),
            ipsets,
        }
    }
}

impl EvalContext for StateContext<'_> {
    fn addr_type(&self, addr: IpAddr) -> AddrType {
        if addr.is_unspecified() {
            AddrType::Unspec
        } else if self.fib.is_local_address(addr) {
            AddrType::Local
        } else if addr.is_multicast() {
            AddrType::Multicast
        } else if addr == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            AddrType::Broadcast
        } else {
            AddrType::Unicast
        }
    }

    fn device_address(&self, dev: &str, towards: IpAddr) -> Option<IpAddr> {
        self.fib.select_source(dev, towards, Scope::Universe)
    }

    fn in_set(&self, name: &str, packet: &Packet, directions: &[SetDirection]) -> Option<bool> {
        self.ipsets.contains(name, packet, directions)
    }

    fn reverse_path_ok(
        &self,
        packet: &Packet,
        loose: bool,
        validmark: bool,
        accept_local: bool,
    ) -> bool {
        let Some(iif) = packet.iif.as_deref() else {
            return true; // locally generated: the match never fires on output
        };
        let mode = if loose {
            RpFilterMode::Loose
        } else {
            RpFilterMode::Strict
        };
        let mark = if validmark { packet.mark } else { 0 };
        matches!(
            self.fib
                .reverse_path(mode, iif, packet.src, packet.dst, mark, accept_local),
            ReversePath::Pass
        )
    }
}

/// The result of one table for one branch: either the packet goes on (`verdict: None`) or the
/// hook ends.
#[derive(Debug, Clone)]
pub struct TableOutcome {
    pub branch: Branch,
    pub verdict: Option<NetfilterVerdict>,
}

/// One path through the rules.
#[derive(Debug, Clone)]
pub struct Branch {
    pub packet: Packet,
    pub trace: Vec<TraceStep>,
    pub probability: f64,
    pub unsupported: Vec<Unsupported>,
    pub decided_by: Option<RuleRef>,
}

enum Step {
    /// The rule did not match, or matched with a non-terminating effect: next rule.
    Next,
    Jump {
        chain: usize,
        goto: bool,
    },
    Return,
    /// End of this table with ACCEPT.
    Accept,
    /// End of the hook.
    Final(NetfilterVerdict),
}

impl Ruleset {
    fn source(&self) -> RuleSource {
        if self.ipv6 {
            RuleSource::Ip6tables
        } else {
            RuleSource::Iptables
        }
    }

    /// Run every table registered at `hook` for `packet`. Returns one outcome per branch.
    pub fn run_hook(&self, hook: Hook, packet: &Packet, ctx: &dyn EvalContext) -> Vec<HookOutcome> {
        let stages: Vec<Stage> = TableName::at_hook(hook)
            .iter()
            .filter_map(|&name| self.table(name))
            .map(|table| Stage::Iptables(self, table))
            .collect();
        run_stages(&stages, hook, packet, ctx)
    }

    /// Run one table's built-in chain for `hook`.
    pub fn run_table(
        &self,
        table: &Table,
        hook: Hook,
        branch: Branch,
        ctx: &dyn EvalContext,
    ) -> Vec<TableOutcome> {
        let Some(base) = table.chain_index(hook.as_str()) else {
            return vec![TableOutcome {
                branch,
                verdict: None,
            }];
        };
        let mut work = vec![(branch, Cursor::at(base))];
        let mut out = Vec::new();
        while let Some((mut branch, mut cur)) = work.pop() {
            loop {
                if cur.step() > MAX_STEPS {
                    let chain = &table.chains[cur.chain];
                    branch.unsupported.push(Unsupported {
                        rule: self.policy_ref(table, chain),
                        feature: "rule loop (step limit reached)".into(),
                        assumed_match: false,
                    });
                    out.push(TableOutcome {
                        branch,
                        verdict: Some(NetfilterVerdict::Drop),
                    });
                    break;
                }
                let Some((chain, rule)) = cur.current(&table.chains, Chain::rules) else {
                    out.push(self.apply_policy(table, &table.chains[base], branch));
                    break;
                };
                let rref = || self.rule_ref(table, chain, cur.rule, rule);
                let probability = match self.rule_matches(rule, &mut branch, ctx, &rref) {
                    None => {
                        cur.advance();
                        continue;
                    }
                    Some(p) => p,
                };
                if probability < 1.0 {
                    if work.len() + out.len() < MAX_BRANCHES {
                        let mut miss = branch.clone();
                        miss.probability *= 1.0 - probability;
                        let mut after = cur.clone();
                        after.advance();
                        work.push((miss, after));
                        branch.probability *= probability;
                    } else {
                        branch.unsupported.push(Unsupported {
                            rule: rref(),
                            feature: format!("fan-out limit of {MAX_BRANCHES} branches: statistic taken as matching"),
                            assumed_match: true,
                        });
                    }
                }
                match self.apply_target(table, rule, &mut branch, hook, ctx, &rref) {
                    Step::Next => cur.advance(),
                    Step::Jump { chain, goto: true } => cur.goto(chain),
                    Step::Jump { chain, goto: false } => cur.jump(chain),
                    Step::Return => {
                        if !cur.back() {
                            out.push(self.apply_policy(table, &table.chains[base], branch));
                            break;
                        }
                    }
                    Step::Accept => {
                        branch.decided_by = Some(rref());
                        out.push(TableOutcome {
                            branch,
                            verdict: None,
                        });
                        break;
                    }
                    Step::Final(verdict) => {
                        branch.decided_by = Some(rref());
                        out.push(TableOutcome {
                            branch,
                            verdict: Some(verdict),
                        });
                        break;
                    }
                }
            }
        }
        out
    }

    fn apply_policy(&self, table: &Table, chain: &Chain, mut branch: Branch) -> TableOutcome {
        let policy = chain.policy.unwrap_or(Policy::Accept);
        let rule = self.policy_ref(table, chain);
        let word = if policy == Policy::Accept {
            "ACCEPT"
        } else {
            "DROP"
        };
        branch.trace.push(TraceStep {
            rule: rule.clone(),
            action: format!("policy {word}"),
        });
        branch.decided_by = Some(rule);
        let verdict = match policy {
            Policy::Accept => None,
            Policy::Drop => Some(NetfilterVerdict::Drop),
        };
        TableOutcome { branch, verdict }
    }

    fn policy_ref(&self, table: &Table, chain: &Chain) -> RuleRef {
        let word = match chain.policy {
            Some(Policy::Accept) => "ACCEPT",
            Some(Policy::Drop) => "DROP",
            None => "-",
        };
        RuleRef {
            source: self.source(),
            table: table.name.as_str().to_string(),
            chain: chain.name().to_string(),
            position: 0,
            line: chain.line,
            handle: None,
            text: format!(":{} {word}", chain.name()),
        }
    }

    fn rule_ref(&self, table: &Table, chain: &Chain, index: usize, rule: &Rule) -> RuleRef {
        RuleRef {
            source: self.source(),
            table: table.name.as_str().to_string(),
            chain: chain.name().to_string(),
            position: index + 1,
            line: rule.line,
            handle: None,
            text: self.rule_text(rule).to_string(),
        }
    }

    /// `None` if the rule does not match; otherwise the probability that it does (1.0 unless a
    /// `statistic` match is involved). Assumed and unknown matches are recorded on the branch.
    fn rule_matches(
        &self,
        rule: &Rule,
        branch: &mut Branch,
        ctx: &dyn EvalContext,
        rref: &dyn Fn() -> RuleRef,
    ) -> Option<f64> {
        let mut probability = 1.0;
        for m in &rule.matches {
            let p = &branch.packet;
            let hit = match &m.kind {
                MatchKind::Statistic(stat) => {
                    let p = match *stat {
                        Statistic::Random { probability } => probability,
                        Statistic::Nth { every, .. } => 1.0 / f64::from(every),
                    };
                    let p = if m.invert { 1.0 - p } else { p };
                    if p <= 0.0 {
                        return None;
                    }
                    probability *= p;
                    continue;
                }
                MatchKind::Set { name, directions } => match ctx.in_set(name, p, directions) {
                    Some(hit) => hit,
                    None => {
                        let rule = rref();
                        branch.unsupported.push(Unsupported {
                            rule,
                            feature: format!(
                                "-m set --match-set {name} (set unknown or not modelled)"
                            ),
                            assumed_match: true,
                        });
                        continue;
                    }
                },
                MatchKind::Assumed { module, args } | MatchKind::Unknown { module, args } => {
                    let assumed = matches!(m.kind, MatchKind::Assumed { .. });
                    let rule = rref();
                    branch.unsupported.push(Unsupported {
                        rule,
                        feature: format!(
                            "-m {module} {args}{}",
                            if assumed {
                                " (depends on state a snapshot cannot hold)"
                            } else {
                                ""
                            }
                        ),
                        assumed_match: true,
                    });
                    continue;
                }
                kind => simple_match(kind, p, ctx),
            };
            if hit == m.invert {
                return None;
            }
        }
        Some(probability)
    }

    fn apply_target(
        &self,
        table: &Table,
        rule: &Rule,
        branch: &mut Branch,
        hook: Hook,
        ctx: &dyn EvalContext,
        rref: &dyn Fn() -> RuleRef,
    ) -> Step {
        let trace = |branch: &mut Branch, action: String| {
            branch.trace.push(TraceStep {
                rule: rref(),
                action,
            })
        };
        let packet = &mut branch.packet;
        match &rule.target {
            Target::None => {
                trace(branch, "match (no target)".into());
                Step::Next
            }
            Target::Accept => {
                trace(branch, "ACCEPT".into());
                Step::Accept
            }
            Target::Drop => {
                trace(branch, "DROP".into());
                Step::Final(NetfilterVerdict::Drop)
            }
            Target::Reject { with } => {
                trace(branch, format!("REJECT with {with}"));
                Step::Final(NetfilterVerdict::Reject { with: with.clone() })
            }
            Target::Return => {
                trace(branch, "RETURN".into());
                Step::Return
            }
            Target::Chain { name, goto } => {
                let chain = table
                    .chain_index(name)
                    .expect("targets resolved at parse time");
                trace(
                    branch,
                    format!("{} {name}", if *goto { "goto" } else { "jump" }),
                );
                Step::Jump { chain, goto: *goto }
            }
            Target::Dnat { addr, port } => {
                let to = rewrite(packet, *addr, *port, Side::Destination);
                trace(branch, format!("DNAT to {to}"));
                Step::Accept
            }
            Target::Snat { addr, port } => {
                let from = rewrite(packet, *addr, *port, Side::Source);
                trace(branch, format!("SNAT to {from}"));
                Step::Accept
            }
            Target::Masquerade { port } => {
                let addr = packet
                    .oif
                    .as_deref()
                    .and_then(|dev| ctx.device_address(dev, packet.dst));
                match addr {
                    Some(a) => {
                        packet.src = a;
                        if let (Some(p), true) = (port, packet.protocol.has_ports()) {
                            packet.sport = p.lo;
                        }
                        packet.ct_snat = true;
                        let dev = packet.oif.clone().unwrap_or_default();
                        trace(branch, format!("MASQUERADE to {a} (address of {dev})"));
                        Step::Accept
                    }
                    None => {
                        // No usable address on the out device: the kernel drops the packet.
                        trace(branch, "MASQUERADE: no address on the out device".into());
                        Step::Final(NetfilterVerdict::Drop)
                    }
                }
            }
            Target::Redirect { port } => {
                let addr = match (&packet.iif, hook) {
                    (Some(dev), _) => ctx.device_address(dev, packet.src),
                    (None, _) if packet.is_ipv6() => {
                        Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
                    }
                    (None, _) => Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                };
                let Some(a) = addr else {
                    trace(branch, "REDIRECT: no address on the in device".into());
                    return Step::Final(NetfilterVerdict::Drop);
                };
                packet.dst = a;
                if let (Some(p), true) = (port, packet.protocol.has_ports()) {
                    packet.dport = p.lo;
                }
                packet.ct_dnat = true;
                let to = endpoint(packet.dst, packet.dport, packet.protocol);
                trace(branch, format!("REDIRECT to {to}"));
                Step::Accept
            }
            Target::Mark(op) => {
                packet.mark = op.apply(packet.mark);
                let mark = packet.mark;
                trace(branch, format!("MARK set {mark:#x}"));
                Step::Next
            }
            Target::Connmark(op) => {
                let action = match *op {
                    ConnmarkOp::SetXmark(op) => {
                        packet.ct_mark = op.apply(packet.ct_mark);
                        format!("CONNMARK set {:#x}", packet.ct_mark)
                    }
                    ConnmarkOp::Save { nfmask, ctmask } => {
                        packet.ct_mark = (packet.ct_mark & !ctmask) | (packet.mark & nfmask);
                        format!("CONNMARK save {:#x}", packet.ct_mark)
                    }
                    ConnmarkOp::Restore { nfmask, ctmask } => {
                        packet.mark = (packet.mark & !nfmask) | (packet.ct_mark & ctmask);
                        format!("CONNMARK restore mark {:#x}", packet.mark)
                    }
                };
                trace(branch, action);
                Step::Next
            }
            Target::Notrack => {
                packet.ct_state = CtState::Untracked;
                trace(branch, "NOTRACK".into());
                Step::Next
            }
            Target::Tproxy { port, mark } => {
                if let Some((value, mask)) = mark {
                    packet.mark = MarkOp {
                        value: *value,
                        mask: *mask,
                    }
                    .apply(packet.mark);
                }
                trace(branch, format!("TPROXY to local port {port}"));
                Step::Final(NetfilterVerdict::Redirect)
            }
            Target::Queue { num } => {
                trace(branch, format!("NFQUEUE {num}"));
                Step::Final(NetfilterVerdict::Queue { num: *num })
            }
            Target::Passive { name, .. } => {
                trace(branch, name.clone());
                Step::Next
            }
            Target::Unreadable { message } => {
                // It has no matches (nothing was read), so it gets here for every packet:
                // skip it, and say that the verdict rests on skipping it.
                let rule = rref();
                branch.unsupported.push(Unsupported {
                    rule,
                    feature: format!("a rule that cannot be read ({message})"),
                    assumed_match: false,
                });
                Step::Next
            }
            Target::Unknown { name, args } => {
                let rule = rref();
                trace(
                    branch,
                    format!("{name} (not modelled, assumed to continue)"),
                );
                branch.unsupported.push(Unsupported {
                    rule,
                    feature: format!("-j {name} {args}").trim_end().to_string(),
                    assumed_match: true,
                });
                Step::Next
            }
        }
    }
}

/// Which end of the packet a NAT target rewrites.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// Apply a DNAT/SNAT: new address and (for protocols with ports) the first port of the range,
/// and mark the connection NATed. Returns the new endpoint for the trace.
fn rewrite(
    packet: &mut Packet,
    addr: Option<IpAddr>,
    port: Option<PortRange>,
    side: Side,
) -> String {
    let has_ports = packet.protocol.has_ports();
    let (a, p, natted) = match side {
        Side::Source => (&mut packet.src, &mut packet.sport, &mut packet.ct_snat),
        Side::Destination => (&mut packet.dst, &mut packet.dport, &mut packet.ct_dnat),
    };
    if let Some(addr) = addr {
        *a = addr;
    }
    if let (Some(range), true) = (port, has_ports) {
        *p = range.lo;
    }
    *natted = true;
    endpoint(*a, *p, packet.protocol)
}

fn endpoint(addr: IpAddr, port: u16, protocol: Protocol) -> String {
    match (protocol.has_ports(), addr) {
        (false, a) => a.to_string(),
        (true, IpAddr::V6(a)) => format!("[{a}]:{port}"),
        (true, a) => format!("{a}:{port}"),
    }
}

fn tcp_flag_bits(p: &Packet) -> u8 {
    let f = p.tcp_flags;
    u8::from(f.fin)
        | u8::from(f.syn) << 1
        | u8::from(f.rst) << 2
        | u8::from(f.psh) << 3
        | u8::from(f.ack) << 4
        | u8::from(f.urg) << 5
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Matches that depend only on the packet (and the context for address types / rpfilter).
fn simple_match(kind: &MatchKind, p: &Packet, ctx: &dyn EvalContext) -> bool {
    let has_ports = matches!(p.protocol, Protocol::Tcp | Protocol::Udp | Protocol::Sctp);
    match kind {
        MatchKind::Source(net) => net.contains(&p.src),
        MatchKind::Destination(net) => net.contains(&p.dst),
        MatchKind::Protocol(proto) => *proto == 0 || *proto == p.ip_proto(),
        MatchKind::InInterface(pat) => p.iif.as_deref().is_some_and(|d| pat.matches(d)),
        MatchKind::OutInterface(pat) => p.oif.as_deref().is_some_and(|d| pat.matches(d)),
        MatchKind::Fragment => false,
        MatchKind::SourcePort(r) => has_ports && r.contains(p.sport),
        MatchKind::DestinationPort(r) => has_ports && r.contains(p.dport),
        MatchKind::TcpFlags { mask, comp } => {
            p.protocol == Protocol::Tcp && tcp_flag_bits(p) & mask == *comp
        }
        MatchKind::Multiport {
            source,
            destination,
            ports,
        } => {
            has_ports
                && ports.iter().any(|r| {
                    (*source && r.contains(p.sport)) || (*destination && r.contains(p.dport))
                })
        }
        MatchKind::IcmpType { icmp_type, code } => {
            p.protocol == Protocol::Icmp
                && icmp_type.is_none_or(|t| p.icmp_type == Some(t))
                && code.is_none_or(|c| c == 0)
        }
        MatchKind::Mark { value, mask } => p.mark & mask == *value,
        MatchKind::Connmark { value, mask } => p.ct_mark & mask == *value,
        MatchKind::CtState(bits) => bits.iter().any(|b| match b {
            CtStateBit::New => p.ct_state == CtState::New,
            CtStateBit::Established => p.ct_state == CtState::Established,
            CtStateBit::Related => p.ct_state == CtState::Related,
            CtStateBit::Invalid => p.ct_state == CtState::Invalid,
            CtStateBit::Untracked => p.ct_state == CtState::Untracked,
            CtStateBit::Snat => p.ct_snat,
            CtStateBit::Dnat => p.ct_dnat,
        }),
        MatchKind::CtDirection(dir) => {
            p.ct_state != CtState::Untracked
                && matches!(
                    (dir, p.ct_direction),
                    (CtDirMatch::Original, CtDirection::Original)
                        | (CtDirMatch::Reply, CtDirection::Reply)
                )
        }
        MatchKind::Comment(_) => true,
        MatchKind::AddrType { source, types, .. } => {
            let t = ctx.addr_type(if *source { p.src } else { p.dst });
            types.contains(&t)
        }
        MatchKind::PhysdevIn(pat) => p.physdev_in.as_deref().is_some_and(|d| pat.matches(d)),
        MatchKind::PhysdevOut(pat) => p.physdev_out.as_deref().is_some_and(|d| pat.matches(d)),
        MatchKind::PhysdevIsBridged => p.physdev_in.is_some() || p.physdev_out.is_some(),
        MatchKind::PhysdevIsIn => p.physdev_in.is_some(),
        MatchKind::PhysdevIsOut => p.physdev_out.is_some(),
        MatchKind::Length { lo, hi } => (*lo..=*hi).contains(&p.length),
        MatchKind::IpRange { source, from, to } => {
            let a = if *source { p.src } else { p.dst };
            same_family(a, *from) && *from <= a && a <= *to
        }
        MatchKind::RpFilter {
            loose,
            validmark,
            accept_local,
            invert,
        } => ctx.reverse_path_ok(p, *loose, *validmark, *accept_local) != *invert,
        // Handled by the caller.
        MatchKind::Statistic(_)
        | MatchKind::Set { .. }
        | MatchKind::Assumed { .. }
        | MatchKind::Unknown { .. } => true,
    }
}
