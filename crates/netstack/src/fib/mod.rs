//! Routing as the kernel does it: policy rules, per-table longest-prefix match, route types,
//! preferred source, multipath — plus the helpers that sit next to the FIB in the kernel:
//! reverse-path filtering ([`Fib::reverse_path`]), next-hop link-layer resolution
//! ([`neigh`]: neighbours, bridge and vxlan FDB, proxy ARP) and typed sysctl accessors
//! ([`sysctl`]).
//!
//! Everything here reads a [`NetnsState`] and never changes it; it does no I/O. Netfilter
//! (iptables/nft) is not this module's business: callers run hooks around the decisions made here.
//!
//! The lookup follows `fib_rules_lookup()` / `fib_table_lookup()` (net/core/fib_rules.c,
//! net/ipv4/fib_trie.c) rather than KubeSkoop's simplified router: rule selectors including `not`,
//! `goto`, `nop`, rule actions, falling through to the next rule when a table has no match or
//! hits a `throw` route, `suppress_prefixlength`, route types, and dead next hops.

mod display;
pub mod neigh;
pub mod sysctl;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::state::{
    table, Address, Family, NetnsState, NextHop, Route, RouteType, RoutingRule, RuleAction, Scope,
};

pub use display::table_name;

/// The name of the loopback device: the kernel uses it as the input interface of locally
/// generated packets, so `ip rule … iif lo` selects them.
pub const LOOPBACK: &str = "lo";

/// What a routing lookup is asked about (the kernel's `flowi4`/`flowi6`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    /// Source address, if already chosen. `None` for a locally generated packet whose source
    /// the kernel still has to pick; rule `from` selectors then see the unspecified address.
    pub src: Option<IpAddr>,
    pub dst: IpAddr,
    pub fwmark: u32,
    /// Input device for a received packet; `None` for a locally generated one (seen as `lo`).
    pub iif: Option<String>,
    /// Output device the socket is bound to, if any.
    pub oif: Option<String>,
    /// TOS byte. Carried for evidence only: the snapshot keeps no `tos` selectors on rules or
    /// routes, so it cannot influence the lookup.
    pub tos: u8,
    /// IP protocol number (0 = not known; `ipproto` rules then do not match).
    pub ip_proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// A locally generated packet to `dst` with nothing else known.
    pub fn to(dst: IpAddr) -> FlowKey {
        FlowKey {
            src: None,
            dst,
            fwmark: 0,
            iif: None,
            oif: None,
            tos: 0,
            ip_proto: 0,
            sport: 0,
            dport: 0,
        }
    }

    /// The routing question for a simulated packet at its current point: its addresses, ports,
    /// protocol, mark, TOS and devices.
    pub fn from_packet(packet: &crate::packet::Packet) -> FlowKey {
        FlowKey {
            src: Some(packet.src),
            dst: packet.dst,
            fwmark: packet.mark,
            iif: packet.iif.clone(),
            oif: packet.oif.clone(),
            tos: packet.tos,
            ip_proto: packet.ip_proto(),
            sport: packet.sport,
            dport: packet.dport,
        }
    }

    fn family(&self) -> Family {
        family_of(self.dst)
    }

    fn input_device(&self) -> &str {
        self.iif.as_deref().unwrap_or(LOOPBACK)
    }

    fn source_for_selectors(&self) -> IpAddr {
        self.src.unwrap_or(match self.dst {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        })
    }
}

/// Which part of the configuration produced a reject outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// An `ip rule` with a `blackhole` / `unreachable` / `prohibit` action.
    Rule,
    /// A route of that type.
    Route,
}

/// One usable next hop of the chosen route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenNextHop {
    /// Output device; `None` only when the snapshot's route names none.
    pub dev: Option<String>,
    /// Gateway, or `None` when the destination is on-link (then it is resolved itself).
    pub gateway: Option<IpAddr>,
    /// ECMP weight (1 for a single-path route).
    pub weight: u32,
    pub onlink: bool,
    /// Source address the kernel would pick for this path (route `src`, else the device's
    /// primary address of suitable scope).
    pub source: Option<IpAddr>,
    /// Path MTU of this hop: the route's `mtu` metric, else the output device's MTU.
    pub mtu: Option<u32>,
    pub mtu_from: Option<MtuSource>,
}

impl ChosenNextHop {
    /// The address whose link-layer address must be resolved: the gateway, or the destination.
    pub fn neighbour_target(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtuSource {
    Route,
    Device,
}

/// What the kernel does with the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RouteOutcome {
    /// Sent out of one of `nexthops` (several for ECMP; the kernel hashes flows over them by
    /// weight).
    Unicast { nexthops: Vec<ChosenNextHop> },
    /// Delivered locally (the destination is one of this netns' addresses).
    Local { source: Option<IpAddr> },
    Broadcast {
        dev: Option<String>,
        source: Option<IpAddr>,
    },
    /// Multicast, anycast or NAT routes: not simulated further.
    Other { kind: RouteType },
    /// Silently discarded (`EINVAL`).
    Blackhole { by: DecidedBy },
    /// Rejected with ICMP unreachable (`EHOSTUNREACH` from a route, `ENETUNREACH` from a rule).
    Unreachable { by: DecidedBy },
    /// Rejected with ICMP administratively prohibited (`EACCES`).
    Prohibit { by: DecidedBy },
    /// No rule led to a matching route (`ENETUNREACH`).
    NoRoute,
}

impl RouteOutcome {
    /// The errno a local sender sees (as `ip route get` reports it), or `None` when the packet
    /// is routed.
    pub fn errno(&self) -> Option<&'static str> {
        match self {
            RouteOutcome::Blackhole { .. } => Some("EINVAL"),
            RouteOutcome::Unreachable {
                by: DecidedBy::Route,
            } => Some("EHOSTUNREACH"),
            RouteOutcome::Unreachable {
                by: DecidedBy::Rule,
            }
            | RouteOutcome::NoRoute => Some("ENETUNREACH"),
            RouteOutcome::Prohibit { .. } => Some("EACCES"),
            _ => None,
        }
    }

    /// Whether the packet leaves or is delivered (as opposed to being rejected or dropped).
    pub fn is_delivered(&self) -> bool {
        matches!(
            self,
            RouteOutcome::Unicast { .. }
                | RouteOutcome::Local { .. }
                | RouteOutcome::Broadcast { .. }
                | RouteOutcome::Other { .. }
        )
    }
}

/// What happened at one rule the flow matched, in evaluation order: the evidence trail for
/// "why did it not use table X".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStep {
    pub rule: RoutingRule,
    pub result: RuleStepResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RuleStepResult {
    /// The rule's table has no route for the destination; the next rule is tried.
    NoRouteInTable,
    /// A `throw` route ended the lookup in this table; the next rule is tried.
    Throw {
        route: Route,
    },
    /// The table's answer was ignored because of `suppress_prefixlength`.
    Suppressed {
        route: Route,
    },
    /// `goto` to the first rule with this priority; `resolved` is false when none exists (the
    /// kernel then goes on with the next rule, `ip rule` prints `[unresolved]`).
    Goto {
        target: u32,
        resolved: bool,
    },
    Nop,
    /// This rule decided the outcome.
    Decided,
}

/// The result of a routing lookup, with the evidence a finding cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDecision {
    pub outcome: RouteOutcome,
    /// The rule that decided (`Display` prints it as `ip rule` does).
    pub rule: Option<RoutingRule>,
    /// The route that decided (`Display` prints it as `ip route show table X` does).
    pub route: Option<Route>,
    /// Every rule the flow matched, with what happened there.
    pub trail: Vec<RuleStep>,
    /// The snapshot held no rules for this family, so the kernel's default rules were assumed.
    pub default_rules_assumed: bool,
    /// The socket was bound to `oif` and no route matched: the kernel then assumes the
    /// destination is on-link on that device.
    pub assumed_onlink_via_oif: bool,
}

/// The routing tables and rules of one netns, ready for lookups.
#[derive(Debug, Clone)]
pub struct Fib<'a> {
    state: &'a NetnsState,
    rules_v4: Vec<RoutingRule>,
    rules_v6: Vec<RoutingRule>,
    v4_rules_assumed: bool,
    v6_rules_assumed: bool,
    /// Routes per (family, table), most specific prefix first, then lowest metric — the order in
    /// which `fib_table_lookup` considers them.
    tables: HashMap<(Family, u32), Vec<&'a Route>>,
}

impl<'a> Fib<'a> {
    pub fn new(state: &'a NetnsState) -> Fib<'a> {
        let (rules_v4, v4_rules_assumed) = rules_for(state, Family::Inet);
        let (rules_v6, v6_rules_assumed) = rules_for(state, Family::Inet6);
        let mut tables: HashMap<(Family, u32), Vec<&'a Route>> = HashMap::new();
        for route in &state.routes {
            tables
                .entry((family_of(route.dst.addr()), route.table))
                .or_default()
                .push(route);
        }
        for routes in tables.values_mut() {
            // stable: equal prefix and metric keep their dump order, as fib aliases do
            routes.sort_by_key(|r| (Reverse(r.dst.prefix_len()), r.metric));
        }
        Fib {
            state,
            rules_v4,
            rules_v6,
            v4_rules_assumed,
            v6_rules_assumed,
            tables,
        }
    }

    pub fn state(&self) -> &'a NetnsState {
        self.state
    }

    /// The rules in evaluation order for a family (the snapshot's, or the kernel defaults).
    pub fn rules(&self, family: Family) -> &[RoutingRule] {
        match family {
            Family::Inet => &self.rules_v4,
            Family::Inet6 => &self.rules_v6,
        }
    }

    /// Route `flow` as `fib_lookup()` would.
    pub fn lookup(&self, flow: &FlowKey) -> RouteDecision {
        let family = flow.family();
        let rules = self.rules(family);
        let mut decision = RouteDecision {
            outcome: RouteOutcome::NoRoute,
            rule: None,
            route: None,
            trail: Vec::new(),
            default_rules_assumed: match family {
                Family::Inet => self.v4_rules_assumed,
                Family::Inet6 => self.v6_rules_assumed,
            },
            assumed_onlink_via_oif: false,
        };
        let mut index = 0;
        while index < rules.len() {
            let rule = &rules[index];
            index += 1;
            if !rule_matches(rule, flow) {
                continue;
            }
            let step = |result| RuleStep {
                rule: rule.clone(),
                result,
            };
            let by_rule = |outcome| (outcome, None);
            let (outcome, route) = match rule.action {
                RuleAction::Goto => {
                    let target = rule.goto.unwrap_or(0);
                    // the kernel resolves goto to the first rule with exactly that priority,
                    // which it only accepts after the goto rule itself
                    let found = rules[index..].iter().position(|r| r.priority == target);
                    decision.trail.push(step(RuleStepResult::Goto {
                        target,
                        resolved: found.is_some(),
                    }));
                    if let Some(offset) = found {
                        index += offset;
                    }
                    continue;
                }
                RuleAction::Nop => {
                    decision.trail.push(step(RuleStepResult::Nop));
                    continue;
                }
                RuleAction::Blackhole => by_rule(RouteOutcome::Blackhole {
                    by: DecidedBy::Rule,
                }),
                RuleAction::Unreachable => by_rule(RouteOutcome::Unreachable {
                    by: DecidedBy::Rule,
                }),
                RuleAction::Prohibit => by_rule(RouteOutcome::Prohibit {
                    by: DecidedBy::Rule,
                }),
                RuleAction::Lookup => match self.table_lookup(family, rule.table, flow) {
                    TableResult::Miss => {
                        decision.trail.push(step(RuleStepResult::NoRouteInTable));
                        continue;
                    }
                    TableResult::Throw(route) => {
                        decision.trail.push(step(RuleStepResult::Throw {
                            route: route.clone(),
                        }));
                        continue;
                    }
                    TableResult::Hit(route, outcome) => {
                        // fib4_rule_suppress only looks at successful lookups
                        let suppressed = outcome.is_delivered()
                            && rule
                                .suppress_prefixlen
                                .is_some_and(|len| route.dst.prefix_len() <= len);
                        if suppressed {
                            decision.trail.push(step(RuleStepResult::Suppressed {
                                route: route.clone(),
                            }));
                            continue;
                        }
                        (outcome, Some(route.clone()))
                    }
                },
            };
            decision.trail.push(step(RuleStepResult::Decided));
            decision.outcome = outcome;
            decision.rule = Some(rule.clone());
            decision.route = route;
            return decision;
        }
        if let Some(oif) = &flow.oif {
            // ip_route_output_key_hash_rcu: "routing tables are wrong, assume on-link"
            decision.assumed_onlink_via_oif = true;
            decision.outcome = RouteOutcome::Unicast {
                nexthops: vec![self.chosen_hop(
                    &NextHop {
                        gateway: None,
                        dev: Some(oif.clone()),
                        weight: 1,
                        onlink: true,
                    },
                    flow.src,
                    Scope::Link,
                    flow.dst,
                )],
            };
        }
        decision
    }

    fn table_lookup(&self, family: Family, table_id: u32, flow: &FlowKey) -> TableResult<'a> {
        let Some(routes) = self.tables.get(&(family, table_id)) else {
            return TableResult::Miss;
        };
        for &route in routes.iter().filter(|r| r.dst.contains(&flow.dst)) {
            let outcome = match route.kind {
                RouteType::Throw => return TableResult::Throw(route),
                RouteType::Blackhole => RouteOutcome::Blackhole {
                    by: DecidedBy::Route,
                },
                RouteType::Unreachable => RouteOutcome::Unreachable {
                    by: DecidedBy::Route,
                },
                RouteType::Prohibit => RouteOutcome::Prohibit {
                    by: DecidedBy::Route,
                },
                RouteType::Local => RouteOutcome::Local {
                    source: flow.src.or(route.prefsrc).or(Some(flow.dst)),
                },
                RouteType::Broadcast => RouteOutcome::Broadcast {
                    dev: route.dev.clone(),
                    source: route.prefsrc.or_else(|| {
                        route
                            .dev
                            .as_deref()
                            .and_then(|dev| self.select_source(dev, flow.dst, route.scope))
                    }),
                },
                RouteType::Unicast => {
                    let nexthops = self.live_next_hops(route, flow);
                    if nexthops.is_empty() {
                        // every path is dead or excluded by oif: try the next alias/prefix
                        continue;
                    }
                    RouteOutcome::Unicast { nexthops }
                }
                kind @ (RouteType::Anycast | RouteType::Multicast | RouteType::Nat) => {
                    RouteOutcome::Other { kind }
                }
            };
            return TableResult::Hit(route, outcome);
        }
        TableResult::Miss
    }

    fn live_next_hops(&self, route: &Route, flow: &FlowKey) -> Vec<ChosenNextHop> {
        let single_path;
        let hops: &[NextHop] = if route.nexthops.is_empty() {
            single_path = [NextHop {
                gateway: route.gateway,
                dev: route.dev.clone(),
                weight: 1,
                onlink: route.onlink,
            }];
            &single_path
        } else {
            &route.nexthops
        };
        hops.iter()
            .filter(|hop| hop.dev.as_deref().is_none_or(|d| self.device_alive(d)))
            .filter(|hop| flow.oif.is_none() || hop.dev == flow.oif)
            .map(|hop| {
                let source = flow.src.or(route.prefsrc);
                self.chosen_hop(hop, source, route.scope, flow.dst)
                    .with_route_mtu(route.mtu)
            })
            .collect()
    }

    /// A next hop as the lookup returns it: with the source address (`source` when already
    /// known, else selected for `scope`) and the device MTU.
    fn chosen_hop(
        &self,
        hop: &NextHop,
        source: Option<IpAddr>,
        scope: Scope,
        dst: IpAddr,
    ) -> ChosenNextHop {
        let dev = hop.dev.as_deref();
        let link = dev.and_then(|d| self.state.link(d));
        ChosenNextHop {
            dev: hop.dev.clone(),
            gateway: hop.gateway,
            weight: hop.weight,
            onlink: hop.onlink,
            source: source.or_else(|| {
                dev.and_then(|d| self.select_source(d, hop.gateway.unwrap_or(dst), scope))
            }),
            mtu: link.map(|l| l.mtu),
            mtu_from: link.map(|_| MtuSource::Device),
        }
    }

    /// A next hop whose device is administratively down is dead (the kernel flushes or marks
    /// such routes). A device the snapshot does not list is assumed alive: whether it exists
    /// is the device checks' finding, not the router's.
    fn device_alive(&self, dev: &str) -> bool {
        self.state.link(dev).is_none_or(|l| l.admin_up)
    }

    /// The source address the kernel picks for traffic leaving `dev` towards `towards`, for a
    /// route of `scope` (`inet_select_addr()`): the first primary address on `dev` whose scope
    /// is at least as wide, preferring one whose subnet holds `towards`; else a non-link-scope
    /// address of another device. IPv6 uses the same shape, a simplification of RFC 6724.
    pub fn select_source(&self, dev: &str, towards: IpAddr, scope: Scope) -> Option<IpAddr> {
        let eligible = |a: &&Address| {
            a.address.is_ipv4() == towards.is_ipv4() && scope_rank(a.scope) <= scope_rank(scope)
        };
        let primaries: Vec<&Address> = self
            .state
            .addresses_of(dev)
            .filter(|a| !self.is_secondary(a))
            .filter(eligible)
            .collect();
        if let Some(a) = primaries
            .iter()
            .find(|a| subnet_of(a).is_some_and(|n| n.contains(&towards)))
        {
            return Some(a.address);
        }
        if let Some(a) = primaries.first() {
            return Some(a.address);
        }
        let mut others: Vec<&Address> = self
            .state
            .addresses
            .iter()
            .filter(|a| a.dev != dev && a.scope != Scope::Link)
            .filter(eligible)
            .collect();
        others.sort_by_key(|a| self.state.link(&a.dev).map_or(u32::MAX, |l| l.index));
        others.first().map(|a| a.address)
    }

    /// An address is secondary when an earlier address on the same device covers its subnet.
    fn is_secondary(&self, candidate: &Address) -> bool {
        self.state
            .addresses_of(&candidate.dev)
            .take_while(|a| !std::ptr::eq(*a, candidate))
            .any(|a| {
                a.prefix_len == candidate.prefix_len
                    && subnet_of(a).is_some_and(|n| n.contains(&candidate.address))
            })
    }

    /// Whether `addr` is one of this netns' own addresses (a `local` route in the local table).
    pub fn is_local_address(&self, addr: IpAddr) -> bool {
        let family = family_of(addr);
        self.tables
            .get(&(family, table::LOCAL))
            .is_some_and(|routes| {
                routes
                    .iter()
                    .any(|r| r.kind == RouteType::Local && r.dst.contains(&addr))
            })
            || self.state.addresses.iter().any(|a| a.address == addr)
    }

    /// Reverse-path filter (`fib_validate_source()` for `rp_filter`, and the `rpfilter` match):
    /// route the reply (destination = the packet's source) and check it would leave through the
    /// device the packet came in on (strict) or through any device (loose).
    ///
    /// `mark` is the mark the reverse lookup uses: 0 unless `src_valid_mark` is set (sysctl) or
    /// `--validmark` is given (iptables). `accept_local` allows a local source address; without
    /// it such a packet is a martian and dropped even with `rp_filter` off, as the kernel does.
    pub fn reverse_path(
        &self,
        mode: RpFilterMode,
        iif: &str,
        src: IpAddr,
        dst: IpAddr,
        mark: u32,
        accept_local: bool,
    ) -> ReversePath {
        let reverse = FlowKey {
            src: Some(dst),
            dst: src,
            fwmark: mark,
            iif: None,
            ..FlowKey::to(src)
        };
        let decision = self.lookup(&reverse);
        let via: Vec<String> = match &decision.outcome {
            RouteOutcome::Unicast { nexthops } => {
                nexthops.iter().filter_map(|h| h.dev.clone()).collect()
            }
            RouteOutcome::Local { .. } if accept_local => return ReversePath::Pass,
            RouteOutcome::Local { .. } => {
                return ReversePath::Drop {
                    reason: RpDropReason::LocalSource,
                    reverse: Box::new(decision),
                }
            }
            _ if mode == RpFilterMode::Off => return ReversePath::Pass,
            _ => {
                return ReversePath::Drop {
                    reason: RpDropReason::NoRoute,
                    reverse: Box::new(decision),
                }
            }
        };
        if mode != RpFilterMode::Strict || via.iter().any(|d| d == iif) {
            ReversePath::Pass
        } else {
            ReversePath::Drop {
                reason: RpDropReason::WrongInterface {
                    expected: iif.to_string(),
                    via,
                },
                reverse: Box::new(decision),
            }
        }
    }
}

impl ChosenNextHop {
    fn with_route_mtu(mut self, route_mtu: Option<u32>) -> ChosenNextHop {
        if let Some(mtu) = route_mtu {
            self.mtu = Some(mtu);
            self.mtu_from = Some(MtuSource::Route);
        }
        self
    }
}

enum TableResult<'a> {
    Miss,
    Throw(&'a Route),
    Hit(&'a Route, RouteOutcome),
}

/// `rp_filter` / `rpfilter` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpFilterMode {
    /// 0: no check.
    Off,
    /// 1: the reverse route must leave via the incoming device.
    Strict,
    /// 2: any reverse route will do.
    Loose,
}

impl RpFilterMode {
    /// From the sysctl value; values above 2 behave as loose in the kernel (`IN_DEV_RPFILTER`
    /// only distinguishes 0, 1 and "other").
    pub fn from_sysctl(value: u8) -> RpFilterMode {
        match value {
            0 => RpFilterMode::Off,
            1 => RpFilterMode::Strict,
            _ => RpFilterMode::Loose,
        }
    }
}

/// The reverse-path filter's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ReversePath {
    Pass,
    /// The kernel drops the packet (a martian source, counted in `IPReversePathFilter`).
    Drop {
        reason: RpDropReason,
        /// The reverse lookup, as evidence.
        reverse: Box<RouteDecision>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RpDropReason {
    /// No unicast route back to the source.
    NoRoute,
    /// The source is one of our own addresses.
    LocalSource,
    /// Strict mode: the route back leaves through other devices.
    WrongInterface { expected: String, via: Vec<String> },
}

fn rules_for(state: &NetnsState, family: Family) -> (Vec<RoutingRule>, bool) {
    let mut rules: Vec<RoutingRule> = state
        .rules
        .iter()
        .filter(|r| r.family == family)
        .cloned()
        .collect();
    if rules.is_empty() {
        return (default_rules(family), true);
    }
    // stable: rules with equal priority keep their dump order, as in the kernel's list
    rules.sort_by_key(|r| r.priority);
    (rules, false)
}

/// The rules a fresh namespace has: `0: lookup local`, `32766: lookup main`, and for IPv4
/// `32767: lookup default`.
pub fn default_rules(family: Family) -> Vec<RoutingRule> {
    let lookup =
        |priority, table| RoutingRule::matching_all(priority, family, RuleAction::Lookup, table);
    let mut rules = vec![lookup(0, table::LOCAL), lookup(32766, table::MAIN)];
    if family == Family::Inet {
        rules.push(lookup(32767, table::DEFAULT));
    }
    rules
}

/// `fib_rule_match()`: every selector must hold; `not` inverts the whole result.
fn rule_matches(rule: &RoutingRule, flow: &FlowKey) -> bool {
    let mark = rule.fwmark.unwrap_or(0);
    let mask = rule.fwmask.unwrap_or(if mark != 0 { u32::MAX } else { 0 });
    let in_range = |range: Option<(u16, u16)>, port: u16| {
        range.is_none_or(|(low, high)| (low..=high).contains(&port))
    };
    let selected = rule
        .iif
        .as_deref()
        .is_none_or(|iif| iif == flow.input_device())
        && rule
            .oif
            .as_deref()
            .is_none_or(|oif| flow.oif.as_deref() == Some(oif))
        && (mark ^ flow.fwmark) & mask == 0
        && rule.ip_proto.is_none_or(|p| p == flow.ip_proto)
        && in_range(rule.sport, flow.sport)
        && in_range(rule.dport, flow.dport)
        && rule
            .from
            .is_none_or(|net| net.contains(&flow.source_for_selectors()))
        && rule.to.is_none_or(|net| net.contains(&flow.dst));
    selected != rule.invert
}

fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Inet,
        IpAddr::V6(_) => Family::Inet6,
    }
}

/// Kernel scope order: a smaller rank is a wider scope (`RT_SCOPE_UNIVERSE` = 0 … `HOST` = 254).
fn scope_rank(scope: Scope) -> u8 {
    match scope {
        Scope::Universe => 0,
        Scope::Site => 200,
        Scope::Link => 253,
        Scope::Host => 254,
        Scope::Nowhere => 255,
    }
}

fn subnet_of(address: &Address) -> Option<ipnet::IpNet> {
    ipnet::IpNet::new(address.address, address.prefix_len)
        .ok()
        .map(|n| n.trunc())
}
