//! The path walk: one simulated packet through every network namespace it crosses, using the
//! kernel's own rules from the snapshot (netfilter hooks in order, policy routing, devices), then
//! the reply back through the conntrack NAT bindings recorded on the way.
//!
//! Each netns visit is what the kernel does to a packet there:
//! - arriving (`iif` set): un-NAT of replies, reverse-path filter, PREROUTING, routing, then INPUT
//!   and local delivery, or `ip_forward`, FORWARD and POSTROUTING;
//! - originating: routing, OUTPUT (re-routing after DNAT), POSTROUTING.
//!
//! Leaving a device leads to the next netns: a veth to its peer's netns; anything else (bridge,
//! vxlan, underlay) to the netns that holds the next-hop address. Load-balancing rules fan out,
//! and every branch is walked.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use model::diagnosis::{Direction, Hop, Path};
use model::{Evidence, Finding, FindingCode, Level, NetnsRecord, Owner, Place};
use netstack::conntrack::NatBinding;
use netstack::fib::{Fib, FlowKey, ReversePath, RouteDecision, RouteOutcome, RpFilterMode};
use netstack::iptables::StateContext;
use netstack::netfilter::{
    Hook, HookOutcome, Netfilter, NetfilterVerdict, RuleRef, RulesetProblem,
};
use netstack::packet::{Packet, Protocol};
use netstack::state::{LinkKind, OperState, StatePart};

use crate::cni::Datapath;
use crate::endpoint::{describe, Index};
use crate::owner::{classify_drop, hand_added_hint};
use crate::policy::check::{explain_enforcement, is_enforcement};
use crate::policy::PolicyIndex;

mod ipvs;
mod path_checks;

/// Hops one path may take before it is declared a loop.
const MAX_HOPS: usize = 32;

/// Parsed rulesets and contexts of the netns visited so far (parsed once per diagnosis).
struct NetnsSim<'a> {
    record: &'a NetnsRecord,
    netfilter: Netfilter,
    problems: Vec<RulesetProblem>,
    ctx: StateContext<'a>,
    fib: Fib<'a>,
}

/// A packet in flight with the history of its path.
#[derive(Clone)]
struct Flight {
    packet: Packet,
    netns: String,
    probability: f64,
    hops: Vec<Hop>,
    bindings: Vec<(String, NatBinding)>,
}

pub struct Walker<'a> {
    pub(crate) index: &'a Index<'a>,
    /// The NetworkPolicies, which explain a drop in an enforcement chain.
    pub(crate) policies: &'a PolicyIndex<'a>,
    /// The client's address (the source of the forward walks): policy egress is judged from it.
    client: IpAddr,
    sims: HashMap<String, NetnsSim<'a>>,
    pub findings: Vec<Finding>,
    pub incomplete: bool,
    /// The CNI's intent, checked at every host hop.
    pub datapath: Datapath<'a>,
    /// Direction of the walk in progress.
    direction: Direction,
    /// Size of a full-size packet of the walk in progress: the sender's egress MTU.
    full_size: Option<u32>,
    /// Full-size packet of the forward walks, a ceiling for TCP and ICMP replies: TCP's peer
    /// never sends segments above the MSS the SYN announced (from the sender's MTU), and an echo
    /// reply is as large as its request. A UDP reply's size is the application's choice.
    forward_size: Option<u32>,
    /// Netns the forward packets crossed: their conntrack saw the connection start.
    forward_netns: HashSet<String>,
    /// DNATs no Service, CNI or known tool owns: (netns, rule, destination it set).
    hand_dnat: Vec<(String, RuleRef, (IpAddr, u16))>,
}

/// Where a packet was delivered: the packet as it arrived, the netns, and the NAT bindings of
/// its connection (the reply needs them).
type Delivery = (Packet, String, Vec<(String, NatBinding)>);

/// How a walk ended.
pub struct WalkEnd {
    pub path: Path,
    /// The packet as it last was on the path (after NAT): what intent checks judge.
    pub packet: Packet,
    /// The packet as delivered (for the reply), with its NAT bindings.
    delivered: Option<Delivery>,
}

impl<'a> Walker<'a> {
    pub fn new(index: &'a Index<'a>, policies: &'a PolicyIndex<'a>, client: IpAddr) -> Walker<'a> {
        Walker {
            index,
            policies,
            client,
            sims: HashMap::new(),
            findings: Vec::new(),
            incomplete: false,
            datapath: Datapath::new(index),
            direction: Direction::Forward,
            full_size: None,
            forward_size: None,
            forward_netns: HashSet::new(),
            hand_dnat: Vec::new(),
        }
    }

    /// The parsed netfilter rules of a netns (parsed once, shared with the intent checks).
    pub(crate) fn netfilter(&mut self, id: &str) -> Option<&Netfilter> {
        self.sim(id).map(|sim| &sim.netfilter)
    }

    fn sim(&mut self, id: &str) -> Option<&NetnsSim<'a>> {
        if !self.sims.contains_key(id) {
            let record = self.index.netns(id)?;
            let (netfilter, problems) = Netfilter::from_state(&record.state);
            let ipsets = netfilter.ipsets.clone();
            let sim = NetnsSim {
                record,
                ctx: StateContext::new(&record.state, ipsets),
                fib: Fib::new(&record.state),
                netfilter,
                problems,
            };
            self.sims.insert(id.to_string(), sim);
            self.report_state_problems(id);
        }
        self.sims.get(id)
    }

    fn report_state_problems(&mut self, id: &str) {
        let Some(sim) = self.sims.get(id) else { return };
        let record = sim.record;
        let mut new = Vec::new();
        for p in &sim.problems {
            new.push(finding(
                FindingCode::StateIncomplete,
                Level::Error,
                record,
                None,
                format!(
                    "the {} ruleset of {} cannot be read: {p}; its verdicts are unknown",
                    p.source,
                    describe(record)
                ),
                vec![Evidence::Text {
                    text: p.to_string(),
                }],
                None,
                Some(recollect_hint(&p.source)),
            ));
        }
        // iptables is judged per packet family: see `report_missing_iptables`.
        for part in [StatePart::Routes, StatePart::Links, StatePart::Addresses] {
            if let Some(reason) = record.state.missing_reason(part) {
                new.push(not_collected(record, part, reason));
            }
        }
        if !new.is_empty() {
            self.incomplete = true;
            self.findings.extend(new);
        }
    }

    /// The iptables rules of the packet's family in netns `id`, if they were not collected.
    /// `ip6tables-save` can fail alone: then only IPv6 walks are incomplete.
    fn report_missing_iptables(&mut self, id: &str, ipv6: bool) {
        let Some(record) = self.sims.get(id).map(|sim| sim.record) else {
            return;
        };
        if let Some(reason) = record.state.iptables_missing_reason(ipv6) {
            self.push(not_collected(record, StatePart::Iptables, reason));
            self.incomplete = true;
        }
    }

    fn push(&mut self, f: Finding) -> usize {
        if let Some(i) = self
            .findings
            .iter()
            .position(|e| e.code == f.code && e.place == f.place && e.message == f.message)
        {
            return i;
        }
        self.findings.push(f);
        self.findings.len() - 1
    }

    /// Walk `packet` from `netns` (where it originates) until every branch is delivered or
    /// stopped.
    pub fn walk(
        &mut self,
        direction: Direction,
        packet: Packet,
        netns: &str,
        bindings: Vec<(String, NatBinding)>,
        check_listener: bool,
    ) -> Vec<WalkEnd> {
        self.forward_size = match direction {
            Direction::Forward => None,
            // The first reply walk follows the forward walks: remember their size.
            Direction::Reply if self.direction == Direction::Forward => self.full_size,
            Direction::Reply => self.forward_size,
        };
        self.direction = direction;
        self.full_size = None;
        let mut ends = Vec::new();
        let mut work = vec![Flight {
            packet,
            netns: netns.to_string(),
            probability: 1.0,
            hops: Vec::new(),
            bindings,
        }];
        while let Some(flight) = work.pop() {
            if flight.hops.len() >= MAX_HOPS {
                let record = self.index.netns(&flight.netns);
                let idx = self.push(Finding {
                    code: FindingCode::PathLoop,
                    level: Level::Error,
                    place: record.map(place_of).unwrap_or_default(),
                    message: format!("the packet crossed {MAX_HOPS} network namespaces without arriving: a routing loop"),
                    evidence: flight.hops.iter().map(|h| Evidence::Text { text: format!("{} via {:?}", h.netns, h.oif) }).collect(),
                    owner: None,
                    hint: Some("Check the routes on the hops listed: two of them point at each other.".into()),
                });
                ends.push(end(direction, flight, false, Some(idx), None));
                continue;
            }
            for next in self.visit(flight, check_listener) {
                match next {
                    Visit::Continue(f) => work.push(f),
                    Visit::End(e) => ends.push(e.into_end(direction)),
                }
            }
        }
        ends
    }

    fn visit(&mut self, mut flight: Flight, check_listener: bool) -> Vec<Visit> {
        let id = flight.netns.clone();
        if self.sim(&id).is_none() {
            let idx = self.push(Finding {
                code: FindingCode::StateIncomplete,
                level: Level::Error,
                place: Place {
                    netns: Some(id.clone()),
                    ..Place::default()
                },
                message: format!(
                    "the path enters network namespace {id}, which is not in the snapshot"
                ),
                evidence: vec![],
                owner: None,
                hint: Some("Collect that node / pod too (`netsleuth collect`).".into()),
            });
            self.incomplete = true;
            return vec![Visit::End(Ended::stopped(flight, idx))];
        }
        self.report_missing_iptables(&id, flight.packet.is_ipv6());
        let arriving = flight.packet.iif.is_some();
        let before = flight.packet.clone();
        let mut steps = Vec::new();
        if let Some(idx) = self.entry_checks(&id, &mut flight) {
            return vec![Visit::End(Ended::hop_stopped(
                flight, &id, before, steps, idx, self,
            ))];
        }

        // The kernel routes (and so reverse-path checks) a reply with its source as it arrived:
        // conntrack restores the destination of a SNATed connection in PREROUTING, but the source
        // of a DNATed one only in POSTROUTING / INPUT. A reply of a NodePort connection would
        // otherwise carry the node's own address as source here and look like a spoofed packet.
        let arriving_src = flight.packet.src;
        // Conntrack: a reply (or later packet) of a connection NATed here is rewritten first.
        if let Some(p) = flight
            .bindings
            .iter()
            .filter(|(ns, _)| *ns == id)
            .find_map(|(_, b)| b.un_nat_reply(&flight.packet))
        {
            steps.push(format!("conntrack: reply un-NATed to {p}"));
            let iif = flight.packet.iif.clone();
            flight.packet = Packet { iif, ..p };
        }

        if arriving {
            let routed = Packet {
                src: arriving_src,
                ..flight.packet.clone()
            };
            if let Some(idx) = self.check_rp_filter(&id, &routed, &mut steps) {
                return vec![Visit::End(Ended::hop_stopped(
                    flight, &id, before, steps, idx, self,
                ))];
            }
        }

        let mut results = Vec::new();
        if arriving {
            for out in self.run_hook(&id, Hook::Prerouting, &flight.packet) {
                let mut steps = steps.clone();
                let mut f = flight.clone();
                f.probability *= out.probability;
                match self.hook_verdict(&id, Hook::Prerouting, &out, &mut steps) {
                    Err(idx) => results.push(Visit::End(Ended::hop_stopped(
                        f,
                        &id,
                        before.clone(),
                        steps,
                        idx,
                        self,
                    ))),
                    Ok(()) => {
                        f.packet = out.packet.clone();
                        results.extend(self.route_and_forward(
                            f,
                            before.clone(),
                            steps,
                            check_listener,
                        ));
                    }
                }
            }
        } else {
            results.extend(self.route_and_forward(flight, before, steps, check_listener));
        }
        results
    }

    /// Routing decision in netns `flight.netns`, then local delivery or forwarding.
    fn route_and_forward(
        &mut self,
        flight: Flight,
        before: Packet,
        mut steps: Vec<String>,
        check_listener: bool,
    ) -> Vec<Visit> {
        let id = flight.netns.clone();
        let arriving = flight.packet.iif.is_some();
        let decision = self.route(&id, &flight.packet, &mut steps);
        if let Some(idx) = self.intent_check(&id, &flight.packet, &decision) {
            return vec![Visit::End(Ended::hop_stopped(
                flight, &id, before, steps, idx, self,
            ))];
        }
        match &decision.outcome {
            RouteOutcome::Local { .. } => {
                if !arriving {
                    // A packet to a local address from a local socket: delivered over lo.
                    steps.push("delivered locally (loopback)".into());
                    return vec![Visit::End(Ended::delivered(
                        flight, &id, before, steps, self,
                    ))];
                }
                let mut visits = Vec::new();
                for out in self.run_hook(&id, Hook::Input, &flight.packet) {
                    let mut steps = steps.clone();
                    let mut f = flight.clone();
                    f.probability *= out.probability;
                    f.packet = out.packet.clone();
                    match self.hook_verdict(&id, Hook::Input, &out, &mut steps) {
                        Err(idx) => visits.push(Visit::End(Ended::hop_stopped(
                            f,
                            &id,
                            before.clone(),
                            steps,
                            idx,
                            self,
                        ))),
                        Ok(()) => {
                            if let Some(scheduled) = self.ipvs_schedule(&id, &f, &before, &steps) {
                                visits.extend(scheduled);
                                continue;
                            }
                            match self.check_listener(&id, &f.packet, check_listener, &mut steps) {
                                Some(idx) => visits.push(Visit::End(Ended::hop_stopped(
                                    f,
                                    &id,
                                    before.clone(),
                                    steps,
                                    idx,
                                    self,
                                ))),
                                None => visits.push(Visit::End(Ended::delivered(
                                    f,
                                    &id,
                                    before.clone(),
                                    steps,
                                    self,
                                ))),
                            }
                        }
                    }
                }
                visits
            }
            RouteOutcome::Unicast { nexthops } => {
                let Some(hop) = nexthops.first().cloned() else {
                    let idx = self.route_finding(&id, &flight.packet, &decision);
                    return vec![Visit::End(Ended::hop_stopped(
                        flight, &id, before, steps, idx, self,
                    ))];
                };
                let Some(dev) = hop.dev.clone() else {
                    let idx = self.route_finding(&id, &flight.packet, &decision);
                    return vec![Visit::End(Ended::hop_stopped(
                        flight, &id, before, steps, idx, self,
                    ))];
                };
                let mut packet = flight.packet.clone();
                packet.oif = Some(dev.clone());
                if !arriving && packet.src.is_unspecified() {
                    if let Some(src) = hop.source {
                        packet.src = src;
                    }
                }
                let gateway = hop.gateway;
                let mut visits = Vec::new();
                let hooks: &[Hook] = if arriving {
                    &[Hook::Forward, Hook::Postrouting]
                } else {
                    &[Hook::Output, Hook::Postrouting]
                };
                if arriving {
                    if let Some(idx) = self.check_forwarding(&id, &packet, &mut steps) {
                        return vec![Visit::End(Ended::hop_stopped(
                            flight, &id, before, steps, idx, self,
                        ))];
                    }
                }
                let mut branches = vec![(packet, steps, flight.probability)];
                for &hook in hooks {
                    let mut next = Vec::new();
                    for (p, steps, prob) in branches {
                        for out in self.run_hook(&id, hook, &p) {
                            let mut steps = steps.clone();
                            match self.hook_verdict(&id, hook, &out, &mut steps) {
                                Err(idx) => {
                                    let f = Flight {
                                        packet: out.packet.clone(),
                                        probability: prob * out.probability,
                                        ..flight.clone()
                                    };
                                    visits.push(Visit::End(Ended::hop_stopped(
                                        f,
                                        &id,
                                        before.clone(),
                                        steps,
                                        idx,
                                        self,
                                    )));
                                }
                                Ok(()) => {
                                    // OUTPUT DNAT re-routes the packet (kube-proxy on hostNetwork).
                                    if hook == Hook::Output && out.packet.dst != p.dst {
                                        let f = Flight {
                                            packet: Packet {
                                                oif: None,
                                                ..out.packet.clone()
                                            },
                                            probability: prob * out.probability,
                                            ..flight.clone()
                                        };
                                        steps.push("re-routed after DNAT".into());
                                        visits.extend(self.reroute_after_output_dnat(
                                            f,
                                            before.clone(),
                                            steps,
                                        ));
                                        continue;
                                    }
                                    next.push((out.packet.clone(), steps, prob * out.probability));
                                }
                            }
                        }
                    }
                    branches = next;
                }
                for (p, steps, prob) in branches {
                    let f = Flight {
                        packet: p,
                        probability: prob,
                        ..flight.clone()
                    };
                    visits.push(self.egress(f, before.clone(), steps, &dev, gateway));
                }
                visits
            }
            _ => {
                let idx = self.route_finding(&id, &flight.packet, &decision);
                vec![Visit::End(Ended::hop_stopped(
                    flight, &id, before, steps, idx, self,
                ))]
            }
        }
    }

    /// After OUTPUT changed the destination, route again and go through POSTROUTING.
    fn reroute_after_output_dnat(
        &mut self,
        flight: Flight,
        before: Packet,
        mut steps: Vec<String>,
    ) -> Vec<Visit> {
        let id = flight.netns.clone();
        let decision = self.route(&id, &flight.packet, &mut steps);
        let RouteOutcome::Unicast { nexthops } = &decision.outcome else {
            if matches!(decision.outcome, RouteOutcome::Local { .. }) {
                steps.push("delivered locally".into());
                return vec![Visit::End(Ended::delivered(
                    flight, &id, before, steps, self,
                ))];
            }
            let idx = self.route_finding(&id, &flight.packet, &decision);
            return vec![Visit::End(Ended::hop_stopped(
                flight, &id, before, steps, idx, self,
            ))];
        };
        let Some((dev, gateway)) = nexthops
            .first()
            .and_then(|h| h.dev.clone().map(|d| (d, h.gateway)))
        else {
            let idx = self.route_finding(&id, &flight.packet, &decision);
            return vec![Visit::End(Ended::hop_stopped(
                flight, &id, before, steps, idx, self,
            ))];
        };
        let mut packet = flight.packet.clone();
        packet.oif = Some(dev.clone());
        let mut visits = Vec::new();
        for out in self.run_hook(&id, Hook::Postrouting, &packet) {
            let mut steps = steps.clone();
            let f = Flight {
                packet: out.packet.clone(),
                probability: flight.probability * out.probability,
                ..flight.clone()
            };
            match self.hook_verdict(&id, Hook::Postrouting, &out, &mut steps) {
                Err(idx) => visits.push(Visit::End(Ended::hop_stopped(
                    f,
                    &id,
                    before.clone(),
                    steps,
                    idx,
                    self,
                ))),
                Ok(()) => visits.push(self.egress(f, before.clone(), steps, &dev, gateway)),
            }
        }
        visits
    }

    /// Leave through `dev` towards `gateway` (or the destination) and find the next netns.
    fn egress(
        &mut self,
        mut flight: Flight,
        before: Packet,
        mut steps: Vec<String>,
        dev: &str,
        gateway: Option<IpAddr>,
    ) -> Visit {
        let id = flight.netns.clone();
        let record = self.index.netns(&id).expect("visited netns exists");
        let Some(link) = record.state.link(dev) else {
            let idx = self.push(finding(
                FindingCode::LinkMissing,
                Level::Error,
                record,
                Some(dev),
                format!(
                    "the route sends the packet out of {dev}, which does not exist in {}",
                    describe(record)
                ),
                vec![],
                None,
                Some("Recreate the device or fix the route (the CNI normally does both)."),
            ));
            return Visit::End(Ended::hop_stopped(flight, &id, before, steps, idx, self));
        };
        if path_checks::link_stops_egress(link) {
            let idx = self.push(finding(
                FindingCode::LinkDown,
                Level::Error,
                record,
                Some(dev),
                format!(
                    "{dev} in {} is down, so the packet cannot leave",
                    describe(record)
                ),
                vec![Evidence::Link {
                    name: dev.into(),
                    detail: format!(
                        "admin {}, oper {:?}",
                        if link.admin_up { "up" } else { "down" },
                        link.oper_state
                    ),
                }],
                None,
                Some(&format!("ip link set {dev} up (inside {})", record.id)),
            ));
            return Visit::End(Ended::hop_stopped(flight, &id, before, steps, idx, self));
        }
        // NAT done in this netns is remembered for the reply.
        let mut entered = before.clone();
        entered.iif = None;
        entered.oif = None;
        if let Some(b) = NatBinding::record(
            &entered,
            &Packet {
                iif: None,
                oif: None,
                ..flight.packet.clone()
            },
        ) {
            flight.bindings.push((id.clone(), b));
        }
        let target = gateway.unwrap_or(flight.packet.dst);
        let tunnelled = match self.egress_checks(record, link, target, &flight.packet) {
            Err(idx) => {
                return Visit::End(Ended::hop_stopped(flight, &id, before, steps, idx, self));
            }
            Ok(next) => next,
        };
        steps.push(match gateway {
            Some(gw) => format!("out {dev} ({}) to gateway {gw}", link.kind),
            None => format!("out {dev} ({}) to {target}", link.kind),
        });
        if let Some(t) = &tunnelled {
            steps.push(t.step.clone());
        }

        let next = if let Some(t) = tunnelled {
            t.next
        } else if link.kind == LinkKind::Veth {
            let peer_ns = link
                .peer
                .as_ref()
                .and_then(|p| p.netns.clone())
                .unwrap_or_else(|| id.clone());
            let peer_name = link.peer.as_ref().and_then(|p| {
                p.name.clone().or_else(|| {
                    self.index
                        .netns(&peer_ns)
                        .and_then(|r| r.state.link_by_index(p.ifindex))
                        .map(|l| l.name.clone())
                })
            });
            peer_name.map(|name| self.through_switch(peer_ns, name, target))
        } else {
            self.index.owner_of(target).and_then(|owner| {
                let dev = owner
                    .state
                    .addresses
                    .iter()
                    .find(|a| a.address == target)
                    .map(|a| a.dev.clone())?;
                Some((owner.id.clone(), dev))
            })
        };
        if let Err((idx, at_next)) =
            self.next_hop_checks(record, link, &flight.packet, target, next.as_ref())
        {
            if !at_next {
                return Visit::End(Ended::hop_stopped(flight, &id, before, steps, idx, self));
            }
            let hop = make_hop(record, &before, &flight.packet, steps, None, self);
            flight.hops.push(hop);
            flight.netns = next.map(|(netns, _)| netns).unwrap_or(id);
            return Visit::End(Ended::stopped(flight, idx));
        }
        let hop = make_hop(record, &before, &flight.packet, steps, None, self);
        flight.hops.push(hop);
        match next {
            Some((netns, peer_dev)) => {
                // A port enslaved to a bridge hands the packet to the bridge: routing and
                // netfilter see the bridge as the input device, physdev sees the port.
                let next_record = self.index.netns(&netns);
                let (iif, physdev) = match next_record
                    .and_then(|r| r.state.link(&peer_dev))
                    .and_then(|l| l.master.clone())
                {
                    Some(master) => (master, Some(peer_dev.clone())),
                    None => (peer_dev.clone(), None),
                };
                if let Some(peer) = next_record.and_then(|r| r.state.link(&peer_dev)) {
                    if !peer.admin_up {
                        let r = next_record.expect("checked");
                        let idx = self.push(finding(
                            FindingCode::LinkDown,
                            Level::Error,
                            r,
                            Some(&peer_dev),
                            format!(
                                "{peer_dev} in {} is down, so the packet is not received",
                                describe(r)
                            ),
                            vec![Evidence::Link {
                                name: peer_dev.clone(),
                                detail: "admin down".into(),
                            }],
                            None,
                            Some(&format!("ip link set {peer_dev} up (inside {})", r.id)),
                        ));
                        flight.netns = netns;
                        return Visit::End(Ended::stopped(flight, idx));
                    }
                }
                let mut packet = flight.packet.clone();
                packet.iif = Some(iif);
                packet.oif = None;
                packet.physdev_in = physdev;
                packet.physdev_out = None;
                Visit::Continue(Flight {
                    packet,
                    netns,
                    ..flight
                })
            }
            None => {
                // The next hop is outside the snapshot: the packet leaves what we can see.
                Visit::End(Ended {
                    flight,
                    delivered: true,
                    stopped_by: None,
                    left_snapshot: true,
                })
            }
        }
    }

    fn run_hook(&mut self, id: &str, hook: Hook, packet: &Packet) -> Vec<HookOutcome> {
        let sim = self.sims.get(id).expect("sim parsed before hooks");
        sim.netfilter.run_hook(hook, packet, &sim.ctx)
    }

    /// Turn a hook outcome into a step; a drop becomes a finding (its index is the error).
    fn hook_verdict(
        &mut self,
        id: &str,
        hook: Hook,
        out: &HookOutcome,
        steps: &mut Vec<String>,
    ) -> Result<(), usize> {
        self.note_hand_dnat(id, out);
        for t in &out.trace {
            if t.action.starts_with("DNAT")
                || t.action.starts_with("SNAT")
                || t.action.starts_with("MASQUERADE")
                || t.action.starts_with("REDIRECT")
                || t.action.starts_with("DROP")
                || t.action.starts_with("REJECT")
                || t.action.starts_with("policy DROP")
            {
                steps.push(format!(
                    "{}: {}/{} #{}: {}",
                    hook.as_str(),
                    t.rule.table,
                    t.rule.chain,
                    t.rule.position,
                    t.action
                ));
            }
        }
        let record = self.sims[id].record;
        for u in &out.unsupported {
            self.push(finding(
                FindingCode::NetfilterUnsupported,
                Level::Info,
                record,
                None,
                format!(
                    "{} {}/{} #{} uses {}, which is not modelled; assumed {}",
                    hook.as_str(),
                    u.rule.table,
                    u.rule.chain,
                    u.rule.position,
                    u.feature,
                    if u.assumed_match {
                        "to match"
                    } else {
                        "not to match"
                    }
                ),
                vec![Evidence::Rule {
                    rule: u.rule.clone(),
                }],
                None,
                None,
            ));
        }
        match &out.verdict {
            NetfilterVerdict::Accept | NetfilterVerdict::Redirect => Ok(()),
            verdict => {
                let rule = out.decided_by.clone();
                let (code, what) = match verdict {
                    NetfilterVerdict::Reject { with } => {
                        (FindingCode::NetfilterReject, format!("rejected ({with})"))
                    }
                    NetfilterVerdict::Queue { num } => (
                        FindingCode::NetfilterDrop,
                        format!("queued to userspace (NFQUEUE {num}), whose verdict is unknown"),
                    ),
                    _ if rule.as_ref().is_some_and(|r| r.position == 0) => (
                        FindingCode::NetfilterPolicyDrop,
                        "dropped by the chain policy".to_string(),
                    ),
                    _ => (FindingCode::NetfilterDrop, "dropped".to_string()),
                };
                let (code, owner) = classify_drop(code, rule.as_ref(), &out.trace, &out.packet);
                let where_ = rule
                    .as_ref()
                    .map(|r| {
                        format!(
                            " by {}/{} rule #{} ({})",
                            r.table,
                            r.chain,
                            r.position,
                            crate::render::rule_location(r)
                        )
                    })
                    .unwrap_or_default();
                let hint = match (&owner, code) {
                    (Some(Owner::NetworkPolicy { namespace, name }), _) => format!(
                        "NetworkPolicy {namespace}/{name} isolates this pod and no policy allows this traffic: add an allow rule for it (or fix the selectors)."
                    ),
                    (_, FindingCode::ConntrackInvalid) => {
                        crate::checks::conntrack::INVALID_HINT.to_string()
                    }
                    (_, FindingCode::NetfilterPolicyDrop) => format!(
                        "Add an ACCEPT rule for this traffic to the {} chain, or change its policy.",
                        rule.as_ref().map(|r| r.chain.as_str()).unwrap_or("")
                    ),
                    (Some(Owner::Unknown), _) | (None, _) => hand_added_hint(rule.as_ref()),
                    (Some(o), _) => format!(
                        "The rule belongs to {o}: fix it there, not by editing the rule by hand."
                    ),
                };
                let mut dropped = finding(
                    code,
                    Level::Error,
                    record,
                    out.packet.iif.as_deref(),
                    format!("{} {what} in {}{where_}", out.packet, describe(record)),
                    rule.into_iter()
                        .map(|rule| Evidence::Rule { rule })
                        .collect(),
                    owner,
                    Some(&hint),
                );
                // NetworkPolicy is stateful: only the connection's first packets are judged.
                if self.direction == Direction::Forward && is_enforcement(code) {
                    explain_enforcement(
                        self.policies,
                        self.index,
                        self.client,
                        &out.packet,
                        &mut dropped,
                    );
                }
                let idx = self.push(dropped);
                steps.push(format!("{}: {what}", hook.as_str()));
                Err(idx)
            }
        }
    }

    fn route(&self, id: &str, packet: &Packet, steps: &mut Vec<String>) -> RouteDecision {
        let sim = &self.sims[id];
        let mut key = FlowKey::from_packet(packet);
        if packet.iif.is_none() {
            key.src = (!packet.src.is_unspecified()).then_some(packet.src);
        }
        let decision = sim.fib.lookup(&key);
        match (&decision.route, &decision.rule) {
            (Some(route), _) => steps.push(format!("route: {route}")),
            (None, Some(rule)) => steps.push(format!("rule: {rule}")),
            _ => steps.push("route: none".into()),
        }
        decision
    }

    fn route_finding(&mut self, id: &str, packet: &Packet, decision: &RouteDecision) -> usize {
        let record = self.sims[id].record;
        if matches!(decision.outcome, RouteOutcome::NoRoute) {
            if let Some(idx) = self.down_link_explains(record, packet) {
                return idx;
            }
        }
        let mut evidence = Vec::new();
        if let Some(route) = &decision.route {
            evidence.push(Evidence::Route {
                table: route.table,
                text: route.to_string(),
            });
        }
        if let Some(rule) = &decision.rule {
            evidence.push(Evidence::RoutingRule {
                text: rule.to_string(),
            });
        }
        let (code, what, hint) = match &decision.outcome {
            RouteOutcome::Blackhole { .. } => (
                FindingCode::RouteBlackhole,
                "is silently discarded by a blackhole route",
                "Remove the blackhole route (ip route del blackhole …) or add a more specific route.",
            ),
            RouteOutcome::Unreachable { .. } => (
                FindingCode::RouteUnreachable,
                "hits an unreachable route",
                "Remove the unreachable route or add a more specific one.",
            ),
            RouteOutcome::Prohibit { .. } => (
                FindingCode::RouteProhibit,
                "hits a prohibit route",
                "Remove the prohibit route or add a more specific one.",
            ),
            _ => (
                FindingCode::RouteMissing,
                "has no route",
                "Add a route to the destination (for pod networks the CNI adds it: check its agent on this node).",
            ),
        };
        let intended = (code == FindingCode::RouteMissing)
            .then(|| self.datapath.missing_route_hint(record, packet.dst))
            .flatten();
        let hint = intended.as_deref().unwrap_or(hint);
        let code = if decision
            .rule
            .as_ref()
            .is_some_and(|r| r.priority != 0 && r.priority != 32766 && r.priority != 32767)
            && code != FindingCode::RouteMissing
        {
            FindingCode::RoutePolicyRule
        } else {
            code
        };
        self.push(finding(
            code,
            Level::Error,
            record,
            None,
            format!("{packet} {what} in {}", describe(record)),
            evidence,
            Some(Owner::Unknown).filter(|_| code != FindingCode::RouteMissing),
            Some(hint),
        ))
    }

    /// The kernel skips routes through a device that is down, so "no route" is often really
    /// "the device the route uses is down": find a route (or connected subnet) for the
    /// destination whose device is down and report that as the cause.
    fn down_link_explains(&mut self, record: &'a NetnsRecord, packet: &Packet) -> Option<usize> {
        let state = &record.state;
        let is_down = |dev: &str| {
            state.link(dev).is_some_and(|l| {
                !l.admin_up || matches!(l.oper_state, OperState::Down | OperState::LowerLayerDown)
            })
        };
        let via_route = state
            .routes
            .iter()
            .find(|r| r.dst.contains(&packet.dst) && r.dev.as_deref().is_some_and(is_down));
        let via_subnet = state.addresses.iter().find(|a| {
            ipnet::IpNet::new(a.address, a.prefix_len)
                .is_ok_and(|n| n.trunc().contains(&packet.dst))
                && is_down(&a.dev)
        });
        let (dev, evidence) = match (via_route, via_subnet) {
            (Some(r), _) => (
                r.dev.clone()?,
                Evidence::Route {
                    table: r.table,
                    text: r.to_string(),
                },
            ),
            (None, Some(a)) => (
                a.dev.clone(),
                Evidence::Text {
                    text: format!("{}/{} on {}", a.address, a.prefix_len, a.dev),
                },
            ),
            (None, None) => return None,
        };
        let link = state.link(&dev)?;
        Some(self.push(finding(
            FindingCode::LinkDown,
            Level::Error,
            record,
            Some(&dev),
            format!(
                "{dev} in {} is down, so the kernel ignores its routes and {} has no route",
                describe(record),
                packet.dst
            ),
            vec![
                Evidence::Link {
                    name: dev.clone(),
                    detail: format!(
                        "admin {}, oper {:?}",
                        if link.admin_up { "up" } else { "down" },
                        link.oper_state
                    ),
                },
                evidence,
            ],
            None,
            Some(&format!("ip link set {dev} up (inside {})", record.id)),
        )))
    }

    fn check_forwarding(
        &mut self,
        id: &str,
        packet: &Packet,
        steps: &mut Vec<String>,
    ) -> Option<usize> {
        let record = self.sims[id].record;
        let forwarding = if packet.is_ipv6() {
            record.state.ipv6_forwarding()
        } else {
            packet
                .iif
                .as_deref()
                .and_then(|iif| record.state.ipv4_forwarding(iif))
                .or_else(|| record.state.ip_forward())
        };
        match forwarding {
            Some(r) if !r.value => {
                steps.push("forwarding disabled".into());
                Some(self.push(finding(
                    FindingCode::SysctlIpForward,
                    Level::Error,
                    record,
                    packet.iif.as_deref(),
                    format!("{} must forward the packet but IP forwarding is off", describe(record)),
                    r.from.iter().map(|(key, value)| Evidence::Sysctl { key: key.clone(), value: value.clone() }).collect(),
                    None,
                    Some("sysctl -w net.ipv4.ip_forward=1 (and make it persistent in /etc/sysctl.d)."),
                )))
            }
            _ => None,
        }
    }

    fn check_rp_filter(
        &mut self,
        id: &str,
        packet: &Packet,
        steps: &mut Vec<String>,
    ) -> Option<usize> {
        let sim = &self.sims[id];
        let record = sim.record;
        let iif = packet.iif.as_deref()?;
        if packet.is_ipv6() {
            return None;
        }
        let reading = record.state.rp_filter(iif)?;
        let mode = reading.value;
        if mode == RpFilterMode::Off {
            return None;
        }
        let mark = record
            .state
            .src_valid_mark(iif)
            .filter(|r| r.value)
            .map_or(0, |_| packet.mark);
        match sim
            .fib
            .reverse_path(mode, iif, packet.src, packet.dst, mark, false)
        {
            ReversePath::Pass => None,
            ReversePath::Drop { reason, .. } => {
                steps.push(format!("rp_filter drop ({reason:?})"));
                Some(self.push(finding(
                    FindingCode::SysctlRpFilter,
                    Level::Error,
                    record,
                    Some(iif),
                    format!("reverse-path filter drops {packet} arriving on {iif} in {}: the route back to {} does not leave through {iif} ({reason:?})", describe(record), packet.src),
                    reading.from.iter().map(|(key, value)| Evidence::Sysctl { key: key.clone(), value: value.clone() }).collect(),
                    None,
                    Some(&format!("Make the path symmetric, or set loose mode: sysctl -w net.ipv4.conf.{iif}.rp_filter=2 (and conf.all)")),
                )))
            }
        }
    }

    fn check_listener(
        &mut self,
        id: &str,
        packet: &Packet,
        enabled: bool,
        steps: &mut Vec<String>,
    ) -> Option<usize> {
        if !enabled || packet.protocol == Protocol::Icmp {
            return None;
        }
        let record = self.sims[id].record;
        let Some(sockets) = &record.state.sockets else {
            steps.push("listening sockets not collected: delivery assumed".into());
            return None;
        };
        let proto = packet.ip_proto();
        let found = sockets.iter().any(|s| {
            s.protocol == proto
                && s.port == packet.dport
                && (s.address.is_unspecified() || s.address == packet.dst)
        });
        if found {
            steps.push(format!(
                "delivered to a socket listening on {}",
                packet.dport
            ));
            return None;
        }
        if let Some(idx) = self.hand_dnat_explains(packet) {
            steps.push(format!("nothing listens on {}", packet.dport));
            return Some(idx);
        }
        let listening: Vec<String> = sockets
            .iter()
            .filter(|s| s.protocol == proto)
            .map(|s| format!("{}:{}", s.address, s.port))
            .collect();
        Some(self.push(finding(
            FindingCode::SocketNoListener,
            Level::Error,
            record,
            None,
            format!("nothing listens on {} port {} in {}; the kernel answers with {}", packet.protocol, packet.dport, describe(record), if packet.protocol == Protocol::Tcp { "a TCP reset" } else { "ICMP port unreachable" }),
            vec![Evidence::Text { text: format!("{} sockets listening: {}", packet.protocol, if listening.is_empty() { "none".into() } else { listening.join(", ") }) }],
            None,
            Some("Start the server, or point the Service's targetPort / the client at the port it really listens on."),
        )))
    }
}

enum Visit {
    Continue(Flight),
    End(Ended),
}

struct Ended {
    flight: Flight,
    delivered: bool,
    stopped_by: Option<usize>,
    left_snapshot: bool,
}

impl Ended {
    fn stopped(flight: Flight, idx: usize) -> Ended {
        Ended {
            flight,
            delivered: false,
            stopped_by: Some(idx),
            left_snapshot: false,
        }
    }

    fn hop_stopped(
        mut flight: Flight,
        id: &str,
        before: Packet,
        steps: Vec<String>,
        idx: usize,
        w: &Walker<'_>,
    ) -> Ended {
        if let Some(record) = w.index.netns(id) {
            let hop = make_hop(record, &before, &flight.packet, steps, Some(idx), w);
            flight.hops.push(hop);
        }
        Ended::stopped(flight, idx)
    }

    fn delivered(
        mut flight: Flight,
        id: &str,
        before: Packet,
        steps: Vec<String>,
        w: &Walker<'_>,
    ) -> Ended {
        if let Some(record) = w.index.netns(id) {
            let hop = make_hop(record, &before, &flight.packet, steps, None, w);
            flight.hops.push(hop);
        }
        Ended {
            flight,
            delivered: true,
            stopped_by: None,
            left_snapshot: false,
        }
    }

    fn into_end(self, direction: Direction) -> WalkEnd {
        let Ended {
            flight,
            delivered,
            stopped_by,
            left_snapshot,
        } = self;
        let delivered_at = (delivered && !left_snapshot).then(|| {
            (
                flight.packet.clone(),
                flight.netns.clone(),
                flight.bindings.clone(),
            )
        });
        end(direction, flight, delivered, stopped_by, delivered_at)
    }
}

fn end(
    direction: Direction,
    flight: Flight,
    delivered: bool,
    stopped_by: Option<usize>,
    delivered_at: Option<Delivery>,
) -> WalkEnd {
    WalkEnd {
        path: Path {
            direction,
            probability: flight.probability,
            delivered,
            hops: flight.hops,
            stopped_by,
        },
        packet: flight.packet,
        delivered: delivered_at,
    }
}

impl WalkEnd {
    /// The reply's start: the delivered packet reversed, in the netns that received it.
    pub fn reply_start(&self) -> Option<Delivery> {
        let (packet, netns, bindings) = self.delivered.as_ref()?;
        Some((packet.reversed(), netns.clone(), bindings.clone()))
    }
}

fn make_hop(
    record: &NetnsRecord,
    before: &Packet,
    after: &Packet,
    steps: Vec<String>,
    stopped: Option<usize>,
    w: &Walker<'_>,
) -> Hop {
    let level = stopped.and_then(|i| w.findings.get(i)).map(|f| f.level);
    Hop {
        netns: record.id.clone(),
        node: record.node.clone(),
        iif: before.iif.clone(),
        oif: after.oif.clone(),
        packet_in: before.to_string(),
        packet_out: after.to_string(),
        steps,
        level,
    }
}

fn place_of(record: &NetnsRecord) -> Place {
    Place {
        node: Some(record.node.clone()),
        netns: Some(record.id.clone()),
        device: None,
    }
}

/// How to get a readable copy of the dump a [`netstack::netfilter::RulesetProblem`] is about:
/// the command that writes it, and the checker for it.
fn recollect_hint(source: &str) -> &'static str {
    match source {
        "nftables" => {
            "Collect the dump again (`nft -j list ruleset`) and check it with `netsleuth netfilter parse`, which names the JSON path that is wrong."
        }
        _ => {
            "Collect the dump again (iptables-save / ipset save) and check it with `netsleuth netfilter parse`."
        }
    }
}

/// A part of `record`'s state the collector could not read, where the walk needed it.
fn not_collected(record: &NetnsRecord, part: StatePart, reason: &str) -> Finding {
    finding(
        FindingCode::StateIncomplete,
        Level::Error,
        record,
        None,
        format!(
            "{part} of {} were not collected ({reason}); the walk cannot be trusted there",
            describe(record)
        ),
        vec![Evidence::Text {
            text: reason.to_string(),
        }],
        None,
        Some("Re-run the collection with the needed privileges (root, CAP_NET_ADMIN)."),
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn finding(
    code: FindingCode,
    level: Level,
    record: &NetnsRecord,
    device: Option<&str>,
    message: String,
    evidence: Vec<Evidence>,
    owner: Option<Owner>,
    hint: Option<&str>,
) -> Finding {
    Finding {
        code,
        level,
        place: Place {
            device: device.map(str::to_string),
            ..place_of(record)
        },
        message,
        evidence,
        owner,
        hint: hint.map(str::to_string),
    }
}
