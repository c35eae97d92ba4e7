//! Rule-by-rule evaluation of one nft base chain, following `nft_do_chain()`.
//!
//! A rule's statements run in order; a failing match ends the rule. `jump` pushes a return
//! point, `goto` does not; `return` (or the end of a regular chain) goes back, and at the base
//! chain it applies the policy. `accept` ends the base chain (the next base chain at the hook
//! still runs), `drop`/`reject` end the hook. NAT statements accept, as in the kernel.
//!
//! Keys spread evenly by `numgen`/`jhash`/`symhash … mod N` are not sampled: every value is
//! followed as its own branch with probability 1/N (grouped by the element it selects), so the
//! branches of a kube-proxy service chain are all visible, like iptables' `statistic` fan-out.
//!
//! The composition of base chains with each other and with iptables tables at a hook is
//! [`crate::netfilter::Netfilter::run_hook`]'s job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::iptables::{AddrType, Branch, EvalContext, TableOutcome, MAX_BRANCHES};
use crate::netfilter::{Cursor, NetfilterVerdict, RuleRef, RuleSource, TraceStep, Unsupported};
use crate::packet::{CtDirection, CtState, Packet, Protocol};

use super::types::{
    CT_STATE_ESTABLISHED, CT_STATE_INVALID, CT_STATE_NEW, CT_STATE_RELATED, CT_STATE_UNTRACKED,
    CT_STATUS_CONFIRMED, CT_STATUS_DNAT, CT_STATUS_SEEN_REPLY, CT_STATUS_SNAT,
};
use super::*;

/// Rule steps one branch may take in a base chain before it is declared a loop (only `goto`
/// can loop: jumps are bounded by [`JUMP_STACK`]).
const MAX_STEPS: usize = 100_000;

/// The kernel's `NFT_JUMP_STACK_SIZE`: nft refuses deeper jump nesting, so a JSON dump with
/// more is a loop.
const JUMP_STACK: usize = 16;

/// Largest `mod N` followed value by value; a larger spread is reported as unsupported.
const MAX_SPREAD: u32 = 4096;

/// A base chain, located: what [`Ruleset::base_chains`] lists for a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChainRef {
    pub table: usize,
    pub chain: usize,
    pub priority: i32,
    pub kind: ChainType,
}

/// A value computed from the packet, one per concatenated dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datum<'p> {
    Num(u128),
    Name(&'p str),
}

/// The values an expression takes, each with its share of flows (1.0 unless it spreads);
/// `None` where the packet lacks the field or a map has no element for the key.
type Shares<T> = Vec<(f64, Option<T>)>;

/// How a rule left the branch.
#[derive(Debug, Clone)]
enum Flow {
    Next,
    Accept,
    Return,
    Jump(usize),
    Goto(usize),
    Final(NetfilterVerdict),
}

impl Ruleset {
    /// Base chains registered at `hook` that see packets of this IP version, in the order the
    /// kernel runs them: by priority, ties in table then declaration order.
    pub fn base_chains(&self, hook: Hook, ipv6: bool) -> Vec<BaseChainRef> {
        let mut out: Vec<BaseChainRef> = self
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.family.sees(ipv6))
            .flat_map(|(ti, t)| {
                t.base_chains_at(hook).map(move |(ci, b)| BaseChainRef {
                    table: ti,
                    chain: ci,
                    priority: b.priority,
                    kind: b.kind,
                })
            })
            .collect();
        out.sort_by_key(|b| b.priority);
        out
    }

    /// Run one base chain for one branch. Every fan-out branch gives one outcome; `verdict` is
    /// `None` when the packet goes on to the next base chain. `max_branches` bounds the fan-out
    /// (the caller's share of [`MAX_BRANCHES`], so that chained spreads at one hook cannot
    /// multiply without limit); past it, spreads follow their first value and say so.
    pub fn run_base_chain(
        &self,
        at: BaseChainRef,
        branch: Branch,
        ctx: &dyn EvalContext,
        max_branches: usize,
    ) -> Vec<TableOutcome> {
        let table = &self.tables[at.table];
        let mut work = vec![(branch, Cursor::at(at.chain))];
        let mut out = Vec::new();
        let mut ends = Vec::new();
        while let Some((mut branch, mut cur)) = work.pop() {
            if cur.step() > MAX_STEPS || cur.depth() > JUMP_STACK {
                branch.unsupported.push(Unsupported {
                    rule: policy_ref(table, &table.chains[at.chain]),
                    feature: format!(
                        "rule loop (more than {MAX_STEPS} steps or {JUMP_STACK} nested jumps): dropped"
                    ),
                    assumed_match: false,
                });
                out.push(TableOutcome {
                    branch,
                    verdict: Some(NetfilterVerdict::Drop),
                });
                continue;
            }
            let Some((chain, rule)) = cur.current(&table.chains, |c| &c.rules) else {
                out.push(apply_policy(table, &table.chains[at.chain], branch));
                continue;
            };
            let rref = RuleCtx {
                table,
                chain,
                position: cur.rule + 1,
                rule,
            };
            // This branch counts too: splitting it makes at least two.
            let room = work.len() + out.len() + 1 < max_branches;
            rref.run(branch, ctx, room, &mut ends);
            for (mut branch, flow) in ends.drain(..) {
                let mut cur = cur.clone();
                match flow {
                    Flow::Next => cur.advance(),
                    Flow::Jump(target) => cur.jump(target),
                    Flow::Goto(target) => cur.goto(target),
                    Flow::Return => {
                        if !cur.back() {
                            out.push(apply_policy(table, &table.chains[at.chain], branch));
                            continue;
                        }
                    }
                    Flow::Accept => {
                        branch.decided_by = Some(rref.rule_ref());
                        out.push(TableOutcome {
                            branch,
                            verdict: None,
                        });
                        continue;
                    }
                    Flow::Final(verdict) => {
                        branch.decided_by = Some(rref.rule_ref());
                        out.push(TableOutcome {
                            branch,
                            verdict: Some(verdict),
                        });
                        continue;
                    }
                }
                work.push((branch, cur));
            }
        }
        out
    }
}

fn apply_policy(table: &Table, chain: &Chain, mut branch: Branch) -> TableOutcome {
    let policy = chain.base.as_ref().map_or(Policy::Accept, |b| b.policy);
    let rule = policy_ref(table, chain);
    let word = match policy {
        Policy::Accept => "ACCEPT",
        Policy::Drop => "DROP",
    };
    branch.trace.push(TraceStep {
        rule: rule.clone(),
        action: format!("policy {word}"),
    });
    branch.decided_by = Some(rule);
    TableOutcome {
        branch,
        verdict: (policy == Policy::Drop).then_some(NetfilterVerdict::Drop),
    }
}

/// The policy of a base chain as evidence: position 0, the chain's handle.
fn policy_ref(table: &Table, chain: &Chain) -> RuleRef {
    let text = match &chain.base {
        Some(b) => format!(
            "type {} hook {} priority {}; policy {};",
            b.kind.as_str(),
            b.hook.map_or("?", |h| h.as_str()).to_ascii_lowercase(),
            b.priority,
            match b.policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            }
        ),
        None => String::new(),
    };
    RuleRef {
        source: RuleSource::Nftables,
        table: table.display_name(),
        chain: chain.name.clone(),
        position: 0,
        line: 0,
        handle: Some(chain.handle),
        text,
    }
}

/// A rule with what evidence needs to cite it.
struct RuleCtx<'r> {
    table: &'r Table,
    chain: &'r Chain,
    position: usize,
    rule: &'r Rule,
}

impl RuleCtx<'_> {
    fn rule_ref(&self) -> RuleRef {
        RuleRef {
            source: RuleSource::Nftables,
            table: self.table.display_name(),
            chain: self.chain.name.clone(),
            position: self.position,
            line: 0,
            handle: Some(self.rule.handle),
            text: self.rule.text.clone(),
        }
    }

    fn trace(&self, branch: &mut Branch, action: String) {
        branch.trace.push(TraceStep {
            rule: self.rule_ref(),
            action,
        });
    }

    fn unsupported(&self, branch: &mut Branch, feature: String) {
        branch.unsupported.push(Unsupported {
            rule: self.rule_ref(),
            feature,
            assumed_match: true,
        });
    }

    fn set<'a>(&'a self, r: &'a SetRef) -> &'a Set {
        match r {
            SetRef::Named(i) => &self.table.sets[*i],
            SetRef::Anonymous(set) => set,
        }
    }

    /// Run the rule's statements for one branch; pushes one `(branch, flow)` per fan-out
    /// outcome. `room`: whether spreading keys may still fan out (else the first value is
    /// taken and the cut reported).
    fn run(
        &self,
        branch: Branch,
        ctx: &dyn EvalContext,
        room: bool,
        ends: &mut Vec<(Branch, Flow)>,
    ) {
        // (branch, next statement, outcome already chosen for that statement, acted)
        let mut work: Vec<(Branch, usize, Option<usize>, bool)> = vec![(branch, 0, None, false)];
        while let Some((mut b, mut i, mut chosen, mut acted)) = work.pop() {
            let flow = loop {
                let Some(stmt) = self.rule.stmts.get(i) else {
                    if !acted {
                        self.trace(&mut b, "match (no statement)".into());
                    }
                    break Flow::Next;
                };
                let pick = chosen.take();
                match self.statement(stmt, &mut b, ctx, pick) {
                    Effect::Continue => acted |= !matches!(stmt, Stmt::Match { .. }),
                    Effect::NoMatch => break Flow::Next,
                    Effect::End(flow) => break flow,
                    Effect::Partial { probability } => {
                        // A match that holds for part of the spread: the rest misses the rule.
                        if room {
                            let mut miss = b.clone();
                            miss.probability *= 1.0 - probability;
                            ends.push((miss, Flow::Next));
                            b.probability *= probability;
                        } else {
                            self.unsupported(&mut b, format!("fan-out limit of {MAX_BRANCHES} branches: match taken as holding"));
                        }
                    }
                    Effect::Spread { outcomes } => {
                        // Fork: this branch takes outcome 0, the others are re-run with their
                        // outcome chosen.
                        if room {
                            for (k, p) in outcomes.iter().enumerate().skip(1) {
                                let mut other = b.clone();
                                other.probability *= p;
                                work.push((other, i, Some(k), acted));
                            }
                            b.probability *= outcomes[0];
                        } else {
                            self.unsupported(&mut b, format!("fan-out limit of {MAX_BRANCHES} branches: only the first value of the spread followed"));
                        }
                        chosen = Some(0);
                        continue;
                    }
                }
                i += 1;
            };
            ends.push((b, flow));
        }
    }

    /// One statement. With `pick`, a spreading statement takes that outcome instead of
    /// reporting the spread.
    fn statement(
        &self,
        stmt: &Stmt,
        b: &mut Branch,
        ctx: &dyn EvalContext,
        pick: Option<usize>,
    ) -> Effect {
        match stmt {
            Stmt::Match { op, left, right } => {
                match self.match_probability(*op, left, right, &b.packet, ctx) {
                    Ok(p) if p <= 0.0 => Effect::NoMatch,
                    Ok(p) if p >= 1.0 => Effect::Continue,
                    Ok(probability) => Effect::Partial { probability },
                    Err(why) => {
                        self.unsupported(b, format!("match: {why}"));
                        Effect::Continue
                    }
                }
            }
            Stmt::Verdict(v) => self.verdict(v, b, None),
            Stmt::VerdictMap { key, map } => {
                let set = self.set(map);
                let groups = match self.lookup_groups(key, set, &b.packet, ctx) {
                    Ok(g) => g,
                    Err(why) => {
                        self.unsupported(b, format!("vmap: {why}"));
                        return Effect::Continue;
                    }
                };
                let (element, _) = match (pick, groups.as_slice()) {
                    (Some(k), _) => groups[k],
                    (None, [one]) => *one,
                    (None, many) => {
                        return Effect::Spread {
                            outcomes: many.iter().map(|g| g.1).collect(),
                        }
                    }
                };
                let via = if set.name.is_empty() {
                    "vmap".to_string()
                } else {
                    format!("vmap @{}", set.name)
                };
                match element.and_then(|e| set.elements[e].data.as_ref()) {
                    Some(MapData::Verdict(v)) => self.verdict(v, b, Some(&via)),
                    // No element: the lookup fails and the rule ends.
                    _ => Effect::NoMatch,
                }
            }
            Stmt::Passive(name) => {
                self.trace(b, name.clone());
                Effect::Continue
            }
            Stmt::SetMark { target, value } => {
                let v = match self.scalar(value, &b.packet, ctx) {
                    Ok(Some(v)) => v as u32,
                    Ok(None) => return Effect::NoMatch,
                    Err(why) => {
                        self.unsupported(b, format!("mark value: {why}"));
                        return Effect::Continue;
                    }
                };
                let action = match target {
                    MarkTarget::Meta => {
                        b.packet.mark = v;
                        format!("MARK set {v:#x}")
                    }
                    MarkTarget::Ct => {
                        b.packet.ct_mark = v;
                        format!("CONNMARK set {v:#x}")
                    }
                };
                self.trace(b, action);
                Effect::Continue
            }
            Stmt::Notrack => {
                b.packet.ct_state = CtState::Untracked;
                self.trace(b, "NOTRACK".into());
                Effect::Continue
            }
            Stmt::Nat { ipv6: Some(v6), .. } if *v6 != b.packet.is_ipv6() => {
                // The implicit `meta nfproto` dependency of a family-specific NAT fails.
                Effect::NoMatch
            }
            Stmt::Nat {
                kind, addr, port, ..
            } => self.nat(*kind, addr.as_ref(), port.as_ref(), b, ctx, pick),
            Stmt::Masquerade { port } => {
                let port = match self.port(port.as_ref(), b, ctx) {
                    Ok(p) => p,
                    Err(effect) => return effect,
                };
                let packet = &mut b.packet;
                let addr = packet
                    .oif
                    .as_deref()
                    .and_then(|dev| ctx.device_address(dev, packet.dst));
                let Some(a) = addr else {
                    // No usable address on the out device: the kernel drops the packet.
                    self.trace(b, "MASQUERADE: no address on the out device".into());
                    return Effect::End(Flow::Final(NetfilterVerdict::Drop));
                };
                packet.src = a;
                if let (Some(p), true) = (port, packet.protocol.has_ports()) {
                    packet.sport = p;
                }
                packet.ct_snat = true;
                let dev = packet.oif.clone().unwrap_or_default();
                self.trace(b, format!("MASQUERADE to {a} (address of {dev})"));
                Effect::End(Flow::Accept)
            }
            Stmt::Redirect { port } => {
                let port = match self.port(port.as_ref(), b, ctx) {
                    Ok(p) => p,
                    Err(effect) => return effect,
                };
                let packet = &mut b.packet;
                let addr = match &packet.iif {
                    Some(dev) => ctx.device_address(dev, packet.src),
                    None if packet.is_ipv6() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                    None => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                };
                let Some(a) = addr else {
                    self.trace(b, "REDIRECT: no address on the in device".into());
                    return Effect::End(Flow::Final(NetfilterVerdict::Drop));
                };
                packet.dst = a;
                if let (Some(p), true) = (port, packet.protocol.has_ports()) {
                    packet.dport = p;
                }
                packet.ct_dnat = true;
                let to = endpoint(packet.dst, packet.dport, packet.protocol);
                self.trace(b, format!("REDIRECT to {to}"));
                Effect::End(Flow::Accept)
            }
            Stmt::Reject { with } => {
                self.trace(b, format!("REJECT with {with}"));
                Effect::End(Flow::Final(NetfilterVerdict::Reject { with: with.clone() }))
            }
            Stmt::Assumed(feature) | Stmt::Unsupported(feature) => {
                self.unsupported(b, feature.clone());
                Effect::Continue
            }
        }
    }

    fn verdict(&self, v: &Verdict, b: &mut Branch, via: Option<&str>) -> Effect {
        let (action, flow) = match v {
            Verdict::Accept => ("ACCEPT".to_string(), Flow::Accept),
            Verdict::Drop => ("DROP".to_string(), Flow::Final(NetfilterVerdict::Drop)),
            Verdict::Continue => ("continue".to_string(), Flow::Next),
            Verdict::Return => ("RETURN".to_string(), Flow::Return),
            Verdict::Jump(c) => (
                format!("jump {}", self.table.chains[*c].name),
                Flow::Jump(*c),
            ),
            Verdict::Goto(c) => (
                format!("goto {}", self.table.chains[*c].name),
                Flow::Goto(*c),
            ),
            Verdict::Queue(num) => (
                format!("NFQUEUE {num}"),
                Flow::Final(NetfilterVerdict::Queue { num: *num }),
            ),
        };
        let action = match via {
            Some(via) => format!("{action} ({via})"),
            None => action,
        };
        self.trace(b, action);
        Effect::End(flow)
    }

    fn nat(
        &self,
        kind: NatKind,
        addr: Option<&Expr>,
        port: Option<&Expr>,
        b: &mut Branch,
        ctx: &dyn EvalContext,
        pick: Option<usize>,
    ) -> Effect {
        // The address (and, from a map of `addr . port`, the port) for this branch.
        let values: Option<Vec<u128>> = match addr {
            None => None,
            Some(e) => {
                let outcomes = match self.value_outcomes(e, &b.packet, ctx) {
                    Ok(o) => o,
                    Err(why) => {
                        self.unsupported(b, format!("{kind:?} target: {why}"));
                        return Effect::Continue;
                    }
                };
                let chosen = match (pick, outcomes.len()) {
                    (Some(k), _) => k,
                    (None, 1) => 0,
                    (None, _) => {
                        return Effect::Spread {
                            outcomes: outcomes.iter().map(|o| o.0).collect(),
                        }
                    }
                };
                match outcomes.into_iter().nth(chosen).and_then(|o| o.1) {
                    Some(v) => Some(v),
                    None => return Effect::NoMatch,
                }
            }
        };
        let port = match port {
            Some(_) => match self.port(port, b, ctx) {
                Ok(p) => p,
                Err(effect) => return effect,
            },
            None => values.as_ref().and_then(|v| v.get(1)).map(|&p| p as u16),
        };
        let ipv6 = b.packet.is_ipv6();
        let to_addr = values
            .as_ref()
            .and_then(|v| v.first())
            .map(|&a| address(a, ipv6));
        let packet = &mut b.packet;
        let has_ports = packet.protocol.has_ports();
        let (a, p, natted, word) = match kind {
            NatKind::Dnat => (
                &mut packet.dst,
                &mut packet.dport,
                &mut packet.ct_dnat,
                "DNAT",
            ),
            NatKind::Snat => (
                &mut packet.src,
                &mut packet.sport,
                &mut packet.ct_snat,
                "SNAT",
            ),
        };
        if let Some(to) = to_addr {
            *a = to;
        }
        if let (Some(port), true) = (port, has_ports) {
            *p = port;
        }
        *natted = true;
        let to = endpoint(*a, *p, packet.protocol);
        self.trace(b, format!("{word} to {to}"));
        Effect::End(Flow::Accept)
    }

    /// A port operand; `Err` carries the effect to return when it cannot be computed.
    fn port(
        &self,
        port: Option<&Expr>,
        b: &mut Branch,
        ctx: &dyn EvalContext,
    ) -> Result<Option<u16>, Effect> {
        let Some(e) = port else { return Ok(None) };
        match self.scalar(e, &b.packet, ctx) {
            Ok(Some(v)) => Ok(Some(v as u16)),
            Ok(None) => Err(Effect::NoMatch),
            Err(why) => {
                self.unsupported(b, format!("port: {why}"));
                Err(Effect::Continue)
            }
        }
    }

    /// Probability that `left op right` holds (0 or 1 unless `left` spreads).
    fn match_probability(
        &self,
        op: CmpOp,
        left: &Expr,
        right: &Operand,
        p: &Packet,
        ctx: &dyn EvalContext,
    ) -> Result<f64, String> {
        let mut total = 0.0;
        for (weight, key) in self.key_outcomes(left, p, ctx)? {
            // A field the packet does not have (a port of ICMP, `ip` of IPv6): no match, as
            // the protocol dependency nft adds implicitly would fail.
            let Some(key) = key else { continue };
            if self.compare(op, &key, right)? {
                total += weight;
            }
        }
        Ok(total)
    }

    fn compare(&self, op: CmpOp, key: &[Datum], right: &Operand) -> Result<bool, String> {
        match right {
            Operand::Set(r) => {
                let set = self.set(r);
                let member = self.find(set, key)?.is_some();
                match op {
                    CmpOp::Eq | CmpOp::Flags => Ok(member),
                    CmpOp::Ne => Ok(!member),
                    _ => Err("ordering against a set".into()),
                }
            }
            Operand::Value(atoms) => {
                if atoms.len() != key.len() {
                    return Err(format!(
                        "{} values compared with a key of {}",
                        atoms.len(),
                        key.len()
                    ));
                }
                let within = atoms.iter().zip(key).all(|(a, d)| contains(a, d));
                let ordered = |f: fn(u128, u128) -> bool| match (key, atoms.as_slice()) {
                    ([Datum::Num(k)], [Atom::Interval { lo, .. }]) => Ok(f(*k, *lo)),
                    _ => Err("ordering needs one numeric value".to_string()),
                };
                match op {
                    CmpOp::Eq => Ok(within),
                    CmpOp::Ne => Ok(!within),
                    CmpOp::Lt => ordered(|k, v| k < v),
                    CmpOp::Gt => ordered(|k, v| k > v),
                    CmpOp::Le => ordered(|k, v| k <= v),
                    CmpOp::Ge => ordered(|k, v| k >= v),
                    CmpOp::Flags => ordered(|k, v| k & v != 0),
                }
            }
        }
    }

    /// Index of the element `key` falls in.
    fn find(&self, set: &Set, key: &[Datum]) -> Result<Option<usize>, String> {
        if let Some(why) = &set.unreadable {
            return Err(why.clone());
        }
        let numbers: Option<Vec<u128>> = key
            .iter()
            .map(|d| match d {
                Datum::Num(v) => Some(*v),
                Datum::Name(_) => None,
            })
            .collect();
        if let Some(&i) = numbers.and_then(|n| set.exact.get(&n)) {
            return Ok(Some(i));
        }
        Ok(set.ranged.iter().copied().find(|&i| {
            let e = &set.elements[i];
            e.key.len() == key.len() && e.key.iter().zip(key).all(|(a, d)| contains(a, d))
        }))
    }

    /// For a key that may spread: each distinct element selected (or none), with the share of
    /// values that select it, in first-seen order.
    fn lookup_groups(
        &self,
        key: &Expr,
        set: &Set,
        p: &Packet,
        ctx: &dyn EvalContext,
    ) -> Result<Vec<(Option<usize>, f64)>, String> {
        let mut groups: Vec<(Option<usize>, f64)> = Vec::new();
        for (weight, k) in self.key_outcomes(key, p, ctx)? {
            let element = match k {
                Some(k) => self.find(set, &k)?,
                None => None,
            };
            match groups.iter_mut().find(|g| g.0 == element) {
                Some(g) => g.1 += weight,
                None => groups.push((element, weight)),
            }
        }
        Ok(groups)
    }

    /// Values of an expression yielding data (a NAT address, possibly `addr . port` from a
    /// map), with their shares; `None` where a map has no element for the key.
    fn value_outcomes(
        &self,
        e: &Expr,
        p: &Packet,
        ctx: &dyn EvalContext,
    ) -> Result<Shares<Vec<u128>>, String> {
        if let Expr::Lookup { key, map } = e {
            let set = self.set(map);
            return Ok(self
                .lookup_groups(key, set, p, ctx)?
                .into_iter()
                .map(|(element, share)| {
                    let data = element.and_then(|i| match &set.elements[i].data {
                        Some(MapData::Value(v)) => Some(v.clone()),
                        _ => None,
                    });
                    (share, data)
                })
                .collect());
        }
        Ok(vec![(1.0, self.scalar(e, p, ctx)?.map(|v| vec![v]))])
    }

    /// A single numeric value (mark values, ports); `None` if the packet lacks the field.
    fn scalar(&self, e: &Expr, p: &Packet, ctx: &dyn EvalContext) -> Result<Option<u128>, String> {
        let mut key = Vec::new();
        if !self.eval(e, p, ctx, &mut key)? {
            return Ok(None);
        }
        match key.as_slice() {
            [Datum::Num(v)] => Ok(Some(*v)),
            _ => Err("expected one number".into()),
        }
    }

    /// The key an expression yields, once per value of a spread (each with its share).
    fn key_outcomes<'p>(
        &self,
        e: &Expr,
        p: &'p Packet,
        ctx: &dyn EvalContext,
    ) -> Result<Shares<Vec<Datum<'p>>>, String> {
        if let Expr::Spread { modulus, offset } = *e {
            if modulus == 0 || modulus > MAX_SPREAD {
                return Err(format!(
                    "mod {modulus} (followed value by value only up to {MAX_SPREAD})"
                ));
            }
            let share = 1.0 / f64::from(modulus);
            return Ok((0..modulus)
                .map(|i| {
                    (
                        share,
                        Some(vec![Datum::Num(u128::from(offset) + u128::from(i))]),
                    )
                })
                .collect());
        }
        let mut key = Vec::new();
        let present = self.eval(e, p, ctx, &mut key)?;
        Ok(vec![(1.0, present.then_some(key))])
    }

    /// Append the value(s) of `e` for packet `p`; `false` if the packet lacks a field.
    fn eval<'p>(
        &self,
        e: &Expr,
        p: &'p Packet,
        ctx: &dyn EvalContext,
        out: &mut Vec<Datum<'p>>,
    ) -> Result<bool, String> {
        let num = |v: Option<u128>, out: &mut Vec<Datum<'p>>| match v {
            Some(v) => {
                out.push(Datum::Num(v));
                true
            }
            None => false,
        };
        Ok(match e {
            Expr::Payload(field) => num(payload(*field, p), out),
            Expr::Meta(key) => match key {
                MetaKey::Iifname | MetaKey::Oifname => {
                    let dev = if *key == MetaKey::Iifname {
                        &p.iif
                    } else {
                        &p.oif
                    };
                    match dev.as_deref() {
                        Some(d) => {
                            out.push(Datum::Name(d));
                            true
                        }
                        None => false,
                    }
                }
                MetaKey::L4proto => num(Some(u128::from(p.ip_proto())), out),
                MetaKey::Nfproto => num(Some(if p.is_ipv6() { 10 } else { 2 }), out),
                MetaKey::Mark => num(Some(u128::from(p.mark)), out),
                MetaKey::Length => num(Some(u128::from(p.length)), out),
            },
            Expr::Ct(key) => num(ct(*key, p), out),
            Expr::FibDaddrType => num(Some(route_type(ctx.addr_type(p.dst))), out),
            Expr::Concat(parts) => {
                for part in parts {
                    if !self.eval(part, p, ctx, out)? {
                        return Ok(false);
                    }
                }
                true
            }
            Expr::Bitwise { op, left, right } => {
                let Some(v) = self.scalar(left, p, ctx)? else {
                    return Ok(false);
                };
                let r = *right;
                let v = match op {
                    BitOp::And => v & r,
                    BitOp::Or => v | r,
                    BitOp::Xor => v ^ r,
                    BitOp::Shl => v.checked_shl(r as u32).unwrap_or(0),
                    BitOp::Shr => v.checked_shr(r as u32).unwrap_or(0),
                };
                num(Some(v), out)
            }
            Expr::Const(v) => num(Some(*v), out),
            Expr::Spread { .. } => return Err("numgen/hash inside another expression".into()),
            Expr::Lookup { key, map } => {
                let mut k = Vec::new();
                if !self.eval(key, p, ctx, &mut k)? {
                    return Ok(false);
                }
                let set = self.set(map);
                match self
                    .find(set, &k)?
                    .and_then(|i| set.elements[i].data.as_ref())
                {
                    Some(MapData::Value(values)) => {
                        out.extend(values.iter().map(|&v| Datum::Num(v)));
                        true
                    }
                    _ => false,
                }
            }
        })
    }
}

/// What one statement did to the branch.
enum Effect {
    /// Go on with the next statement.
    Continue,
    /// A match failed (or a lookup found nothing): the rule ends, next rule.
    NoMatch,
    End(Flow),
    /// The match holds for this share of a spread key.
    Partial {
        probability: f64,
    },
    /// The statement's outcome depends on a spread key: one outcome per share.
    Spread {
        outcomes: Vec<f64>,
    },
}

fn contains(atom: &Atom, d: &Datum) -> bool {
    match (atom, d) {
        (Atom::Interval { lo, hi }, Datum::Num(v)) => lo <= v && v <= hi,
        (
            Atom::Name {
                name,
                wildcard: true,
            },
            Datum::Name(dev),
        ) => dev.starts_with(name.as_str()),
        (
            Atom::Name {
                name,
                wildcard: false,
            },
            Datum::Name(dev),
        ) => dev == name,
        _ => false,
    }
}

/// `RTN_*` number of an address type, as `fib daddr type` yields it.
fn route_type(t: AddrType) -> u128 {
    match t {
        AddrType::Unspec => 0,
        AddrType::Unicast => 1,
        AddrType::Local => 2,
        AddrType::Broadcast => 3,
        AddrType::Anycast => 4,
        AddrType::Multicast => 5,
        AddrType::Blackhole => 6,
        AddrType::Unreachable => 7,
        AddrType::Prohibit => 8,
    }
}

fn ip_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn address(v: u128, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// A payload field of the packet, `None` when the packet has no such header.
fn payload(field: PayloadField, p: &Packet) -> Option<u128> {
    use PayloadField::*;
    let v4 = !p.is_ipv6();
    let ports = |proto: Option<Protocol>| {
        p.protocol.has_ports() && proto.is_none_or(|want| want == p.protocol)
    };
    match field {
        Ip4Saddr if v4 => Some(ip_bits(p.src)),
        Ip4Daddr if v4 => Some(ip_bits(p.dst)),
        Ip4Protocol if v4 => Some(u128::from(p.ip_proto())),
        Ip4Length if v4 => Some(u128::from(p.length)),
        Ip4Dscp if v4 => Some(u128::from(p.tos >> 2)),
        Ip6Saddr if !v4 => Some(ip_bits(p.src)),
        Ip6Daddr if !v4 => Some(ip_bits(p.dst)),
        Ip6Nexthdr if !v4 => Some(u128::from(p.ip_proto())),
        // The IPv6 payload length excludes the 40-byte fixed header.
        Ip6Length if !v4 => Some(u128::from(p.length.saturating_sub(40))),
        Sport(proto) if ports(proto) => Some(u128::from(p.sport)),
        Dport(proto) if ports(proto) => Some(u128::from(p.dport)),
        TcpFlags if p.protocol == Protocol::Tcp => {
            let f = p.tcp_flags;
            // Header bit order: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32.
            Some(
                [f.fin, f.syn, f.rst, f.psh, f.ack, f.urg]
                    .iter()
                    .enumerate()
                    .filter(|(_, on)| **on)
                    .map(|(bit, _)| 1u128 << bit)
                    .sum(),
            )
        }
        IcmpType if v4 && p.protocol == Protocol::Icmp => p.icmp_type.map(u128::from),
        Icmp6Type if !v4 && p.protocol == Protocol::Icmp => {
            p.icmp_type.map(|t| u128::from(icmpv6_type(t)))
        }
        IcmpCode if v4 && p.protocol == Protocol::Icmp => Some(0),
        Icmp6Code if !v4 && p.protocol == Protocol::Icmp => Some(0),
        _ => None,
    }
}

/// The simulated packet numbers ICMP types the IPv4 way (8 = echo request) whatever its family;
/// ICMPv6 has its own numbers.
fn icmpv6_type(t: u8) -> u8 {
    match t {
        8 => 128,
        0 => 129,
        3 => 1,
        11 => 3,
        12 => 4,
        other => other,
    }
}

fn ct(key: CtKey, p: &Packet) -> Option<u128> {
    let tracked = !matches!(p.ct_state, CtState::Untracked | CtState::Invalid);
    match key {
        CtKey::State => Some(match p.ct_state {
            CtState::New => CT_STATE_NEW,
            CtState::Established => CT_STATE_ESTABLISHED,
            CtState::Related => CT_STATE_RELATED,
            CtState::Invalid => CT_STATE_INVALID,
            CtState::Untracked => CT_STATE_UNTRACKED,
        }),
        CtKey::Status if tracked => {
            let mut bits = 0;
            if p.ct_state != CtState::New {
                bits |= CT_STATUS_CONFIRMED | CT_STATUS_SEEN_REPLY;
            }
            if p.ct_dnat {
                bits |= CT_STATUS_DNAT;
            }
            if p.ct_snat {
                bits |= CT_STATUS_SNAT;
            }
            Some(bits)
        }
        CtKey::Direction if tracked => Some(match p.ct_direction {
            CtDirection::Original => 0,
            CtDirection::Reply => 1,
        }),
        CtKey::Mark if tracked => Some(u128::from(p.ct_mark)),
        _ => None,
    }
}

fn endpoint(addr: IpAddr, port: u16, protocol: Protocol) -> String {
    match (protocol.has_ports(), addr) {
        (false, a) => a.to_string(),
        (true, IpAddr::V6(a)) => format!("[{a}]:{port}"),
        (true, a) => format!("{a}:{port}"),
    }
}
